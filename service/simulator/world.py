"""What the simulator's parts see of the simulator: the shared state of calls, the log, the pace.

:class:`~service.simulator.simulator.VapiSimulator` owns and implements it; the call runner
(``lifecycle``) and the listen sockets (``listen``) depend on these protocols instead, so that the
simulator's modules import each other in one direction only.
"""

from __future__ import annotations

from typing import Protocol

from service.simulator.calls import SimCall
from service.simulator.log import SimulatorLog


class Paced(Protocol):
    """The clock and log every running part of the simulator shares."""

    @property
    def pace(self) -> float:
        """How many times faster than real time calls run."""
        ...

    @property
    def log(self) -> SimulatorLog: ...

    def notify(self) -> None:
        """Something changed: wake whoever waits for the simulator's state."""


class ListenWorld(Paced, Protocol):
    """What the listen endpoint needs: the calls and the listen faults."""

    @property
    def calls(self) -> dict[str, SimCall]: ...

    @property
    def keep_audio(self) -> bool: ...

    def listen_refusal(self, call_id: str, authorization: str | None) -> tuple[int, str] | None: ...

    def listen_stall_until(self, call_id: str) -> float: ...
