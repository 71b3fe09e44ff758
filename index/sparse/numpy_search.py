"""The blocked index's single-query search in numpy: the same hits, scores and tie order as the numba
kernel (:func:`braid.index.sparse.kernels.search_query`), without numba's start-up.

Why: numba's first call in a process costs about 1.5 s on a 2-core machine (its CPU target imports
``scipy.linalg`` and ``cffi``, then every cached kernel is loaded), several times a whole one-shot
``braid search``. :class:`~braid.index.sparse.blocked.BlockedSparseIndex` therefore answers the first
few single queries of a process here (tier 0) and moves to the kernels after that (see
``BlockedSparseIndex.search``). Per query this is slower than the kernel (a Python loop over the
blocks visited, vectorised within a block), and it is only ever used one query at a time.

Bit for bit the kernel's result, because every step is reproduced in the kernel's arithmetic:

* block estimates accumulate ``q * code`` and ``q`` in float32, summary components in ascending term
  order (what both of the kernel's branches visit), one ``np.add.at`` (sequential, unbuffered) per
  list; then ``est * step + est_q * min`` in float32;
* a block is skipped when ``est < heap_factor * kth`` computed in float64 (the kernel's types);
* blocks are ordered by a stable sort of ``-est`` (the kernel sorts with ``kind="mergesort"``);
* a document's score is :func:`~braid.index.sparse.kernels.score_doc`'s: four float32 accumulators
  over the row in groups of four, the remainder into the first, ``(s0 + s1) + (s2 + s3)``; entries
  whose query weight is zero add ``+0.0`` to a non-negative sum and are left out;
* the kernel's heap keeps the best ``k`` by ``(-score, docno)`` and its root's score is the k-th best
  score, which depends only on the set of documents scored so far: the tier keeps the ``k`` best scores
  (unordered) for that threshold and takes the top-k, ties by docno, once at the end.
"""

from __future__ import annotations

import numpy as np

from braid.index.sparse.layout import BlockedArrays


def top_query_terms(q_weights: np.ndarray, query_cut: int) -> np.ndarray:
    """Positions of the ``query_cut`` largest positive weights, largest first, ties by position."""
    order = np.argsort(-q_weights, kind="stable")
    m = min(int(np.count_nonzero(q_weights > 0)), query_cut)
    # the kernel stops at the first non-positive weight of the order; positives sort first
    return order[:m]


def _ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, owner): every index of the ranges ``starts[i]:ends[i]`` in order, and its ``i``."""
    lens = ends - starts
    total = int(lens.sum())
    owner = np.repeat(np.arange(lens.shape[0]), lens)
    first = np.cumsum(lens) - lens  # where each range starts in the output
    pos = np.arange(total, dtype=np.int64) - first[owner] + starts[owner]
    return pos, owner


def _weights_f32(fwd_weights: np.ndarray, pos: np.ndarray) -> np.ndarray:
    w = fwd_weights[pos]
    if w.dtype == np.uint16:  # float16 stored as its bits
        return w.view(np.float16).astype(np.float32)
    return w.astype(np.float32, copy=False)


def score_docs(docs: np.ndarray, ix: BlockedArrays, dense_q: np.ndarray) -> np.ndarray:
    """``score_doc`` of each of ``docs`` (float32), in the kernel's summation order."""
    starts = ix.fwd_ptr[docs]
    ends = ix.fwd_ptr[docs + 1]
    pos, owner = _ranges(starts, ends)
    q = dense_q[ix.fwd_terms[pos]]
    keep = q != 0
    pos, owner, q = pos[keep], owner[keep], q[keep]
    prod = q * _weights_f32(ix.fwd_weights, pos)
    local = pos - starts[owner]
    full = (ends - starts)[owner] // 4 * 4  # entries in whole groups of four
    acc = np.where(local < full, local & 3, 0)
    sums = np.zeros(docs.shape[0] * 4, np.float32)
    np.add.at(sums, owner * 4 + acc, prod)
    s = sums.reshape(-1, 4)
    return (s[:, 0] + s[:, 1]) + (s[:, 2] + s[:, 3])


def estimate_blocks(t: int, dense_q: np.ndarray, ix: BlockedArrays, b0: int, nb: int) -> np.ndarray:
    """The summary estimates of term ``t``'s ``nb`` blocks (float32), as ``kernels.estimate_blocks``."""
    c_lo, c_hi = int(ix.sum_list_ptr[t]), int(ix.sum_list_ptr[t + 1])
    est = np.zeros(nb, np.float32)
    est_q = np.zeros(nb, np.float32)
    comps = np.arange(c_lo, c_hi)
    qv = dense_q[ix.sum_comp_ids[c_lo:c_hi]]
    hit = qv != 0
    comps, qv = comps[hit], qv[hit]
    if comps.size:
        pos, owner = _ranges(ix.sum_comp_ptr[comps].astype(np.int64), ix.sum_comp_ptr[comps + 1].astype(np.int64))
        blocks = ix.sum_blocks[pos].astype(np.int64)
        qe = qv[owner]
        np.add.at(est, blocks, qe * ix.sum_codes[pos].astype(np.float32))
        np.add.at(est_q, blocks, qe)
    return est * ix.block_step[b0 : b0 + nb] + est_q * ix.block_min[b0 : b0 + nb]


class _Threshold:
    """The k-th best score of the documents scored so far (the kernel heap's root score): the ``k``
    largest scores, unordered. The top-k itself (ties by docno) is taken once, at the end."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.best = np.empty(0, np.float32)
        self.kth = -np.inf

    @property
    def full(self) -> bool:
        return self.best.shape[0] == self.k

    def offer(self, scores: np.ndarray) -> None:
        s = np.concatenate([self.best, scores])
        if s.shape[0] > self.k:
            s = np.partition(s, s.shape[0] - self.k)[s.shape[0] - self.k :]
        self.best = s
        if self.full:
            self.kth = float(s.min())


def search_query(
    q_terms: np.ndarray,
    q_weights: np.ndarray,
    k: int,
    query_cut: int,
    heap_factor: float,
    use_summaries: bool,
    sort_blocks: int,
    ix: BlockedArrays,
    vocab_size: int,
    excluded: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One query (sorted term ids, positive float32 weights): ``(docnos (k,), scores (k,), docs scored)``,
    padded with -1 / -inf, exactly as :func:`braid.index.sparse.kernels.search_query` (and
    ``search_query_masked`` when ``excluded``, the uint64 exclusion bitset, is given)."""
    num_docs = ix.fwd_ptr.shape[0] - 1
    q_weights = np.asarray(q_weights, np.float32)
    dense_q = np.zeros(vocab_size, np.float32)
    dense_q[q_terms] = q_weights
    if excluded is None:
        visited = np.zeros(num_docs, np.bool_)
    else:  # an excluded doc looks scored already, as in the masked kernel
        visited = np.unpackbits(excluded.view(np.uint8), bitorder="little")[:num_docs].astype(np.bool_)
    factor = np.float64(heap_factor)
    top = _Threshold(k)
    scored_docs: list[np.ndarray] = []
    scored: list[np.ndarray] = []

    def score_block(b: int) -> None:
        docs = ix.post_docs[ix.block_ptr[b] : ix.block_ptr[b + 1]].astype(np.int64)
        docs = docs[~visited[docs]]
        if docs.size:
            visited[docs] = True
            s = score_docs(docs, ix, dense_q)
            scored_docs.append(docs)
            scored.append(s)
            top.offer(s)

    def skip(est: np.float32) -> bool:
        return top.full and np.float64(est) < factor * top.kth

    sel = top_query_terms(q_weights, query_cut)
    lists = []  # (b0, nb, t, position in the selection) of the selected terms with blocks
    for si, j in enumerate(sel):
        t = int(q_terms[j])
        b0 = int(ix.list_ptr[t])
        nb = int(ix.list_ptr[t + 1]) - b0
        if nb:
            lists.append((b0, nb, t, si))
    if use_summaries and sort_blocks == 3:
        ests = [estimate_blocks(t, dense_q, ix, b0, nb) for b0, nb, t, _ in lists]
        if ests:
            all_est = np.concatenate(ests)
            all_block = np.concatenate([np.arange(b0, b0 + nb) for b0, nb, _, _ in lists])
            for i in np.argsort(-all_est, kind="stable"):
                if skip(all_est[i]):
                    break
                score_block(int(all_block[i]))
    else:
        for b0, nb, t, si in lists:
            if use_summaries:
                est = estimate_blocks(t, dense_q, ix, b0, nb)
                # seismic order: only the heaviest term's list by estimate (not the first non-empty one)
                sorted_ = sort_blocks == 2 or (sort_blocks == 1 and si == 0)
                order = np.argsort(-est, kind="stable") if sorted_ else range(nb)
                for i in order:
                    if skip(est[i]):
                        continue
                    score_block(b0 + int(i))
            else:
                for i in range(nb):
                    score_block(b0 + i)
    out_docs = np.full(k, -1, np.int64)
    out_scores = np.full(k, -np.inf, np.float32)
    if not scored:
        return out_docs, out_scores, 0
    d = np.concatenate(scored_docs)
    s = np.concatenate(scored)
    best = np.lexsort((d, -s))[:k]
    out_docs[: best.shape[0]], out_scores[: best.shape[0]] = d[best], s[best]
    return out_docs, out_scores, int(d.shape[0])


__all__ = ["search_query", "score_docs", "estimate_blocks", "top_query_terms"]
