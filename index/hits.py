"""The result type every retriever returns: internal document numbers and scores, shape (n_queries, k)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_DOCNO = -1


@dataclass(frozen=True)
class Hits:
    """Top-k results of a batch of queries.

    ``docnos``: int64 (n_queries, k), the index's internal document numbers, ``-1`` where a query
    has fewer than k hits. ``scores``: float32 (n_queries, k), ``-inf`` on padding. Each row is
    ordered by (-score, docno).
    """

    docnos: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.docnos.shape != self.scores.shape or self.docnos.ndim != 2:
            raise ValueError(f"docnos {self.docnos.shape} and scores {self.scores.shape} must be equal 2-d shapes")

    @property
    def n_queries(self) -> int:
        return self.docnos.shape[0]

    @property
    def k(self) -> int:
        return self.docnos.shape[1]

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Valid (non-padding) docnos and scores of query ``i``."""
        valid = self.docnos[i] >= 0
        return self.docnos[i][valid], self.scores[i][valid]

    def head(self, k: int) -> "Hits":
        """The first ``k`` columns (a copy)."""
        return Hits(self.docnos[:, :k].copy(), self.scores[:, :k].copy())

    @staticmethod
    def empty(n_queries: int, k: int) -> "Hits":
        return Hits(
            np.full((n_queries, k), PAD_DOCNO, dtype=np.int64),
            np.full((n_queries, k), -np.inf, dtype=np.float32),
        )

    @staticmethod
    def from_lists(rows: list[tuple[np.ndarray, np.ndarray]], k: int) -> "Hits":
        """Build from per-query (docnos, scores) in any order: sorts by (-score, docno) and keeps k."""
        out = Hits.empty(len(rows), k)
        for i, (docnos, scores) in enumerate(rows):
            docnos = np.asarray(docnos, dtype=np.int64)
            scores = np.asarray(scores, dtype=np.float32)
            order = np.lexsort((docnos, -scores))[:k]
            out.docnos[i, : len(order)] = docnos[order]
            out.scores[i, : len(order)] = scores[order]
        return out

    @staticmethod
    def concat(parts: list["Hits"]) -> "Hits":
        k = max((p.k for p in parts), default=0)
        n = sum(p.n_queries for p in parts)
        out = Hits.empty(n, k)
        at = 0
        for p in parts:
            out.docnos[at : at + p.n_queries, : p.k] = p.docnos
            out.scores[at : at + p.n_queries, : p.k] = p.scores
            at += p.n_queries
        return out


def drop_docnos(hits: Hits, exclude: np.ndarray) -> Hits:
    """Remove, in each row, the hit whose docno equals ``exclude[row]``, shifting the rest up.

    The one place self-hits are removed (BEIR's convention: a hit whose id is the query's own id).

    Args:
        hits: Hits (n_queries, k).
        exclude: int64 (n_queries,): the docno to remove per query (its own docno), ``-1`` for none.

    Returns:
        Hits (n_queries, k): the same rows without that docno; freed slots become padding at the end.
    """
    from braid.data.errors import OptionError

    if not isinstance(hits, Hits):
        raise OptionError("hits", type(hits).__name__, "a braid.index.hits.Hits")
    exclude = np.asarray(exclude)
    if exclude.shape != (hits.n_queries,) or not np.issubdtype(exclude.dtype, np.integer):
        raise OptionError(
            "exclude", f"array {exclude.dtype} {exclude.shape}", f"an integer array of shape ({hits.n_queries},)"
        )
    exclude = exclude.astype(np.int64)
    drop = (hits.docnos == exclude[:, None]) & (exclude[:, None] >= 0)
    if not drop.any():
        return hits
    # A stable sort on the drop mask moves dropped entries to the end and keeps the others' order.
    order = np.argsort(drop, axis=1, kind="stable")
    docnos = np.take_along_axis(hits.docnos, order, axis=1)
    scores = np.take_along_axis(hits.scores, order, axis=1)
    tail = np.arange(hits.k)[None, :] >= (hits.k - drop.sum(axis=1))[:, None]
    docnos[tail] = PAD_DOCNO
    scores[tail] = -np.inf
    return Hits(docnos, scores)


def drop_excluded(hits: Hits, exclude: np.ndarray | None, k: int) -> Hits:
    """``hits`` without each query's excluded docno (see :func:`drop_docnos`), cut to ``k`` columns.

    Retrievers search ``k + 1`` when ``exclude`` is given, so a dropped self-hit leaves ``k`` hits.
    """
    if exclude is not None:
        hits = drop_docnos(hits, exclude)
    return hits.head(k)
