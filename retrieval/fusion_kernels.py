"""Numba kernels for result fusion: plain functions over flat arrays, one ``prange`` over queries.

No ids, no files, no options here: :mod:`braid.retrieval.fusion` validates its input, normalises the
scores (cheap vectorised numpy over the whole batch), turns each list's entries into additive
*contributions* and calls :func:`fuse_contributions` once for the whole batch. With
``NUMBA_DISABLE_JIT=1`` the kernels run as plain Python (slowly) for debugging.

Why a kernel: a numpy version per query (concatenate, ``np.unique``, ``np.bincount``, ``lexsort``)
costs several hundred microseconds of interpreter overhead per query for 3 lists of depth 1000; the
kernel does the same work in one compiled pass (see ``docs/benchmarks/fusion.md``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Combination modes of fuse_contributions. Kept as plain ints so the kernel stays a function of arrays.
MODE_SUM = 0  # fused = base + sum of contributions (CombSUM, linear interpolation, RRF)
MODE_MNZ = 1  # fused = (base + sum of contributions) * number of lists holding the doc (CombMNZ)
MODE_MAX = 2  # fused = max of contributions over the lists holding the doc (CombMAX)


@njit(cache=True)
def _fuse_query(q, docnos, values, base, mode, k, out_docnos, out_scores, duplicates):
    """Fuse query ``q``'s lists into row ``q`` of the outputs (see :func:`fuse_contributions`)."""
    n_runs, _, depth = docnos.shape
    # Gather the valid entries of every list, in run order.
    n = 0
    for r in range(n_runs):
        for j in range(depth):
            if docnos[r, q, j] >= 0:
                n += 1
    flat_docnos = np.empty(n, dtype=np.int64)
    flat_values = np.empty(n, dtype=np.float64)
    flat_runs = np.empty(n, dtype=np.int64)
    at = 0
    for r in range(n_runs):
        for j in range(depth):
            d = docnos[r, q, j]
            if d >= 0:
                flat_docnos[at] = d
                flat_values[at] = values[r, q, j]
                flat_runs[at] = r
                at += 1
    # Group equal docnos with one sort of packed keys (docno << shift | entry), which keeps each
    # group's entries in entry = run order; sorting plain uint64 keys measured ~2x faster than a
    # stable argsort of the docnos.
    shift = 1
    while (1 << shift) < n:
        shift += 1
    keys = np.empty(n, dtype=np.uint64)
    for e in range(n):
        keys[e] = (np.uint64(flat_docnos[e]) << np.uint64(shift)) | np.uint64(e)
    keys.sort()
    mask = np.uint64((1 << shift) - 1)
    uniq_docnos = np.empty(n, dtype=np.int64)
    uniq_scores = np.empty(n, dtype=np.float32)
    n_uniq = 0
    i = 0
    while i < n:
        d = flat_docnos[np.int64(keys[i] & mask)]
        acc = 0.0
        best = -np.inf
        count = 0
        last_run = -1
        while i < n and flat_docnos[np.int64(keys[i] & mask)] == d:
            e = np.int64(keys[i] & mask)
            if flat_runs[e] == last_run:
                duplicates[q] += 1
            last_run = flat_runs[e]
            v = flat_values[e]
            acc += v
            if v > best:
                best = v
            count += 1
            i += 1
        if mode == MODE_MAX:
            fused = best
        elif mode == MODE_MNZ:
            fused = (base[q] + acc) * count
        else:
            fused = base[q] + acc
        uniq_docnos[n_uniq] = d
        # Rank on the float32 score that is returned, so the output rows satisfy Hits' (-score, docno).
        uniq_scores[n_uniq] = np.float32(fused) + np.float32(0.0)  # -0.0 -> +0.0 for the bit keys below
        n_uniq += 1
    # Order by (-score, docno) with one sort of packed keys: the high 32 bits map the float32 score
    # to an unsigned integer that ascends as the score descends, the low 32 bits hold the index
    # into uniq_docnos (ascending docnos, so equal scores come out by docno).
    bits = uniq_scores[:n_uniq].view(np.uint32)
    rank_keys = np.empty(n_uniq, dtype=np.uint64)
    for u in range(n_uniq):
        b = bits[u]
        asc = (~b) if (b & np.uint32(0x80000000)) else (b | np.uint32(0x80000000))
        desc = np.uint32(0xFFFFFFFF) - np.uint32(asc)
        rank_keys[u] = (np.uint64(desc) << np.uint64(32)) | np.uint64(u)
    rank_keys.sort()
    m = min(k, n_uniq)
    low = np.uint64(0xFFFFFFFF)
    for t in range(m):
        u = np.int64(rank_keys[t] & low)
        out_docnos[q, t] = uniq_docnos[u]
        out_scores[q, t] = uniq_scores[u]


@njit(cache=True, parallel=True)
def fuse_contributions(docnos, values, base, mode, k):
    """Fuse ``n_runs`` candidate lists per query into the top ``k`` by (-score, docno).

    Args:
        docnos: int64 (n_runs, n_queries, depth): candidate docnos, ``-1`` on padding (skipped).
            A docno appears at most once per (run, query) row.
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
