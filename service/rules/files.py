"""Rules files: YAML read with YAML 1.2 semantics (``on:`` stays a string key), errors with line numbers.

ruamel.yaml's round-trip loader keeps the position of every key, so an error found in the plain data
can point back at its line. PyYAML's ``safe_load`` (YAML 1.1) would turn the key ``on`` into ``True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from service.rules.schema import CompiledRule, RuleError, RuleSetError, compile_rules
from service.settings import ConfigurationError


def _plain(value: Any) -> Any:
    """ruamel's annotated containers and scalars → plain dict/list/str/int/float/bool/None."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return str(value)  # dates and other YAML types: the schema reports them as wrong types


def _line_of(node: Any, path: str) -> int | None:
    """1-based line of ``path`` (dotted keys) under ``node``: the deepest key that exists."""
    line: int | None = None
    if isinstance(node, CommentedMap | CommentedSeq):
        line = node.lc.line + 1
    for part in [p for p in path.split(".") if p]:
        if not isinstance(node, CommentedMap) or part not in node:
            break
        line = node.lc.key(part)[0] + 1
        node = node[part]
    return line


def parse_rules_text(text: str, *, source: str = "rules") -> tuple[list[CompiledRule], list[RuleError]]:
    """Compile the rules in a YAML document: ``rules: [...]`` (or a bare list of rules)."""
    yaml = YAML(typ="rt")
    yaml.version = (1, 2)
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = f"not valid YAML: {exc.problem or exc.context}"
        return [], [RuleError(source, "", reason, line)]
    except YAMLError as exc:
        return [], [RuleError(source, "", f"not valid YAML: {exc}", None)]
    if data is None:
        return [], []
    if isinstance(data, CommentedMap):
        unknown = [str(key) for key in data if key != "rules"]
        if unknown:
            line = data.lc.key(unknown[0])[0] + 1
            return [], [RuleError(source, unknown[0], "unknown top-level key: the file holds 'rules: [...]'", line)]
        data = data.get("rules")
        if data is None:
            return [], []
    if not isinstance(data, CommentedSeq):
        return [], [RuleError(source, "rules", "expected a list of rules", None)]
    items = list(data)

    def lines(index: int, path: str) -> int | None:
        return _line_of(items[index], path) if index < len(items) else None

    return compile_rules([_plain(item) for item in items], lines=lines)


def load_rules_file(path: Path) -> list[CompiledRule]:
    """The compiled rules of ``path``, or :class:`RuleSetError` listing every error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleSetError([RuleError(str(path), "", f"cannot read the rules file: {exc}")], source=str(path)) from None
    rules, errors = parse_rules_text(text, source=str(path))
    if errors:
        raise RuleSetError(errors, source=str(path))
    return rules


def load_configured_rules(path: Path | None) -> list[CompiledRule]:
    """The rules of ``SWITCHBOARD_RULES_FILE`` (none when unset): a file with errors refuses start-up,
    listing them all (a :class:`ConfigurationError`)."""
    try:
        return load_rules_file(path) if path else []
    except RuleSetError as exc:
        raise ConfigurationError(str(exc)) from None
