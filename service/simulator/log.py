"""The simulator's record of everything it sent and received, for tests to compare byte for byte."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

LogKind = Literal["rest", "webhook", "control", "listen", "call", "fault"]


@dataclass(slots=True)
class LogEntry:
    """One thing that happened.

    ``kind`` and the keys of ``data``:

    - ``rest``: ``method``, ``path``, ``status``, ``request`` (parsed JSON body or None), ``response``.
    - ``webhook``: ``type``, ``url``, ``headers`` (sent), ``body`` (the ``{"message": …}`` sent),
      ``sentAt`` (wall clock when the POST began; the entry's ``at`` is after the answer), ``status``
      (HTTP status or None), ``error`` (str or None), ``delivered`` (bool).
    - ``control``: ``status`` (answered), ``message`` (parsed JSON or None), ``raw`` (body as str), ``error``.
    - ``listen``: ``event`` (``connected``, ``refused``, ``closed``), ``index``, and per event ``status``,
      ``reason``, ``closeCode``, ``frames``, ``bytes``.
    - ``call``: ``event`` (``status``), ``status``, ``endedReason``.
    - ``fault``: ``fault`` (its name) and its settings.
    """

    seq: int
    at: float
    kind: LogKind
    call_id: str | None
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (camelCase) for ``GET /_sim/log``."""
        return {"seq": self.seq, "at": self.at, "kind": self.kind, "callId": self.call_id, "data": self.data}


@dataclass(slots=True)
class ListenRecord:
    """Everything sent on one listen connection, in order.

    With ``keep_audio`` every frame is kept (``bytes`` for binary frames, ``str`` for text frames);
    without it only text frames are kept, and audio is summarised by counts and a running SHA-256.
    """

    call_id: str
    index: int
    keep_audio: bool
    opened_at: float = field(default_factory=time.time)
    frames: list[bytes | str] = field(default_factory=list)
    audio_frames: int = 0
    audio_bytes: int = 0
    text_frames: int = 0
    first_frame_index: int | None = None
    closed_at: float | None = None
    close: str | None = None
    """How it ended: ``normal`` (1000), ``abort`` (no close frame), ``code`` (another close code),
    ``client`` (the client went away), ``shutdown`` (simulator stopping)."""
    close_code: int | None = None
    _sha256: Any = field(default_factory=hashlib.sha256)

    def add_audio(self, frame: bytes, index: int) -> None:
        """Record one binary frame (frame ``index`` of the call's timeline)."""
        if self.first_frame_index is None:
            self.first_frame_index = index
        self.audio_frames += 1
        self.audio_bytes += len(frame)
        self._sha256.update(frame)
        if self.keep_audio:
            self.frames.append(frame)

    def add_text(self, text: str) -> None:
        """Record one text frame."""
        self.text_frames += 1
        self.frames.append(text)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the audio bytes sent so far, in order."""
        return str(self._sha256.hexdigest())

    @property
    def audio(self) -> bytes:
        """All binary frames sent, concatenated (empty when audio is not kept)."""
        return b"".join(frame for frame in self.frames if isinstance(frame, bytes))

    @property
    def texts(self) -> list[str]:
        """All text frames sent, in order."""
        return [frame for frame in self.frames if isinstance(frame, str)]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (no audio bytes)."""
        return {
            "callId": self.call_id,
            "index": self.index,
            "openedAt": self.opened_at,
            "closedAt": self.closed_at,
            "close": self.close,
            "closeCode": self.close_code,
            "audioFrames": self.audio_frames,
            "audioBytes": self.audio_bytes,
            "textFrames": self.text_frames,
            "firstFrameIndex": self.first_frame_index,
            "sha256": self.sha256,
        }


class SimulatorLog:
    """Append-only log of entries plus the listen records of every call."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.listen: dict[str, list[ListenRecord]] = {}
        self._seq = 0

    def add(self, kind: LogKind, call_id: str | None, **data: Any) -> LogEntry:
        """Append an entry and return it."""
        self._seq += 1
        entry = LogEntry(seq=self._seq, at=time.time(), kind=kind, call_id=call_id, data=data)
        self.entries.append(entry)
        return entry

    def new_listen_record(self, call_id: str, *, keep_audio: bool) -> ListenRecord:
        """Open the record of a new listen connection of ``call_id`` (indices count from 0)."""
        records = self.listen.setdefault(call_id, [])
        record = ListenRecord(call_id=call_id, index=len(records), keep_audio=keep_audio)
        records.append(record)
        return record

    def select(self, *, kind: LogKind | None = None, call_id: str | None = None, after_seq: int = 0) -> list[LogEntry]:
        """Entries filtered by kind, call and sequence number."""
        return [
            entry
            for entry in self.entries
            if entry.seq > after_seq
            and (kind is None or entry.kind == kind)
            and (call_id is None or entry.call_id == call_id)
        ]

    def clear(self) -> None:
        """Forget everything logged so far (sequence numbers keep increasing)."""
        self.entries.clear()
        self.listen.clear()
