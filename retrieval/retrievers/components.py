"""Opening an index directory's components for searching: component name -> opener.

The query half of a component (its build half is :mod:`braid.retrieval.build.components`). An opener
takes the :class:`~braid.retrieval.context.IndexContext` and the component's manifest entry and
returns the index object the retrievers search.
"""

from __future__ import annotations

from typing import Callable


def _open_bm25(ctx, info):
    from braid.index.lexical import LexicalIndex

    return LexicalIndex.open(ctx.component_dir("bm25"), info)


def _open_pyserini(ctx, info):
    from braid.index.pyserini_bm25 import PyseriniBM25

    return PyseriniBM25.open(ctx.path("pyserini"), info, ctx.doc_ids)


def _open_sparse(ctx, info):
    if ctx.live:  # a live index: its segments (braid.index.segments)
        from braid.index.segments import open_sparse_segments

        return open_sparse_segments(ctx.index_dir, ctx.manifest, ctx.deleted)
    from braid.index.sparse.blocked import BlockedSparseIndex

    return BlockedSparseIndex.load(ctx.path("sparse"), info["index"])


def _open_dense(ctx, info):
    if ctx.live:
        from braid.index.segments import open_dense_segments

        return open_dense_segments(ctx.index_dir, ctx.manifest, ctx.deleted)
    from braid.index.dense import DenseIndex

    return DenseIndex.load(ctx.path("dense"), info["index"])


COMPONENT_OPENERS: dict[str, Callable] = {
    "bm25": _open_bm25,
    "pyserini": _open_pyserini,
    "sparse": _open_sparse,
    "dense": _open_dense,
}
