"""PRF on hand-made examples with hand-computed weights, and against brute force / Pyserini's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from braid.data.errors import DataError, OptionError
from braid.index.hits import Hits
from braid.retrieval.pipeline.fusion import fuse
from braid.retrieval.pipeline.prf import dense_prf, interpolate_prf_interpolate, rm3_expand, rocchio_sparse, rocchio_sparse_batch

QUERY = {"cat": 1, "dog": 1}
DOCS = [{"cat": 3, "mouse": 2, "the": 5}, {"dog": 1, "mouse": 1, "bone": 2}]
SCORES = np.array([2.0, 1.0])


def assert_weights(got: dict, want: dict) -> None:
    assert list(got) == list(want), f"terms/order {list(got)} != {list(want)}"
    for t in want:
        assert got[t] == pytest.approx(want[t], rel=1e-12, abs=1e-12), t


def test_rm3_anserini_defaults_hand_worked():
    # q = {cat .5, dog .5}. d1 (stopword 'the' out) keeps cat 3, mouse 2, norm 5; d2 keeps its 2 most
    # frequent: bone 2, then dog/mouse tie at 1 -> 'dog' (by term), norm 3.
    # rm: cat 3/5*2 = 1.2, mouse 2/5*2 = .8, bone 2/3, dog 1/3 -> top 2 {cat 1.2, mouse .8} -> {.6, .4}.
    # 0.5 q + 0.5 rm: cat .25 + .3 = .55, dog .25, mouse .2.
    got = rm3_expand(QUERY, DOCS, SCORES, fb_terms=2, original_query_weight=0.5, stopwords={"the"})
    assert_weights(got, {"cat": 0.55, "dog": 0.25, "mouse": 0.2})
    assert sum(got.values()) == pytest.approx(1.0)


def test_rm3_unpruned_docs_use_document_length():
    # prune_docs=False: p(t|D) = tf / |D| with |D| = all tfs (10 and 4).
    # rm: cat .3*2 = .6, mouse .2*2 + .25*1 = .65, bone .5, dog .25 -> top 2 {mouse .65, cat .6} / 1.25.
    # q/2 + rm/2: cat .25 + .24 = .49, mouse .26, dog .25.
    got = rm3_expand(QUERY, DOCS, SCORES, fb_terms=2, stopwords={"the"}, prune_docs=False)
    assert_weights(got, {"cat": 0.49, "mouse": 0.26, "dog": 0.25})


def test_rm3_softmax_doc_weights():
    a, b = math.e / (math.e + 1), 1 / (math.e + 1)  # softmax of scores (2, 1)
    # fb_terms=3: d1 keeps cat 3, mouse 2 (norm 5); d2 keeps bone 2, dog 1, mouse 1 (norm 4).
    cat, mouse, bone, dog = 0.6 * a, 0.4 * a + 0.25 * b, 0.5 * b, 0.25 * b
    top = cat + mouse + bone  # dog is the 4th term, pruned
    want = {"cat": 0.7 * 0.5 + 0.3 * cat / top, "dog": 0.7 * 0.5, "mouse": 0.3 * mouse / top, "bone": 0.3 * bone / top}
    want = dict(sorted(want.items(), key=lambda kv: (-kv[1], kv[0])))
    got = rm3_expand(QUERY, DOCS, SCORES, fb_terms=3, original_query_weight=0.7, stopwords={"the"}, doc_weighting="softmax")
    assert_weights(got, want)


def test_rm3_anserini_term_filters_and_fb_docs():
    docs = [{"a": 9, "Dog": 9, "mouse": 4, "zebra": 1}, {"zebra": 50}]
    # 'a' (too short) and 'Dog' (not [a-z0-9]+) are filtered; 'mouse' has df 50/100 > 10%: filtered.
    # fb_docs=1 ignores the second document. rm = {zebra: 1}; weights: query words .5 each * .5.
    got = rm3_expand({"cat": 2.0, "dog": 2.0}, docs, np.array([3.0, 2.0]), fb_docs=1,
                     doc_freqs={"mouse": 50, "zebra": 3}, num_docs=100)
    assert_weights(got, {"zebra": 0.5, "cat": 0.25, "dog": 0.25})
    got = rm3_expand({"cat": 2.0, "dog": 2.0}, docs, np.array([3.0, 2.0]), fb_docs=1,
                     doc_freqs={"mouse": 50, "zebra": 3}.get, num_docs=100)  # a callable works too
    assert_weights(got, {"zebra": 0.5, "cat": 0.25, "dog": 0.25})
    # Without the df filter mouse comes back: rm = {mouse .8, zebra .2}.
    got = rm3_expand({"cat": 2.0, "dog": 2.0}, docs, np.array([3.0, 2.0]), fb_docs=1)
    assert_weights(got, {"mouse": 0.4, "cat": 0.25, "dog": 0.25, "zebra": 0.1})


def test_rm3_edge_cases_and_validation():
    assert_weights(rm3_expand(QUERY, [], np.zeros(0)), {"cat": 0.5, "dog": 0.5})
    assert_weights(rm3_expand(QUERY, [{"the": 3}], np.ones(1), stopwords={"the"}), {"cat": 0.5, "dog": 0.5})
    with pytest.raises(OptionError, match="feedback_scores"):
        rm3_expand(QUERY, DOCS, np.ones(3))
    with pytest.raises(OptionError, match="original_query_weight"):
        rm3_expand(QUERY, DOCS, SCORES, original_query_weight=1.5)
    with pytest.raises(OptionError, match="doc_weighting"):
        rm3_expand(QUERY, DOCS, SCORES, doc_weighting="exp")
    with pytest.raises(DataError):
        rm3_expand(QUERY, DOCS, np.array([np.nan, 1.0]))


FEEDBACK = (np.array([0, 2, 4, 5]), np.array([2, 7, 7, 9, 1], dtype=np.int32), np.array([1.0, 4.0, 2.0, 1.0, 10.0], dtype=np.float32))


def test_rocchio_sparse_hand_worked():
    q = (np.array([5, 2], dtype=np.int32), np.array([1.0, 2.0], dtype=np.float32))
    # mean of rows 0-1: {2: .5, 7: 3, 9: .5}; fb_terms=2 keeps 7 and (tie .5) 2.
    # 1.0 * q + 0.75 * mean: {2: 2 + .375, 5: 1, 7: 2.25}
    idx, w = rocchio_sparse(q, FEEDBACK, alpha=1.0, beta=0.75, fb_docs=2, fb_terms=2)
    assert idx.dtype == np.int32 and w.dtype == np.float32
    assert idx.tolist() == [2, 5, 7]
    np.testing.assert_allclose(w, [2.375, 1.0, 2.25])
    idx, w = rocchio_sparse(q, FEEDBACK, fb_docs=2)
    assert idx.tolist() == [2, 5, 7, 9]
    np.testing.assert_allclose(w, [2.375, 1.0, 2.25, 0.375])
    # All three rows, alpha .4 beta .6: mean {1: 10/3, 2: 1/3, 7: 2, 9: 1/3}
    idx, w = rocchio_sparse(q, FEEDBACK, alpha=0.4, beta=0.6)
    assert idx.tolist() == [1, 2, 5, 7, 9]
    np.testing.assert_allclose(w, [2.0, 0.8 + 0.2, 0.4, 1.2, 0.2], rtol=1e-6)


def test_rocchio_sparse_batch_against_dense_brute_force():
    rng = np.random.default_rng(0)
    vocab, n_docs, n_q = 40, 30, 5
    dense_docs = rng.random((n_docs, vocab)) * (rng.random((n_docs, vocab)) < 0.2)
    dense_q = rng.random((n_q, vocab)) * (rng.random((n_q, vocab)) < 0.15)
    csr = lambda m: (np.concatenate([[0], np.cumsum((m != 0).sum(1))]), np.nonzero(m)[1], m[m != 0])  # noqa: E731
    rows = [(rng.choice(n_docs, size=int(rng.integers(0, 6)), replace=False), None) for _ in range(n_q)]
    hits = Hits.from_lists([(d, -np.arange(len(d), dtype=np.float32)) for d, _ in rows], 6)
    ptr, idx, w = rocchio_sparse_batch(csr(dense_q), hits, csr(dense_docs), alpha=0.9, beta=0.3, fb_docs=4)
    for i in range(n_q):
        fb = hits.row(i)[0][:4]
        want = 0.9 * dense_q[i] + (0.3 * dense_docs[fb].mean(0) if len(fb) else 0.0)
        got = np.zeros(vocab)
        got[idx[ptr[i] : ptr[i + 1]]] = w[ptr[i] : ptr[i + 1]]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert np.all(np.diff(idx[ptr[i] : ptr[i + 1]]) > 0)


def test_dense_prf_hand_worked():
    q = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    fb = np.tile(np.array([[0.0, 1.0], [1.0, 1.0], [3.0, 3.0]], dtype=np.float32), (3, 1, 1))
    # average, depth 2: (q + d1 + d2) / 3 = (2/3, 2/3); counts 1: (q + d1) / 2; counts 0: q.
    out = dense_prf(q, fb, method="average", depth=2, counts=np.array([3, 1, 0]))
    np.testing.assert_allclose(out, [[2 / 3, 2 / 3], [0.5, 0.5], [1.0, 0.0]], rtol=1e-6)
    # rocchio, depth 2, .4 / .6: .4 q + .6 mean(d1, d2) = (.4 + .3, .6)
    out = dense_prf(q, fb, method="rocchio", depth=2, alpha=0.4, beta=0.6)
    np.testing.assert_allclose(out, [[0.7, 0.6]] * 3, rtol=1e-6)
    out = dense_prf(q, fb, method="rocchio", depth=2, alpha=0.4, beta=0.6, normalize=True)
    np.testing.assert_allclose(out, [[0.7 / math.hypot(0.7, 0.6), 0.6 / math.hypot(0.7, 0.6)]] * 3, rtol=1e-6)


def test_dense_prf_matches_pyserini_formulas_and_callable():
    rng = np.random.default_rng(1)
    n, dim, n_docs = 4, 8, 20
    table = rng.normal(size=(n_docs, dim)).astype(np.float32)
    q = rng.normal(size=(n, dim)).astype(np.float32)
    hits = Hits.from_lists([(rng.choice(n_docs, size=s, replace=False), rng.random(s)) for s in (6, 5, 2, 0)], 6)
    for method, depth in (("average", 3), ("rocchio", 5)):
        got = dense_prf(q, lambda d: table[d], method=method, hits=hits)  # default depths 3 / 5, .4 / .6
        for i in range(n):
            cands = table[hits.row(i)[0][:depth]]
            if len(cands) == 0:
                want = q[i]
            elif method == "average":  # DenseVectorAveragePrf: np.mean(np.vstack((emb_q, candidates)), axis=0)
                want = np.mean(np.vstack((q[i], cands)), axis=0)
            else:  # DenseVectorRocchioPrf: alpha * emb_q + beta * np.mean(candidates, axis=0)
                want = 0.4 * q[i] + 0.6 * np.mean(cands, axis=0)
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)
    # The (n, depth, d) form with the same hits gives the same vectors.
    fb = np.zeros((n, 6, dim), dtype=np.float32)
    for i in range(n):
        d = hits.row(i)[0]
        fb[i, : len(d)] = table[d]
    np.testing.assert_array_equal(dense_prf(q, fb, hits=hits), dense_prf(q, lambda d: table[d], hits=hits))
    with pytest.raises(OptionError, match="hits"):
        dense_prf(q, lambda d: table[d])
    with pytest.raises(OptionError, match="method"):
        dense_prf(q, fb, method="max")


def test_interpolate_prf_interpolate_order_of_operations():
    a = Hits.from_lists([([1, 2, 3], [3.0, 2.0, 1.0]), ([4, 5], [2.0, 1.0])], 3)
    b = Hits.from_lists([([3, 6], [0.9, 0.1]), ([5], [1.0])], 3)
    seen = []

    def second_stage(feedback: Hits):
        seen.append(feedback)
        return [b, a]  # stand-ins for the PRF lists

    out = interpolate_prf_interpolate([a, b], second_stage, k=3, fb_docs=2, weights=[1.0, 0.5])
    want_fb = fuse([a, b], "linear", 2, [1.0, 0.5])
    assert np.array_equal(seen[0].docnos, want_fb.docnos) and seen[0].k == 2
    want = fuse([b, a], "linear", 3, [1.0, 0.5])
    assert np.array_equal(out.docnos, want.docnos) and np.array_equal(out.scores, want.scores)
