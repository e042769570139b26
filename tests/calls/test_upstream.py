"""Upstream resolution (contract section 9), against a fake Vapi REST API at the transport level."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from service.calls.upstream import UpstreamResolver, request_headers
from service.settings import Settings
from service.vapi.client import VapiClient

CRM = {"url": "https://crm.example.com/vapi", "headers": {"X-Crm": "1"}, "secret": "legacy"}


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def vapi_client(handler: Any) -> VapiClient:
    """A Vapi client whose requests ``handler`` answers (sync or async)."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return VapiClient(http, base_url="https://vapi.test", api_key="k", public_key=None, timeout=1)


def resolver(objects: dict[str, dict[str, Any]], seen: list[str], **settings: Any) -> tuple[UpstreamResolver, Clock]:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        found = objects.get(request.url.path)
        return httpx.Response(200, json=found) if found is not None else httpx.Response(404, json={"message": "no"})

    clock = Clock()
    return UpstreamResolver(vapi_client(answer), Settings(_env_file=None, **settings), clock), clock


async def test_first_found_wins_call_assistant_number_default() -> None:
    objects = {
        "/assistant/a1": {"id": "a1", "server": {"url": "https://assistant/x"}, "serverMessages": ["tool-calls"]},
        "/phone-number/p1": {"id": "p1", "server": {"url": "https://number/x"}},
    }
    seen: list[str] = []
    upstreams, _ = resolver(objects, seen, forward_url="https://org.example.com/hook", forward_headers={"X-Org": "o"})
    by_call = await upstreams.for_outbound({"server": CRM}, assistant_id="a1", phone_number_id="p1")
    assert by_call is not None
    assert (by_call["url"], by_call["source"], by_call["serverMessages"]) == (CRM["url"], "call", ["tool-calls"])
    by_assistant = await upstreams.for_outbound({}, assistant_id="a1", phone_number_id="p1")
    assert by_assistant is not None
    assert (by_assistant["url"], by_assistant["source"]) == ("https://assistant/x", "assistant")
    by_number = await upstreams.for_outbound({"serverMessages": ["hang"]}, assistant_id="a2", phone_number_id="p1")
    assert by_number == {"url": "https://number/x", "source": "phone-number", "headers": {}, "serverMessages": ["hang"]}
    by_default = await upstreams.for_outbound({}, assistant_id="a2", phone_number_id="p2")
    assert by_default == {"url": "https://org.example.com/hook", "source": "default", "headers": {"X-Org": "o"}}


async def test_assistants_are_cached_briefly() -> None:
    seen: list[str] = []
    upstreams, clock = resolver({"/assistant/a1": {"server": {"url": "https://a/x"}}}, seen, upstream_cache_seconds=60)
    for _ in range(3):
        await upstreams.for_outbound({}, assistant_id="a1", phone_number_id=None)
    assert seen == ["/assistant/a1"]
    clock.now = 61
    await upstreams.for_outbound({}, assistant_id="a1", phone_number_id=None)
    assert seen == ["/assistant/a1", "/assistant/a1"]


async def test_an_unknown_assistant_is_cached_as_one_and_a_failure_is_not() -> None:
    """A 404 is Vapi's answer (no such assistant): asked once per cache period, not per call placed;
    a failure says nothing and is asked again."""
    seen: list[str] = []
    upstreams, _ = resolver({}, seen, upstream_cache_seconds=60)
    for _ in range(3):
        assert await upstreams.for_outbound({}, assistant_id="gone", phone_number_id=None) is None
    assert seen == ["/assistant/gone"]

    failures: list[str] = []

    def down(request: httpx.Request) -> httpx.Response:
        failures.append(request.url.path)
        return httpx.Response(503, json={"message": "down"})

    flaky = UpstreamResolver(
        VapiClient(
            httpx.AsyncClient(transport=httpx.MockTransport(down)),
            base_url="https://vapi.test",
            api_key="k",
            public_key=None,
            timeout=1,
        ),
        Settings(_env_file=None, upstream_cache_seconds=60),
        Clock(),
    )
    for _ in range(2):
        assert await flaky.for_outbound({}, assistant_id="a1", phone_number_id=None) is None
    assert failures == ["/assistant/a1", "/assistant/a1"]


def slow_assistant(seen: list[str], *, seconds: float) -> UpstreamResolver:
    """A resolver whose Vapi takes ``seconds`` to answer each read (its paths go to ``seen``) with an
    assistant whose server is ``https://a/x``."""

    async def slow(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        await asyncio.sleep(seconds)
        return httpx.Response(200, json={"server": {"url": "https://a/x"}})

    return UpstreamResolver(vapi_client(slow), Settings(_env_file=None, upstream_cache_seconds=60), Clock())


async def test_a_burst_of_placements_reads_the_assistant_once() -> None:
    """Calls placed at the same moment with one assistant wait for one read of it (not one each)."""
    seen: list[str] = []
    upstreams = slow_assistant(seen, seconds=0.05)
    found = await asyncio.gather(
        *(upstreams.for_outbound({}, assistant_id="a1", phone_number_id=None) for _ in range(20))
    )
    assert seen == ["/assistant/a1"]
    assert {upstream["url"] for upstream in found if upstream is not None} == {"https://a/x"}
    assert None not in found


async def test_a_caller_that_gives_up_does_not_take_the_shared_read_with_it() -> None:
    """An inbound assistant lookup under the relay's deadline, and a placement with the same assistant
    that waits for the same read: the first giving up must not leave the second without its answer."""
    seen: list[str] = []
    upstreams = slow_assistant(seen, seconds=0.3)

    async def inbound() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await upstreams.for_assistant_answer({"assistantId": "a1"})

    async def placement() -> dict[str, Any] | None:
        await asyncio.sleep(0.05)
        return await upstreams.for_outbound({}, assistant_id="a1", phone_number_id=None)

    _, placed = await asyncio.gather(inbound(), placement())
    assert placed is not None
    assert (placed["url"], placed["source"]) == ("https://a/x", "assistant")
    assert seen == ["/assistant/a1"]


async def test_no_upstream_anywhere_is_none() -> None:
    upstreams, _ = resolver({}, [])
    assert await upstreams.for_outbound({}, assistant_id="a1", phone_number_id="p1") is None


def test_headers_are_sent_as_vapi_sends_them() -> None:
    upstream = {"url": CRM["url"], "headers": CRM["headers"], "secret": "legacy", "source": "call"}
    assert request_headers(upstream) == {"Content-Type": "application/json", "X-Crm": "1", "X-Vapi-Secret": "legacy"}


async def test_a_control_request_refused_with_401_is_retried_with_the_public_key() -> None:
    sent: list[str | None] = []

    def control(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("authorization"))
        return httpx.Response(200 if request.headers.get("authorization") == "Bearer pub" else 401, json={})

    vapi = VapiClient(
        httpx.AsyncClient(transport=httpx.MockTransport(control)),
        base_url="https://vapi.test",
        api_key="k",
        public_key="pub",
        timeout=1,
    )
    await vapi.send_control("https://c.test/control", {"type": "say", "content": "hi"}, authenticated=False)
    assert sent == [None, "Bearer pub"]


async def test_a_legacy_server_url_is_an_upstream_too() -> None:
    upstreams, _ = resolver({"/assistant/a1": {"serverUrl": "https://old/x", "serverUrlSecret": "s"}}, [])
    legacy = await upstreams.for_outbound({}, assistant_id="a1", phone_number_id=None)
    assert legacy == {"url": "https://old/x", "source": "assistant", "headers": {}, "secret": "s"}
