"""JPQ's objective: listwise softmax cross-entropy over PQ-reconstructed documents, and its candidates.

A document's vector is the concatenation of its centroids, ``d = [C_1[c_1(d)], ..., C_m[c_m(d)]]``,
differentiable in the centroids ``C`` while the codes ``c`` stay frozen (Zhan et al., CIKM 2021).
A batch's candidates are its positives plus each query's hard negatives from the PQ index itself
(JPQ's "end-to-end negative sampling"). torch and faiss load inside the functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from braid.retrieval.train.pairs import TrainingSet


def batch_loss(q, centroids, codes, rotation, targets: np.ndarray, candidates: np.ndarray, masked: np.ndarray, temperature: float):
    """Listwise softmax cross-entropy of each query's positive among a shared candidate list.

    ``q``: float tensor (B, dim) queries in the original space; ``centroids``: (m, ksub, dsub)
    tensor (trainable); ``codes``: int64 tensor (num_docs, m), frozen; ``rotation``: (dim, dim)
    tensor or None (OPQ: scores are ``(q @ R.T) . reconstruction``); ``candidates``: int64 (C,)
    docnos; ``targets``: int64 (B,) positions in ``candidates`` of each query's positive;
    ``masked``: bool (B, C), candidates left out of a query's softmax (its other relevant
    documents). Returns the mean loss (a 0-d tensor).
    """
    import torch

    m = centroids.shape[0]
    cand = torch.as_tensor(candidates, device=codes.device)
    docs = centroids[torch.arange(m, device=codes.device)[None, :], codes[cand]].reshape(len(candidates), -1)  # (C, dim)
    qr = q @ rotation.T if rotation is not None else q
    scores = (qr @ docs.T) / temperature
    scores = scores.masked_fill(torch.as_tensor(masked, device=scores.device), float("-inf"))
    return torch.nn.functional.cross_entropy(scores, torch.as_tensor(targets, device=scores.device))


def batch_candidates(rows: np.ndarray, data: TrainingSet, hits: np.ndarray, n_neg: int, rng: np.random.Generator | None):
    """Shared candidate list of a batch: its positives + per query ``n_neg`` non-relevant PQ hits.

    ``rows``: pair indices; ``hits``: int64 (B, depth) PQ top hits (-1 padding). With ``rng`` the
    negatives are sampled from the hits, else the top ``n_neg`` are taken. Returns (candidates,
    targets, masked) as :func:`batch_loss` takes them.
    """
    queries = data.pair_query[rows]
    chosen = [data.pair_docno[rows]]
    for i, qn in enumerate(queries):
        row = hits[i][hits[i] >= 0]
        row = row[~np.isin(row, data.positives(qn))]
        if n_neg and len(row):
            pick = rng.choice(len(row), size=min(n_neg, len(row)), replace=False) if rng is not None else np.arange(min(n_neg, len(row)))
            chosen.append(row[np.sort(pick)])
    candidates = np.unique(np.concatenate(chosen))
    targets = np.searchsorted(candidates, data.pair_docno[rows])
    masked = np.zeros((len(rows), len(candidates)), dtype=bool)
    for i, qn in enumerate(queries):
        pos = data.positives(qn)
        at = np.searchsorted(candidates, pos)
        ok = (at < len(candidates)) & (candidates[np.minimum(at, len(candidates) - 1)] == pos)
        masked[i, at[ok]] = True
        masked[i, targets[i]] = False
    return candidates, targets, masked


def search_negatives(search_index: Any, q: np.ndarray, depth: int) -> np.ndarray:
    """Top ``depth`` docnos int64 (B, depth) of float32 queries ``q`` (B, dim) in a FAISS index, -1 padded."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # a batch is a few queries: threads only fight the encoder's
    try:
        _, labels = search_index.search(np.ascontiguousarray(q, dtype=np.float32), min(depth, search_index.ntotal))
    finally:
        faiss.omp_set_num_threads(before)
    return labels.astype(np.int64)
