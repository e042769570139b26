"""Archiving cost: CPU seconds per recorded hour and the FLAC size ratio (issue 14).

    python bench/archive.py                               # 10 recordings of 60 s per audio kind
    python bench/archive.py --recordings 200 --seconds 600  # the issue's 200 ten-minute recordings

Each run makes a temporary SQLite database and recordings folder, writes finished recordings through
``RecordingService`` (as listen sessions do), then times ``Archiver.archive_all`` — encode, decode to
verify the SHA-256, upload, delete the raw segments — in this process (``time.process_time``: every
thread's CPU, libsndfile's included). Two kinds of stereo 16 kHz audio, conversation-shaped (the two
sides take turns, with pauses):

- ``simulator``: the Vapi simulator's frames (noise under a syllable envelope for the customer, a tone for
  the assistant, digital silence between turns): what the tests record; its silence flatters FLAC.
- ``speechlike``: harmonic "voiced" sound on a gliding pitch under a syllable envelope, and a telephone
  noise floor (sigma 30 LSB, about -60 dBFS) on both channels all the time: closer to a real call.

Figures vary with the machine's load: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.db.engine import Database
from service.db.migrate import upgrade
from service.db.models import Call, utcnow
from service.lifecycle.archive import Archiver
from service.logging import configure_logging
from service.recordings.service import RecordingService
from service.recordings.storage import LocalStorage
from service.simulator.audio import FRAME_BYTES, FrameSource, call_tag

RATE = 16_000
CHUNK_SECONDS = 1.0


def _turns(seconds: float, rng: random.Random) -> list[tuple[float, float, int]]:
    """(start, end, speaker) turns: 2-7 s each, 0.3-1.5 s pauses, sides alternating."""
    turns, t, speaker = [], 0.5, rng.randint(0, 1)
    while t < seconds:
        length = rng.uniform(2.0, 7.0)
        turns.append((t, min(seconds, t + length), speaker))
        t += length + rng.uniform(0.3, 1.5)
        speaker ^= 1
    return turns


def simulator_audio(seconds: float, seed: int) -> bytes:
    frames = FrameSource(seed)
    tag = call_tag(f"bench-{seed}")
    turns = _turns(seconds, random.Random(seed))
    out = bytearray()
    for index in range(int(seconds / 0.02)):
        t = index * 0.02
        speaking = {speaker for start, end, speaker in turns if start <= t < end}
        out += frames.frame(tag, index, user=0 in speaking, assistant=1 in speaking)
    assert len(out) % FRAME_BYTES == 0
    return bytes(out)


def speechlike_audio(seconds: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    channels = [rng.normal(0.0, 30.0, n) for _ in range(2)]  # the line's noise floor, always there
    for start, end, speaker in _turns(seconds, random.Random(seed)):
        span = slice(int(start * RATE), int(end * RATE))
        tt = t[span] - start
        f0 = (110.0 if speaker else 180.0) * (1 + 0.15 * np.sin(2 * math.pi * 0.7 * tt))
        phase = 2 * math.pi * np.cumsum(f0) / RATE
        voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
        syllables = np.clip(np.sin(2 * math.pi * 4.0 * tt + rng.uniform(0, 6)), 0, None) ** 0.6
        channels[speaker][span] += 2500 * voiced * syllables
    stereo = np.clip(np.stack(channels, axis=1), -32768, 32767).astype("<i2")
    return stereo.tobytes()


async def _seed(db: Database, storage: LocalStorage, count: int, audio: bytes) -> None:
    recordings = RecordingService(db, storage)
    step = int(CHUNK_SECONDS * RATE) * 4
    for i in range(count):
        call_id = f"bench-{i:04d}"
        async with db.write() as session:
            session.add(Call(id=call_id, status="ended", customer={}, call_metadata={}, ended_at=utcnow()))
        segment = await recordings.open_segment(
            call_id, sample_rate=RATE, channels=2, gap_seconds=None, gap_reason="bench"
        )
        writer = await storage.open_writer(segment.key)
        for start in range(0, len(audio), step):  # as a listen session writes: about a second at a time
            await writer.write(audio[start : start + step])
        await writer.close()
        await recordings.close_segment(segment, size=len(audio), sha256=hashlib.sha256(audio).hexdigest())
        await recordings.finalize(call_id)


async def _run(kind: str, make: Callable[[float, int], bytes], count: int, seconds: float) -> None:
    audio = make(seconds, 7)
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-archive-") as folder:
        url = f"sqlite+aiosqlite:///{folder}/bench.db"
        await asyncio.to_thread(upgrade, url)
        db, storage = Database(url), LocalStorage(Path(folder) / "recordings")
        try:
            await _seed(db, storage, count, audio)
            raw = count * len(audio)
            wall, cpu = time.perf_counter(), time.process_time()
            done, failed = await Archiver(db, storage).archive_all()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            stored = sum(p.stat().st_size for p in (Path(folder) / "recordings").rglob("*.flac"))
        finally:
            await db.dispose()
    hours = count * seconds / 3600
    print(
        f"{kind:<11} {done:>4} archived ({failed} failed)  {hours:6.2f} h recorded  "
        f"raw {raw / 1e6:9.1f} MB  flac {stored / 1e6:9.1f} MB  ratio {stored / raw:5.3f}  "
        f"CPU {cpu:7.1f} s = {cpu / hours:6.1f} s per recorded hour  wall {wall:6.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each recording")
    parser.add_argument("--audio", choices=["simulator", "speechlike", "both"], default="both")
    args = parser.parse_args()
    configure_logging("warning")  # one line per recording archived otherwise
    kinds = {"simulator": simulator_audio, "speechlike": speechlike_audio}
    for kind, make in kinds.items():
        if args.audio in (kind, "both"):
            asyncio.run(_run(kind, make, args.recordings, args.seconds))


if __name__ == "__main__":
    main()
