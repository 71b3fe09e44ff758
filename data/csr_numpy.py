"""The numpy tier of :mod:`braid.data.csr_kernels`: the same checks, for small batches in a process
that has not loaded numba (its start-up costs about 1.5 s; see :mod:`braid.data.lazy`).

Same results as the kernels: :func:`first_decreasing` the first decreasing row, :func:`check_rows` the
first problem in row-major order as ``(code, row, position)``.
"""

from __future__ import annotations

import numpy as np

ROW_OK = 0
ROW_UNSORTED = 1
ROW_BAD_TERM = 2
ROW_NOT_FINITE = 3
ROW_NEGATIVE = 4

SMALL = 1 << 14  # entries up to which callers take this tier while numba is not loaded


def first_decreasing(indptr: np.ndarray) -> int:
    """Index of the first row ``i`` with ``indptr[i+1] < indptr[i]``, or -1."""
    bad = np.flatnonzero(indptr[1:] < indptr[:-1])
    return int(bad[0]) if bad.size else -1


def check_rows(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, vocab_size: int) -> tuple[int, int, int]:
    """First problem of a CSR batch (rows checked in order, entries in order, the kernel's order of
    tests per entry: range, order, finiteness, sign): ``(code, row, position)``, ``(ROW_OK, -1, -1)``."""
    n = indices.shape[0]
    if n == 0:
        return ROW_OK, -1, -1
    t = indices.astype(np.int64)
    starts = np.zeros(n, np.bool_)
    firsts = indptr[:-1][indptr[:-1] < indptr[1:]]
    starts[firsts] = True
    prev = np.empty(n, np.int64)
    prev[0] = -1
    prev[1:] = t[:-1]
    prev[starts] = -1
    with np.errstate(invalid="ignore"):
        codes = np.select(
            [(t < 0) | (t >= vocab_size), t <= prev, ~np.isfinite(data), data < 0],
            [ROW_BAD_TERM, ROW_UNSORTED, ROW_NOT_FINITE, ROW_NEGATIVE],
            ROW_OK,
        )
    bad = np.flatnonzero(codes)
    if not bad.size:
        return ROW_OK, -1, -1
    pos = int(bad[0])
    row = int(np.searchsorted(indptr, pos, side="right")) - 1
    return int(codes[pos]), row, pos
