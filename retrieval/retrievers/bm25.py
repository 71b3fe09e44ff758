"""``bm25``: BM25 over the tantivy component (the default lexical retriever and the document store)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from braid.index.hits import Hits, drop_excluded
from braid.retrieval.retrievers.spec import RetrieverSpec


@dataclass
class BM25Retriever:
    index: object  # braid.index.lexical.LexicalIndex (or its sharded view)
    name: str = "bm25"

    def search(self, queries: Sequence[str], k: int, threads: int = 1, exclude=None, allow=None) -> Hits:
        """``allow``: bool over docnos, the documents a filter lets through (None: all)."""
        extra = 1 if exclude is not None else 0
        kw = {} if allow is None else {"allow": allow}
        return drop_excluded(self.index.search(queries, k=k + extra, threads=threads, **kw), exclude, k)

    def search_terms(self, term_queries, k: int, threads: int = 1, exclude=None, allow=None) -> Hits:
        """Weighted term queries (``[{term: weight}]``, e.g. RM3's expansions) instead of text."""
        extra = 1 if exclude is not None else 0
        kw = {} if allow is None else {"allow": allow}
        return drop_excluded(self.index.search_weighted(term_queries, k=k + extra, threads=threads, **kw), exclude, k)


SPEC = RetrieverSpec(
    name="bm25",
    component="bm25",
    open=lambda ctx: BM25Retriever(ctx.component("bm25")),
    summary="BM25 over tantivy",
    prf={"rm3": "rm3"},
    weight=0.75,
    hybrid=True,
    thread_safe=True,
)
