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
