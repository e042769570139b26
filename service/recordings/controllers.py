"""Recording metadata and downloads (PCM, WAV, one channel, byte ranges), streamed."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal
from urllib.parse import quote

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Stream

from service.auth import scoped
from service.calls.controllers import CallTypeFilter, EndedReasonFilter, PhoneNumberIdFilter
from service.calls.ids import CallIdPath
from service.calls.service import CallFilters, metadata_filters
from service.db.models import Call, Recording, VapiRecording
from service.errors import DomainError
from service.pagination import Cursor, Limit
from service.recordings.audio import RangeNotSatisfiableError, parse_range
from service.recordings.schemas import Gap, RecordingListItem, RecordingOut, RecordingPage, SegmentOut, VapiCopyOut
from service.recordings.service import Download, RecordingService, RecordingView

Recordings = NamedDependency[RecordingService]
RecordingStatusFilter = Literal["recording", "completed", "partial", "failed"]

CHANNELS = {"customer": 0, "assistant": 1}
Channel = Annotated[
    Literal["customer", "assistant"] | None,
    QueryParameter(description="One mono channel: customer (0) or assistant (1)"),
]


class RangeError(DomainError):
    status_code = 416
    slug = "range-not-satisfiable"
    title = "Range not satisfiable"

    def __init__(self, total: int) -> None:
        super().__init__(f"the file has {total} bytes", contentRange=f"bytes */{total}")
        self.headers = {"Content-Range": f"bytes */{total}"}  # RFC 9110 §15.5.17


def stored_bytes(recording: Recording, raw_bytes: int) -> int:
    """Bytes at rest: the archive's size, or the raw PCM's."""
    return recording.stored_bytes if recording.stored_bytes is not None else raw_bytes


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def content_disposition(filename: str) -> str:
    """``attachment`` with a plain-ASCII ``filename`` (anything else replaced by ``_``: no quote or line
    break can end the header) and the exact name as RFC 6266 / 8187 ``filename*``."""
    plain = _UNSAFE_FILENAME.sub("_", filename)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def recording_out(call_id: str, view: RecordingView) -> RecordingOut:
    recording = view.recording
    return RecordingOut(
        call_id=call_id,
        status=recording.status,
        encoding=recording.encoding,
        sample_rate=recording.sample_rate,
        channels=recording.channels,
        bytes=view.bytes,
        duration_seconds=view.duration_seconds,
        sha256=recording.sha256,
        gaps=[Gap(gap["atSeconds"], gap["durationSeconds"], gap["reason"]) for gap in recording.gaps],
        segments=[
            SegmentOut(
                index=segment.index,
                bytes=extent.bytes,
                status=segment.status,
                started_at=segment.started_at,
                ended_at=segment.ended_at,
            )
            for segment, extent in zip(recording.segments, view.extents, strict=True)
        ],
        format=recording.format,
        stored_bytes=stored_bytes(recording, view.bytes),
        error=recording.error,
        started_at=recording.started_at,
        completed_at=recording.completed_at,
    )


def vapi_copy_out(copy: VapiRecording | None) -> VapiCopyOut | None:
    if copy is None:
        return None
    return VapiCopyOut(
        status=copy.status,
        bytes=copy.bytes,
        sha256=copy.sha256,
        content_type=copy.content_type,
        attempts=copy.attempts,
        error=copy.error,
        stored_at=copy.stored_at,
    )


def no_recording_out(call_id: str) -> RecordingOut:
    """A call with nothing recorded yet (not answered, or its listen socket not reached)."""
    return RecordingOut(
        call_id=call_id,
        status="none",
        encoding="pcm_s16le",
        sample_rate=0,
        channels=0,
        bytes=0,
        duration_seconds=0.0,
        sha256=None,
        gaps=[],
        segments=[],
        format="pcm",
        stored_bytes=0,
        error=None,
        started_at=None,
        completed_at=None,
    )


def ranged_stream(download: Download, range_header: str | None, *, media_type: str, filename: str) -> Stream:
    total = download.total
    try:
        selected = parse_range(range_header, total)
    except RangeNotSatisfiableError:
        raise RangeError(total) from None
    start, end = selected or (0, total)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start),
        "Content-Disposition": content_disposition(filename),
    }
    if selected:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
    return Stream(
        download.stream(start, end), media_type=media_type, headers=headers, status_code=206 if selected else 200
    )


class RecordingController(Controller):
    path = "/v1/calls/{call_id:str}"
    tags = ["recordings"]
    opt = {"scope": "recordings:read"}
    security = [{"apiKey": ["recordings:read"]}]

    @get("/recording", operation_id="getRecording", summary="A call's recording: status, format, gaps")
    async def get_recording(self, call_id: CallIdPath, recordings: Recordings) -> RecordingOut:
        view = await recordings.describe(call_id)
        out = recording_out(call_id, view) if view is not None else no_recording_out(call_id)
        out.vapi_copy = vapi_copy_out(await recordings.vapi_copy(call_id))
        return out

    @get(
        "/recording/vapi",
        operation_id="downloadVapiRecording",
        summary="Switchboard's copy of Vapi's stereo recording, byte for byte as Vapi served it (Range supported)",
        description="Downloaded after the end-of-call report (Vapi deletes its own after 14 days); 404 until stored.",
        media_type="audio/wav",
    )
    async def download_vapi(
        self, request: Request[Any, Any, Any], call_id: CallIdPath, recordings: Recordings
    ) -> Stream:
        download, media_type = await recordings.vapi_file_download(call_id)
        return ranged_stream(
            download, request.headers.get("range"), media_type=media_type, filename=f"{call_id}-vapi.wav"
        )

    @get(
        "/recording.pcm",
        operation_id="downloadRecordingPcm",
        summary="The raw PCM received, in order (Range supported)",
        media_type="audio/L16",
    )
    async def download_pcm(
        self,
        request: Request[Any, Any, Any],
        call_id: CallIdPath,
        recordings: Recordings,
    ) -> Stream:
        download = await recordings.pcm_download(call_id)
        return ranged_stream(
            download, request.headers.get("range"), media_type="application/octet-stream", filename=f"{call_id}.pcm"
        )

    @get(
        "/recording.wav",
        operation_id="downloadRecordingWav",
        summary="The recording as WAV, gaps filled with silence (Range supported)",
        description=(
            "`?start=&end=` (seconds, decimals allowed) serve that stretch of the recording as a WAV of its own "
            "(`offsetSeconds` of a search result plays the utterance); `Range` then applies to that file."
        ),
        media_type="audio/wav",
    )
    async def download_wav(
        self,
        request: Request[Any, Any, Any],
        call_id: CallIdPath,
        recordings: Recordings,
        channel: Channel = None,
        start: Annotated[float | None, QueryParameter(ge=0, description="Only from this second (decimals)")] = None,
        end: Annotated[float | None, QueryParameter(gt=0, description="Only up to this second (decimals)")] = None,
        fill: Annotated[
            Literal["vapi"] | None,
            QueryParameter(
                description="vapi: gaps filled from Switchboard's copy of Vapi's recording, aligned byte for byte "
                "(409 when it is missing, in another format or does not align)"
            ),
        ] = None,
    ) -> Stream:
        channel_index = CHANNELS[channel] if channel else None
        download = await recordings.wav_download(
            call_id, channel=channel_index, start=start, end=end, fill_vapi=fill == "vapi"
        )
        suffix = f"-{channel}" if channel else ""
        return ranged_stream(
            download, request.headers.get("range"), media_type="audio/wav", filename=f"{call_id}{suffix}.wav"
        )

    @get(
        "/recording.flac",
        operation_id="downloadRecordingFlac",
        summary="The lossless archive, as stored (Range supported; 404 while the recording is kept raw)",
        media_type="audio/flac",
    )
    async def download_flac(
        self,
        request: Request[Any, Any, Any],
        call_id: CallIdPath,
        recordings: Recordings,
    ) -> Stream:
        download = await recordings.flac_download(call_id)
        return ranged_stream(
            download, request.headers.get("range"), media_type="audio/flac", filename=f"{call_id}.flac"
        )

    @get(
        "/recording.ogg",
        operation_id="downloadRecordingOgg",
        summary="A small listening copy (Opus, gaps as silence), made on the first request and kept",
        description="Lossy: for browsers and players, not for analysis. 409 while the call is still recorded.",
        media_type="audio/ogg",
    )
    async def download_ogg(
        self,
        request: Request[Any, Any, Any],
        call_id: CallIdPath,
        recordings: Recordings,
    ) -> Stream:
        download = await recordings.ogg_download(call_id)
        return ranged_stream(download, request.headers.get("range"), media_type="audio/ogg", filename=f"{call_id}.ogg")


def recording_item(recording: Recording, call: Call) -> RecordingListItem:
    return RecordingListItem(
        call_id=call.id,
        status=recording.status,
        encoding=recording.encoding,
        sample_rate=recording.sample_rate,
        channels=recording.channels,
        bytes=recording.bytes,
        duration_seconds=recording.seconds(recording.bytes),
        sha256=recording.sha256,
        gaps=[Gap(gap["atSeconds"], gap["durationSeconds"], gap["reason"]) for gap in recording.gaps],
        format=recording.format,
        stored_bytes=stored_bytes(recording, recording.bytes),
        started_at=recording.started_at,
        completed_at=recording.completed_at,
        assistant_id=call.assistant_id,
        customer=call.customer or {},
        metadata=call.call_metadata or {},
    )


@get(
    "/v1/recordings",
    operation_id="listRecordings",
    summary="Recordings across calls, newest first",
    description="Also filters on call metadata: metadata.<key>=<value> (repeatable).",
    tags=["recordings"],
    **scoped("recordings:read"),
)
async def list_recordings(
    request: Request[Any, Any, Any],
    recordings: Recordings,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: Annotated[RecordingStatusFilter | None, QueryParameter(description="Recording status")] = None,
    assistant_id: Annotated[str | None, QueryParameter(name="assistantId")] = None,
    customer_number: Annotated[str | None, QueryParameter(name="customerNumber")] = None,
    min_duration_seconds: Annotated[float | None, QueryParameter(name="minDurationSeconds", ge=0)] = None,
    created_after: Annotated[dt.datetime | None, QueryParameter(name="createdAfter")] = None,
    created_before: Annotated[dt.datetime | None, QueryParameter(name="createdBefore")] = None,
    ended_reason: EndedReasonFilter = None,
    phone_number_id: PhoneNumberIdFilter = None,
    call_type: CallTypeFilter = None,
) -> RecordingPage:
    filters = CallFilters(
        assistant_id=assistant_id,
        customer_number=customer_number,
        created_after=created_after,
        created_before=created_before,
        metadata=metadata_filters(request.query_params),
        ended_reason=ended_reason,
        phone_number_id=phone_number_id,
        type=call_type,
    )
    rows, next_cursor = await recordings.search(
        filters, status=status, min_duration_seconds=min_duration_seconds, limit=limit, cursor=cursor
    )
    return RecordingPage(data=[recording_item(recording, call) for recording, call in rows], next_cursor=next_cursor)
