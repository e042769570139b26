"""Rule conditions: CEL expressions over ``call`` and ``event``, compiled once, evaluated many times.

The library is ``common-expression-language`` (Rust ``cel`` crate bindings): about 1.5 µs per evaluation
with a prepared context against 200-600 µs for the pure-Python ``cel-python`` (see ``docs/rules.md``).

Sandboxing: CEL has no I/O and no loops beyond its macros over the given values, and the one function
we register (below) is pure, so an expression can only read ``call`` and ``event``. Cost is bounded
statically (``service.rules.celshape``: source length, bracket nesting, comprehension count and depth,
an iteration estimate), and the inputs are small documents built by the engine (never raw webhook
bodies). The library cannot be interrupted, so the runtime budget is a fuse: a condition whose
evaluations took longer than :data:`EVALUATION_BUDGET_SECONDS` :data:`EVALUATION_STRIKES` times in a
row is disabled (evaluates as an error) until the rules are loaded again.

``matches()``: the library compiles the regular expression again on every evaluation (90-300 µs for a
case-insensitive pattern: most of a rule set's cost). Conditions are therefore compiled with each
``matches`` call renamed to :data:`MATCHES_FUNCTION`, which keeps compiled patterns: RE2 through
``google-re2``, the syntax and the linear time of the Rust ``regex`` crate the library uses, ~10 µs
a call. A literal pattern is checked when the rule is loaded, so a broken regex is a load error.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from dataclasses import dataclass, field
from typing import Any

import cel
import re2

from service.rules.celshape import TOKEN, ShapeError, check_shape

MAX_SOURCE_CHARS = 1000
EVALUATION_BUDGET_SECONDS = 0.05
EVALUATION_STRIKES = 3
VARIABLES = frozenset({"call", "event"})
MATCHES_FUNCTION = "_sb_matches"
_ERROR_LOCATION = re.compile(r"ERROR: <input>:")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # raised to us, not printed to stderr by the C++ library


class ConditionSyntaxError(ValueError):
    """The expression does not compile or breaks a sandbox limit; the message says why."""


class ConditionRuntimeError(Exception):
    """Evaluation failed (a missing field, a type mismatch) or did not give a boolean."""


@dataclass(frozen=True, slots=True, eq=False)
class Condition:
    """A compiled CEL condition."""

    source: str
    program: cel.Program
    _slow: list[float] = field(default_factory=list)  # the fuse: durations of the latest over-budget run

    def evaluate(self, context: cel.Context) -> bool:
        """True or False; anything else (an error, a non-boolean, a blown time budget) raises
        :class:`ConditionRuntimeError`."""
        if len(self._slow) >= EVALUATION_STRIKES:
            raise ConditionRuntimeError(
                f"disabled: {EVALUATION_STRIKES} evaluations in a row took over {EVALUATION_BUDGET_SECONDS} s "
                f"(the last {self._slow[-1]:.3f} s)"
            )
        started = time.perf_counter()
        try:
            result = self.program.execute(context)
        except Exception as exc:  # the binding raises KeyError, TypeError, RuntimeError, ValueError …
            message = _first_line(f"{type(exc).__name__}: {exc}").replace(MATCHES_FUNCTION, "matches")
            raise ConditionRuntimeError(message) from None
        finally:
            # In a row: one slow evaluation may be the machine (a GC pause, the loop descheduled).
            if (elapsed := time.perf_counter() - started) > EVALUATION_BUDGET_SECONDS:
                self._slow.append(elapsed)
            else:
                self._slow.clear()
        if not isinstance(result, bool):
            raise ConditionRuntimeError(f"the condition gave {type(result).__name__}, not a boolean")
        return result


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _syntax_message(exc: Exception) -> str:
    """The parser's message without the Python-side prefix: ``1:24: Syntax error: …`` plus the caret lines."""
    text = str(exc)
    match = _ERROR_LOCATION.search(text)
    if match:
        text = "at " + text[match.end() :].strip()
    return text


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"invalid regular expression {pattern!r}: {reason}") from None


def _matches(text: str, pattern: str) -> bool:
    """CEL's ``matches``: whether ``pattern`` (RE2 syntax) matches anywhere in ``text``."""
    return _regex(pattern).search(text) is not None


def _with_cached_matches(source: str) -> tuple[str, list[str]]:
    """``source`` with every ``matches(`` call renamed to :data:`MATCHES_FUNCTION`, and the literal
    patterns of the ``x.matches("…")`` calls (decoded by CEL itself, escapes and all)."""
    tokens = [(match.lastgroup, match.group()) for match in TOKEN.finditer(source)]
    code = [(index, text) for index, (kind, text) in enumerate(tokens) if kind not in ("space", "comment")]
    patterns: list[str] = []
    for position, (index, text) in enumerate(code):
        if text != "matches" or tokens[index][0] != "ident" or position + 1 >= len(code):
            continue
        if code[position + 1][1] != "(":
            continue
        tokens[index] = ("ident", MATCHES_FUNCTION)
        after = code[position + 2 : position + 4]
        is_member = position > 0 and code[position - 1][1] == "."
        if is_member and len(after) == 2 and tokens[after[0][0]][0] == "string" and after[1][1] == ")":
            with contextlib.suppress(Exception):  # not a literal CEL reads as one: checked at run time
                patterns.append(str(cel.evaluate(after[0][1])))
    return "".join(text for _, text in tokens), patterns


def compile_condition(source: str) -> Condition:
    """Compile ``source`` or raise :class:`ConditionSyntaxError` with a precise reason."""
    if not source.strip():
        raise ConditionSyntaxError("the condition is empty")
    if len(source) > MAX_SOURCE_CHARS:
        raise ConditionSyntaxError(f"the condition is longer than {MAX_SOURCE_CHARS} characters")
    try:
        bound = check_shape(source)  # before compiling: the parser recurses on nesting
    except ShapeError as exc:
        raise ConditionSyntaxError(str(exc)) from None
    try:
        program = cel.compile(source)  # errors point into the source as written
    except Exception as exc:
        raise ConditionSyntaxError(_syntax_message(exc)) from None
    unknown = sorted(set(program.variables()) - VARIABLES - bound)
    if unknown:
        raise ConditionSyntaxError(
            f"unknown variable {unknown[0]!r}: a condition sees only 'call' and 'event'"
            if len(unknown) == 1
            else f"unknown variables {', '.join(map(repr, unknown))}: a condition sees only 'call' and 'event'"
        )
    rewritten, patterns = _with_cached_matches(source)
    for pattern in patterns:
        try:
            _regex(pattern)
        except ValueError as exc:
            raise ConditionSyntaxError(str(exc)) from None
    return Condition(source, cel.compile(rewritten) if rewritten != source else program)


def make_context(call: dict[str, Any], event: dict[str, Any]) -> cel.Context:
    """The evaluation context; build it once per occurrence and share it across rules (it is the
    expensive part: ~20-50 µs against ~1.5 µs per evaluation)."""
    return cel.Context(variables={"call": call, "event": event}, functions={MATCHES_FUNCTION: _matches})
