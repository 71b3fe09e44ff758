"""The numpy tier of :mod:`braid.retrieval.pipeline.fusion_kernels`: the same fused rows, bit for bit,
for a batch of one query in a process that has not loaded numba (see :func:`braid.data.lazy.tier0`).

The kernel's arithmetic, reproduced: a document's contributions are summed in float64 in list order
(``np.add.at`` is sequential), starting from the first; MAX keeps the largest; the fused value is
rounded to float32 and ``-0.0`` folded into ``+0.0``; rows are ordered by (-float32 score, docno).
"""

from __future__ import annotations

import numpy as np

# Combination modes of fuse_contributions (the kernels import them from here).
MODE_SUM = 0  # fused = base + sum of contributions (CombSUM, linear interpolation, RRF)
MODE_MNZ = 1  # fused = (base + sum of contributions) * number of lists holding the doc (CombMNZ)
MODE_MAX = 2  # fused = max of contributions over the lists holding the doc (CombMAX)


def fuse_contributions(docnos: np.ndarray, values: np.ndarray, base: np.ndarray, mode: int, k: int):
    """:func:`braid.retrieval.pipeline.fusion_kernels.fuse_contributions`, one query at a time."""
    n_runs, n_queries, depth = docnos.shape
    out_docnos = np.full((n_queries, k), -1, dtype=np.int64)
    out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    duplicates = np.zeros(n_queries, dtype=np.int64)
    for q in range(n_queries):
        d = docnos[:, q, :].reshape(-1)  # run-major: the kernel's visiting order
        v = values[:, q, :].reshape(-1)
        run = np.repeat(np.arange(n_runs), depth)
        ok = d >= 0
        d, v, run = d[ok], v[ok], run[ok]
        if d.size == 0:
            continue
        order = np.argsort(d, kind="stable")
        ds = d[order]
        new = np.concatenate(([True], ds[1:] != ds[:-1]))
        uniq = ds[new]
        inverse = np.empty(d.shape[0], np.int64)
        inverse[order] = np.cumsum(new) - 1
        # the same docno twice in one list: pairs (doc, run) that repeat
        pair = inverse * n_runs + run
        duplicates[q] = pair.shape[0] - np.count_nonzero(np.concatenate(([True], np.diff(np.sort(pair)) != 0)))
        if mode == MODE_MAX:
            fused = np.full(uniq.shape[0], -np.inf)
            np.maximum.at(fused, inverse, v)
        else:
            acc = np.zeros(uniq.shape[0])
            np.add.at(acc, inverse, v)
            fused = base[q] + acc
            if mode == MODE_MNZ:
                fused = fused * np.bincount(inverse, minlength=uniq.shape[0])
        scores = fused.astype(np.float32) + np.float32(0.0)
        top = np.lexsort((uniq, -scores))[:k]
        out_docnos[q, : top.shape[0]] = uniq[top]
        out_scores[q, : top.shape[0]] = scores[top]
    return out_docnos, out_scores, duplicates


__all__ = ["MODE_SUM", "MODE_MNZ", "MODE_MAX", "fuse_contributions"]
