"""``pyserini``: BM25 in Lucene through Pyserini, the reference backend (optional extra)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from braid.index.hits import Hits, drop_excluded
from braid.retrieval.retrievers.spec import RetrieverSpec


@dataclass
class PyseriniRetriever:
    index: object  # braid.index.pyserini_bm25.PyseriniBM25
    name: str = "pyserini"

    def search(self, queries: Sequence[str], k: int, threads: int = 1, exclude=None, allow=None) -> Hits:
        if allow is not None:
            from braid.data.errors import OptionError

            raise OptionError("filter", "...", "the pyserini retriever does not take filters (bm25, sparse, sparse-if, dense do)")
        extra = 1 if exclude is not None else 0
        return drop_excluded(self.index.search(list(queries), k=k + extra, threads=threads), exclude, k)


SPEC = RetrieverSpec(
    name="pyserini",
    component="pyserini",
    open=lambda ctx: PyseriniRetriever(ctx.component("pyserini")),
    summary="BM25 in Lucene (Pyserini reference backend)",
    thread_safe=True,
)
