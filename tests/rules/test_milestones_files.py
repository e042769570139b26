"""Milestones from timeline events, the silence decision (pure), and rules files (YAML 1.2, line numbers)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML (via uvicorn[standard]): the YAML 1.1 contrast
from hypothesis import given
from hypothesis import strategies as st

from service.calls.events import transcript_key
from service.cli import main
from service.rules.files import load_rules_file, parse_rules_text
from service.rules.milestones import (
    Occurrence,
    decide_due,
    occurrences_from_events,
    silence_verdict,
)
from service.rules.schema import RuleSetError

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


@dataclass
class Event:
    seq: int
    source: str
    type: str
    payload: Any
    received_at: dt.datetime = T0


def milestones(*events: Event) -> list[tuple[str, str]]:
    return [(o.milestone, o.key) for o in occurrences_from_events("c1", events)]


def test_status_milestones() -> None:
    assert milestones(
        Event(1, "vapi", "status-update", {"status": "in-progress"}),
        Event(2, "switchboard", "call.status_changed", {"from": "ringing", "to": "in-progress"}),
    ) == [("call.answered", "status:in-progress")]
    for status, milestone in [("ringing", "call.ringing"), ("forwarding", "call.forwarding"), ("ended", "call.ended")]:
        changed = Event(1, "switchboard", "call.status_changed", {"from": "x", "to": status})
        assert milestones(changed) == [(milestone, f"status:{status}")]
    assert milestones(Event(1, "vapi", "status-update", {"status": "queued"})) == [("call.queued", "status:queued")]
    assert milestones(Event(1, "switchboard", "call.status_changed", {"from": "x", "to": "scheduled"})) == []


def test_transcripts_and_speech_from_both_paths_share_keys() -> None:
    webhook = Event(1, "vapi", "transcript", {"role": "user", "transcriptType": "final", "transcript": "Cancel it."})
    listen = Event(
        2, "listen", "transcript", {"role": "user", "transcriptType": "final", "transcript": " cancel  IT. "}
    )
    partial = Event(3, "listen", "transcript", {"role": "user", "transcriptType": "partial", "transcript": "Cancel"})
    [(_, first), (_, second)] = milestones(webhook, listen, partial)
    assert first == second == transcript_key("user", "cancel it.")
    [occurrence] = occurrences_from_events("c1", [webhook])
    assert occurrence.event == {
        "type": "transcript", "role": "user", "transcript": "Cancel it.", "source": "vapi", "seq": 1,
        "occurredAt": T0.isoformat(),
    }  # fmt: skip
    started = Event(4, "vapi", "speech-update", {"status": "started", "role": "user", "turn": 2})
    started_listen = Event(5, "listen", "speech-update", {"status": "started", "role": "user", "turn": 2})
    stopped = Event(6, "listen", "speech-update", {"status": "stopped", "role": "assistant", "turn": 3})
    assert milestones(started, started_listen, stopped) == [
        ("speech.started", "speech:started:user:turn2"),
        ("speech.started", "speech:started:user:turn2"),
        ("speech.stopped", "speech:stopped:assistant:turn3"),
    ]
    connected = Event(7, "switchboard", "listen.connected", {"segment": 0})
    assert milestones(connected) == [("listen.connected", "listen:0")]
    assert milestones(Event(8, "vapi", "conversation-update", {}), Event(9, "listen", "transcript", "garbage")) == []


WORDS = st.text(alphabet="abcXYZ .,\t", max_size=30)


@given(WORDS, WORDS)
def test_transcript_keys_ignore_case_and_spacing_only(a: str, b: str) -> None:
    assert transcript_key("user", a) == transcript_key("user", f"  {a.upper()}\t ")
    same_words = " ".join(a.lower().split()) == " ".join(b.lower().split())
    assert (transcript_key("user", a) == transcript_key("user", b)) == same_words
    assert transcript_key("user", a) != transcript_key("assistant", a)


SILENCE = dt.timedelta(seconds=2)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("once", [True, False])
def test_silence_fires_when_nobody_started_speaking_since(once: bool) -> None:
    speech = [("stopped", at(1)), ("started", at(0.5))]
    assert silence_verdict(speech, since=at(1), silence=SILENCE, now=at(3), once=once).action == "fire"
    assert silence_verdict([], since=at(0), silence=SILENCE, now=at(2), once=once).action == "fire"


def test_silence_broken_moves_a_once_firing_and_skips_a_per_occurrence_one() -> None:
    speaking = [("started", at(2.5)), ("stopped", at(1))]
    verdict = silence_verdict(speaking, since=at(1), silence=SILENCE, now=at(3), once=True)
    assert (verdict.action, verdict.since, verdict.due) == ("wait", at(1), at(5))
    spoke = [("stopped", at(2.8)), ("started", at(2.5))]
    verdict = silence_verdict(spoke, since=at(1), silence=SILENCE, now=at(3), once=True)
    assert (verdict.action, verdict.since, verdict.due) == ("wait", at(2.8), at(4.8))
    assert silence_verdict(spoke, since=at(1), silence=SILENCE, now=at(3), once=False).action == "skip"


@given(st.lists(st.floats(min_value=0, max_value=20), max_size=12))
def test_silence_never_fires_while_speech_started_after_the_anchor(starts: list[float]) -> None:
    speech = sorted([("started", at(s)) for s in starts], key=lambda item: item[1], reverse=True)
    verdict = silence_verdict(speech, since=at(5), silence=SILENCE, now=at(25), once=True)
    assert (verdict.action == "fire") == all(s <= 5 for s in starts)


RULES_YAML = """\
# Two rules; the key 'on' must stay a string (YAML 1.2), not the boolean True (YAML 1.1).
rules:
  - name: recording-disclosure
    on: call.answered
    delay: 1s
    if: 'call.metadata.region == "CA"'
    say: "This call is recorded for quality."
  - name: cancel-intent
    on: transcript
    if: 'event.role == "user" && event.transcript.matches("(?i)\\\\bcancel")'
    action: {type: say, content: "Before you go?", interruptAssistantEnabled: yes}
"""


def test_yaml_1_2_keeps_on_as_a_string_where_yaml_1_1_does_not() -> None:
    assert True in yaml.safe_load(RULES_YAML)["rules"][0], "PyYAML (YAML 1.1) turns the key 'on' into True"
    rules, errors = parse_rules_text(RULES_YAML.replace("yes}", "true}"))
    assert errors == []
    assert [rule.milestone for rule in rules] == ["call.answered", "transcript"]
    _, errors = parse_rules_text(RULES_YAML)
    assert [(e.rule, e.field, e.line) for e in errors] == [("cancel-intent", "action.interruptAssistantEnabled", 11)]
    assert "Expected `bool`, got `str`" in errors[0].reason, "YAML 1.2: 'yes' is a string"


def test_file_errors_carry_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - name: a\n"
        "    on: call.answered\n"
        "    say: 'Hi {{ call.customer.name '\n"
        "  - name: a\n"
        "    on: call.ringing\n"
        "    say: Hi\n"
        "  - on: transcrpt\n"
        "    delay: -3\n"
    )
    with pytest.raises(RuleSetError) as raised:
        load_rules_file(path)
    assert [(e.rule, e.field, e.line) for e in raised.value.errors] == [
        ("a", "say", 4),
        ("a", "name", 5),
        ("#3", "name", 8),
        ("#3", "on", 8),
        ("#3", "delay", 9),
        ("#3", "say", 8),
    ]
    assert parse_rules_text("rules: [\n")[1][0].line == 2
    assert parse_rules_text("other: 1\n")[1][0].reason.startswith("unknown top-level key")
    assert parse_rules_text("rules:\n  - name: a\n    name: b\n")[1][0].line == 3
    assert parse_rules_text("") == ([], [])
    assert [r.name for r in parse_rules_text("- name: bare\n  on: call.answered\n  say: x\n")[0]] == ["bare"]


def test_rules_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(RULES_YAML.replace("yes}", "true}"))
    assert main(["rules", "check", str(good)]) == 0
    out = capsys.readouterr()
    compiled = json.loads(out.out)["rules"]
    assert [rule["on"] for rule in compiled] == ["call.answered", "transcript"]
    assert "2 rule(s) OK" in out.err
    bad = tmp_path / "bad.yaml"
    bad.write_text(RULES_YAML)
    assert main(["rules", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:11: rule 'cancel-intent', field 'action.interruptAssistantEnabled': Expected `bool`" in err
    assert main(["rules", "check", str(tmp_path / "missing.yaml")]) == 1


def test_rules_check_runs_as_a_command(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: x\n    on: call.ended\n    say: bye\n")
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "rules", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "rules.yaml:4: rule 'x', field 'say': a say cannot be heard on call.ended" in result.stderr


def test_occurrence_is_hashable_value() -> None:
    occurrence = Occurrence("c1", "call.answered", "status:in-progress", {}, T0)
    assert occurrence == Occurrence("c1", "call.answered", "status:in-progress", {}, T0)


def test_the_worked_examples_of_the_rules_guide_compile() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "rules.md").read_text()
    examples = guide.split("## Six worked examples", 1)[1]
    blocks = [block.split("```", 1)[0] for block in examples.split("```yaml\n")[1:]]
    text = "".join(textwrap.dedent(block) for block in blocks)
    rules, errors = parse_rules_text(text)
    assert errors == []
    assert len(rules) == 6


def test_due_decisions() -> None:
    delayed = decide_due(
        milestone="call.answered", detail={"event": {"type": "call.answered"}}, now=at(3), at=None, silence=None,
        once=True, speech=[],
    )  # fmt: skip
    assert (delayed.action, delayed.event) == ("fire", {"type": "call.answered"})
    elapsed = decide_due(milestone="call.elapsed", detail={}, now=at(120), at=120.0, silence=None, once=True, speech=[])
    assert elapsed.event == {"type": "call.elapsed", "seconds": 120.0, "occurredAt": at(120).isoformat()}
    quiet = decide_due(
        milestone="user.silent", detail={"since": at(1).isoformat()}, now=at(3), at=None, silence=2.0, once=True,
        speech=[("stopped", at(1))],
    )  # fmt: skip
    assert quiet.event is not None
    assert (quiet.action, quiet.event["silentSeconds"]) == ("fire", 2.0)
    broken = decide_due(
        milestone="user.silent", detail={"since": at(1).isoformat(), "x": 1}, now=at(3), at=None, silence=2.0,
        once=True, speech=[("stopped", at(2.5)), ("started", at(2))],
    )  # fmt: skip
    assert (broken.action, broken.due, broken.detail) == ("wait", at(4.5), {"since": at(2.5).isoformat(), "x": 1})
    spoke = decide_due(
        milestone="user.silent", detail={"since": at(1).isoformat()}, now=at(3), at=None, silence=2.0, once=False,
        speech=[("started", at(2))],
    )  # fmt: skip
    assert (spoke.action, spoke.reason) == ("skip", "the customer spoke again")
