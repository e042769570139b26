"""The search box's language, parsed once and written out for each database's full-text engine.

A query is a list of terms that must all match, in any order (like PostgreSQL's
``websearch_to_tsquery``, without its ``or`` and ``-``):

- a word: ``refund`` (stemmed, case- and accent-insensitive);
- a prefix: ``refund*`` (any word starting so; at least two letters, so that a prefix cannot expand
  to half the dictionary);
- a phrase: ``"cancel my plan"``, the words next to each other in that order; a word inside may end
  with ``*`` too. A quote left open runs to the end of the query.

Anything else (punctuation, operators of either engine, stray ``*``) only separates words: the parser
keeps letters and digits alone, so what reaches FTS5's ``MATCH`` or PostgreSQL's ``to_tsquery`` is built
here from quoted words and can neither inject syntax nor fail to parse. A query without any word, too
long, or with too many terms is refused (:class:`BadSearchQueryError`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from service.errors import DomainError

MAX_QUERY_CHARS = 500
MAX_TERMS = 16
MAX_WORDS = 32
MIN_PREFIX_CHARS = 2

# A word: letters and digits (any script), as FTS5's unicode61 tokenizer and PostgreSQL's parser see one.
_WORD = re.compile(r"[^\W_]+(\*?)")
_QUOTE = '"'
QUERY_HELP = (
    'Words (all must match, any order; stemmed, case- and accent-insensitive), "quoted phrases" and prefix* '
    "(at least two letters). Other punctuation only separates words."
)


class BadSearchQueryError(DomainError):
    """The search text cannot be searched for (answered with 400)."""

    status_code = 400
    slug = "bad-search-query"
    title = "Bad search query"


@dataclass(frozen=True, slots=True)
class Word:
    text: str  # letters and digits only, lower case, NFKC
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Term:
    """One word, or a phrase: words that must follow each other."""

    words: tuple[Word, ...]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed query: every term must match."""

    terms: tuple[Term, ...]

    def fts5(self) -> str:
        """The query as an FTS5 ``MATCH`` expression: quoted strings joined by ``AND``."""
        return " AND ".join(" + ".join(_fts5_word(word) for word in term.words) for term in self.terms)

    def tsquery(self) -> str:
        """The query as a PostgreSQL ``to_tsquery`` text: quoted lexemes, ``<->`` within a phrase, ``&``."""
        parts = []
        for term in self.terms:
            phrase = " <-> ".join(_ts_word(word) for word in term.words)
            parts.append(f"({phrase})" if len(term.words) > 1 else phrase)
        return " & ".join(parts)


def _fts5_word(word: Word) -> str:
    # Words hold no quote, but escape as FTS5 wants anyway ("" in a string): the text is never trusted.
    quoted = '"' + word.text.replace('"', '""') + '"'
    return quoted + "*" if word.prefix else quoted


def _ts_word(word: Word) -> str:
    quoted = "'" + word.text.replace("\\", "\\\\").replace("'", "''") + "'"
    return quoted + ":*" if word.prefix else quoted


def _words(chunk: str) -> list[Word]:
    words = []
    for match in _WORD.finditer(chunk):
        text = match.group(0).removesuffix("*")
        prefix = bool(match.group(1))
        if prefix and len(text) < MIN_PREFIX_CHARS:
            raise BadSearchQueryError(
                f"the prefix {text + '*'!r} is too short: give at least {MIN_PREFIX_CHARS} letters before *"
            )
        words.append(Word(text.lower(), prefix))
    return words


def parse_query(text: str) -> SearchQuery:
    """Parse the search text ``q``; :class:`BadSearchQueryError` if there is nothing to search for."""
    if len(text) > MAX_QUERY_CHARS:
        raise BadSearchQueryError(f"the query is too long: at most {MAX_QUERY_CHARS} characters")
    text = unicodedata.normalize("NFKC", text)
    terms: list[Term] = []
    # Outside quotes (even pieces) every word is a term; inside (odd pieces) the words are one phrase.
    for index, chunk in enumerate(text.split(_QUOTE)):
        words = _words(chunk)
        if index % 2:
            if words:
                terms.append(Term(tuple(words)))
        else:
            terms.extend(Term((word,)) for word in words)
    if not terms:
        raise BadSearchQueryError('the query has no word to search for: use words, "phrases" or prefix*')
    if len(terms) > MAX_TERMS or sum(len(term.words) for term in terms) > MAX_WORDS:
        raise BadSearchQueryError(f"the query is too long: at most {MAX_TERMS} terms and {MAX_WORDS} words")
    return SearchQuery(tuple(terms))
