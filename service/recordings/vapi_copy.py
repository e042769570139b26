"""Vapi's own recording, kept (contract section 10): after the end-of-call report, Switchboard downloads
Vapi's stereo recording into its storage, byte for byte, under ``<call id>/vapi/stereo.wav``.

Vapi deletes its recordings after 14 days, and its artifact URLs expire sooner. The download is durable:
:class:`VapiCopyMarker`, subscribed to call changes, inserts a ``pending`` ``vapi_recording`` row in the
transaction that stores the report (with ``artifact.stereoRecordingUrl``); :class:`VapiCopyWorker` (owned
by the lifespan) claims due rows, downloads, and marks them ``stored``, or tries again later with backoff
(``failed`` after :data:`MAX_ATTEMPTS`). A row claimed by a replica that died is claimed again when its
lease lapses; pending rows left by a restart are picked up at start-up.

The artifact URL is tried first; when it is refused (expired: 4xx) or absent, Vapi's
``GET /call/{id}/stereo-recording``. Downloads from the host of ``SWITCHBOARD_VAPI_BASE_URL`` are always
allowed; other URLs pass the outbound-webhook address check (private addresses refused unless allowed).
Erasure removes the copy with the call's storage prefix; the row goes with the call (foreign key).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.calls.changes import AfterCommit, CallChange
from service.db.engine import Database
from service.db.models import VapiRecording, utcnow
from service.outbound_urls import UnsafeUrlError, check_webhook_url
from service.recordings.storage import RecordingStorage
from service.tasks import TaskOwner, run_claim_loop
from service.vapi.client import VapiClient

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 8
# Downloads in flight. The HTTP client reads a response from the socket as fast as the network
# delivers it, not as fast as it is written to storage, so on a fast link each download holds hundreds
# of kilobytes, up to the whole file (1.3 MB for a 20 s call). With 20 calls ending together, four at a
# time peaked 1.4 MB higher than two (bench/listen.py --burst). Two keep a slow link busy; the copy is
# a background job with days to finish.
DOWNLOADS_AT_ONCE = 2
FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 3600.0


def copy_key(call_id: str) -> str:
    """Where the copy is stored: under the call's prefix, so that erasure removes it with the rest."""
    return f"{call_id}/vapi/stereo.wav"


def retry_delay(attempts: int, *, first: float = FIRST_RETRY_SECONDS) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: doubling, capped."""
    return float(min(first * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS))


def stereo_url(payload: object) -> str | None:
    """``artifact.stereoRecordingUrl`` of an end-of-call report (as stored in the timeline)."""
    artifact = payload.get("artifact") if isinstance(payload, dict) else None
    url = artifact.get("stereoRecordingUrl") if isinstance(artifact, dict) else None
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


class VapiCopyMarker:
    """Subscribes to call changes: a stored end-of-call report leaves a pending download behind."""

    def __init__(self, wake: AfterCommit) -> None:
        self._wake = wake

    async def stage(self, session: AsyncSession, change: CallChange) -> AfterCommit | None:
        reports = [e for e in change.events if e.source == "vapi" and e.type == "end-of-call-report"]
        if not reports:
            return None
        row = await session.get(VapiRecording, change.call_id)
        url = stereo_url(reports[-1].payload)
        if row is None:
            session.add(VapiRecording(call_id=change.call_id, status="pending", url=url, attempts=0))
        elif row.status != "stored":  # a later report (a redelivery, a new URL): try again with it
            row.status, row.url, row.next_attempt_at = "pending", url or row.url, utcnow()
        return self._wake


@dataclass(frozen=True, slots=True)
class Claimed:
    call_id: str
    url: str | None
    attempts: int


class DownloadError(Exception):
    """A download that did not work; ``expired``: the URL was refused, Vapi's endpoint may still work."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class VapiCopyWorker:
    """Downloads pending copies until closed (``start()`` / ``close(timeout)`` in the app's lifespan)."""

    def __init__(
        self,
        db: Database,
        storage: RecordingStorage,
        http: httpx.AsyncClient,
        vapi: VapiClient,
        *,
        allow_private: bool,
        timeout: float = 120.0,
        first_retry_seconds: float = FIRST_RETRY_SECONDS,
        poll_interval: float = 5.0,
        concurrency: int = DOWNLOADS_AT_ONCE,
    ) -> None:
        self._db = db
        self._storage = storage
        self._http = http
        self._vapi = vapi
        self._allow_private = allow_private
        self._vapi_host = urlsplit(vapi.base_url).hostname
        self._timeout = timeout
        self._first_retry = first_retry_seconds
        self._lease = dt.timedelta(seconds=timeout * 2)
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._claimer = TaskOwner("vapi-copies")
        self._downloads = TaskOwner("vapi-copy", limit=concurrency, on_done=self._wake.set)
        self._closing = False

    def wake(self) -> None:
        """Look for due downloads now (after a transaction that stored an end-of-call report)."""
        self._wake.set()

    async def start(self) -> None:
        self._claimer.spawn(self._run(), name="claim")

    async def close(self, timeout: float) -> None:
        """Claim nothing more; a download cut short is claimed again after its lease."""
        self._closing = True
        self._wake.set()
        await self._claimer.close(timeout)
        await self._downloads.close(timeout)

    async def _run(self) -> None:
        await run_claim_loop(
            "vapi recording",
            workers=self._downloads,
            wake=self._wake,
            poll_interval=self._poll_interval,
            closing=lambda: self._closing,
            claim=self._claim,
            work=lambda copy: (self._download(copy), copy.call_id),
            next_due_in=self._next_due_in,
        )

    async def _next_due_in(self) -> float | None:
        async with self._db.read() as session:
            due: dt.datetime | None = await session.scalar(
                select(func.min(VapiRecording.next_attempt_at)).where(VapiRecording.status == "pending")
            )
        return None if due is None else (due - utcnow()).total_seconds()

    async def _claim(self, limit: int) -> list[Claimed]:
        now = utcnow()
        async with self._db.write() as session:
            rows = (
                await session.scalars(
                    select(VapiRecording)
                    .where(VapiRecording.status == "pending", VapiRecording.next_attempt_at <= now)
                    .order_by(VapiRecording.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            claimed = [Claimed(row.call_id, row.url, row.attempts + 1) for row in rows]
            if claimed:
                await session.execute(
                    update(VapiRecording)
                    .where(VapiRecording.call_id.in_([copy.call_id for copy in claimed]))
                    .values(attempts=VapiRecording.attempts + 1, next_attempt_at=now + self._lease)
                    .execution_options(synchronize_session=False)
                )
        return claimed

    async def _download(self, copy: Claimed) -> None:
        key = copy_key(copy.call_id)
        try:
            try:
                if copy.url is None:
                    raise DownloadError("the report named no stereoRecordingUrl", expired=True)
                await self._check(copy.url)
                size, digest, content_type = await self._fetch(copy.url, {}, key)
            except DownloadError as exc:
                if not exc.expired:
                    raise
                url, headers = self._vapi.stereo_recording(copy.call_id)
                size, digest, content_type = await self._fetch(url, headers, key)
        except Exception as exc:
            await self._failed(copy, f"{type(exc).__name__}: {exc}" if not isinstance(exc, DownloadError) else str(exc))
            return
        async with self._db.write() as session:
            await session.execute(
                update(VapiRecording)
                .where(VapiRecording.call_id == copy.call_id)
                .values(
                    status="stored",
                    storage_key=key,
                    bytes=size,
                    sha256=digest,
                    content_type=content_type,
                    error=None,
                    stored_at=utcnow(),
                )
            )
        log.info("vapi recording stored", call_id=copy.call_id, bytes=size, attempts=copy.attempts)

    async def _check(self, url: str) -> None:
        if urlsplit(url).hostname == self._vapi_host:
            return  # Vapi itself (or its stand-in) is always allowed
        try:
            await check_webhook_url(url, allow_private=self._allow_private)
        except UnsafeUrlError as exc:
            raise DownloadError(f"refused the recording URL: {exc}", expired=True) from None

    async def _fetch(self, url: str, headers: dict[str, str], key: str) -> tuple[int, str, str | None]:
        """Stream ``url`` into ``key`` (replacing a partial earlier attempt); size, SHA-256, content type."""
        try:
            async with asyncio.timeout(self._timeout):  # the whole download: httpx's timeout bounds each read
                return await self._stream_into(url, headers, key)
        except TimeoutError:  # within the claim's lease (two tries of the timeout): never two at once
            raise DownloadError(f"GET {urlsplit(url).path} did not finish within {self._timeout:g} s") from None

    async def _stream_into(self, url: str, headers: dict[str, str], key: str) -> tuple[int, str, str | None]:
        digest = hashlib.sha256()
        size = 0
        async with self._http.stream(
            "GET", url, headers=headers, timeout=self._timeout, follow_redirects=True
        ) as response:
            if response.status_code >= 400:
                # A refused artifact URL (expired, 403/404/410): Vapi's own endpoint may still have it.
                raise DownloadError(f"GET {urlsplit(url).path} answered {response.status_code}", expired=True)
            await self._storage.delete(key)
            writer = await self._storage.open_writer(key)
            try:
                async for chunk in response.aiter_bytes(65536):
                    digest.update(chunk)
                    size += len(chunk)
                    await writer.write(chunk)
            finally:
                await writer.close()
            return size, digest.hexdigest(), response.headers.get("content-type")

    async def _failed(self, copy: Claimed, error: str) -> None:
        final = copy.attempts >= MAX_ATTEMPTS
        next_at = utcnow() + dt.timedelta(seconds=retry_delay(copy.attempts, first=self._first_retry))
        async with self._db.write() as session:
            await session.execute(
                update(VapiRecording)
                .where(VapiRecording.call_id == copy.call_id, VapiRecording.status == "pending")
                .values(status="failed" if final else "pending", error=error, next_attempt_at=next_at)
            )
        log.warning("vapi recording download failed", call_id=copy.call_id, attempts=copy.attempts, error=error)


async def describe(session: AsyncSession, call_id: str) -> VapiRecording | None:
    """The call's Vapi copy (or its pending download), if the call has one."""
    return await session.get(VapiRecording, call_id)
