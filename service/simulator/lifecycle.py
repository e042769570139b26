"""The life of one call: a timeline of events (status changes, speech, transcripts, the end) run by one task.

Scripted turns are laid out when the call is answered; control messages (``say``, ``end-call``, …) add events
while it runs. Everything is scheduled against absolute loop times, so a busy event loop delays events but
never shifts the timeline. Audio is not produced here: the timeline marks who speaks in which frames, and each
listen connection renders frames from that (see ``listen.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from service.simulator.audio import FRAME_SECONDS
from service.simulator.calls import SimCall, epoch_ms, now_utc
from service.simulator.listen import event_text
from service.simulator.script import Role, Utterance, speech_seconds
from service.simulator.webhooks import WebhookSender
from service.simulator.world import Paced

Handler = Callable[[], Awaitable[None]]

END_CALL_REASON = "manually-canceled"
"""``endedReason`` after a control ``end-call`` (Vapi does not document it; the SDK enum has this value)."""
SAY_THEN_END_REASON = "assistant-ended-call-after-message-spoken"
"""``endedReason`` after ``say`` with ``endCallAfterSpoken`` (an SDK enum value made for this case)."""
TRANSFER_REASON = "assistant-forwarded-call"
TRANSFER_SECONDS = 0.5
"""Call seconds between the transfer (status ``forwarding``) and the end of the call."""
ADD_MESSAGE_REPLY = "Okay."
LISTEN_CLOSE_TIMEOUT = 5.0


@dataclass(slots=True)
class Speech:
    """One utterance on the timeline, in frames."""

    role: Role
    text: str
    start: int
    end: int
    turn: int
    source: str | None = None
    end_call_reason: str | None = None
    cancelled: bool = False


def _partial_text(text: str) -> str:
    words = text.split()
    return " ".join(words[: max(1, len(words) // 2)])


class CallRunner:
    """Runs one call's timeline until it ends."""

    def __init__(self, sim: Paced, call: SimCall, webhooks: WebhookSender) -> None:
        self._sim = sim
        self.call = call
        self.webhooks = webhooks
        self._heap: list[tuple[float, int, Handler]] = []
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._waiting_for_answer: list[Callable[[], None]] = []
        self._speeches: list[Speech] = []
        self._scheduled_end: int | None = None  # the script's (or a transfer's) end frame
        self.done = False

    # -- timeline ------------------------------------------------------------------------------------

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    @property
    def _frame_dt(self) -> float:
        return FRAME_SECONDS / self._sim.pace

    def _at(self, deadline: float, handler: Handler) -> None:
        heapq.heappush(self._heap, (deadline, next(self._order), handler))
        self._wake.set()

    def _at_frame(self, frame: int, handler: Handler) -> None:
        assert self.call.audio_t0 is not None
        self._at(self.call.audio_t0 + frame * self._frame_dt, handler)

    def frame_now(self) -> int:
        """Index of the audio frame being captured now (0 before answer)."""
        if self.call.audio_t0 is None:
            return 0
        return max(0, int((self._loop.time() - self.call.audio_t0) / self._frame_dt))

    async def run(self) -> None:
        """Run the call from queued to ended."""
        script = self.call.script
        if script.send_queued_status:
            self.webhooks.send("status-update", status="queued")
        self._at(self._loop.time() + script.ring_after / self._sim.pace, self._ringing)
        while not self.done:
            self._wake.clear()
            if self._heap:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(self._heap[0][0]):
                        await self._wake.wait()
            else:
                await self._wake.wait()
            while self._heap and self._heap[0][0] <= self._loop.time() and not self.done:
                _, _, handler = heapq.heappop(self._heap)
                await handler()

    # -- lifecycle -----------------------------------------------------------------------------------

    def _set_status(self, status: str, **fields: Any) -> None:
        call = self.call
        call.status = status
        call.updated_at = now_utc()
        self._sim.log.add("call", call.id, event="status", status=status, endedReason=call.ended_reason)
        self.webhooks.send("status-update", status=status, **fields)
        self._sim.notify()

    async def _ringing(self) -> None:
        self._set_status("ringing")
        script = self.call.script
        pace = self._sim.pace
        if script.answer:
            self._at(self._loop.time() + script.answer_after / pace, self._answer)
        else:
            self._at(
                self._loop.time() + script.no_answer_after / pace,
                functools.partial(self.finish, "customer-did-not-answer"),
            )

    async def _answer(self) -> None:
        call = self.call
        script = call.script
        call.audio_t0 = self._loop.time()
        call.started_at = now_utc()
        self._set_status("in-progress")
        for connection in list(call.connections):
            connection.wake()
        for utterance in script.turns:
            self._schedule_turn(utterance)
        if script.hang_at is not None:
            self._at_frame(_frames(script.hang_at), self._hang)
        talk = script.talk_seconds
        reason = script.ended_reason
        max_duration = call.overrides.get("maxDurationSeconds")
        if isinstance(max_duration, int | float) and max_duration < talk:
            talk, reason = float(max_duration), "exceeded-max-duration"
        end_frame = _frames(talk)
        self._plan_end(end_frame)
        self._at_frame(end_frame, functools.partial(self.finish, reason, end_frame))
        for deferred in self._waiting_for_answer:
            deferred()
        self._waiting_for_answer.clear()

    async def _hang(self) -> None:
        self.webhooks.send("hang")

    def request_end(self, reason: str) -> None:
        """End the call as soon as the runner gets to it (from a control message or the test API)."""
        if not self.done:
            self._at(self._loop.time(), functools.partial(self.finish, reason))

    async def finish(self, reason: str, frame: int | None = None) -> None:
        """End the call: stop audio at ``frame`` (default: now), close listen sockets, then send
        ``status-update`` (ended) and ``end-of-call-report``."""
        if self.done:
            return
        self.done = True
        self._heap.clear()
        call = self.call
        ended_at = now_utc()
        end_frame = 0 if call.audio_t0 is None else (frame if frame is not None else self.frame_now())
        call.end_frame = end_frame
        call.user_muted.close(end_frame)
        call.assistant_muted.close(end_frame)
        for connection in list(call.connections):
            connection.wake()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LISTEN_CLOSE_TIMEOUT):
                for connection in list(call.connections):
                    await connection.finished.wait()
        call.ended_at = ended_at
        call.ended_reason = reason
        self._set_status("ended", endedReason=reason)
        report = call.artifact()
        rendered = call.to_vapi()
        self.webhooks.send(
            "end-of-call-report",
            endedReason=reason,
            artifact=report,
            analysis=call.analysis(),
            startedAt=rendered.get("startedAt"),
            endedAt=rendered["endedAt"],
            cost=call.cost,
            costs=call.costs(),
            durationSeconds=round(call.duration_seconds, 3),
            durationMs=round(call.duration_seconds * 1000),
            durationMinutes=round(call.duration_seconds / 60, 4),
            summary=call.summary(),
            transcript=report["transcript"],
            messages=report["messages"],
        )
        self.webhooks.close()

    # -- speech --------------------------------------------------------------------------------------

    def _schedule_turn(self, utterance: Utterance) -> None:
        start = _frames(utterance.at)
        self._speak(utterance.role, utterance.text, start, start + max(1, _frames(utterance.seconds)))

    def _speak(
        self,
        role: Role,
        text: str,
        start: int,
        end: int,
        *,
        source: str | None = None,
        end_call_reason: str | None = None,
    ) -> Speech:
        call = self.call
        speech = Speech(role, text, start, end, call.turn, source, end_call_reason)
        call.turn += 1
        self._speeches.append(speech)
        (call.user_speech if role == "user" else call.assistant_speech).add(start, end)
        self._at_frame(start, functools.partial(self._speech_started, speech))
        if call.script.partial_transcripts and len(text.split()) > 1:
            self._at_frame((start + end) // 2, functools.partial(self._speech_partial, speech))
        self._at_frame(end, functools.partial(self._speech_stopped, speech))
        if end_call_reason is not None:
            self._plan_end()
        return speech

    def _plan_end(self, frame: int | None = None) -> None:
        """Tell the listen streams where the audio ends as now planned (the script's end, a transfer's,
        a say that ends the call), so that a late event loop sends nothing past it."""
        if frame is not None:
            self._scheduled_end = frame if self._scheduled_end is None else min(self._scheduled_end, frame)
        ends = [s.end for s in self._speeches if s.end_call_reason is not None and not s.cancelled]
        if self._scheduled_end is not None:
            ends.append(self._scheduled_end)
        self.call.planned_end_frame = min(ends, default=None)

    def _broadcast(self, payload: dict[str, Any]) -> None:
        connections = self.call.connections
        if connections:
            text = event_text(payload)
            for connection in list(connections):
                connection.push_text(text)

    async def _speech_started(self, speech: Speech) -> None:
        if speech.cancelled:
            return
        update: dict[str, Any] = {"status": "started", "role": speech.role, "turn": speech.turn}
        self.webhooks.send("speech-update", **update)
        self._broadcast({"type": "speech-update", **update})
        if speech.role == "user" and self.call.script.barge_in and self._assistant_speaking(speech.start):
            # The interruption first, then the assistant's speech stops because of it.
            self.webhooks.send("user-interrupted", turnId=f"turn-{speech.turn}")
            self._cut_assistant(speech.start)
            self._plan_end()
        if speech.role == "assistant":
            fields: dict[str, Any] = {"text": speech.text, "turn": speech.turn}
            if speech.source is not None:
                fields["source"] = speech.source
            self.webhooks.send("assistant.speechStarted", **fields)

    async def _speech_partial(self, speech: Speech) -> None:
        if speech.cancelled:
            return
        transcript: dict[str, Any] = {"role": speech.role, "transcript": _partial_text(speech.text)}
        self.webhooks.send("transcript", transcript_type="partial", **transcript)
        self._broadcast({"type": "transcript", "transcriptType": "partial", **transcript})

    async def _speech_stopped(self, speech: Speech) -> None:
        if speech.cancelled:
            return
        self._stop_speech(speech, final=True)
        if speech.end_call_reason is not None:
            await self.finish(speech.end_call_reason, speech.end)

    def _stop_speech(self, speech: Speech, *, final: bool) -> None:
        update: dict[str, Any] = {"status": "stopped", "role": speech.role, "turn": speech.turn}
        self.webhooks.send("speech-update", **update)
        self._broadcast({"type": "speech-update", **update})
        if not final:
            return
        transcript: dict[str, Any] = {"role": speech.role, "transcript": speech.text}
        self.webhooks.send("transcript", transcript_type="final", **transcript)
        self._broadcast({"type": "transcript", "transcriptType": "final", **transcript})
        self._add_message(speech.role, speech.text, speech.start, speech.end, source=speech.source)
        if speech.role == "assistant":
            self.webhooks.send("model-output", output={"content": speech.text})

    def _add_message(self, role: str, text: str, start: int, end: int, *, source: str | None = None) -> None:
        call = self.call
        started = call.started_at or now_utc()
        pace = self._sim.pace
        wall_start = started + timedelta(seconds=start * FRAME_SECONDS / pace)
        wall_end = started + timedelta(seconds=end * FRAME_SECONDS / pace)
        vapi_role = "bot" if role == "assistant" else role
        message: dict[str, Any] = {
            "role": vapi_role,
            "message": text,
            "time": epoch_ms(wall_start),
            "secondsFromStart": round(start * FRAME_SECONDS, 3),
        }
        if role in ("user", "assistant"):
            message["endTime"] = epoch_ms(wall_end)
            message["duration"] = round((end - start) * FRAME_SECONDS * 1000)
        if source is not None and role == "assistant":
            message["source"] = source
        call.messages.append(message)
        call.openai_messages.append({"role": role, "content": text})
        self.webhooks.send(
            "conversation-update",
            messages=[dict(m) for m in call.messages],
            messagesOpenAIFormatted=[dict(m) for m in call.openai_messages],
        )

    # -- control messages ----------------------------------------------------------------------------

    def _when_answered(self, action: Callable[[], None]) -> None:
        if self.call.audio_t0 is None:
            self._waiting_for_answer.append(action)
        else:
            action()

    def say(self, content: str, *, end_after: bool = False, interrupt: bool = False, source: str = "force-say") -> None:
        """The assistant says ``content`` (after what it is saying now, unless ``interrupt``)."""
        self._when_answered(functools.partial(self._say_now, content, end_after, interrupt, source))

    def _say_now(self, content: str, end_after: bool, interrupt: bool, source: str) -> None:
        call = self.call
        start = self.frame_now() + 1
        if interrupt:
            self._cut_assistant(start)
            self._plan_end()  # an interrupted say that was to end the call no longer does
        else:
            start = max(start, call.assistant_speech.busy_until())
        end = start + max(1, _frames(speech_seconds(content)))
        self._speak(
            "assistant",
            content,
            start,
            end,
            source=source,
            end_call_reason=SAY_THEN_END_REASON if end_after else None,
        )

    def _assistant_speaking(self, frame: int) -> bool:
        return any(s.role == "assistant" and not s.cancelled and s.start < frame < s.end for s in self._speeches)

    def _cut_assistant(self, start: int) -> bool:
        """Stop what the assistant is saying at frame ``start``; whether it was saying something."""
        call = self.call
        cut = False
        for speech in self._speeches:
            if speech.role == "assistant" and not speech.cancelled and speech.start < start < speech.end:
                speech.cancelled = cut = True
                call.assistant_speech.spans = [
                    (a, min(b, start)) if (a, b) == (speech.start, speech.end) else (a, b)
                    for a, b in call.assistant_speech.spans
                ]
                self._stop_speech(speech, final=False)
        return cut

    def customer_says(self, text: str) -> None:
        """The customer says ``text`` now (over the assistant, with the script's ``barge_in``)."""

        def start() -> None:
            begin = self.frame_now() + 1
            self._speak("user", text, begin, begin + max(1, _frames(speech_seconds(text))))

        self._when_answered(start)

    def add_message(self, message: Mapping[str, Any], *, trigger_response: bool) -> None:
        """Add a message to the conversation; the assistant answers when ``trigger_response``."""

        def add() -> None:
            role = str(message.get("role", "system"))
            frame = self.frame_now()
            self._add_message(role, str(message.get("content", "")), frame, frame)
            if trigger_response and role != "assistant":
                self._say_now(ADD_MESSAGE_REPLY, False, False, "model")

        self._when_answered(add)

    def append_context(self, content: str) -> None:
        """Add context the assistant sees (a system message; nothing is spoken)."""
        self._when_answered(lambda: self._add_message("system", content, self.frame_now(), self.frame_now()))

    def set_muted(self, channel: Role, muted: bool) -> None:
        """Mute or unmute the customer's (``user``) or the assistant's audio from now on."""

        def apply() -> None:
            spans = self.call.user_muted if channel == "user" else self.call.assistant_muted
            frame = self.frame_now() + 1
            if muted:
                spans.open(frame)
            else:
                spans.close(frame)

        self._when_answered(apply)

    def say_first_message(self) -> None:
        """Say the assistant's first message again."""
        first = next((u.text for u in self.call.script.turns if u.role == "assistant"), "Hello.")
        self.say(first, source="model")

    def transfer(self, destination: Mapping[str, Any] | None, content: str | None) -> None:
        """Speak ``content`` (if any), then forward the call to ``destination`` and end it."""

        def start() -> None:
            begin = max(self.frame_now() + 1, self.call.assistant_speech.busy_until())
            if content:
                speech = self._speak("assistant", content, begin, begin + max(1, _frames(speech_seconds(content))))
                begin = speech.end
            self._at_frame(begin, functools.partial(self._forward, dict(destination or {})))

        self._when_answered(start)

    async def _forward(self, destination: dict[str, Any]) -> None:
        self.call.destination = destination
        self._set_status("forwarding", destination=destination)
        self.webhooks.send("transfer-update", destination=destination)
        end_frame = self.frame_now() + _frames(TRANSFER_SECONDS)
        self._plan_end(end_frame)
        self._at_frame(end_frame, functools.partial(self.finish, TRANSFER_REASON, end_frame))


def _frames(seconds: float) -> int:
    return round(seconds / FRAME_SECONDS)
