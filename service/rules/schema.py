"""Rule documents → compiled rules, with errors that name the rule, the field, the reason (and the line).

Pure: no I/O. A document is a plain mapping (from YAML, see ``files``, or from the API's JSON). Every
problem of a rule is reported, not only the first, so that one ``rules check`` run shows them all.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from service import durations
from service.rules.conditions import Condition, ConditionSyntaxError, compile_condition
from service.rules.templates import Template, TemplateError, compile_template, is_template
from service.vapi.control import (
    CONTROL_TYPES,
    ControlError,
    ControlMessage,
    Say,
    parse_control,
    split_validation_error,
)

STATUS_MILESTONES = {
    "queued": "call.queued",
    "ringing": "call.ringing",
    "in-progress": "call.answered",
    "forwarding": "call.forwarding",
    "ended": "call.ended",
}
MILESTONES = (
    *STATUS_MILESTONES.values(),
    "call.elapsed",
    "transcript",
    "speech.started",
    "speech.stopped",
    "user.silent",
    "listen.connected",
    "injection.spoken",
    "user.interrupted",
    "call.transferred",
    "call.analyzed",
)
# After these the call is over: a say is heard by nobody; on call.analyzed (the call ended a while
# ago) no control message can act at all, only a notify.
AFTER_THE_CALL = ("call.ended", "call.analyzed")
NAME_PATTERN = re.compile(r"^[a-z0-9-]+$")
MAX_NAME_CHARS = 100
MAX_DURATION_SECONDS = 24 * 3600.0
FIELDS = ("name", "description", "on", "delay", "at", "for", "if", "say", "action", "once")
# A template stands for text known only when it is rendered. Where a field's format is checked (a number
# must be E.164), the rule is checked at load time with a value of that format in the template's place;
# other fields are checked with the template's own text (its length, that it is not blank).
_TEMPLATE_STAND_INS = {
    "number": "+10000000000",
    "sipUri": "sip:template@example.invalid",
    "extension": "1",
    "holdAudioUrl": "https://template.example.invalid/hold.mp3",
    "transferCompleteAudioUrl": "https://template.example.invalid/done.wav",
}

# Where a field of the n-th rule sits in its file: (rule index, field path) → line (1-based), or None.
LineLookup = Callable[[int, str], int | None]


class Notify(msgspec.Struct, tag="notify", tag_field="type", omit_defaults=True, forbid_unknown_fields=True):
    """``notify``: not a control message but an outbound webhook (``rule.notified``) to the endpoints
    subscribed to it, through the durable outbox; ``message`` (a template) travels with it. It needs no
    live call, so it is the one action allowed on ``call.analyzed``."""

    message: Annotated[str, msgspec.Meta(min_length=1, max_length=5000, pattern=r"\S")] | None = None


Action = ControlMessage | Notify
"""What a rule does: a control message sent to the live call, or a notification."""
ACTION_TYPES = (*CONTROL_TYPES, "notify")


@dataclass(frozen=True, slots=True)
class RuleError:
    """One problem: which rule (its name, or ``#n`` when it has none), which field, why, and where."""

    rule: str
    field: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        target = f", field {self.field!r}" if self.field else ""
        return f"rule {self.rule!r}{target}{where}: {self.reason}"

    def without_line(self) -> str:
        """The message when the line is shown elsewhere (``FILE:LINE: …``)."""
        target = f", field {self.field!r}" if self.field else ""
        return f"rule {self.rule!r}{target}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"rule": self.rule, "field": self.field, "reason": self.reason}
        if self.line is not None:
            body["line"] = self.line
        return body


class RuleSetError(ValueError):
    """A rule set that cannot be used; ``errors`` lists every problem."""

    def __init__(self, errors: Sequence[RuleError], *, source: str = "rules") -> None:
        self.errors = list(errors)
        super().__init__(f"{source}: {len(self.errors)} error(s)\n" + "\n".join(f"  {e}" for e in self.errors))


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """A validated rule, ready for the engine: condition compiled, templates parsed, durations in seconds."""

    name: str
    milestone: str
    action: Action
    """The control message (or notification), checked; a field holding a template holds its stand-in (``body``)."""
    templates: Mapping[str, Template]
    """Template per dotted path of a string in the action body (``content``, ``message.content``, …)."""
    delay: float = 0.0
    at: float | None = None
    silence: float | None = None
    condition: Condition | None = None
    once: bool = True
    description: str | None = None
    document: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_timed(self) -> bool:
        """Fires later than its milestone: stored as a due firing in the database."""
        return self.delay > 0 or self.milestone in ("call.elapsed", "user.silent")

    def compiled_form(self) -> dict[str, Any]:
        """What ``rules check`` and the API show: the rule as the engine will run it."""
        form: dict[str, Any] = {"name": self.name, "on": self.milestone, "delaySeconds": self.delay}
        if self.at is not None:
            form["atSeconds"] = self.at
        if self.silence is not None:
            form["forSeconds"] = self.silence
        form["if"] = self.condition.source if self.condition else None
        form["once"] = self.once
        form["action"] = self.body({path: template.source for path, template in self.templates.items()})
        form["templateFields"] = sorted({f for t in self.templates.values() for f in t.fields})
        if self.description:
            form["description"] = self.description
        return form

    def render(self, call: dict[str, Any], event: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The control message for this occurrence and the template fields that were missing."""
        texts: dict[str, str] = {}
        missing: list[str] = []
        for path, template in self.templates.items():
            texts[path], absent = template.render(call, event)
            missing.extend(absent)
        return self.body(texts), missing

    def body(self, texts: Mapping[str, str]) -> dict[str, Any]:
        """The action as JSON with ``texts`` (dotted path → string) in place of its templates."""
        body: dict[str, Any] = msgspec.to_builtins(self.action)
        for path, text in texts.items():
            *parents, leaf = path.split(".")
            holder = body
            for part in parents:
                holder = holder[part]
            holder[leaf] = text
        return body


def parse_duration(value: object) -> float:
    """Seconds from a number or a string with a unit (``500ms``, ``0.5s``, ``90s``, ``2m``, ``1h``), up to 24 h."""
    return durations.parse_duration(value, maximum=MAX_DURATION_SECONDS, maximum_text="24 hours")


def _string_paths(body: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Dotted paths of the string leaves of an action body (its ``type`` excluded)."""
    found: list[tuple[str, str]] = []
    if isinstance(body, dict):
        for key, value in body.items():
            path = f"{prefix}{key}"
            if isinstance(value, str) and path != "type":
                found.append((path, value))
            elif isinstance(value, dict):
                found.extend(_string_paths(value, path + "."))
    return found


class _Collector:
    def __init__(self, label: str, index: int, lines: LineLookup | None) -> None:
        self.label, self.index, self.lines = label, index, lines
        self.errors: list[RuleError] = []

    def add(self, field_: str, reason: str) -> None:
        line = self.lines(self.index, field_) if self.lines else None
        self.errors.append(RuleError(self.label, field_, reason, line))


def _rule_label(document: object, index: int) -> str:
    if isinstance(document, Mapping) and isinstance(document.get("name"), str) and document["name"]:
        return str(document["name"])
    return f"#{index + 1}"


def compile_rule(document: object, *, index: int = 0, lines: LineLookup | None = None) -> CompiledRule | RuleSetError:
    """Compile one rule document: the rule, or every problem found in it."""
    errors = _Collector(_rule_label(document, index), index, lines)
    if not isinstance(document, Mapping):
        errors.add("", f"a rule must be a mapping of fields, got {type(document).__name__}")
        return RuleSetError(errors.errors)
    for key in document:
        if key not in FIELDS:
            hint = difflib.get_close_matches(str(key), FIELDS, n=1)
            errors.add(str(key), "unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else ""))

    name = document.get("name")
    if not isinstance(name, str) or not name:
        errors.add("name", "required: a unique name made of a-z, 0-9 and '-'")
    elif len(name) > MAX_NAME_CHARS or not NAME_PATTERN.match(name):
        errors.add("name", f"must match [a-z0-9-]+ and be at most {MAX_NAME_CHARS} characters")

    milestone = document.get("on")
    if not isinstance(milestone, str) or not milestone:
        errors.add("on", f"required: the milestone, one of {', '.join(MILESTONES)}")
        milestone = None
    elif milestone not in MILESTONES:
        hint = difflib.get_close_matches(milestone, MILESTONES, n=1)
        errors.add(
            "on",
            f"unknown milestone {milestone!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else f"; known: {', '.join(MILESTONES)}"),
        )
        milestone = None

    durations: dict[str, float | None] = {}
    for key in ("delay", "at", "for"):
        durations[key] = None
        if document.get(key) is not None:
            try:
                durations[key] = parse_duration(document[key])
            except ValueError as exc:
                errors.add(key, str(exc))
    if milestone == "call.elapsed" and "at" not in document:
        errors.add("at", "required with on: call.elapsed (seconds since the call was answered)")
    if milestone is not None and milestone != "call.elapsed" and "at" in document:
        errors.add("at", "only allowed with on: call.elapsed (use delay for other milestones)")
    if milestone == "user.silent":
        if "for" not in document:
            errors.add("for", "required with on: user.silent (how long the customer has been silent)")
        elif durations["for"] == 0:
            errors.add("for", "must be greater than zero")
    if milestone is not None and milestone != "user.silent" and "for" in document:
        errors.add("for", "only allowed with on: user.silent")

    condition: Condition | None = None
    source = document.get("if")
    if source is not None:
        if not isinstance(source, str):
            errors.add("if", f"expected a CEL expression (a string), got {type(source).__name__}")
        else:
            try:
                condition = compile_condition(source)
            except ConditionSyntaxError as exc:
                errors.add("if", f"invalid CEL: {exc}")

    once = document.get("once", True)
    if not isinstance(once, bool):
        errors.add("once", f"expected true or false, got {once!r}")
        once = True
    description = document.get("description")
    if description is not None and not isinstance(description, str):
        errors.add("description", "expected a string")
        description = None

    action, templates = _compile_action(document, errors)
    where = "say" if "say" in document else "action"
    if isinstance(action, Say) and milestone in AFTER_THE_CALL:
        errors.add(where, f"a say cannot be heard on {milestone}: the call is over (use action: {{type: notify}})")
    elif milestone == "call.analyzed" and action is not None and not isinstance(action, Notify):
        errors.add(
            f"{where}.type",
            f"a control message ({action_type(action)}) cannot act on call.analyzed: the call is over; "
            "only action: {type: notify} is allowed",
        )

    if errors.errors or action is None or milestone is None or not isinstance(name, str):
        return RuleSetError(errors.errors)
    return CompiledRule(
        name=name,
        milestone=milestone,
        action=action,
        templates=templates,
        delay=durations["delay"] or 0.0,
        at=durations["at"],
        silence=durations["for"],
        condition=condition,
        once=once,
        description=description,
        document=dict(document),
    )


def action_type(action: Action) -> str:
    """The action's ``type`` (``say``, ``transfer``, ``notify``, …)."""
    return str(action.__struct_config__.tag)


def parse_action(value: object) -> Action:
    """A rule's action: a ``notify``, or a control message (:class:`ControlError` if invalid)."""
    if isinstance(value, Mapping) and value.get("type") == "notify":
        try:
            return msgspec.convert(value, Notify)
        except msgspec.ValidationError as exc:
            raise ControlError(*split_validation_error(str(exc))) from None
    return parse_control(value)


def _compile_action(document: Mapping[str, Any], errors: _Collector) -> tuple[Action | None, dict[str, Template]]:
    if "say" in document and "action" in document:
        errors.add("action", "give either say (shorthand) or action, not both")
        return None, {}
    if "say" in document:
        say = document["say"]
        if not isinstance(say, str) or not say.strip():
            errors.add("say", "expected the text to speak (a non-empty string)")
            return None, {}
        raw: object = {"type": "say", "content": say}
        field_prefix = "say"
    elif "action" in document:
        raw = document["action"]
        if isinstance(raw, Mapping) and "type" not in raw and "content" in raw:
            raw = {"type": "say", **raw}  # say is the default action type
        field_prefix = "action"
    else:
        errors.add("say", "a rule needs something to do: say: TEXT or action: {type: …}")
        return None, {}
    templated = {path: text for path, text in _string_paths(raw) if is_template(text)}
    templates: dict[str, Template] = {}
    for path, text in templated.items():
        try:
            templates[path] = compile_template(text)
        except TemplateError as exc:
            errors.add("say" if field_prefix == "say" else f"action.{path}", str(exc))
    try:
        action = parse_action(_with_stand_ins(raw, templated))
    except ControlError as exc:
        reason = exc.reason
        if exc.field == "type" and isinstance(raw, Mapping):
            reason = f"unknown action type {raw.get('type')!r}; known: {', '.join(ACTION_TYPES)}"
        field_ = "say" if field_prefix == "say" else ".".join(p for p in ("action", exc.field) if p)
        errors.add(field_, reason)
        return None, {}
    return action, templates


def _with_stand_ins(raw: object, templated: Mapping[str, str]) -> object:
    """``raw`` with a stand-in of the right format for each template in a format-checked field."""
    if not isinstance(raw, Mapping):
        return raw
    copy = dict(raw)
    for path in templated:
        *parents, leaf = path.split(".")
        if leaf not in _TEMPLATE_STAND_INS:
            continue
        holder = copy
        for part in parents:  # copied on the way down: the document itself is left as written
            inner = dict(holder[part])
            holder[part] = inner
            holder = inner
        holder[leaf] = _TEMPLATE_STAND_INS[leaf]
    return copy


def compile_rules(
    documents: Sequence[object], *, lines: LineLookup | None = None
) -> tuple[list[CompiledRule], list[RuleError]]:
    """Compile a rule set: the good rules, and every error (duplicate names included)."""
    rules: list[CompiledRule] = []
    errors: list[RuleError] = []
    seen: dict[str, int] = {}
    for index, document in enumerate(documents):
        result = compile_rule(document, index=index, lines=lines)
        name = document.get("name") if isinstance(document, Mapping) else None
        if isinstance(name, str) and name in seen:
            line = lines(index, "name") if lines else None
            errors.append(RuleError(name, "name", f"duplicate name: rule #{seen[name] + 1} has it", line))
        elif isinstance(name, str):
            seen[name] = index
        if isinstance(result, RuleSetError):
            errors.extend(result.errors)
        elif seen.get(result.name) == index:
            rules.append(result)
    return rules, errors
