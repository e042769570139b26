"""SSRF protection: which webhook URLs are refused, and where a checked request is really sent."""

from __future__ import annotations

import ipaddress

import pytest

from service.outbound_urls import (
    IPAddress,
    UnsafeUrlError,
    check_webhook_url,
    pinned_request_target,
    refusal_reason,
)


def fake_resolver(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in answers:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return [ipaddress.ip_address(address) for address in answers[host]]

    return resolve


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),  # ULA
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
        ("::", "unspecified"),
        ("100.64.0.1", "globally routable"),  # carrier-grade NAT
        ("192.0.0.8", "globally routable"),
        ("240.0.0.1", "address"),  # class E: reserved (Python calls it private),
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert reason in (refusal_reason(ipaddress.ip_address(address)) or "")


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::6810:84e5", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/x", "http:// or https://"),
        ("hooks.example.com/x", "http:// or https://"),
        ("http:///nohost", "no host"),
        ("http://hooks.example.com:99999/", "port"),
        ("http://hooks.example.com/a b", "whitespace"),
        ("http://127.0.0.1:8080/hooks", "loopback"),
        ("http://[::1]/hooks", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://localhost/hooks", "resolves to 127.0.0.1, which is a loopback address"),
        ("http://mixed.example.com/", "resolves to 10.0.0.7, which is a private address"),
        ("http://nowhere.example.com/", "does not resolve"),
        ("http://[::1/hooks", "cannot be parsed"),
    ],
)
async def test_refused_urls_say_why(url: str, message: str) -> None:
    resolver = fake_resolver({"localhost": ["127.0.0.1"], "mixed.example.com": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(UnsafeUrlError) as caught:
        await check_webhook_url(url, allow_private=False, resolver=resolver)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://" + "a" * 300 + ".example.com/",  # too long for IDNA
        "http://\u2603\u2603..example/",  # empty IDNA label
        "http://ex\x00ample.com/",
    ],
)
async def test_hosts_the_system_resolver_cannot_take_are_refused_not_crashed(url: str) -> None:
    with pytest.raises(UnsafeUrlError):
        await check_webhook_url(url, allow_private=False)


async def test_allow_private_lets_loopback_through_without_resolving() -> None:
    checked = await check_webhook_url("http://localhost:9/hooks", allow_private=True, resolver=fake_resolver({}))
    assert pinned_request_target(checked) == ("http://localhost:9/hooks", {}, {})


async def test_the_system_resolver_refuses_localhost() -> None:
    with pytest.raises(UnsafeUrlError, match="loopback"):
        await check_webhook_url("http://localhost/hooks", allow_private=False)


async def test_a_checked_request_goes_to_the_checked_address_with_the_name_for_host_and_tls() -> None:
    resolver = fake_resolver({"hooks.example.com": ["93.184.216.34", "2606:4700::6810:84e5"]})
    checked = await check_webhook_url("https://hooks.example.com/in?x=1", allow_private=False, resolver=resolver)
    assert pinned_request_target(checked) == (
        "https://93.184.216.34/in?x=1",
        {"Host": "hooks.example.com"},
        {"sni_hostname": "hooks.example.com"},
    )
    v6 = await check_webhook_url(
        "http://hooks6.example.com:8080/in",
        allow_private=False,
        resolver=fake_resolver({"hooks6.example.com": ["2606:4700::6810:84e5"]}),
    )
    assert pinned_request_target(v6) == (
        "http://[2606:4700::6810:84e5]:8080/in",
        {"Host": "hooks6.example.com:8080"},
        {},
    )


async def test_an_ip_literal_is_used_as_is() -> None:
    checked = await check_webhook_url("https://93.184.216.34:8443/in", allow_private=False)
    assert pinned_request_target(checked) == ("https://93.184.216.34:8443/in", {}, {})
