"""A small client for the Vapi endpoints Switchboard uses, over one pooled ``httpx.AsyncClient``.

Transport failures and Vapi error answers become :class:`~service.errors.UpstreamError` (502) or
:class:`~service.errors.UpstreamTimeoutError` (504). Monitor URLs are capabilities: they are never put
in an exception message or a log line.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from service.errors import UpstreamError, UpstreamTimeoutError
from service.outbound_urls import UnsafeUrlError
from service.vapi.monitors import MonitorUrlPolicy

ERROR_BODY_LIMIT = 300


class ControlNotDeliveredError(UpstreamError):
    """The control request surely did not reach the call (connection refused): safe to retry."""


def _vapi_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:ERROR_BODY_LIMIT]
    if isinstance(body, dict):
        message = body.get("message") or body.get("error") or body
        if isinstance(message, list):
            message = "; ".join(str(item) for item in message)
        return str(message)[:ERROR_BODY_LIMIT]
    return str(body)[:ERROR_BODY_LIMIT]


class VapiClient:
    """Create and fetch calls, and post control messages into live calls."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str | None,
        public_key: str | None,
        timeout: float,
        monitor_policy: MonitorUrlPolicy | None = None,
        control_http: httpx.AsyncClient | None = None,
    ) -> None:
        self._http = http
        # Control POSTs on a pool of their own (default: ``http``): a burst of placements, reconciles
        # or downloads neither holds every connection nor makes each control POST scan theirs.
        self._control_http = control_http or http
        self._monitor_policy = monitor_policy  # None: monitor URLs are not checked (embedding, unit tests)
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._public_key = public_key
        self._timeout = timeout

    def _api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def monitor_headers(self, *, authenticated: bool) -> dict[str, str]:
        """Headers for the listen handshake or a control POST when the call's monitor auth is on."""
        if authenticated and self._public_key:
            return {"Authorization": f"Bearer {self._public_key}"}
        return {}

    async def check_monitor_url(self, url: str) -> None:
        """Refuse (:class:`UnsafeUrlError`) a listen or control URL that points where Switchboard must
        not connect (see ``service.vapi.monitors``)."""
        if self._monitor_policy is not None:
            await self._monitor_policy.check(url)

    async def _request(self, method: str, path: str, *, json: Any = None) -> dict[str, Any]:
        body = await self._request_json(method, path, json=json)
        if not isinstance(body, dict):
            raise UpstreamError(f"Vapi answered {method} {path} with JSON that is not an object")
        return body

    async def _request_json(self, method: str, path: str, *, json: Any = None) -> Any:
        try:
            response = await self._http.request(
                method, self._base_url + path, json=json, headers=self._api_headers(), timeout=self._timeout
            )
        except httpx.TimeoutException:
            raise UpstreamTimeoutError(f"Vapi did not answer {method} {path} within {self._timeout:g} s") from None
        except httpx.TransportError as exc:
            raise UpstreamError(f"could not reach Vapi for {method} {path}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise UpstreamError(
                f"Vapi answered {method} {path} with {response.status_code}: {_vapi_message(response)}",
                vapiStatus=response.status_code,
            )
        try:
            body = response.json()
        except ValueError:
            raise UpstreamError(f"Vapi answered {method} {path} with a body that is not JSON") from None
        return body

    async def create_call(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /call``; returns Vapi's Call object."""
        call = await self._request("POST", "/call", json=request)
        if not isinstance(call.get("id"), str):
            raise UpstreamError("Vapi's answer to POST /call has no call id")
        return call

    async def get_call(self, call_id: str) -> dict[str, Any]:
        """``GET /call/{id}``."""
        return await self._request("GET", f"/call/{quote(call_id, safe='')}")

    async def list_calls(
        self, *, created_at_ge: dt.datetime, created_at_le: dt.datetime | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """``GET /call?createdAtGe=&createdAtLe=&limit=`` (vapi-server-sdk 3.0.0 ``calls.list``): calls
        created in that window, bounds included, newest first, at most ``limit``."""
        params = {"createdAtGe": _iso(created_at_ge), "limit": str(limit)}
        if created_at_le is not None:
            params["createdAtLe"] = _iso(created_at_le)
        answer = await self._request_json("GET", "/call?" + urlencode(params))
        if not isinstance(answer, list):
            raise UpstreamError("Vapi answered GET /call with JSON that is not a list")
        return [item for item in answer if isinstance(item, dict)]

    @property
    def base_url(self) -> str:
        return self._base_url

    def stereo_recording(self, call_id: str) -> tuple[str, dict[str, str]]:
        """Where to download the call's stereo recording from Vapi, and the headers: ``GET
        /call/{id}/stereo-recording`` (vapi-server-sdk 3.0.0
        ``calls.call_artifact_controller_stereo_recording_download``; the file, or a redirect to it)."""
        return f"{self._base_url}/call/{quote(call_id, safe='')}/stereo-recording", self._api_headers()

    async def delete_call(self, call_id: str) -> bool:
        """``DELETE /call/{id}``: Vapi deletes its copy of the call (recording, transcript, …).

        False when Vapi has no such call (already deleted, or never there); other refusals raise.
        """
        try:
            await self._request("DELETE", f"/call/{quote(call_id, safe='')}")
        except UpstreamError as exc:
            if exc.extra.get("vapiStatus") == 404:
                return False
            raise
        return True

    async def get_assistant(self, assistant_id: str) -> dict[str, Any]:
        """``GET /assistant/{id}``: the assistant, with its ``server`` and ``serverMessages``."""
        return await self._request("GET", f"/assistant/{quote(assistant_id, safe='')}")

    async def get_phone_number(self, phone_number_id: str) -> dict[str, Any]:
        """``GET /phone-number/{id}``: the phone number, with its ``server``."""
        return await self._request("GET", f"/phone-number/{quote(phone_number_id, safe='')}")

    @property
    def has_public_key(self) -> bool:
        return self._public_key is not None

    async def send_control(self, control_url: str, message: dict[str, Any], *, authenticated: bool) -> None:
        """POST one control message to a live call. Any 2xx is acceptance (the body is undocumented).

        A 401 without the public key is retried once with it: the call's monitor plan may require it
        although Switchboard never saw that plan (set on the assistant, or by a dashboard). A control URL
        that the monitor URL rules refuse (a private address) is never contacted."""
        try:
            await self.check_monitor_url(control_url)
        except UnsafeUrlError as exc:
            kind = message.get("type", "?")
            raise UpstreamError(f"control {kind!r}: the call's control URL is refused: {exc}") from None
        response = await self._post_control(control_url, message, authenticated=authenticated)
        if response.status_code == 401 and not authenticated and self._public_key:
            response = await self._post_control(control_url, message, authenticated=True)
        if not response.is_success:
            kind = message.get("type", "?")
            raise UpstreamError(f"control {kind!r} refused with {response.status_code}: {_vapi_message(response)}")

    async def _post_control(self, control_url: str, message: dict[str, Any], *, authenticated: bool) -> httpx.Response:
        kind = message.get("type", "?")
        try:
            return await self._control_http.post(
                control_url,
                json=message,
                headers=self.monitor_headers(authenticated=authenticated),
                timeout=self._timeout,
            )
        except httpx.ConnectError:
            raise ControlNotDeliveredError(f"control {kind!r}: connection to the call refused") from None
        except httpx.TimeoutException:
            raise UpstreamTimeoutError(f"control {kind!r}: no answer within {self._timeout:g} s") from None
        except httpx.TransportError as exc:
            raise UpstreamError(f"control {kind!r}: {type(exc).__name__}") from None


def _iso(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``, as Vapi writes ``createdAt``."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
