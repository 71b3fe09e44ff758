"""Pseudo-relevance feedback: pure functions that turn a query and its top documents into a new query.

* :func:`rm3_expand` -- RM3 (Lavrenko & Croft, SIGIR 2001; Abdul-Jaleel et al., TREC 2004) on bag-of-words
  queries, following Anserini's ``Rm3Reranker`` (the reference implementation behind Pyserini's
  ``--rm3``); the caller turns the weighted terms into a boosted BM25 query.
* :func:`rocchio_sparse` / :func:`rocchio_sparse_batch` -- Rocchio (1971) on learned-sparse vectors
  (term id -> weight), with Anserini's Rocchio defaults ``alpha=1.0, beta=0.75``.
* :func:`dense_prf` -- vector PRF on dense embeddings (Li et al., "Pseudo Relevance Feedback with Deep
  Language Models and Dense Retrievers: Successes and Pitfalls", TOIS 2023), matching Pyserini's
  ``DenseVectorAveragePrf`` / ``DenseVectorRocchioPrf``.
* :func:`interpolate_prf_interpolate` -- the order of operations of Li et al., "To Interpolate or not to
  Interpolate: PRF, Dense and Sparse Retrievers" (SIGIR 2022): fuse the first-stage lists, take the
  feedback documents from the fused list, run PRF per retriever, fuse again. Pure given the callable
  that runs the second-stage retrievals.

No retrieval, no index access: the caller fetches term frequencies, forward vectors or embeddings.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from braid.data.errors import DataError, OptionError, check_finite, check_positive_int
from braid.index.hits import Hits

__all__ = [
    "rm3_expand",
    "rocchio_sparse",
    "rocchio_sparse_batch",
    "dense_prf",
    "interpolate_prf_interpolate",
    "DOC_WEIGHTINGS",
    "DENSE_PRF_DEPTH",
]

_ANSERINI_TERM = re.compile(r"[a-z0-9]+")


# --------------------------------------------------------------------------------------------------
# RM3
# --------------------------------------------------------------------------------------------------


def _weights_raw(scores: np.ndarray) -> np.ndarray:
    return scores


def _weights_softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max()) if len(scores) else scores
    return e / e.sum() if len(scores) else e


def _weights_uniform(scores: np.ndarray) -> np.ndarray:
    return np.ones_like(scores)


# How a feedback document's retrieval score weights its term distribution, p(D|Q) up to a constant.
DOC_WEIGHTINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "raw": _weights_raw,  # Anserini: the retrieval (BM25) score itself
    "softmax": _weights_softmax,  # Indri-style: exp(score) normalised, for log-likelihood scores
    "uniform": _weights_uniform,  # RM3 with every feedback document weighted equally
}


def _top_terms(weights: dict, n: int) -> dict:
    """Keep the ``n`` largest weights, ties broken by the key (deterministic, unlike a hash order)."""
    if len(weights) <= n:
        return dict(weights)
    return dict(sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def _l1(weights: dict) -> dict:
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()} if total > 0 else {}


def rm3_expand(
    query_terms: dict[str, float],
    feedback_docs: list[dict[str, int]],
    feedback_scores: np.ndarray,
    fb_terms: int = 10,
    original_query_weight: float = 0.5,
    stopwords: set[str] | None = None,
    *,
    fb_docs: int = 10,
    doc_weighting: str = "raw",
    prune_docs: bool = True,
    min_term_length: int = 2,
    max_term_length: int = 20,
    alnum_only: bool = True,
    doc_freqs: dict[str, int] | Callable[[str], int] | None = None,
    num_docs: int | None = None,
    max_df_ratio: float = 0.1,
) -> dict[str, float]:
    """RM3 query expansion, as Anserini's ``Rm3Reranker`` computes it.

    1. The query becomes ``q(t) = query_terms[t] / sum(query_terms)`` (unit L1; Anserini counts
       analysed query terms, so pass counts or weights).
    2. For each of the first ``fb_docs`` feedback documents: terms are filtered (``stopwords``;
       Anserini's filters: length in [``min_term_length``, ``max_term_length``], ``[a-z0-9]+`` when
       ``alnum_only``, and document frequency ``df / num_docs <= max_df_ratio`` when ``doc_freqs`` (a
       dict or a callable term -> df, e.g. the BM25 index's ``doc_freq``) and ``num_docs`` are given); with ``prune_docs`` (Anserini) the document keeps its ``fb_terms`` most
       frequent terms and ``p(t|D) = tf / (sum of the kept tfs)``; without it ``p(t|D) = tf / |D|``
       with ``|D|`` the sum of all the document's tfs (classic RM1). Documents whose norm is
       ``<= 0.001`` are skipped, as in Anserini.
    3. ``rm(t) = sum_D p(t|D) * w(D)`` with ``w(D)`` from ``doc_weighting``: ``"raw"`` (default,
       Anserini: the retrieval score as is -- meaningful for non-negative scores such as BM25),
       ``"softmax"`` (``exp(score)`` normalised over the feedback documents, Indri's choice for
       query-likelihood log scores) or ``"uniform"``.
    4. ``rm`` keeps its ``fb_terms`` largest terms and is scaled to unit L1.
    5. Result: ``original_query_weight * q(t) + (1 - original_query_weight) * rm(t)`` over the union;
       when no feedback term survives, the original query ``q`` itself (and ``rm`` for an empty query).

    Ties in every "keep the n largest" step are broken by the term (Anserini's order is arbitrary).

    Args:
        query_terms: term -> weight (> 0) of the original query.
        feedback_docs: per feedback document, in rank order, term -> term frequency.
        feedback_scores: float (n_docs,) retrieval scores of those documents.
        fb_terms: expansion terms kept (default 10, Anserini's).
        original_query_weight: interpolation weight of the original query, in [0, 1] (default 0.5).
        stopwords: terms never used as expansion terms (query terms are kept).

    Returns:
        term -> weight, the expanded query (weights sum to 1 unless query and feedback are both empty),
        ordered by (-weight, term); zero weights dropped.
    """
    scores = np.asarray(feedback_scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) != len(feedback_docs):
        raise OptionError(
            "feedback_scores", f"shape {scores.shape}", f"one score per feedback document ({len(feedback_docs)},)"
        )
    if not np.all(np.isfinite(scores)):
        raise DataError("feedback_scores holds a NaN or infinite score")
    check_positive_int("fb_terms", fb_terms)
    check_positive_int("fb_docs", fb_docs)
    if not 0.0 <= float(original_query_weight) <= 1.0:
        raise OptionError("original_query_weight", original_query_weight, "a number in [0, 1]")
    weigh = DOC_WEIGHTINGS.get(doc_weighting) if isinstance(doc_weighting, str) else None
    if weigh is None:
        raise OptionError("doc_weighting", doc_weighting, "one of " + ", ".join(repr(x) for x in DOC_WEIGHTINGS))
    if (doc_freqs is None) != (num_docs is None):
        raise OptionError("doc_freqs/num_docs", (doc_freqs is None, num_docs), "give both (the df filter) or neither")
    check_positive_int("num_docs", num_docs, allow_none=True)
    for t, w in query_terms.items():
        check_finite(f"query_terms[{t!r}]", w, low=0)
    stop = stopwords or set()

    def keep(term: str) -> bool:
        if term in stop or not (min_term_length <= len(term) <= max_term_length):
            return False
        if alnum_only and not _ANSERINI_TERM.fullmatch(term):
            return False
        if doc_freqs is not None and df_of(term) / num_docs > max_df_ratio:
            return False
        return True

    df_of = doc_freqs if callable(doc_freqs) else (lambda t: doc_freqs.get(t, 0))

    n = min(fb_docs, len(feedback_docs))
    doc_weights = weigh(scores[:n])
    rm: dict[str, float] = {}
    for doc, w_doc in zip(feedback_docs[:n], doc_weights):
        tfs = {t: float(tf) for t, tf in doc.items() if tf > 0 and keep(t)}
        if prune_docs:
            tfs = _top_terms(tfs, fb_terms)
            norm = sum(tfs.values())
        else:
            norm = float(sum(tf for tf in doc.values() if tf > 0))
        if norm <= 0.001:
            continue
        for t, tf in tfs.items():
            rm[t] = rm.get(t, 0.0) + tf / norm * float(w_doc)
    rm = _l1(_top_terms(rm, fb_terms))
    q = _l1({t: float(w) for t, w in query_terms.items() if w > 0})
    # An empty side keeps no share of the weight (Anserini would scale the other side down by it).
    lam = 1.0 if not rm else 0.0 if not q else float(original_query_weight)
    out = {t: lam * q.get(t, 0.0) + (1.0 - lam) * rm.get(t, 0.0) for t in set(q) | set(rm)}
    return dict(sorted(((t, w) for t, w in out.items() if w != 0.0), key=lambda kv: (-kv[1], kv[0])))


# --------------------------------------------------------------------------------------------------
# Rocchio on learned-sparse vectors
# --------------------------------------------------------------------------------------------------


def _csr_parts(feedback) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if all(hasattr(feedback, a) for a in ("indptr", "indices", "data")):
        parts = (feedback.indptr, feedback.indices, feedback.data)
    elif isinstance(feedback, (tuple, list)) and len(feedback) == 3:
        parts = tuple(feedback)
    else:
        raise OptionError("feedback", type(feedback).__name__, "(indptr, indices, data) or an object with those arrays")
    indptr, indices, data = (np.asarray(p) for p in parts)
    if indptr.ndim != 1 or len(indptr) < 1 or indices.shape != data.shape or indices.ndim != 1:
        raise DataError("feedback: indptr must be 1-d (n_rows + 1,), indices and data 1-d of equal length")
    if indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0):
        raise DataError("feedback: indptr must start at 0, end at nnz and never decrease")
    return indptr.astype(np.int64), indices.astype(np.int64), data.astype(np.float64)


def _check_sparse_query(query) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(query, (tuple, list)) or len(query) != 2:
        raise OptionError("query", type(query).__name__, "a pair (indices int32 (nnz,), weights float32 (nnz,))")
    idx, w = np.asarray(query[0]), np.asarray(query[1])
    if idx.ndim != 1 or idx.shape != w.shape:
        raise DataError(f"query: indices {idx.shape} and weights {w.shape} must be 1-d of equal length")
    return idx.astype(np.int64), w.astype(np.float64)


def _sum_duplicates(idx: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inv = np.unique(idx, return_inverse=True)
    return uniq, np.bincount(inv, weights=w, minlength=len(uniq))


def rocchio_sparse(
    query: tuple[np.ndarray, np.ndarray],
    feedback,
    alpha: float = 1.0,
    beta: float = 0.75,
    fb_docs: int | None = None,
    fb_terms: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rocchio on a sparse query: ``alpha * q + beta * mean(top feedback rows)``.

    The mean is over the first ``fb_docs`` rows of ``feedback`` (all rows when None); with
    ``fb_terms`` it keeps only its ``fb_terms`` largest entries (ties by term id) before it is added,
    as Anserini's Rocchio prunes the feedback vector, so the query gains at most ``fb_terms`` new terms.
    No feedback rows: ``alpha * q``.

    Args:
        query: (indices int (nnz,), weights float (nnz,)); duplicates are summed.
        feedback: the feedback documents' vectors, rows in rank order: ``(indptr, indices, data)`` or
            an object with those attributes (SparseVectors, scipy CSR).
        alpha, beta: Rocchio weights (Anserini's defaults 1.0 and 0.75).

    Returns:
        (indices int32 (m,), weights float32 (m,)): sorted unique term ids, zero weights dropped.
    """
    q_idx, q_w = _check_sparse_query(query)
    indptr, indices, data = _csr_parts(feedback)
    for name, v in (("alpha", alpha), ("beta", beta)):
        check_finite(name, v)
    n_rows = len(indptr) - 1
    if check_positive_int("fb_docs", fb_docs, allow_none=True) is not None:
        n_rows = min(n_rows, int(fb_docs))
    check_positive_int("fb_terms", fb_terms, allow_none=True)
    end = indptr[n_rows]
    fb_idx, fb_sum = _sum_duplicates(indices[:end], data[:end])
    fb_mean = fb_sum / n_rows if n_rows else fb_sum
    if fb_terms is not None and len(fb_idx) > fb_terms:
        keep = np.lexsort((fb_idx, -fb_mean))[: int(fb_terms)]
        fb_idx, fb_mean = fb_idx[keep], fb_mean[keep]
    idx, w = _sum_duplicates(
        np.concatenate([q_idx, fb_idx]), np.concatenate([float(alpha) * q_w, float(beta) * fb_mean])
    )
    nz = w != 0.0
    return idx[nz].astype(np.int32), w[nz].astype(np.float32)


def rocchio_sparse_batch(
    queries,
    hits: Hits,
    docs,
    alpha: float = 1.0,
    beta: float = 0.75,
    fb_docs: int = 10,
    fb_terms: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`rocchio_sparse` for a batch: query ``i``'s feedback is ``hits``' row ``i`` (top ``fb_docs``).

    Args:
        queries: CSR (indptr, indices, data) or an object with them, one row per query.
        hits: Hits (n_queries, k); docnos index the rows of ``docs``.
        docs: CSR of the collection's document vectors (forward index), row = docno; or a callable
            ``docnos int64 (m,) -> CSR rows of those documents`` (e.g. the blocked index's
            ``forward_vectors``, which decodes only the rows asked for).

    Returns:
        CSR (indptr int64 (n_queries + 1,), indices int32 (nnz,), weights float32 (nnz,)).
    """
    q_ptr, q_idx, q_w = _csr_parts(queries)
    if len(q_ptr) - 1 != hits.n_queries:
        raise OptionError("hits", f"{hits.n_queries} queries", f"one row per query ({len(q_ptr) - 1})")
    if callable(docs):
        rows_of = lambda docnos: _csr_parts(docs(docnos))  # noqa: E731
    else:
        d_ptr, d_idx, d_w = _csr_parts(docs)

        def rows_of(docnos):
            if len(docnos) and docnos.max() >= len(d_ptr) - 1:
                raise DataError(f"hits: docno {int(docnos.max())} is beyond the {len(d_ptr) - 1} document vectors")
            starts, ends = d_ptr[docnos], d_ptr[docnos + 1]
            rows_ptr = np.concatenate([[0], np.cumsum(ends - starts)])
            take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(docnos) else np.empty(0, np.int64)
            return rows_ptr, d_idx[take], d_w[take]

    out_idx, out_w = [], []
    for i in range(hits.n_queries):
        docnos = hits.row(i)[0][:fb_docs]
        idx, w = rocchio_sparse(
            (q_idx[q_ptr[i] : q_ptr[i + 1]], q_w[q_ptr[i] : q_ptr[i + 1]]),
            rows_of(np.asarray(docnos, dtype=np.int64)),
            alpha=alpha,
            beta=beta,
            fb_terms=fb_terms,
        )
        out_idx.append(idx)
        out_w.append(w)
    indptr = np.zeros(hits.n_queries + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(x) for x in out_idx])
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.empty(0, dt))  # noqa: E731
    return indptr, cat(out_idx, np.int32), cat(out_w, np.float32)


# --------------------------------------------------------------------------------------------------
# Dense vector PRF
# --------------------------------------------------------------------------------------------------

# Pyserini's published settings (docs/experiments-vector-prf.md): Average PRF over 3 documents,
# Rocchio PRF over 5 with alpha 0.4, beta 0.6.
DENSE_PRF_DEPTH = {"average": 3, "rocchio": 5}


def dense_prf(
    query_vectors: np.ndarray,
    feedback_vectors: np.ndarray | Callable[[np.ndarray], np.ndarray],
    method: str = "average",
    depth: int | None = None,
    alpha: float = 0.4,
    beta: float = 0.6,
    normalize: bool = False,
    *,
    counts: np.ndarray | None = None,
    hits: Hits | None = None,
) -> np.ndarray:
    """Vector PRF on dense query embeddings (Li et al., TOIS 2023), as Pyserini computes it.

    ``"average"`` (Pyserini ``DenseVectorAveragePrf``): ``mean(q, d_1, ..., d_m)`` -- the query and
    the top ``m`` document vectors averaged with equal weight, ``(q + sum d_j) / (m + 1)``.
    ``"rocchio"`` (Pyserini ``DenseVectorRocchioPrf`` with its positive part only):
    ``alpha * q + beta * mean(d_1, ..., d_m)``. Defaults: depth 3 (average) / 5 (rocchio),
    ``alpha=0.4, beta=0.6``: the settings of Pyserini's vector-PRF reproduction page (its CLI
    defaults are 0.9 / 0.1). ``m = min(depth, available feedback documents)``; a query without
    feedback documents is returned unchanged. ``normalize`` L2-normalises the result (Pyserini does
    not; useful for cosine models).

    Args:
        query_vectors: float32 (n, d).
        feedback_vectors: float32 (n, depth_max, d), row ``i`` the query's feedback vectors in rank
            order; or a callable ``docnos int64 (m,) -> float32 (m, d)`` (then ``hits`` is required).
        counts: int (n,), how many leading feedback vectors of each row are real (default: all, or
            the valid hits when ``hits`` is given).
        hits: Hits (n, k): the feedback documents, needed with a callable.

    Returns:
        float32 (n, d).
    """
    q = np.asarray(query_vectors, dtype=np.float32)
    if q.ndim != 2:
        raise DataError(f"query_vectors must be 2-d (n, dim), got shape {q.shape}")
    n, dim = q.shape
    if method not in DENSE_PRF_DEPTH:
        raise OptionError("method", method, "one of " + ", ".join(repr(x) for x in DENSE_PRF_DEPTH))
    check_positive_int("depth", depth, allow_none=True)
    depth = DENSE_PRF_DEPTH[method] if depth is None else depth
    for name, v in (("alpha", alpha), ("beta", beta)):
        check_finite(name, v)
    if hits is not None and hits.n_queries != n:
        raise OptionError("hits", f"{hits.n_queries} queries", f"one row per query vector ({n})")

    if callable(feedback_vectors):
        if hits is None:
            raise OptionError("hits", None, "the feedback Hits, required when feedback_vectors is a callable")
        docnos = hits.docnos[:, :depth]
        valid = docnos >= 0
        fb = np.zeros((n, docnos.shape[1], dim), dtype=np.float32)
        if valid.any():
            got = np.asarray(feedback_vectors(docnos[valid]), dtype=np.float32)
            if got.shape != (int(valid.sum()), dim):
                raise DataError(f"feedback_vectors callable returned shape {got.shape}, expected ({int(valid.sum())}, {dim})")
            fb[valid] = got
        avail = valid.sum(axis=1)
    else:
        fb = np.asarray(feedback_vectors, dtype=np.float32)
        if fb.ndim != 3 or fb.shape[0] != n or fb.shape[2] != dim:
            raise DataError(f"feedback_vectors must be (n={n}, depth, dim={dim}), got shape {fb.shape}")
        fb = fb[:, :depth]
        avail = (hits.docnos[:, : fb.shape[1]] >= 0).sum(axis=1) if hits is not None else np.full(n, fb.shape[1])
    if counts is not None:
        counts = np.asarray(counts)
        if counts.shape != (n,) or not np.issubdtype(counts.dtype, np.integer) or np.any(counts < 0):
            raise OptionError("counts", f"array {counts.dtype} {counts.shape}", f"non-negative integers of shape ({n},)")
        avail = np.minimum(avail, counts)
    m = np.minimum(avail, depth).astype(np.int64)

    # Sum the first m[i] feedback vectors of each row (float64 accumulation, as np.mean does).
    mask = np.arange(fb.shape[1])[None, :] < m[:, None]
    fb_sum = np.einsum("nj,njd->nd", mask.astype(np.float64), fb.astype(np.float64))
    q64 = q.astype(np.float64)
    has = m > 0
    if method == "average":
        out = (q64 + fb_sum) / (m[:, None] + 1.0)
    else:
        out = float(alpha) * q64 + float(beta) * fb_sum / np.maximum(m, 1)[:, None]
    out = np.where(has[:, None], out, q64)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.where(norms > 0, norms, 1.0)
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Interpolate - PRF - interpolate (Li et al., SIGIR 2022)
# --------------------------------------------------------------------------------------------------


def interpolate_prf_interpolate(
    first_runs: Sequence[Hits],
    second_stage: Callable[[Hits], Sequence[Hits]],
    k: int,
    fb_docs: int = 10,
    method: str = "linear",
    weights: Sequence[float] | None = None,
    fuse: Callable[[list[Hits], int], Hits] | None = None,
    **fusion_params,
) -> Hits:
    """Fuse the first-stage lists, give the fused top ``fb_docs`` to PRF, fuse the PRF lists.

    ``second_stage(feedback)`` receives Hits (n_queries, fb_docs) -- the fused feedback documents --
    and returns one list per retriever (run PRF where configured, else return the first-stage list).
    Both fusions are ``fuse(lists, depth)`` when given (a pipeline passes its own), else
    :func:`braid.retrieval.pipeline.fusion.fuse` with ``method``, ``weights`` and ``fusion_params``.

    Returns:
        Hits (n_queries, k): the second fusion.
    """
    if fuse is None:
        from braid.retrieval.pipeline.fusion import fuse as fuse_lists

        def fuse(lists: list[Hits], depth: int) -> Hits:
            return fuse_lists(lists, method, depth, weights, **fusion_params)

    feedback = fuse(list(first_runs), fb_docs)
    second = list(second_stage(feedback))
    if len(second) != len(first_runs):
        raise OptionError("second_stage", f"{len(second)} lists", f"one list per first-stage list ({len(first_runs)})")
    return fuse(second, k)


# --------------------------------------------------------------------------------------------------
# PRF stages: what a pipeline step with ``prf = {method = ...}`` runs (keys of a retriever spec's ``prf``)
# --------------------------------------------------------------------------------------------------


def _rm3_stage(retriever, queries: Sequence[str], feedback: Hits, cfg: dict, k: int, threads: int, exclude, knobs: dict) -> Hits:
    """RM3 over the lexical index: expand each query's terms from its feedback documents, search again."""
    lexical = retriever.index
    fb_docs = int(cfg.get("fb_docs", 10))
    expanded = []
    for i, q in enumerate(queries):
        docnos, scores = feedback.row(i)
        docnos, scores = docnos[:fb_docs], scores[:fb_docs]
        terms = lexical.query_terms(q)
        if len(docnos) == 0 or not terms:
            expanded.append(terms)
            continue
        expanded.append(
            rm3_expand(
                terms,
                lexical.term_frequencies(docnos),
                np.asarray(scores, dtype=np.float64),
                fb_terms=int(cfg.get("fb_terms", 10)),
                original_query_weight=float(cfg.get("original_weight", 0.5)),
                fb_docs=fb_docs,
                doc_freqs=lexical.doc_freq,
                num_docs=lexical.num_docs,
            )
        )
    return retriever.search_terms(expanded, k=k, threads=threads, exclude=exclude, allow=knobs.get("allow"))


def _sparse_rocchio_stage(retriever, queries: Sequence[str], feedback: Hits, cfg: dict, k: int, threads: int, exclude, knobs: dict) -> Hits:
    """Rocchio on the learned sparse query vectors with the feedback documents' forward-index rows."""
    from braid.data.vectors import SparseVectors

    qvecs = retriever.encode_queries(queries)
    indptr, indices, data = rocchio_sparse_batch(
        qvecs,
        feedback,
        retriever.feedback_vectors,
        alpha=float(cfg.get("alpha", 1.0)),
        beta=float(cfg.get("beta", 0.75)),
        fb_docs=int(cfg.get("fb_docs", 10)),
        fb_terms=cfg.get("fb_terms"),
    )
    vectors = SparseVectors(indptr, indices, data, qvecs.vocab_size)
    return retriever.search_vectors(vectors, k=k, threads=threads, exclude=exclude, **knobs)


def _dense_stage(method: str):
    def stage(retriever, queries: Sequence[str], feedback: Hits, cfg: dict, k: int, threads: int, exclude, knobs: dict) -> Hits:
        new_q = dense_prf(
            retriever.encode_queries(queries),
            retriever.feedback_vectors,
            method=method,
            depth=int(cfg.get("fb_docs", 10)),
            alpha=float(cfg.get("alpha", 0.4)),
            beta=float(cfg.get("beta", 0.6)),
            hits=feedback,
        )
        return retriever.search_vectors(new_q, k=k, threads=threads, exclude=exclude, **knobs)

    stage.__doc__ = f"Dense vector PRF ({method}) on the query embedding with the feedback documents' vectors."
    return stage


# Stage name -> ``(retriever, queries, feedback Hits, cfg, k, threads, exclude, knobs) -> Hits``.
PRF_STAGES: dict[str, Callable] = {
    "rm3": _rm3_stage,
    "sparse-rocchio": _sparse_rocchio_stage,
    "dense-average": _dense_stage("average"),
    "dense-rocchio": _dense_stage("rocchio"),
}
