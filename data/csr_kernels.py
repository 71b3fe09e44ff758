"""Numba kernels over CSR batches of sparse vectors: validation, sorting and row copies.

Plain functions over arrays (``NUMBA_DISABLE_JIT=1`` runs them as Python). They belong to the vector
container (:mod:`braid.data.vectors`), below both the encoders that produce vectors and the indexes
that consume them.
"""

from __future__ import annotations

import numba
import numpy as np

from braid.data.csr_numpy import ROW_BAD_TERM, ROW_NEGATIVE, ROW_NOT_FINITE, ROW_OK, ROW_UNSORTED  # noqa: F401

njit = numba.njit(cache=True, nogil=True)


@njit
def first_decreasing(indptr):
    """Index of the first row ``i`` with ``indptr[i+1] < indptr[i]``, or -1."""
    for i in range(indptr.shape[0] - 1):
        if indptr[i + 1] < indptr[i]:
            return i
    return -1


@njit
def check_rows(indptr, indices, data, vocab_size):
    """First problem of a CSR batch: ``(code, row, position)`` with code ``ROW_OK`` when none.

    Checks per row: term ids strictly increasing (sorted, unique) and in ``[0, vocab_size)``;
    weights finite and ``>= 0``.
    """
    for r in range(indptr.shape[0] - 1):
        prev = -1
        for e in range(indptr[r], indptr[r + 1]):
            t = np.int64(indices[e])
            if t < 0 or t >= vocab_size:
                return ROW_BAD_TERM, r, e
            if t <= prev:
                return ROW_UNSORTED, r, e
            prev = t
            w = data[e]
            if not np.isfinite(w):
                return ROW_NOT_FINITE, r, e
            if w < 0:
                return ROW_NEGATIVE, r, e
    return ROW_OK, -1, -1


@njit
def sort_rows(indptr, indices, data):
    """Sort each row's entries by term id, in place (stable)."""
    for r in range(indptr.shape[0] - 1):
        s, e = indptr[r], indptr[r + 1]
        if e - s < 2:
            continue
        sorted_already = True
        for j in range(s + 1, e):
            if indices[j] < indices[j - 1]:
                sorted_already = False
                break
        if sorted_already:
            continue
        order = np.argsort(indices[s:e], kind="mergesort")
        t = indices[s:e][order]
        w = data[s:e][order]
        indices[s:e] = t
        data[s:e] = w


@njit
def gather_rows(indptr, indices, data, rows, out_ptr, out_indices, out_data):
    """Copy rows ``rows`` of a CSR batch into preallocated CSR arrays (``out_ptr`` already filled)."""
    for i in range(rows.shape[0]):
        r = rows[i]
        s = indptr[r]
        o = out_ptr[i]
        for j in range(indptr[r + 1] - s):
            out_indices[o + j] = indices[s + j]
            out_data[o + j] = data[s + j]
