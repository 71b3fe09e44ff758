"""The one canonical form of text entering Braid: documents, queries and ids, validated once at the boundary.

Every reader (corpus, queries) and every entry point (the Python ``Searcher``, the HTTP service, the
CLI) passes text through :func:`text_problem` / :func:`normalize_text`, so nothing below the boundary
sees invalid Unicode, NUL bytes or compatibility forms:

* **Valid Unicode**: a lone surrogate (e.g. a JSON escape ``"\\ud800"``) cannot be encoded as UTF-8 and
  would break tantivy and the tokenizers; it is refused with its position.
* **NFKC normalisation** (Unicode compatibility composition): full-width letters (``ｃａｔ``), ligatures
  (``ﬁ``), superscripts and other compatibility forms become their plain forms, so ``ｃａｔ`` matches
  ``cat`` in every retriever. Applied to documents and queries alike.
* **Control characters**: NUL and the other C0/C1 controls except tab, newline and carriage return become
  spaces.

Ids are not normalised (they are keys that qrels and runs must match byte for byte); :func:`id_problem`
only refuses what TREC files cannot hold. A query with no letter or digit is *blank*: every retriever
returns no hits for it (:func:`is_blank`), as BM25 does, instead of arbitrary "top" documents.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Mapping, Sequence

from braid.data.errors import OptionError

NORMALIZATION = "NFKC"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def text_problem(value: object) -> str | None:
    """Why ``value`` cannot be taken as text (None when it can)."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"invalid Unicode: lone surrogate U+{ord(value[exc.start]):04X} at character {exc.start}"
    return None


def normalize_text(value: str) -> str:
    """NFKC, with control characters (NUL included; not tab, newline, CR) replaced by spaces.

    ``value`` must be valid text (:func:`text_problem` is None). Idempotent.
    """
    if value.isascii():
        return _CONTROL.sub(" ", value) if _CONTROL.search(value) else value
    return _CONTROL.sub(" ", unicodedata.normalize(NORMALIZATION, value))


def id_problem(value: str) -> str | None:
    """Why an id (already a non-empty string) cannot be used: invalid Unicode, whitespace or controls."""
    problem = text_problem(value)
    if problem is not None:
        return problem
    if any(c.isspace() for c in value):
        return "contains whitespace; TREC formats cannot hold it"
    if _CONTROL.search(value):
        return "contains a control character"
    return None


def is_blank(text: str) -> bool:
    """True when ``text`` has no letter or digit (empty, whitespace, NUL or punctuation only)."""
    return not any(c.isalnum() for c in text)


def query_batch(queries: Sequence[str] | Mapping[str, str], query_ids: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """A batch of queries as ``(ids, normalised texts)``, checked once for every batch entry point.

    ``queries``: a list of strings (ids from ``query_ids``, else ``"0"``, ``"1"``, ...) or ``{query_id: text}``.
    One string is refused (iterating it would search one-letter queries), as is an id count that does not
    match, or an entry that is not valid text (:func:`text_problem`, naming ``queries[i]``).
    """
    if type(queries) is list:  # the common case first (the Mapping check below is an ABC check)
        texts = queries
        ids = list(query_ids) if query_ids is not None else [str(i) for i in range(len(texts))]
    elif isinstance(queries, (str, bytes)):
        raise OptionError("queries", queries[:80], "a list of query strings or {query_id: text}, not one string (use search() for one query)")
    elif isinstance(queries, Mapping):
        ids, texts = list(queries.keys()), list(queries.values())
    else:
        texts = list(queries)
        ids = list(query_ids) if query_ids is not None else [str(i) for i in range(len(texts))]
    if len(ids) != len(texts):
        raise OptionError("query_ids", len(ids), f"one id per query ({len(texts)} queries)")
    out = []
    for i, t in enumerate(texts):
        if type(t) is str and t.isascii():  # the common case: valid UTF-8, nothing to compose
            out.append(_CONTROL.sub(" ", t) if _CONTROL.search(t) else t)
            continue
        problem = text_problem(t)
        if problem is not None:
            raise OptionError(f"queries[{i}]", t if isinstance(t, str) else type(t).__name__, problem)
        out.append(normalize_text(t))
    return ids, out
