"""Analytics benchmark: the voice activity detector's CPU per recorded hour, and its agreement with the
script, for WebRTC's detector (``webrtcvad-wheels``, what the service runs) and Silero VAD (ONNX).

    python bench/analytics.py [--minutes 10] [--mode 2] [--threshold 0.5] [--json out.json]

The audio is the simulator's (``service.simulator.audio.FrameSource``: the customer's noise-like voice on
channel 0, the assistant's tone on channel 1, silence otherwise, 16 kHz stereo s16le), laid out by the
scripted call of ``tests/analytics/test_analytics_e2e.py`` (overlaps, barge-ins, 3 s of dead air), repeated
to ``--minutes``. Both detectors classify the same bytes in one invocation, one after the other, on one
thread each (onnxruntime with ``intra_op_num_threads = inter_op_num_threads = 1``), and their decisions go
through the same smoothing and counting (``service.analytics.activity.conversation``).

- **CPU s per recorded hour**: process CPU time (``time.process_time``, all threads) of classifying plus
  counting, per hour of stereo audio (both channels). Model loading is timed apart.
- **Agreement**: the one 14.5 s scripted call analysed alone, talk seconds per channel, overlap and
  longest silence against the script's truth (the e2e test's tolerance is 0.5 s), and the long audio's
  talk seconds against its truth.

Silero is optional and never a runtime dependency: ``pip install --no-deps silero-vad onnxruntime``
(the wheel ships ``silero_vad/data/silero_vad.onnx``; ``--no-deps`` skips torch, which only its Python
helpers need). Without it the Silero rows are skipped. Silero takes 512-sample windows at 16 kHz
(32 ms) with 64 samples of context and a recurrent state; both channels run as one batch of two. Its
probability per window becomes a decision for each 20 ms frame whose middle falls in the window
(``--threshold``, Silero's default 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.analytics.activity import FRAME_SECONDS, Conversation, Decision, conversation
from service.analytics.detector import ChannelDetector
from service.recordings.audio import extract_channel
from service.simulator.audio import FRAME_BYTES, SAMPLE_RATE, FrameSource, call_tag

# (role, at, duration) seconds: the scripted call of tests/analytics/test_analytics_e2e.py.
TURNS = (
    ("assistant", 0.0, 2.0),
    ("user", 1.5, 2.0),
    ("assistant", 6.5, 1.5),
    ("user", 7.5, 1.0),
    ("assistant", 9.0, 1.0),
    ("user", 11.0, 2.0),
    ("assistant", 12.0, 1.5),
)
CALL_SECONDS = 14.5
TRUTH = {"customer": 5.0, "assistant": 6.0, "overlap": 2.0, "longestSilence": 3.0}
BLOCK_SECONDS = 10.0  # as the service's detector reads recordings
FRAMES_PER_BLOCK = round(BLOCK_SECONDS / FRAME_SECONDS)

Detect = Callable[[bytes], tuple[list[Decision], list[Decision]]]


def scripted_audio(repeats: int) -> bytes:
    """``repeats`` back-to-back copies of the scripted call as the simulator would send it."""
    frames = FrameSource()
    tag = call_tag("bench-analytics")
    per_call = round(CALL_SECONDS / FRAME_SECONDS)
    out = bytearray()
    for index in range(per_call * repeats):
        t = (index % per_call) * FRAME_SECONDS + FRAME_SECONDS / 2
        talking = {role for role, at, duration in TURNS if at <= t < at + duration}
        out += frames.frame(tag, index, user="user" in talking, assistant="assistant" in talking)
    return bytes(out)


UTTERANCES = {  # what each side says with --espeak (repeated to fill each scripted turn)
    "assistant": "hello thanks for calling acme let me look that up found it yes I can do that",
    "user": "hi I have a problem with my order it is order four two can you refund it today",
}


def espeak_audio(repeats: int) -> bytes:
    """The scripted call with synthetic *speech* (``espeak-ng``, two voices) instead of the simulator's
    noise and tone: each turn is filled exactly with speech (leading and trailing silence trimmed, the
    sentence repeated as needed), silence elsewhere; 16 kHz stereo s16le, ``repeats`` times."""
    import io
    import shutil
    import wave

    import numpy as np

    if shutil.which("espeak-ng") is None:
        raise SystemExit("--espeak needs espeak-ng (apt-get install espeak-ng)")
    voices = {"user": "en-us+f3", "assistant": "en+m3"}
    speech: dict[str, Any] = {}
    for role, text in UTTERANCES.items():
        wav = subprocess.run(  # noqa: S603
            ["espeak-ng", "-v", voices[role], "-s", "165", "--stdout", text],  # noqa: S607
            capture_output=True,
            check=True,
        ).stdout
        with wave.open(io.BytesIO(wav)) as reader:
            rate = reader.getframerate()
            samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").astype(np.float32)
        loud = np.flatnonzero(np.abs(samples) > 64)
        samples = samples[loud[0] : loud[-1] + 1]
        at = np.arange(0, len(samples) / rate, 1 / SAMPLE_RATE)
        speech[role] = np.interp(at, np.arange(len(samples)) / rate, samples)
    per_call = round(CALL_SECONDS * SAMPLE_RATE)
    channels = np.zeros((2, per_call), dtype=np.float32)
    for role, at, duration in TURNS:
        start, length = round(at * SAMPLE_RATE), round(duration * SAMPLE_RATE)
        source = speech[role]
        filled = np.tile(source, -(-length // len(source)))[:length]
        channels[0 if role == "user" else 1, start : start + length] = filled
    stereo = np.empty(2 * per_call, dtype="<i2")
    stereo[0::2], stereo[1::2] = channels[0], channels[1]
    return stereo.tobytes() * repeats


def webrtc_detector(mode: int) -> Detect:
    detector = ChannelDetector(sample_rate=SAMPLE_RATE, channels=2, mode=mode)

    def detect(pcm: bytes) -> tuple[list[Decision], list[Decision]]:
        customer: list[Decision] = []
        assistant: list[Decision] = []
        block = FRAMES_PER_BLOCK * FRAME_BYTES
        for start in range(0, len(pcm), block):
            found = detector.classify(pcm[start : start + block])
            customer += found[0]
            assistant += found[1]
        return customer, assistant

    return detect


def silero_model_path() -> Path | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    import importlib.util

    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    return path if path.exists() else None


def silero_detector(model: Path, threshold: float) -> Detect:
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    window, context = 512, 64
    rate = np.array(SAMPLE_RATE, dtype=np.int64)

    def detect(pcm: bytes) -> tuple[list[Decision], list[Decision]]:
        channels = [
            np.frombuffer(extract_channel(pcm, channel, 2), dtype="<i2").astype(np.float32) / 32768.0
            for channel in (0, 1)
        ]
        samples = len(channels[0])
        padded = -(-samples // window) * window
        audio = np.zeros((2, context + padded), dtype=np.float32)
        audio[0, context : context + samples] = channels[0]
        audio[1, context : context + samples] = channels[1]
        state = np.zeros((2, 2, 128), dtype=np.float32)
        speech = np.empty((2, padded // window), dtype=bool)
        for n, start in enumerate(range(context, context + padded, window)):
            # Each window with the 64 samples before it (zeros before the first), as Silero's wrapper does.
            probability, state = session.run(
                None, {"input": audio[:, start - context : start + window], "state": state, "sr": rate}
            )
            speech[:, n] = probability[:, 0] > threshold
        frames = samples // (FRAME_BYTES // 4)
        middles = ((np.arange(frames) + 0.5) * FRAME_SECONDS * SAMPLE_RATE // window).astype(int)
        return [bool(v) for v in speech[0, middles]], [bool(v) for v in speech[1, middles]]

    return detect


@dataclass
class Row:
    detector: str
    load_seconds: float
    audio_seconds: float
    cpu_seconds: float
    wall_seconds: float
    cpu_seconds_per_hour: float
    call: dict[str, float]  # the one scripted call: measured
    call_errors: dict[str, float]  # measured - truth
    call_within_half_second: bool
    long_talk_errors: dict[str, float]  # the long audio: measured - truth, seconds per scripted call


def summary(found: Conversation) -> dict[str, float]:
    return {
        "customer": found.customer.talk_seconds,
        "assistant": found.assistant.talk_seconds,
        "overlap": found.overlap_seconds,
        "longestSilence": found.longest_silence_seconds,
    }


def measure(name: str, build: Callable[[], Detect], one_call: bytes, audio: bytes, repeats: int) -> Row:
    started = time.perf_counter()
    detect = build()
    load = time.perf_counter() - started
    call = summary(conversation(*detect(one_call)))
    errors = {key: round(call[key] - TRUTH[key], 2) for key in TRUTH}
    cpu, wall = time.process_time(), time.perf_counter()
    found = conversation(*detect(audio))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    seconds = len(audio) / FRAME_BYTES * FRAME_SECONDS
    long_errors = {
        side: round((getattr(found, side).talk_seconds - TRUTH[side] * repeats) / repeats, 3)
        for side in ("customer", "assistant")
    }
    return Row(
        name,
        round(load, 3),
        round(seconds, 1),
        round(cpu, 3),
        round(wall, 3),
        round(cpu / seconds * 3600, 2),
        call,
        errors,
        all(abs(error) <= 0.5 for error in errors.values()),
        long_errors,
    )


def print_table(rows: Sequence[Row]) -> None:
    print(
        f"{'detector':<22} {'load s':>7} {'CPU s/rec-hour':>15} {'x webrtc':>9} "
        f"{'cust talk':>10} {'asst talk':>10} {'overlap':>8} {'longest':>8} {'<=0.5 s':>8}"
    )
    print(
        f"{'script (truth)':<22} {'':>7} {'':>15} {'':>9} {TRUTH['customer']:>10} {TRUTH['assistant']:>10} "
        f"{TRUTH['overlap']:>8} {TRUTH['longestSilence']:>8}"
    )
    base = rows[0].cpu_seconds_per_hour
    for row in rows:
        c = row.call
        print(
            f"{row.detector:<22} {row.load_seconds:>7} {row.cpu_seconds_per_hour:>15} "
            f"{row.cpu_seconds_per_hour / base:>9.1f} {c['customer']:>10} {c['assistant']:>10} "
            f"{c['overlap']:>8} {c['longestSilence']:>8} {'yes' if row.call_within_half_second else 'NO':>8}"
        )
    for row in rows:
        print(
            f"  {row.detector}: {row.audio_seconds} s of stereo audio in {row.cpu_seconds} s CPU "
            f"({row.wall_seconds} s wall); long audio talk error per scripted call: {row.long_talk_errors}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="recorded audio to classify (default 10)")
    parser.add_argument("--mode", type=int, default=2, help="WebRTC aggressiveness 0-3 (the service's default 2)")
    parser.add_argument("--threshold", type=float, default=0.5, help="Silero speech probability threshold")
    parser.add_argument("--espeak", action="store_true", help="also the same script spoken by espeak-ng")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()

    repeats = max(1, round(args.minutes * 60 / CALL_SECONDS))
    model = silero_model_path()
    if model is None:
        print("silero-vad or onnxruntime not installed: pip install --no-deps silero-vad onnxruntime", file=sys.stderr)
    sources: dict[str, Callable[[int], bytes]] = {"simulator audio (noise / tone)": scripted_audio}
    if args.espeak:
        sources["espeak-ng speech"] = espeak_audio
    rows: dict[str, list[Row]] = {}
    for title, make in sources.items():
        one_call, audio = make(1), make(repeats)
        found = rows[title] = [
            measure(f"webrtcvad mode {args.mode}", lambda: webrtc_detector(args.mode), one_call, audio, repeats)
        ]
        if model is not None:
            name = f"silero {model.name} t={args.threshold}"
            found.append(measure(name, lambda: silero_detector(model, args.threshold), one_call, audio, repeats))
        print(f"\n{title}: {args.minutes} min, the scripted call of {CALL_SECONDS} s repeated")
        print_table(found)
    load = os.getloadavg()
    print(f"load average before the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    if args.json:
        report: dict[str, Any] = {
            "rows": {title: [asdict(row) for row in found] for title, found in rows.items()},
            "minutes": args.minutes,
            "load": load,
            "machine": platform.platform(),
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
