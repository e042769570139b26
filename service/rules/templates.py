"""``say`` templates: ``{{ call.customer.name }}``-style fields rendered by Jinja2's sandbox.

Only what a spoken sentence needs is allowed: output of fields, simple filters, ``if`` blocks and
comparisons. Loops, arithmetic, calls and assignments are refused at load time. The one filter that
can grow text faster than the template's own size, ``replace``, is replaced by a bounded one that
refuses a result longer than :data:`MAX_INTERMEDIATE_CHARS` before building it; Jinja's optimizer
(which folds constant expressions while compiling, so a ``replace`` chain on literals would run at
load time) is off, and a template is tried once on empty data when loaded so that such a chain is a
load error, not a surprise at firing time. A missing field renders as the empty string and is
reported to the caller (the engine logs it) instead of failing the firing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.runtime import ChainableUndefined
from jinja2.sandbox import SandboxedEnvironment

MAX_TEMPLATE_CHARS = 5000
MAX_OUTPUT_CHARS = 5000
MAX_INTERMEDIATE_CHARS = 10 * MAX_OUTPUT_CHARS
ALLOWED_FILTERS = frozenset(
    [
        "default",
        "d",
        "upper",
        "lower",
        "title",
        "capitalize",
        "trim",
        "round",
        "int",
        "float",
        "string",
        "join",
        "replace",
        "truncate",
        "first",
        "last",
        "length",
        "abs",
    ]
)
_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Const,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Filter,
    nodes.If,
    nodes.CondExpr,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Test,
    nodes.List,
    nodes.Tuple,
)
_ALLOWED_TESTS = frozenset({"defined", "undefined", "none", "string", "number", "true", "false", "in"})


class TemplateError(ValueError):
    """The template does not parse or uses something outside the allowed subset."""


class TemplateTooLarge(TemplateError):
    """A ``replace`` would build more than :data:`MAX_INTERMEDIATE_CHARS` characters."""


def _bounded_replace(value: object, old: object, new: object, count: int | None = None) -> str:
    """Jinja's ``replace`` filter, refusing (before doing the work) a result longer than allowed."""
    text, old_text, new_text = str(value), str(old), str(new)
    occurrences = text.count(old_text)
    if count is not None and count >= 0:
        occurrences = min(occurrences, count)
    if len(text) + occurrences * (len(new_text) - len(old_text)) > MAX_INTERMEDIATE_CHARS:
        raise TemplateTooLarge(f"a replace would build more than {MAX_INTERMEDIATE_CHARS} characters")
    return text.replace(old_text, new_text, -1 if count is None else count)


# Renders as "" also when chained (``call.nope.deeper``), where the default Undefined would raise.
# ``optimized=False``: no constant folding at compile time (it would run the filters on literals).
_ENV = SandboxedEnvironment(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=True, optimized=False)
_ENV.filters["replace"] = _bounded_replace
_ABSENT = object()


def _resolve(path: str, values: dict[str, Any]) -> object:
    current: object = values
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return _ABSENT
        current = current[part]
    return current


@dataclass(frozen=True, slots=True, eq=False)
class Template:
    """A compiled template; ``fields`` lists the ``call.…``/``event.…`` paths it reads (for the compiled form)."""

    source: str
    fields: tuple[str, ...]
    _compiled: Any

    def render(self, call: dict[str, Any], event: dict[str, Any]) -> tuple[str, list[str]]:
        """The text and the paths of the fields that were missing (rendered empty); :class:`TemplateTooLarge`
        when a ``replace`` would grow the text beyond the bound."""
        text: str = self._compiled.render(call=call, event=event)
        values = {"call": call, "event": event}
        missing = [path for path in self.fields if _resolve(path, values) is _ABSENT]
        return text[:MAX_OUTPUT_CHARS], missing


def _path(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = _path(node.node)
        return f"{base}.{node.attr}" if base else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _path(node.node)
        return f"{base}.{node.arg.value}" if base else None
    return None


def _check(tree: nodes.Node) -> list[str]:
    fields: list[str] = []
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            raise TemplateError(f"{type(node).__name__} is not allowed: use {{{{ field }}}}, filters and if blocks")
        if isinstance(node, nodes.Filter) and node.name not in ALLOWED_FILTERS:
            raise TemplateError(f"filter {node.name!r} is not allowed (allowed: {', '.join(sorted(ALLOWED_FILTERS))})")
        if isinstance(node, nodes.Test) and node.name not in _ALLOWED_TESTS:
            raise TemplateError(f"test {node.name!r} is not allowed")
        if isinstance(node, nodes.Name) and node.name not in ("call", "event"):
            raise TemplateError(f"unknown variable {node.name!r}: a template sees only 'call' and 'event'")
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise TemplateError(f"field {node.attr!r} is not allowed: names starting with '_' are private")
        if isinstance(node, nodes.Getattr | nodes.Getitem) and (path := _path(node)):
            fields.append(path)
    # Keep the longest paths only: ``call.customer.name`` rather than also ``call.customer``.
    longest = [f for f in fields if not any(other.startswith(f + ".") for other in fields)]
    return list(dict.fromkeys(longest))


def is_template(text: str) -> bool:
    """Whether ``text`` contains template syntax (plain strings skip Jinja entirely)."""
    return "{{" in text or "{%" in text or "{#" in text


def compile_template(source: str) -> Template:
    """Parse and check ``source``; :class:`TemplateError` names the line and the reason."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"the template is longer than {MAX_TEMPLATE_CHARS} characters")
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error at line {exc.lineno}: {exc.message}") from None
    fields = _check(tree)
    template = Template(source, tuple(fields), _ENV.from_string(source))
    try:
        template.render({}, {})  # a replace chain on literals fails here, at load time
    except TemplateTooLarge:
        raise
    except Exception:  # noqa: S110 - other errors depend on the data (a filter on a missing field)
        pass
    return template
