"""Numba kernels of the joined flat segment (:meth:`braid.index.sparse.flat.FlatSparseIndex.invert`).

Kept apart from :mod:`braid.index.sparse.kernels` so that the blocked index's module, and its
numba cache, stay as they were; they reuse its inlined scoring and heap helpers.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from braid.index.sparse.kernels import (
    heap_push,
    heap_write_sorted,
    load_weight,
    njit,
    njit_inline,
    njit_parallel,
    score_doc,
)

# ---------------------------------------------------------------------------------------------
# Exact search of a joined flat segment through its inverted lists (term at a time)
# ---------------------------------------------------------------------------------------------
# A live index's flat segments are joined into one (braid.index.segments); scanning every forward
# row of a few thousand documents costs more than the blocked base segment. Walking the query terms'
# posting lists touches only the documents that share a term. The accumulated sums differ from
# ``score_doc``'s by float32 rounding (another summation order), so they only choose candidates:
# every document within TAAT_MARGIN (relative) of the k-th accumulated score is rescored by
# ``score_doc`` and the top-k is taken on those exact scores. The margin covers the rounding of both
# sums (each at most ``terms * 2**-24`` relative for non-negative terms) for queries of up to about
# 8,000 terms, so the result is the forward scan's top-k, scores and tie order included.
TAAT_MARGIN = 1e-3


@njit_inline
def _taat_query(q_terms, q_weights, k, inv_ptr, inv_docs, inv_weights, fwd_ptr, fwd_terms, fwd_weights, use_mask, excluded,
                acc, seen, touched, dense_q, heap_scores, heap_docs, out_docs, out_scores):  # fmt: skip
    """One query of :func:`taat_batch` with caller scratch (``acc``, ``seen``, ``dense_q`` all-zero; left so)."""
    low = np.float32(1.0 - TAAT_MARGIN)
    n_touched = 0
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        wq = np.float32(q_weights[j])
        dense_q[t] = wq
        for p in range(inv_ptr[t], inv_ptr[t + 1]):
            d = inv_docs[p]
            if seen[d] == 0:
                seen[d] = 1
                touched[n_touched] = d
                n_touched += 1
            acc[d] += wq * load_weight(inv_weights, p)
    # the k-th best accumulated score among the documents that may be returned
    size = 0
    for i in range(n_touched):
        d = touched[i]
        if use_mask and excluded[d >> 6] & (np.uint64(1) << np.uint64(d & 63)):
            acc[d] = 0.0  # never a candidate: the pass below skips it with its score test
            continue
        if acc[d] > 0:
            size = heap_push(heap_scores, heap_docs, size, k, acc[d], np.int64(d))
    bar = heap_scores[0] * low if size == k else np.float32(0.0)
    size = 0
    for i in range(n_touched):
        d = touched[i]
        a = acc[d]
        acc[d] = 0.0
        seen[d] = 0
        if a <= 0 or a < bar:
            continue
        sc = score_doc(d, fwd_ptr, fwd_terms, fwd_weights, dense_q)
        if sc > 0:
            size = heap_push(heap_scores, heap_docs, size, k, sc, np.int64(d))
    heap_write_sorted(heap_scores, heap_docs, size, out_docs, out_scores)
    for j in range(q_terms.shape[0]):
        dense_q[q_terms[j]] = 0.0


@njit_inline
def _taat_range(q_ptr, q_terms, q_weights, k, lo, hi, inv_ptr, inv_docs, inv_weights, fwd_ptr, fwd_terms, fwd_weights,
                use_mask, excluded, acc, seen, touched, dense_q, out_docs, out_scores):  # fmt: skip
    """Queries ``lo..hi-1`` of a CSR batch, one after the other, with one scratch (:func:`_taat_query`)."""
    heap_scores = np.empty(k, np.float32)
    heap_docs = np.empty(k, np.int64)
    for qi in range(lo, hi):
        s, e = q_ptr[qi], q_ptr[qi + 1]
        _taat_query(q_terms[s:e], q_weights[s:e], k, inv_ptr, inv_docs, inv_weights, fwd_ptr, fwd_terms, fwd_weights,
                    use_mask, excluded, acc, seen, touched, dense_q, heap_scores, heap_docs, out_docs[qi],
                    out_scores[qi])  # fmt: skip


@njit_parallel
def taat_batch(q_ptr, q_terms, q_weights, k, inv_ptr, inv_docs, inv_weights, fwd_ptr, fwd_terms, fwd_weights, vocab_size,
               n_chunks, use_mask, excluded, out_docs, out_scores):  # fmt: skip
    """Exact top-k of each query over a flat segment with inverted lists ``inv_*`` (term -> docs ascending);
    docs set in ``excluded`` (uint64 bitset, read when ``use_mask``) are never returned. ``prange`` over
    ``n_chunks`` chunks of queries, each with its own scratch."""
    nq = q_ptr.shape[0] - 1
    num_docs = fwd_ptr.shape[0] - 1
    for c in prange(n_chunks):
        _taat_range(q_ptr, q_terms, q_weights, k, c * nq // n_chunks, (c + 1) * nq // n_chunks, inv_ptr, inv_docs,
                    inv_weights, fwd_ptr, fwd_terms, fwd_weights, use_mask, excluded, np.zeros(num_docs, np.float32),
                    np.zeros(num_docs, np.uint8), np.empty(num_docs, np.int64), np.zeros(vocab_size, np.float32),
                    out_docs, out_scores)  # fmt: skip


@njit
def taat_serial(q_ptr, q_terms, q_weights, k, inv_ptr, inv_docs, inv_weights, fwd_ptr, fwd_terms, fwd_weights, use_mask,
                excluded, acc, seen, touched, dense_q, out_docs, out_scores):  # fmt: skip
    """:func:`taat_batch` on the calling thread with caller scratch (``FlatSparseIndex._taat_scratch``; left
    all-zero): the single-query path, without the parallel launch and the per-call allocation of the
    vocabulary-sized query."""
    _taat_range(q_ptr, q_terms, q_weights, k, 0, q_ptr.shape[0] - 1, inv_ptr, inv_docs, inv_weights, fwd_ptr, fwd_terms,
                fwd_weights, use_mask, excluded, acc, seen, touched, dense_q, out_docs, out_scores)  # fmt: skip


@njit
def invert_forward(fwd_ptr, fwd_terms, fwd_weights, vocab_size, inv_ptr, inv_docs, inv_weights):
    """Inverted lists of a forward index (counting sort: docs ascending within each term); ``inv_ptr``
    (vocab_size + 1) zeroed by the caller."""
    num_docs = fwd_ptr.shape[0] - 1
    for e in range(fwd_terms.shape[0]):
        inv_ptr[fwd_terms[e] + 1] += 1
    for t in range(vocab_size):
        inv_ptr[t + 1] += inv_ptr[t]
    fill = inv_ptr[:-1].copy()
    for d in range(num_docs):
        for e in range(fwd_ptr[d], fwd_ptr[d + 1]):
            t = fwd_terms[e]
            p = fill[t]
            inv_docs[p] = d
            inv_weights[p] = fwd_weights[e]
            fill[t] = p + 1
