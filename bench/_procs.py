"""Child processes for benchmarks: started in their own session, tied to our life, measured from /proc.

Every child gets ``PR_SET_PDEATHSIG`` = SIGTERM, so that it goes away even if the benchmark is killed with
SIGKILL; on a normal exit or Ctrl-C :class:`ProcessGroup` terminates each child it started (SIGTERM, then
SIGKILL after a grace period) and waits for it. Figures come from ``/proc/<pid>/stat`` and
``/proc/<pid>/status`` (Linux only), so no dependency is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM us when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU seconds (user + system) and memory of a process and its descendants at one moment (summed:
    ``serve --workers N`` is a supervisor and N workers), and the CPU seconds of each process."""

    cpu_seconds: float
    rss_bytes: int
    peak_rss_bytes: int
    cpu_by_pid: dict[int, float] = field(default_factory=dict)


def _stat_fields(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: fields are counted after the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, their children…), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def usage(pid: int) -> Usage:
    """CPU time and RSS / peak RSS (VmHWM) of a live process and its descendants, summed (a peak is
    each process's own, so their sum is an upper bound of the tree's peak)."""
    cpu: dict[int, float] = {}
    rss = peak = 0
    for one in [pid, *descendants(pid)]:
        try:
            fields = _stat_fields(one)
            status = Path(f"/proc/{one}/status").read_text()
        except OSError:
            if one == pid:
                raise
            continue  # a descendant that just ended
        cpu[one] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key == "VmRSS":
                rss += int(value.split()[0]) * 1024
            elif key == "VmHWM":
                peak += int(value.split()[0]) * 1024
    return Usage(sum(cpu.values()), rss, peak, cpu)


class Child:
    """One started child process."""

    def __init__(
        self,
        name: str,
        process: asyncio.subprocess.Process,
        log_path: Path | None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def usage(self) -> Usage:
        return usage(self.pid)

    def alive(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the child's stderr log (for error messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self, grace: float = 15.0) -> int | None:
        """``stop_signal`` (SIGTERM), then SIGKILL after ``grace`` seconds; wait for the exit, return its code."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(self.stop_signal)
            try:
                async with asyncio.timeout(grace):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        return self.process.returncode


class ProcessGroup:
    """Owns every child a benchmark starts; ``async with`` stops them all (last started first)."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._children: list[Child] = []
        self._logs: list[IO[bytes]] = []

    async def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        pipes: bool = False,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> Child:
        """Start ``argv``; stderr goes to ``<log_dir>/<name>.log``; ``pipes``: stdin/stdout are pipes."""
        log_path = self._log_dir / f"{name}.log"
        log = log_path.open("wb")
        self._logs.append(log)
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if pipes else log,
            stderr=log,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
            preexec_fn=_die_with_parent,  # only prctl between fork and exec
        )
        child = Child(name, process, log_path, stop_signal)
        self._children.append(child)
        return child

    async def stop(self, child: Child) -> int | None:
        code = await child.stop()
        if child in self._children:
            self._children.remove(child)
        return code

    async def aclose(self) -> None:
        while self._children:
            child = self._children.pop()
            # Shielded: a second Ctrl-C must not leave a child behind half-stopped.
            await asyncio.shield(child.stop())
        for log in self._logs:
            log.close()
        self._logs.clear()

    async def __aenter__(self) -> ProcessGroup:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


class BenchError(Exception):
    """The benchmark could not run (a process did not start, a deadline passed, a request failed…)."""


def switchboard_argv(*args: str) -> list[str]:
    """The ``switchboard`` command of this interpreter's environment (or ``python -m service.cli``)."""
    script = Path(sys.executable).parent / "switchboard"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "service.cli", *args]


async def wait_http_ok(client: httpx.AsyncClient, url: str, child: Child, timeout: float = 90.0) -> None:
    """Wait until ``url`` answers 200, failing early (with its log) if ``child`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}")
        try:
            if (await client.get(url, timeout=2.0)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise BenchError(f"{child.name} did not answer {url} within {timeout:g} s:\n{child.log_tail()}")


def git_describe() -> dict[str, Any]:
    """The checkout the bench runs: its commit, and whether (and how) ``service/`` differs from it."""
    project = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            command = ["git", *args]
            done = subprocess.run(command, cwd=project, capture_output=True, text=True, check=False, timeout=10)  # noqa: S603
            return done.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    diff = git("diff", "HEAD", "--", "service")
    untracked = git("ls-files", "--others", "--exclude-standard", "--", "service")
    return {
        "commit": git("rev-parse", "HEAD"),
        "serviceDirty": bool(diff or untracked),
        "serviceDiffSha256": hashlib.sha256((diff + untracked).encode()).hexdigest() if diff or untracked else None,
    }
