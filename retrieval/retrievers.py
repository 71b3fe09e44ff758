"""The retrievers a Searcher can use, each over one component of the index directory.

A retriever turns query strings into ``Hits`` (docnos, scores). Registry: ``RETRIEVERS`` maps a
retriever name to the component it needs and the function that opens it, so adding a retriever is
one entry, not a branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from braid.data.errors import OptionError
from braid.index.hits import Hits


def drop_excluded(hits: Hits, exclude: np.ndarray | None, k: int) -> Hits:
    """Remove from row i the docno ``exclude[i]`` (if present) and cut rows to k."""
    if exclude is None:
        return Hits(hits.docnos[:, :k].copy(), hits.scores[:, :k].copy())
    out = Hits.empty(hits.n_queries, k)
    for i in range(hits.n_queries):
        keep = hits.docnos[i] != exclude[i]
        keep &= hits.docnos[i] >= 0
        d = hits.docnos[i][keep][:k]
        out.docnos[i, : len(d)] = d
        out.scores[i, : len(d)] = hits.scores[i][keep][:k]
    return out


@dataclass
class BM25Retriever:
    index: object  # braid.index.lexical.LexicalIndex
    name: str = "bm25"

    def search(self, queries: Sequence[str], k: int, threads: int = 1, exclude=None, **knobs) -> Hits:
        _no_knobs(self.name, knobs)
        extra = 1 if exclude is not None else 0
        return drop_excluded(self.index.search(queries, k=k + extra, threads=threads), exclude, k)

    def search_terms(self, term_queries, k: int, threads: int = 1, exclude=None) -> Hits:
        extra = 1 if exclude is not None else 0
        return drop_excluded(self.index.search_weighted(term_queries, k=k + extra, threads=threads), exclude, k)


@dataclass
class PyseriniRetriever:
    index: object  # braid.index.pyserini_bm25.PyseriniBM25
    name: str = "pyserini"

    def search(self, queries: Sequence[str], k: int, threads: int = 1, exclude=None, **knobs) -> Hits:
        _no_knobs(self.name, knobs)
        extra = 1 if exclude is not None else 0
        return drop_excluded(self.index.search(list(queries), k=k + extra, threads=threads), exclude, k)


def _no_knobs(name: str, knobs: dict) -> None:
    if knobs:
        raise OptionError("search options", ", ".join(sorted(knobs)), f"the {name} retriever takes none of these")


# ---------------------------------------------------------------------- components
def _open_bm25(searcher, info):
    from braid.index.lexical import LexicalIndex

    return LexicalIndex.open(searcher.index_dir / "bm25", info)


def _open_pyserini(searcher, info):
    from braid.index.pyserini_bm25 import PyseriniBM25

    return PyseriniBM25.open(searcher.index_dir / "pyserini", info, searcher.doc_ids)


def _open_sparse(searcher, info):
    from braid.index.sparse.blocked import BlockedSparseIndex

    return BlockedSparseIndex.load(searcher.index_dir / "sparse", info["index"])


def _open_dense(searcher, info):
    from braid.index.dense import DenseIndex

    return DenseIndex.load(searcher.index_dir / "dense", info["index"])


COMPONENTS: dict[str, Callable] = {
    "bm25": _open_bm25,
    "pyserini": _open_pyserini,
    "sparse": _open_sparse,
    "dense": _open_dense,
}


def open_component(searcher, name: str):
    cache = searcher.__dict__.setdefault("_components", {})
    if name not in cache:
        if name not in searcher.components:
            raise OptionError(
                "--retriever", name, f"{searcher.index_dir} has no {name!r} component (it has: {', '.join(searcher.components) or 'none'})"
            )
        cache[name] = COMPONENTS[name](searcher, searcher.components[name])
    return cache[name]


# ---------------------------------------------------------------------- retrievers
def _bm25(searcher):
    return BM25Retriever(open_component(searcher, "bm25"))


def _pyserini(searcher):
    return PyseriniRetriever(open_component(searcher, "pyserini"))


def _sparse(searcher, query_mode: str | None = None):
    from braid.retrieval.learned import SparseRetriever

    return SparseRetriever.open(searcher, query_mode=query_mode)


def _sparse_if(searcher):
    return _sparse(searcher, query_mode="idf")


def _dense(searcher):
    from braid.retrieval.learned import DenseRetriever

    return DenseRetriever.open(searcher)


# name -> (component it needs, opener)
RETRIEVERS: dict[str, tuple[str, Callable]] = {
    "bm25": ("bm25", _bm25),
    "sparse": ("sparse", _sparse),
    "sparse-if": ("sparse", _sparse_if),
    "dense": ("dense", _dense),
    "pyserini": ("pyserini", _pyserini),
}


def available(manifest: dict) -> list[str]:
    have = manifest["components"]
    out = []
    for name, (component, _) in RETRIEVERS.items():
        if component not in have:
            continue
        if name == "sparse-if" and not have["sparse"].get("encoder", {}).get("idf", False):
            continue
        if name == "sparse" and not have["sparse"].get("encoder", {}).get("model"):
            continue
        out.append(name)
    return out


def open_retriever(searcher, name: str):
    if name not in RETRIEVERS:
        raise OptionError("--retriever", name, "known retrievers: " + ", ".join(RETRIEVERS) + " (or a pipeline)")
    component, opener = RETRIEVERS[name]
    if component not in searcher.components:
        raise OptionError(
            "--retriever",
            name,
            f"{searcher.index_dir} has no {component!r} component (it has: {', '.join(searcher.components) or 'none'}); "
            f"build it with `braid index ... --retrievers {component}`",
        )
    return opener(searcher)
