"""Corpus-only training queries: pseudo-queries cut from the documents themselves.

No judgments are used: a pseudo-query is a document's title or one of its sentences (the inverse
cloze task of Lee et al. 2019: a sentence stands for a query about its context), and which
documents answer it is left to the teacher (:mod:`.teacher`). Drawn with a seeded generator, so
the same corpus and settings give the same queries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

# A sentence ends at . ! ? followed by white space; short fragments are not questions about anything.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MIN_WORDS = 4
MAX_WORDS = 40


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` with ``MIN_WORDS``..``MAX_WORDS`` words (longer ones cut to ``MAX_WORDS``)."""
    out = []
    for part in _SENTENCE_END.split(text.strip()):
        words = part.split()
        if len(words) >= MIN_WORDS:
            out.append(" ".join(words[:MAX_WORDS]))
    return out


def pseudo_queries(titles: Sequence[str], texts: Sequence[str], kinds: Sequence[str], max_queries: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Pseudo-queries and the docno each was cut from: ``(queries, source_docnos int64)``.

    Per document (docno = position in ``titles`` / ``texts``): its title when ``"title"`` is in
    ``kinds`` and it has at least ``MIN_WORDS - 1`` words, and one sentence of its text picked at
    random when ``"sentence"`` is. At most ``max_queries`` are kept, a seeded sample, in docno
    order; duplicate query texts are kept once.
    """
    rng = np.random.default_rng([seed, 7])
    queries: list[str] = []
    source: list[int] = []
    seen: set[str] = set()
    for docno, (title, text) in enumerate(zip(titles, texts)):
        picks = []
        if "title" in kinds and len(title.split()) >= MIN_WORDS - 1:
            picks.append(" ".join(title.split()[:MAX_WORDS]))
        if "sentence" in kinds:
            cand = sentences(text)
            if cand:
                picks.append(cand[int(rng.integers(len(cand)))])
        for q in picks:
            if q.lower() not in seen:
                seen.add(q.lower())
                queries.append(q)
                source.append(docno)
    if len(queries) > max_queries:
        keep = np.sort(rng.choice(len(queries), size=max_queries, replace=False))
        queries = [queries[i] for i in keep]
        source = [source[i] for i in keep]
    return queries, np.asarray(source, dtype=np.int64)
