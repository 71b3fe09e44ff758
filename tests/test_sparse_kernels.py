"""Kernels of the blocked sparse index on hand-built arrays; every expected value is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from braid.index.sparse import kernels

F32 = np.float32


# --- validation ------------------------------------------------------------------------------
def test_check_rows_codes():
    ptr = np.array([0, 2, 3], np.int64)
    ok = kernels.check_rows(ptr, np.array([1, 4, 0], np.int32), np.array([1, 2, 0], F32), 5)
    assert ok[0] == kernels.ROW_OK
    assert kernels.check_rows(ptr, np.array([4, 1, 0], np.int32), np.ones(3, F32), 5)[:2] == (kernels.ROW_UNSORTED, 0)
    assert kernels.check_rows(ptr, np.array([1, 4, 5], np.int32), np.ones(3, F32), 5)[:2] == (kernels.ROW_BAD_TERM, 1)
    assert kernels.check_rows(ptr, np.array([1, 4, 0], np.int32), np.array([1, -1, 1], F32), 5)[:2] == (kernels.ROW_NEGATIVE, 0)
    assert kernels.check_rows(ptr, np.array([1, 4, 0], np.int32), np.array([1, 1, np.nan], F32), 5)[:2] == (kernels.ROW_NOT_FINITE, 1)


def test_half_float_load():
    halves = np.array([0.0, 0.5, 1.0, 3.140625, 65504.0, 6.1e-05, 1e-7], np.float16)
    # through the jitted path: one-term rows dotted with a unit query
    n = halves.size
    ptr = np.arange(n + 1, dtype=np.int64)
    terms = np.zeros(n, np.uint16)
    got = [float(kernels.score_doc(i, ptr, terms, halves.view(np.uint16), np.ones(1, F32))) for i in range(n)]
    assert got == [float(h) for h in halves.astype(np.float32)]


def test_score_doc_four_wide_half_loads_match_by_hand():
    # rows of 0..11 nonzeros cover the 4-at-a-time decode and the remainder; weights and query values are
    # small multiples of 1/4, so every product and sum is exact in float32 and the dot products are known
    rng = np.random.default_rng(3)
    lengths = np.arange(12)
    ptr = np.zeros(lengths.size + 1, np.int64)
    np.cumsum(lengths, out=ptr[1:])
    terms = np.concatenate([np.sort(rng.choice(20, n, replace=False)) for n in lengths]).astype(np.uint16)
    weights = (rng.integers(1, 12, ptr[-1]) / 4).astype(np.float16)
    dense_q = (rng.integers(0, 8, 20) / 4).astype(F32)
    want = [sum(float(dense_q[t]) * float(w) for t, w in zip(terms[ptr[d] : ptr[d + 1]], weights[ptr[d] : ptr[d + 1]]))
            for d in range(lengths.size)]  # fmt: skip
    halves = [float(kernels.score_doc(d, ptr, terms, weights.view(np.uint16), dense_q)) for d in range(lengths.size)]
    floats = [float(kernels.score_doc(d, ptr, terms, weights.astype(F32), dense_q)) for d in range(lengths.size)]
    assert halves == want and floats == want


# --- pruning -----------------------------------------------------------------------------------
def test_select_threshold_by_hand():
    data = np.array([0.5, 2.0, 1.0, 2.0, 0.0, 3.0], F32)
    # the 3 largest: 3.0, 2.0, 2.0 -> keep > 2.0 plus both 2.0s
    assert kernels.select_threshold(data, 3) == (2.0, 2)
    # the 2 largest: 3.0 and one of the 2.0s
    assert kernels.select_threshold(data, 2) == (2.0, 1)
    assert kernels.select_threshold(data, 4) == (1.0, 1)
    # more than the 5 positive weights: keep all positive
    assert kernels.select_threshold(data, 5) == (0.0, 0)
    assert kernels.select_threshold(data, 50) == (0.0, 0)


def test_invert_pruned_by_hand():
    # doc0 = {0: 1.0, 2: 3.0}, doc1 = {0: 2.0, 1: 0.0}, doc2 = {2: 2.0}
    indptr = np.array([0, 2, 4, 5], np.int64)
    indices = np.array([0, 2, 0, 1, 2], np.int32)
    data = np.array([1.0, 3.0, 2.0, 0.0, 2.0], F32)
    ptr, docs, weights = kernels.invert_pruned(indptr, indices, data, 3, F32(0.0), 0)
    assert ptr.tolist() == [0, 2, 2, 4]  # the zero weight of term 1 is dropped
    assert docs.tolist() == [0, 1, 0, 2] and weights.tolist() == [1.0, 2.0, 3.0, 2.0]
    # keep > 2.0 plus the first 2.0 in storage order (doc1's term 0)
    ptr, docs, weights = kernels.invert_pruned(indptr, indices, data, 3, F32(2.0), 1)
    assert ptr.tolist() == [0, 1, 1, 2] and docs.tolist() == [1, 0]


def test_cap_lists_keeps_heaviest_in_doc_order():
    ptr = np.array([0, 4, 5], np.int64)
    docs = np.array([0, 1, 2, 3, 7], np.int32)
    weights = np.array([1.0, 5.0, 3.0, 5.0, 9.0], F32)
    new_ptr, new_docs = kernels.cap_lists(ptr, docs, weights, 2)
    assert new_ptr.tolist() == [0, 2, 3] and new_docs.tolist() == [1, 3, 7]
    # ties at the cut: the lower doc wins
    new_ptr, new_docs = kernels.cap_lists(ptr, docs, np.array([2.0, 1.0, 2.0, 2.0, 1.0], F32), 2)
    assert new_docs.tolist() == [0, 2, 7]


def test_top_terms_by_hand():
    indptr = np.array([0, 3, 4, 4], np.int64)
    indices = np.array([1, 4, 7, 2], np.int32)
    data = np.array([0.2, 0.9, 0.5, 0.3], F32)
    terms, weights = kernels.top_terms(indptr, indices, data, 2)
    assert terms.tolist() == [[4, 7], [2, -1], [-1, -1]]
    assert weights.tolist() == [[pytest.approx(0.9), 0.5], [pytest.approx(0.3), 0.0], [0.0, 0.0]]
    # ties keep the lower term id first
    terms, _ = kernels.top_terms(np.array([0, 3], np.int64), np.array([3, 5, 6], np.int32), np.array([1.0, 2.0, 2.0], F32), 2)
    assert terms.tolist() == [[5, 6]]


# --- summaries -----------------------------------------------------------------------------------
def _energy_set(values, target):
    vals = np.array(values, F32)
    tau, m = kernels.energy_cut(vals.copy(), vals.size, target)
    kept = [v for v in values if v > tau]
    kept += [v for v in values if v == tau][:m]
    return sorted(kept, reverse=True)


def test_energy_cut_by_hand():
    values = [1.0, 4.0, 2.0, 3.0]  # sorted: 4, 3, 2, 1 (sum 10)
    assert _energy_set(values, 4.0) == [4.0]  # 4 >= 4
    assert _energy_set(values, 4.5) == [4.0, 3.0]
    assert _energy_set(values, 7.0) == [4.0, 3.0]  # 7 >= 7
    assert _energy_set(values, 9.5) == [4.0, 3.0, 2.0, 1.0]
    assert _energy_set(values, 10.0) == [4.0, 3.0, 2.0, 1.0]
    assert _energy_set(values, 0.0) == [4.0]  # at least the largest
    assert _energy_set([2.0, 2.0, 2.0, 1.0], 3.0) == [2.0, 2.0]  # ties: only as many as needed
    rng = np.random.default_rng(0)
    for _ in range(50):
        vals = rng.random(rng.integers(1, 300)).astype(F32)
        target = float(rng.random() * vals.sum())
        ref = np.sort(vals)[::-1]
        n_ref = int(np.searchsorted(np.cumsum(ref.astype(np.float64)), target)) + 1
        assert len(_energy_set(vals.tolist(), target)) == min(n_ref, vals.size)


def _docs_csr():
    # doc0 = {0: 4, 1: 1}, doc1 = {0: 2, 2: 3, 3: 0.5}, doc2 = {0: 1, 4: 1.5}
    indptr = np.array([0, 2, 5, 7], np.int64)
    indices = np.array([0, 1, 0, 2, 3, 0, 4], np.int32)
    data = np.array([4.0, 1.0, 2.0, 3.0, 0.5, 1.0, 1.5], F32)
    return indptr, indices, data


def test_build_lists_one_block_summary_by_hand():
    indptr, indices, data = _docs_csr()
    post_ptr = np.array([0, 3, 3, 3, 3, 3, 3], np.int64)  # only term 0 has a list: docs 0, 1, 2
    post_docs = np.array([0, 1, 2], np.int32)
    cut_t, cut_w = kernels.top_terms(indptr, indices, data, 2)
    out = kernels.build_lists(0, 6, post_ptr, post_docs, indptr, indices, data, cut_t, cut_w, 6, 0.1, 100, 0, 0.5, 0, np.zeros(0, np.uint8))
    list_nblocks, block_sizes, block_min, block_step, list_ncomps, comp_ids, comp_sizes, entry_blocks, entry_codes = out
    # one centroid (int(0.1 * 3) -> 1), one block of the three docs
    assert list_nblocks.tolist() == [1, 0, 0, 0, 0, 0] and block_sizes.tolist() == [3]
    assert post_docs.tolist() == [0, 1, 2]
    # max vector {0: 4, 1: 1, 2: 3, 3: 0.5, 4: 1.5}, mass 10; half of it is reached by 4 + 3
    assert list_ncomps.tolist() == [2, 0, 0, 0, 0, 0]
    assert comp_ids.tolist() == [0, 2] and comp_sizes.tolist() == [1, 1]
    assert block_min.tolist() == [3.0] and block_step[0] == pytest.approx(1.0 / 255)
    assert entry_blocks.tolist() == [0, 0] and entry_codes.tolist() == [255, 0]


def test_build_lists_dissolves_small_clusters():
    indptr, indices, data = _docs_csr()
    post_ptr = np.array([0, 3, 3, 3, 3, 3, 3], np.int64)
    post_docs = np.array([0, 1, 2], np.int32)
    cut_t, cut_w = kernels.top_terms(indptr, indices, data, 2)
    # three centroids (one per doc), but every cluster has <= 3 docs: all dissolved -> one block
    out = kernels.build_lists(0, 6, post_ptr, post_docs, indptr, indices, data, cut_t, cut_w, 6, 1.0, 100, 3, 1.0, 0, np.zeros(0, np.uint8))
    assert out[0].tolist()[0] == 1 and out[1].tolist() == [3]
    # min_cluster_size 0 keeps every non-empty cluster. Inner products of each doc's top-2 terms with
    # the centroids' full vectors: doc0 {0: 4, 1: 1} -> doc0 17, doc1 8, doc2 4; doc1 {2: 3, 0: 2} ->
    # doc1 13; doc2 {4: 1.5, 0: 1} -> doc0 4 > doc2 3.25. Blocks: {doc0, doc2}, {doc1}.
    post_docs = np.array([0, 1, 2], np.int32)
    out = kernels.build_lists(0, 6, post_ptr, post_docs, indptr, indices, data, cut_t, cut_w, 6, 1.0, 100, 0, 1.0, 0, np.zeros(0, np.uint8))
    assert out[0].tolist()[0] == 2 and out[1].tolist() == [2, 1]
    assert post_docs.tolist() == [0, 2, 1]
    # energy 1.0 keeps whole max vectors: {0: 4, 1: 1, 4: 1.5} and {0: 2, 2: 3, 3: 0.5}
    assert out[5].tolist() == [0, 1, 2, 3, 4] and out[6].tolist() == [2, 1, 1, 1, 1]
    assert out[7].tolist() == [0, 1, 0, 1, 1, 0]


def test_assign_picks_largest_inner_product():
    # centroid 0 = {1: 2.0}, centroid 1 = {1: 1.0, 2: 3.0}; doc's top terms {1: 1.0, 2: 1.0}
    c_cnt = np.array([0, 2, 1], np.int64)
    c_start = np.array([0, 0, 2], np.int64)
    c_cent = np.array([0, 1, 1], np.int32)
    c_w = np.array([2.0, 1.0, 3.0], F32)
    cut_t = np.array([[1, 2]], np.int32)
    cut_w = np.array([[1.0, 1.0]], F32)
    scores = np.zeros(2, F32)
    removed = np.zeros(2, np.bool_)
    assert kernels._assign(0, cut_t, cut_w, c_cnt, c_start, c_cent, c_w, scores, 2, removed) == 1  # 4 > 2
    removed[1] = True
    assert kernels._assign(0, cut_t, cut_w, c_cnt, c_start, c_cent, c_w, scores, 2, removed) == 0


# --- heap ----------------------------------------------------------------------------------------
def test_heap_keeps_k_best_with_docno_tie_break():
    k = 3
    hs, hd = np.empty(k, F32), np.empty(k, np.int64)
    size = 0
    for score, doc in [(1.0, 5), (3.0, 9), (2.0, 4), (3.0, 2), (2.0, 1), (0.5, 0), (2.0, 3)]:
        size = kernels.heap_push(hs, hd, size, k, F32(score), doc)
    out_d, out_s = np.empty(4, np.int64), np.empty(4, F32)
    kernels.heap_write_sorted(hs, hd, size, out_d, out_s)
    # order (-score, docno): (3, 2), (3, 9), (2, 1), then padding
    assert out_d.tolist() == [2, 9, 1, -1]
    assert out_s.tolist()[:3] == [3.0, 3.0, 2.0] and out_s[3] == -np.inf


# --- search over a hand-built index ---------------------------------------------------------------
def _tiny_index(forward_half=False):
    """4 docs over 4 terms: doc0 = {0: 1, 1: 2}, doc1 = {0: 3}, doc2 = {1: 1, 2: 4}, doc3 = {0: 0.5, 2: 1}.

    list 0: blocks b0 = [doc1] (summary {0: 3}), b1 = [doc0, doc3] (summary {0: 1, 1: 2, 2: 1});
    list 1: b2 = [doc0, doc2] (summary {1: 2, 2: 4}); list 2: b3 = [doc2, doc3] (summary {2: 4}).
    """
    fwd_weights = np.array([1, 2, 3, 1, 4, 0.5, 1], F32)
    return kernels.BlockedArrays(
        list_ptr=np.array([0, 2, 3, 4, 4], np.int64),
        block_ptr=np.array([0, 1, 3, 5, 7], np.int64),
        post_docs=np.array([1, 0, 3, 0, 2, 2, 3], np.int32),
        block_min=np.array([3.0, 1.0, 2.0, 4.0], F32),
        block_step=np.array([0.0, 1.0 / 255, 2.0 / 255, 0.0], F32),
        sum_list_ptr=np.array([0, 3, 5, 6, 6], np.int64),
        sum_comp_ids=np.array([0, 1, 2, 1, 2, 2], np.uint16),
        sum_comp_ptr=np.array([0, 2, 3, 4, 5, 6, 7], np.int64),
        sum_blocks=np.array([0, 1, 1, 1, 0, 0, 0], np.uint16),
        sum_codes=np.array([0, 0, 255, 0, 0, 255, 0], np.uint8),
        fwd_ptr=np.array([0, 2, 3, 5, 7], np.int64),
        fwd_terms=np.array([0, 1, 0, 1, 2, 0, 2], np.uint16),
        fwd_weights=fwd_weights.astype(np.float16).view(np.uint16) if forward_half else fwd_weights,
    )


def _search(a, q_terms, q_weights, k, query_cut, heap_factor, use_summaries=True, sort_blocks=1):
    q_ptr = np.array([0, len(q_terms)], np.int64)
    out_d, out_s = np.empty((1, k), np.int64), np.empty((1, k), F32)
    n_scored = np.empty(1, np.int64)
    scratch = kernels.new_scratch(4, 4, 2)
    kernels.search_batch(
        q_ptr, np.array(q_terms, np.int32), np.array(q_weights, F32), k, query_cut, heap_factor, use_summaries, sort_blocks,
        tuple(a), tuple(scratch), out_d, out_s, n_scored, 0, 1,
    )  # fmt: skip
    assert not scratch.dense_q.any() and not scratch.visited.any()  # scratch left clean
    return out_d[0].tolist(), out_s[0].tolist(), int(n_scored[0])


@pytest.mark.parametrize("half", [False, True])
def test_search_skips_blocks_by_summary_estimate(half):
    a = _tiny_index(half)
    # query {0: 1, 2: 1}; exact scores: doc0 1.0, doc1 3.0, doc2 4.0, doc3 1.5
    # list 0 (first: tie on weight -> lower term): estimates b0 = 3.0, b1 = 1*1.0 + 1*1.0 = 2.0.
    # k=1: b0 first -> doc1 (3.0) fills the heap; b1 (2.0 < 1.0 * 3.0) skipped; list 2: b3 = 4.0 >= 3.0
    # -> doc2 (4.0) and doc3 (1.5) scored.
    assert _search(a, [0, 2], [1.0, 1.0], 1, 2, 1.0) == ([2], [4.0], 3)
    # heap_factor 0.7: 2.0 < 2.1 still skipped; 0.6: 2.0 >= 1.8 -> b1 scored too (doc0, doc3)
    assert _search(a, [0, 2], [1.0, 1.0], 1, 2, 0.7)[2] == 3
    assert _search(a, [0, 2], [1.0, 1.0], 1, 2, 0.6)[2] == 4
    # query_cut 1: only list 0 -> doc1 is the best found
    assert _search(a, [0, 2], [1.0, 1.0], 1, 1, 1.0) == ([1], [3.0], 1)
    # k=3: the heap is not full while list 0 is read, so both blocks are scored
    assert _search(a, [0, 2], [1.0, 1.0], 3, 2, 1.0) == ([2, 1, 3], [4.0, 3.0, 1.5], 4)
    # no summaries (exact traversal): every block of both lists
    assert _search(a, [0, 2], [1.0, 1.0], 2, 9, 1.0, use_summaries=False) == ([2, 1], [4.0, 3.0], 4)


def test_search_best_first_across_lists_stops_early():
    a = _tiny_index()
    # sort_blocks=3: estimates of both lists in one order: b3 (4.0), b0 (3.0), b1 (2.0).
    # b3 scores doc2 (4.0) and doc3 (1.5); then b0's 3.0 < 1.0 * 4.0 ends the traversal.
    assert _search(a, [0, 2], [1.0, 1.0], 1, 2, 1.0, sort_blocks=3) == ([2], [4.0], 2)
    # heap_factor 0.7: b0 (3.0 >= 2.8) is scored (doc1), then b1 (2.0 < 2.8) stops it
    assert _search(a, [0, 2], [1.0, 1.0], 1, 2, 0.7, sort_blocks=3) == ([2], [4.0], 3)
    assert _search(a, [0, 2], [1.0, 1.0], 3, 2, 1.0, sort_blocks=3) == ([2, 1, 3], [4.0, 3.0, 1.5], 4)


def test_search_orders_query_terms_by_weight_and_pads():
    a = _tiny_index()
    # query {1: 0.5, 2: 2.0}: term 2 first; list 2 = b3 (doc2 = 0.5*1 + 2*4 = 8.5, doc3 = 2.0)
    assert _search(a, [1, 2], [0.5, 2.0], 3, 1, 1.0) == ([2, 3, -1], [8.5, 2.0, float("-inf")], 2)
    # a term without a list (3) and a zero weight are ignored
    assert _search(a, [2, 3], [1.0, 0.0], 2, 10, 1.0) == ([2, 3], [4.0, 1.0], 2)


def test_scan_batch_scores_every_doc():
    a = _tiny_index()
    q_ptr = np.array([0, 2, 3], np.int64)
    out_d, out_s = np.empty((2, 4), np.int64), np.empty((2, 4), F32)
    kernels.scan_batch(q_ptr, np.array([0, 2, 3], np.int32), np.array([1.0, 1.0, 5.0], F32), 4,
                       a.fwd_ptr, a.fwd_terms, a.fwd_weights, 4, 2, out_d, out_s)  # fmt: skip
    assert out_d[0].tolist() == [2, 1, 3, 0] and out_s[0].tolist() == [4.0, 3.0, 1.5, 1.0]
    assert out_d[1].tolist() == [-1, -1, -1, -1]  # term 3 is in no document: no positive score
