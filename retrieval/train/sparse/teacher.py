"""The teacher: candidates mined from an index's hybrid ranking, scored by its retrievers, normalised and combined.

Geng et al. 2024 ("Towards Competitive Search Relevance for Inference-Free Learned Sparse
Retrievers") distil an inference-free document encoder from a heterogeneous ensemble (dense and
sparse siamese retrievers); the retrievers' scores live on different scales, so each teacher's
scores are min-max normalised over a query's candidates before they are combined. Here the
ensemble is the index's own: BM25, the SPLADE component, the dense bi-encoder (the members of its
default hybrid), each searched through :class:`braid.retrieval.searcher.Searcher`.

Arrays: ``candidates`` int64 (n_queries, n_candidates) docnos; per-teacher ``scores`` float32 of
the same shape (NaN where a candidate is not in that teacher's list); the pure functions
(:func:`minmax_per_query`, :func:`combine_teachers`) take and return plain arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from braid.data.errors import OptionError


def minmax_per_query(scores: np.ndarray) -> np.ndarray:
    """Min-max normalise each row of ``scores`` (n_queries, n) to [0, 1]; float64 result.

    NaN (a candidate the teacher did not list) counts as the row's lowest listed score, so it
    normalises to 0. A row whose listed scores are all equal (or that lists nothing) is all 0:
    that teacher then prefers no candidate.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise OptionError("scores", f"shape {s.shape}", "a 2-d array (n_queries, n_candidates)")
    listed = np.isfinite(s)
    lo = np.where(listed, s, np.inf).min(axis=1, keepdims=True)
    hi = np.where(listed, s, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    ok = np.isfinite(span) & (span > 0)
    filled = np.where(listed, s, lo)
    out = np.where(ok, (filled - np.where(np.isfinite(lo), lo, 0.0)) / np.where(ok, span, 1.0), 0.0)
    return out


def combine_teachers(per_teacher: Sequence[np.ndarray], weights: Sequence[float] | None = None, scale: float = 1.0) -> np.ndarray:
    """``scale * sum_r w_r * minmax_r / sum_r w_r``: the ensemble score of each candidate, float32 (n_queries, n).

    ``per_teacher``: one (n_queries, n) array of raw scores per teacher; ``weights``: one per
    teacher (default equal).
    """
    if not per_teacher:
        raise OptionError("teachers", "none", "at least one teacher")
    w = np.ones(len(per_teacher)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(per_teacher),) or (w < 0).any() or w.sum() <= 0:
        raise OptionError("weights", list(np.asarray(weights).tolist()), "one non-negative weight per teacher, not all 0")
    total = sum(wr * minmax_per_query(s) for wr, s in zip(w, per_teacher))
    return (scale * total / w.sum()).astype(np.float32)


def score_spread(scores: np.ndarray, fallback: float) -> np.ndarray:
    """Per row of raw ``scores`` (n_queries, n; NaN = unlisted): max - min of the listed ones, float32 (n_queries,).

    A row with fewer than two listed scores, or whose listed scores tie, gets ``fallback``.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise OptionError("scores", f"shape {s.shape}", "a 2-d array (n_queries, n_candidates)")
    listed = np.isfinite(s)
    hi = np.where(listed, s, -np.inf).max(axis=1)
    lo = np.where(listed, s, np.inf).min(axis=1)
    span = hi - lo
    ok = (listed.sum(axis=1) >= 2) & np.isfinite(span) & (span > 0)
    return np.where(ok, span, float(fallback)).astype(np.float32)


def teacher_names(searcher, teachers: str) -> list[str]:
    """The retrievers that teach: ``"hybrid"`` = the index's members of the default hybrid pipeline, else the listed names."""
    from braid.retrieval import retrievers as registry

    available = searcher.available_retrievers()
    if teachers.strip() == "hybrid":
        names = [n for n in available if registry.get(n).hybrid]
        if not names:
            raise OptionError("--teachers", teachers, f"an index with hybrid members; it serves {', '.join(available)}")
        return names
    names = [t.strip() for t in teachers.split(",") if t.strip()]
    bad = [n for n in names if n not in available]
    if bad:
        raise OptionError("--teachers", ",".join(bad), f"'hybrid' or retrievers this index serves: {', '.join(available)}")
    return names


def hybrid_ranking(searcher, texts: Sequence[str], depth: int, threads: int = 1) -> np.ndarray:
    """Docnos int64 (n_queries, depth) of the index's default ranking (its hybrid when it has several retrievers); -1 pads."""
    hits = searcher.batch_search(list(texts), k=depth, threads=threads)
    return np.asarray(hits.hits.docnos, dtype=np.int64)


def teacher_scores(searcher, texts: Sequence[str], candidates: np.ndarray, names: Sequence[str], depth: int, threads: int = 1) -> list[np.ndarray]:
    """Raw score of each candidate by each teacher: a list (one per name) of float32 (n_queries, n) arrays, NaN where unlisted.

    Each teacher searches its own top ``depth``; a candidate outside it is NaN (normalised as
    that list's lowest score by :func:`minmax_per_query`).
    """
    out = []
    for name in names:
        hits = searcher.batch_search(list(texts), k=depth, retriever=name, threads=threads).hits
        scores = np.full(candidates.shape, np.nan, dtype=np.float32)
        for i in range(candidates.shape[0]):
            listed = {int(d): float(s) for d, s in zip(hits.docnos[i], hits.scores[i]) if d >= 0}
            scores[i] = [listed.get(int(d), np.nan) for d in candidates[i]]
        out.append(scores)
    return out
