"""Numba kernels for result fusion: plain functions over flat arrays, one ``prange`` over queries.

No ids, no files, no options here: :mod:`braid.retrieval.pipeline.fusion` validates its input, normalises the
scores (cheap vectorised numpy over the whole batch), turns each list's entries into additive
*contributions* and calls :func:`fuse_contributions` once for the whole batch. With
``NUMBA_DISABLE_JIT=1`` the kernels run as plain Python (slowly) for debugging.

Why a kernel: for 3 lists of depth 1000 a plain-numpy version per query (``np.unique``,
``np.bincount``, ``np.lexsort``) measured 0.34 ms CPU per query, the kernel 0.11 (hash grouping
plus one sort of packed keys), and the kernel covers every method and missing-doc rule in one pass
over the whole batch (figures in ``docs/benchmarks/fusion.md``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Combination modes of fuse_contributions: plain ints, so the kernel stays a function of arrays (defined
# with the numpy tier, which imports no numba).
from braid.retrieval.pipeline.fusion_numpy import MODE_MAX, MODE_MNZ, MODE_SUM  # noqa: E402,F401


_GOLDEN = np.uint64(2654435761)  # Knuth's multiplicative hash: ~2**32 / golden ratio
_SIGN = np.uint32(0x80000000)
_LOW32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def _slot(d, bits):
    # docno < 2**32 (checked by the caller), so the product fits in 64 bits: no overflow, also when
    # NUMBA_DISABLE_JIT=1 runs this with numpy scalars. The top ``bits`` of the low 32 bits are the slot.
    return np.int64(((np.uint64(d) * _GOLDEN) & _LOW32) >> np.uint64(32 - bits))


@njit(cache=True)
def _fuse_query(q, docnos, values, base, mode, k, out_docnos, out_scores, duplicates):
    """Fuse query ``q``'s lists into row ``q`` of the outputs (see :func:`fuse_contributions`).

    Candidates are grouped with an open-addressing hash table (linear probing, load <= 1/2) rather
    than by sorting all entries: measured 0.11 against 0.24 ms CPU per query for 3 lists of 1000.
    """
    n_runs, _, depth = docnos.shape
    n = 0
    for r in range(n_runs):
        for j in range(depth):
            if docnos[r, q, j] >= 0:
                n += 1
    bits = 1
    while (1 << bits) < 2 * n:
        bits += 1
    hmask = (1 << bits) - 1
    table = np.full(1 << bits, -1, dtype=np.int64)  # slot -> index of the docno in uniq_docnos
    uniq_docnos = np.empty(n, dtype=np.int64)
    acc = np.empty(n, dtype=np.float64)
    best = np.empty(n, dtype=np.float64)
    count = np.empty(n, dtype=np.int64)
    last_run = np.empty(n, dtype=np.int64)
    n_uniq = 0
    for r in range(n_runs):
        for j in range(depth):
            d = docnos[r, q, j]
            if d < 0:
                continue
            v = values[r, q, j]
            h = _slot(d, bits)
            while True:
                u = table[h]
                if u < 0:
                    table[h] = n_uniq
                    uniq_docnos[n_uniq] = d
                    acc[n_uniq] = v
                    best[n_uniq] = v
                    count[n_uniq] = 1
                    last_run[n_uniq] = r
                    n_uniq += 1
                    break
                if uniq_docnos[u] == d:
                    if last_run[u] == r:  # the same docno twice in one list
                        duplicates[q] += 1
                    last_run[u] = r
                    acc[u] += v
                    if v > best[u]:
                        best[u] = v
                    count[u] += 1
                    break
                h = (h + 1) & hmask
    # Rank on the float32 score that is returned, so the rows satisfy Hits' (-score, docno). One sort of
    # packed keys: the high 32 bits map the float32 score to an unsigned integer that ascends as the
    # score descends (-0.0 is folded into +0.0 first), the low 32 bits hold the docno (< 2**32, checked
    # by the caller).
    scores = np.empty(n_uniq, dtype=np.float32)
    for u in range(n_uniq):
        if mode == MODE_MAX:
            fused = best[u]
        elif mode == MODE_MNZ:
            fused = (base[q] + acc[u]) * count[u]
        else:
            fused = base[q] + acc[u]
        scores[u] = np.float32(fused) + np.float32(0.0)
    score_bits = scores.view(np.uint32)
    keys = np.empty(n_uniq, dtype=np.uint64)
    for u in range(n_uniq):
        b = score_bits[u]
        asc = (~b) if (b & _SIGN) else (b | _SIGN)
        keys[u] = (np.uint64(np.uint32(0xFFFFFFFF) - np.uint32(asc)) << np.uint64(32)) | np.uint64(uniq_docnos[u])
    keys.sort()
    for t in range(min(k, n_uniq)):
        d = np.int64(keys[t] & _LOW32)
        h = _slot(d, bits)
        while uniq_docnos[table[h]] != d:
            h = (h + 1) & hmask
        out_docnos[q, t] = d
        out_scores[q, t] = scores[table[h]]


@njit(cache=True, parallel=True)
def fuse_contributions(docnos, values, base, mode, k):
    """Fuse ``n_runs`` candidate lists per query into the top ``k`` by (-score, docno).

    Args:
        docnos: int64 (n_runs, n_queries, depth): candidate docnos, ``-1`` on padding (skipped).
            A docno appears at most once per (run, query) row; docnos must be < 2**32.
        values: float64 (n_runs, n_queries, depth): each entry's contribution.
        base: float64 (n_queries,): added to every fused score in MODE_SUM / MODE_MNZ (the sum of the
            fill values of the lists, so a document absent from a list still gets that list's fill).
        mode: MODE_SUM, MODE_MNZ or MODE_MAX.
        k: number of results kept per query.

    Returns:
        out_docnos int64 (n_queries, k) with ``-1`` padding, out_scores float32 (n_queries, k) with
        ``-inf`` padding, each row ordered by (-float32 score, docno); and duplicates, an int64
        (n_queries,) count of docnos found twice in one (run, query) row (must be all zero).
    """
    n_queries = docnos.shape[1]
    out_docnos = np.full((n_queries, k), -1, dtype=np.int64)
    out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    duplicates = np.zeros(n_queries, dtype=np.int64)
    for q in prange(n_queries):
        _fuse_query(q, docnos, values, base, mode, k, out_docnos, out_scores, duplicates)
    return out_docnos, out_scores, duplicates


# The same without threads, for a few queries: starting the thread pool costs more than the work
# (measured: 24 ms instead of 0.5 ms for one query with 2 threads on a loaded 2-core machine).
@njit(cache=True)
def fuse_contributions_serial(docnos, values, base, mode, k):
    """:func:`fuse_contributions` on one thread."""
    n_queries = docnos.shape[1]
    out_docnos = np.full((n_queries, k), -1, dtype=np.int64)
    out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    duplicates = np.zeros(n_queries, dtype=np.int64)
    for q in range(n_queries):
        _fuse_query(q, docnos, values, base, mode, k, out_docnos, out_scores, duplicates)
    return out_docnos, out_scores, duplicates
