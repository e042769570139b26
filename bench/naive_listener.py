"""Baseline listeners for ``bench/listen.py``, run as their own process.

Two modes, both on a bare ``websockets`` client with Switchboard's connect settings (``max_size``, and
no permessage-deflate: Switchboard does not offer it on listen sockets, PCM barely compresses):

- ``naive`` — the seed note's approach: keep the whole call in memory, ``buf = buf + frame`` for every
  binary frame (a copy of everything so far, like Node's ``Buffer.concat``), write the file on close.
- ``floor`` — the least a Python listener can do: ``os.write`` each binary frame to the call's file.

Protocol on stdin/stdout (one line each): it prints ``ready`` once imported; then reads lines
``<call id> <listen url>`` and starts listening to each at once; the line ``end`` means no more calls.
When every call is closed and written it prints ``done <json>`` (per call: bytes written, seconds from the
connection's start to the file being complete, time finished) and waits for stdin to close, so that the
benchmark can read its CPU time and peak memory from /proc before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

Mode = Literal["naive", "floor"]
MAX_FRAME_BYTES = 1 << 20


async def listen_naive(url: str, path: Path) -> int:
    buf = b""
    async with connect(url, max_size=MAX_FRAME_BYTES, compression=None, user_agent_header="bench-naive") as socket:
        try:
            async for message in socket:
                if isinstance(message, bytes):
                    buf = buf + message  # the whole call so far, copied on every frame
        except ConnectionClosedError:
            pass
    await asyncio.to_thread(path.write_bytes, buf)  # one write of the whole call, off the loop
    return len(buf)


async def listen_floor(url: str, path: Path) -> int:
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        async with connect(url, max_size=MAX_FRAME_BYTES, compression=None, user_agent_header="bench-floor") as socket:
            try:
                async for message in socket:
                    if isinstance(message, bytes):
                        written += os.write(fd, message)
            except ConnectionClosedError:
                pass
    finally:
        os.close(fd)
    return written


async def listen_one(mode: Mode, call_id: str, url: str, out: Path, results: dict[str, dict[str, Any]]) -> None:
    started = time.monotonic()
    path = out / f"{call_id}.pcm"
    entry: dict[str, Any] = {"path": str(path), "bytes": 0, "error": None}
    results[call_id] = entry
    try:
        entry["bytes"] = await (listen_naive(url, path) if mode == "naive" else listen_floor(url, path))
    except Exception as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
    entry["seconds"] = round(time.monotonic() - started, 3)
    entry["finishedAt"] = time.time()


async def main_async(mode: Mode, out: Path) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    results: dict[str, dict[str, Any]] = {}
    tasks: set[asyncio.Task[None]] = set()
    print("ready", flush=True)
    while line := (await reader.readline()).decode().strip():
        if line == "end":
            break
        call_id, url = line.split(maxsplit=1)
        tasks.add(asyncio.create_task(listen_one(mode, call_id, url, out, results), name=f"listen:{call_id}"))
    await asyncio.gather(*tasks)
    print("done " + json.dumps(results), flush=True)
    while await reader.read(4096):  # wait for the benchmark to close stdin
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["naive", "floor"], required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for the recordings")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main_async(args.mode, args.out))
    else:
        asyncio.run(main_async(args.mode, args.out))


if __name__ == "__main__":
    main()
