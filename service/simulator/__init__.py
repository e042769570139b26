"""A loopback imitation of Vapi for tests, benchmarks and demos (``switchboard simulate``).

Public API: ``VapiSimulator`` (state, ASGI app, Python test API), ``SimulatorServer`` (run it in-process on
loopback), ``run_simulator`` (run it as a process), ``CallScript`` / ``Utterance`` (what happens on a call),
``LoopbackServer`` (serve any small ASGI app on loopback in the running loop).

For the tap (contract section 9) it also knows stored assistants and phone numbers with their own
``server`` (``VapiSimulator.assistants`` / ``phone_numbers``, ``GET /assistant/{id}``,
``GET /phone-number/{id}``, Vapi's precedence for where a call's messages go), request messages that
wait for their answer (``request``), inbound calls that start with an ``assistant-request``
(``inbound_call``), redelivery with fresh presigned URLs (``redeliver``), bracketed transcript types,
every HMAC variant (``HmacSigning``) and org-wide monitor authentication.
"""

from service.simulator.audio import FRAME_BYTES, FRAME_SECONDS, STAMP_BYTES, read_stamp, split_channels
from service.simulator.log import ListenRecord, LogEntry
from service.simulator.script import CallScript, Utterance
from service.simulator.server import LoopbackServer, SimulatorServer, run_simulator
from service.simulator.simulator import VapiSimulator

__all__ = [
    "FRAME_BYTES",
    "FRAME_SECONDS",
    "STAMP_BYTES",
    "CallScript",
    "ListenRecord",
    "LogEntry",
    "LoopbackServer",
    "SimulatorServer",
    "Utterance",
    "VapiSimulator",
    "read_stamp",
    "run_simulator",
    "split_channels",
]
