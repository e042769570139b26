"""The static cost of a CEL condition, read from its token tree before the library compiles it.

The ``cel`` binding exposes no syntax tree and no cost estimate, and evaluation holds the GIL in Rust
where nothing can interrupt it. So the bound is static: the source is tokenised the way CEL's lexer
does (string literals, ``//`` comments, identifiers), brackets are matched into a tree, and on that tree

- brackets may nest at most :data:`MAX_NESTING` deep (the parser recurses on them);
- at most :data:`MAX_MACROS` comprehension macros (``all``, ``exists``, ``exists_one``, ``map``,
  ``filter``), nested at most :data:`MAX_MACRO_DEPTH` deep;
- the estimated number of iterations stays under :data:`MAX_ITERATIONS`: a macro over a list literal
  runs once per element, over anything else (a field, a computed list) at most
  ``max(ASSUMED_RANGE, elements written * (pluses + 1))`` times (lists only grow by ``+`` of what is
  written in the source), and a nested macro runs that many times per iteration of its parent.

A comment or odd spacing cannot hide a macro from this (it could from a regular expression).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_NESTING = 32
MAX_MACROS = 3
MAX_MACRO_DEPTH = 2
MAX_ITERATIONS = 100_000  # ~25 ms of the library's ~0.25 µs per simple iteration
ASSUMED_RANGE = 100  # what a macro over a field is assumed to iterate (call/event lists are short)
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
# CEL's lexical shapes: string literals (r/b prefixes, triple quotes, escapes), line comments,
# identifiers, blanks, and one character of anything else.
TOKEN = re.compile(
    r"""(?P<string>(?:[rR][bB]?|[bB][rR]?)?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|"""
    r"""'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))"""
    r"""|(?P<comment>//[^\n]*)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)|(?P<space>\s+)|(?P<other>.)""",
    re.DOTALL,
)
_OPENING = {"(": ")", "[": "]", "{": "}"}
_CLOSING = frozenset(_OPENING.values())


class ShapeError(ValueError):
    """The condition is nested too deeply or would iterate too much; the message says which."""


@dataclass(frozen=True, slots=True)
class _Macro:
    start: int  # index of its "(" among the code tokens
    end: int  # index of the matching ")"
    variable: str | None
    range: int


def code_tokens(source: str) -> list[str]:
    """The tokens that mean something (no blanks, no comments)."""
    return [m.group() for m in TOKEN.finditer(source) if m.lastgroup not in ("space", "comment")]


def _match_brackets(code: list[str]) -> dict[int, int]:
    """Opening index → closing index; :class:`ShapeError` when nested deeper than allowed."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for index, token in enumerate(code):
        if token in _OPENING:
            stack.append(index)
            if len(stack) > MAX_NESTING:
                raise ShapeError(f"the condition nests brackets more than {MAX_NESTING} deep")
        elif token in _CLOSING and stack and _OPENING[code[stack[-1]]] == token:
            pairs[stack.pop()] = index
    return pairs  # unbalanced brackets are left to the compiler's precise message


def _list_size(code: list[str], pairs: dict[int, int], opening: int) -> int:
    """Elements of the list literal opened at ``opening``: its top-level commas, plus one."""
    closing = pairs[opening]
    if closing == opening + 1:
        return 0
    commas, index = 0, opening + 1
    while index < closing:
        if code[index] in _OPENING and index in pairs:
            index = pairs[index]
        elif code[index] == ",":
            commas += 1
        index += 1
    trailing = code[closing - 1] == ","
    return commas + (0 if trailing else 1)


def _ends_operand(token: str) -> bool:
    """Whether ``token`` can end an operand (so a ``[`` after it indexes rather than opens a list)."""
    return token in (")", "]", "}") or token[0].isalnum() or token[0] in "_'\""


def _macros(code: list[str], pairs: dict[int, int]) -> list[_Macro]:
    closers = {end: start for start, end in pairs.items()}
    elements = code.count(",") + 1
    unknown = max(ASSUMED_RANGE, elements * (code.count("+") + 1))
    found: list[_Macro] = []
    for index in range(1, len(code) - 1):
        if code[index - 1] != "." or code[index] not in MACROS or code[index + 1] != "(" or index + 1 not in pairs:
            continue
        receiver = index - 2
        opening = closers.get(receiver) if receiver >= 0 and code[receiver] == "]" else None
        if opening is not None and opening > 0 and _ends_operand(code[opening - 1]):
            opening = None  # ``expr[0]`` is an index into a computed list, not a list literal
        size = _list_size(code, pairs, opening) if opening is not None else unknown
        variable = code[index + 2] if index + 2 < len(code) and code[index + 2].isidentifier() else None
        found.append(_Macro(index + 1, pairs[index + 1], variable, size))
    return found


def check_shape(source: str) -> set[str]:
    """Refuse a condition whose nesting or estimated iterations exceed the limits (:class:`ShapeError`);
    return the names its macros bind (``x`` in ``list.all(x, …)``)."""
    code = code_tokens(source)
    pairs = _match_brackets(code)
    macros = _macros(code, pairs)
    if len(macros) > MAX_MACROS:
        raise ShapeError(f"at most {MAX_MACROS} comprehension macros (all, exists, map, filter) are allowed")
    total = 0
    for macro in macros:
        parents = [p for p in macros if p.start < macro.start and macro.end < p.end]
        if len(parents) + 1 > MAX_MACRO_DEPTH:
            raise ShapeError(f"comprehension macros may nest at most {MAX_MACRO_DEPTH} deep")
        cost = macro.range
        for parent in parents:
            cost *= max(parent.range, 1)
        total += cost
    if total > MAX_ITERATIONS:
        raise ShapeError(
            f"the condition could iterate about {total:,} times (at most {MAX_ITERATIONS:,}): "
            "use fewer or smaller comprehensions"
        )
    return {macro.variable for macro in macros if macro.variable}
