"""Search units of a live index: small segments joined into one search call, against brute force.

``SegmentedSparseIndex`` joins all flat sparse segments into one flat index, and
``SegmentedDenseIndex`` joins the small segments of a flat (or HNSW) dense index into one exact
flat index, when a generation is opened. Here the segments hold interleaved docnos (as merges
leave them), some documents are deleted, a filter is applied, and the weights are small integers so
that scores tie: the top-k must be the brute-force top-k over the live, allowed documents in
(-score, docno) order, scores included.
"""

from __future__ import annotations

import numpy as np
import pytest

from braid.data.errors import OptionError
from braid.data.vectors import SparseVectors

VOCAB = 40


def brute_force(scores: np.ndarray, live: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """(n_queries, n_docnos) scores -> per query the top-k (docno, score) of live docnos, score > -inf."""
    out = []
    for row in scores:
        cand = [(-float(row[d]), d) for d in np.flatnonzero(live)]
        cand.sort()
        out.append([(d, -s) for s, d in cand[:k]])
    return out


def as_lists(hits, positive_only: bool = False) -> list[list[tuple[int, float]]]:
    out = []
    for docs, scores in zip(hits.docnos, hits.scores):
        out.append([(int(d), float(s)) for d, s in zip(docs, scores) if d >= 0 and (not positive_only or s > 0)])
    return out


def random_sparse(rng: np.random.Generator, n: int) -> SparseVectors:
    rows = []
    for _ in range(n):
        terms = np.sort(rng.choice(VOCAB, size=int(rng.integers(1, 6)), replace=False)).astype(np.int32)
        rows.append((terms, rng.integers(1, 4, size=terms.size).astype(np.float32)))  # small integers: ties
    return SparseVectors.from_rows(rows, VOCAB)


def split_docnos(rng: np.random.Generator, n: int, sizes: list[int]) -> list[np.ndarray]:
    perm = rng.permutation(n)
    out, at = [], 0
    for s in sizes:
        out.append(np.sort(perm[at : at + s]).astype(np.int64))
        at += s
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_joined_flat_sparse_segments_give_the_brute_force_top_k(seed):
    from braid.index.segments import SegmentedSparseIndex
    from braid.index.sparse.flat import FlatSparseIndex

    rng = np.random.default_rng(seed)
    n = 60
    docs = random_sparse(rng, n)
    queries = random_sparse(rng, 5)
    docnos = split_docnos(rng, n, [20, 15, 15, 10])  # interleaved: the joined unit must reorder rows
    segments = [FlatSparseIndex.build(_rows(docs, d)) for d in docnos]
    deleted = np.zeros(n, bool)
    deleted[rng.choice(n, 8, replace=False)] = True
    index = SegmentedSparseIndex(segments, docnos, n, deleted, VOCAB)
    assert len(index.units) == 1 and index.units[0].index.num_docs == n  # all four flat segments, one call
    assert np.all(np.diff(index.units[0].docnos) > 0)
    dense_docs = _dense(docs)
    scores = _dense(queries) @ dense_docs.T
    allow = rng.random(n) < 0.6
    for mask, live in ((None, ~deleted), (allow, ~deleted & allow)):
        got = as_lists(index.search(queries, k=7, exact=True, allow=mask))
        want = [[(d, s) for d, s in row if s > 0] for row in brute_force(scores, live, 7)]
        assert got == want


def test_blocked_and_flat_segments_together(tmp_path):
    """A blocked base plus flat segments: the blocked one stays its own unit, exact mode equals brute force."""
    from braid.index.segments import SegmentedSparseIndex
    from braid.index.sparse.blocked import BlockedSparseIndex
    from braid.index.sparse.flat import FlatSparseIndex

    rng = np.random.default_rng(7)
    n = 80
    docs = random_sparse(rng, n)
    queries = random_sparse(rng, 6)
    docnos = [np.arange(50, dtype=np.int64), np.arange(50, 65, dtype=np.int64), np.arange(65, 80, dtype=np.int64)]
    base = BlockedSparseIndex.build(_rows(docs, docnos[0]))
    segments = [base] + [FlatSparseIndex.build(_rows(docs, d)) for d in docnos[1:]]
    deleted = np.zeros(n, bool)
    deleted[[3, 51, 70]] = True
    index = SegmentedSparseIndex(segments, docnos, n, deleted, VOCAB)
    assert [type(u.index).__name__ for u in index.units] == ["BlockedSparseIndex", "FlatSparseIndex"]
    scores = _dense(queries) @ _dense(docs).T
    got = as_lists(index.search(queries, k=9, exact=True))
    want = [[(d, s) for d, s in row if s > 0] for row in brute_force(scores, ~deleted, 9)]
    assert got == want


@pytest.mark.parametrize("store_dtype", ["float32", "float16"])
def test_joined_flat_dense_segments_give_the_brute_force_top_k(store_dtype):
    pytest.importorskip("faiss")
    from braid.index.dense import DenseIndex, DenseIndexConfig
    from braid.index.segments import SegmentedDenseIndex

    rng = np.random.default_rng(11)
    n, dim = 90, 8
    vectors = rng.integers(-2, 3, size=(n, dim)).astype(np.float32)  # small integers: exact in float16, ties
    queries = rng.integers(-2, 3, size=(4, dim)).astype(np.float32)
    docnos = split_docnos(rng, n, [40, 20, 20, 10])
    cfg = DenseIndexConfig(kind="flat", store_dtype=store_dtype)
    segments = [DenseIndex.build(vectors[d], cfg) for d in docnos]
    deleted = np.zeros(n, bool)
    deleted[rng.choice(n, 9, replace=False)] = True
    index = SegmentedDenseIndex(segments, docnos, [None] * 4, n, deleted)
    assert len(index.units) == 1  # everything fits JOIN_FLAT_DOCS: one FAISS call
    scores = queries @ vectors.T
    allow = rng.random(n) < 0.5
    for mask, live in ((None, ~deleted), (allow, ~deleted & allow)):
        assert as_lists(index.search(queries, k=12, allow=mask)) == brute_force(scores, live, 12)


def test_hnsw_keeps_the_largest_graph_and_scans_the_small_segments():
    pytest.importorskip("faiss")
    from braid.index.dense import DenseIndex, DenseIndexConfig
    from braid.index.segments import SegmentedDenseIndex

    rng = np.random.default_rng(5)
    n, dim = 120, 8
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((5, dim)).astype(np.float32)
    docnos = [np.arange(60, dtype=np.int64)] + [np.arange(60 + 20 * i, 80 + 20 * i, dtype=np.int64) for i in range(3)]
    cfg = DenseIndexConfig(kind="hnsw", hnsw_m=8)
    segments = [DenseIndex.build(vectors[d], cfg) for d in docnos]
    index = SegmentedDenseIndex(segments, docnos, [vectors[d] for d in docnos], n, None)
    kinds = [u.index.config.kind for u in index.units]
    assert kinds == ["hnsw", "flat"] and index.units[1].index.num_docs == 60
    # ef_search >= the base's size: the graph search is exhaustive on 60 nodes, so the merge is exact
    got = index.search(queries, k=10, ef_search=64)
    want = brute_force(queries @ vectors.T, np.ones(n, bool), 10)
    assert [[d for d, _ in row] for row in as_lists(got)] == [[d for d, _ in row] for row in want]
    np.testing.assert_allclose(got.scores, [[s for _, s in row] for row in want], rtol=1e-5)


def _hnsw_generation(seed: int, absorb: str, n_small: int = 4, deleted_frac: float = 0.1, keys: bool = False, small: int = 15):
    from braid.index.dense import DenseIndex, DenseIndexConfig
    from braid.index.segments import SegmentedDenseIndex

    rng = np.random.default_rng(seed)
    dim = 8
    sizes = [80] + [small] * n_small
    n = sum(sizes)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    docnos = split_docnos(rng, n, sizes)  # interleaved docnos, as merges leave them
    cfg = DenseIndexConfig(kind="hnsw", hnsw_m=8)
    segments = [DenseIndex.build(vectors[d], cfg) for d in docnos]
    deleted = rng.random(n) < deleted_frac
    names = [("test", seed, i) for i in range(len(sizes))] if keys else None
    index = SegmentedDenseIndex(segments, docnos, [vectors[d] for d in docnos], n, deleted, absorb=absorb, keys=names)
    return index, vectors, deleted, rng, (segments, docnos, names)


def _check_exhaustive(index, vectors, deleted, rng):
    """With a beam as large as the generation the graph search is exhaustive: brute force over the live
    (and allowed) documents, deletions never returned."""
    queries = rng.standard_normal((6, vectors.shape[1])).astype(np.float32)
    scores = queries @ vectors.T
    allow = rng.random(vectors.shape[0]) < 0.6
    for mask, live in ((None, ~deleted), (allow, ~deleted & allow)):
        got = index.search(queries, k=10, ef_search=vectors.shape[0], allow=mask)
        want = brute_force(scores, live, 10)
        assert [[d for d, _ in row] for row in as_lists(got)] == [[d for d, _ in row] for row in want]
        np.testing.assert_allclose(got.scores, [[s for _, s in row] for row in want], rtol=1e-5)


@pytest.mark.parametrize("absorb", ["sync", "background"])
@pytest.mark.parametrize("small", [15, 40])  # joined into one flat unit / each its own graph
def test_hnsw_segments_are_inserted_into_the_largest_graph(monkeypatch, absorb, small):
    """Once the segments beside the largest reach ABSORB_HNSW_DOCS, they are inserted into a copy of the
    largest graph (at once or in a background thread) and the generation searches that one graph,
    holding every document, with the same results as brute force when the beam is exhaustive."""
    from braid.index import segments as S

    monkeypatch.setattr(S, "ABSORB_HNSW_DOCS", 30)
    monkeypatch.setattr(S, "ABSORB_CHUNK", 7)  # several add chunks
    monkeypatch.setattr(S, "SMALL_SEGMENT_DOCS", 20)  # segments of 40 keep their own graphs until inserted
    index, vectors, deleted, rng, _ = _hnsw_generation(3, absorb, small=small)
    assert index.wait_graph(timeout=60)
    assert [u.index.config.kind for u in index.units] == ["hnsw"] and index.units[0].index.num_docs == vectors.shape[0]
    assert index.graph_seconds is not None and index.graph_seconds > 0
    assert index.segments[0].num_docs == 80  # the segment itself is untouched (a copy was extended)
    _check_exhaustive(index, vectors, deleted, rng)
    before = S.SegmentedDenseIndex(*_hnsw_generation(3, "off", small=small)[4][:2], [None] * 5, vectors.shape[0], deleted, absorb="off")
    assert [u.index.config.kind for u in before.units] == (["hnsw", "flat"] if small == 15 else ["hnsw"] * 5)
    _check_exhaustive(before, vectors, deleted, rng)  # the units it searches meanwhile: the same documents


def test_the_next_generation_reuses_or_extends_the_graph(monkeypatch):
    """Graphs are kept per process by the largest segment's key: a generation with the same segments
    (a delete) takes the same graph at once; one with a new segment (an add) extends a copy of it with
    that segment only; one that lost a segment (merged away) starts again from the base graph."""
    from braid.index import segments as S

    monkeypatch.setattr(S, "ABSORB_HNSW_DOCS", 30)
    monkeypatch.setattr(S, "_GRAPHS", type(S._GRAPHS)())
    first, vectors, deleted, rng, (segments, docnos, names) = _hnsw_generation(8, "sync", keys=True)
    graph = first.units[0].index.index
    more_deleted = deleted.copy()
    more_deleted[np.flatnonzero(~deleted)[:5]] = True
    again = S.SegmentedDenseIndex(segments, docnos, [vectors[d] for d in docnos], vectors.shape[0], more_deleted, absorb="background", keys=names)
    assert again.wait_graph(timeout=0) and again.graph_seconds == 0.0 and again.units[0].index.index is graph
    _check_exhaustive(again, vectors, more_deleted, rng)
    # an add: a sixth segment over new docnos
    extra = np.random.default_rng(9).standard_normal((12, vectors.shape[1])).astype(np.float32)
    all_vectors = np.concatenate([vectors, extra])
    from braid.index.dense import DenseIndex

    seg6 = DenseIndex.build(extra, segments[0].config)
    d6 = np.arange(vectors.shape[0], all_vectors.shape[0], dtype=np.int64)
    dead = np.concatenate([more_deleted, np.zeros(12, bool)])
    added = S.SegmentedDenseIndex(segments + [seg6], docnos + [d6], [vectors[d] for d in docnos] + [extra], all_vectors.shape[0], dead,
                                  absorb="sync", keys=names + [("test", 8, 5)])  # fmt: skip
    g = added.units[0].index.index
    assert g is not graph and g.ntotal == all_vectors.shape[0] and graph.ntotal == vectors.shape[0]
    _check_exhaustive(added, all_vectors, dead, rng)
    # a segment merged away: the cached graph is not a subset, so the base graph is extended afresh
    merged = S.SegmentedDenseIndex(segments[:3] + [seg6], docnos[:3] + [d6], [vectors[d] for d in docnos[:3]] + [extra], all_vectors.shape[0],
                                   dead, absorb="sync", keys=names[:3] + [("test", 8, 5)])  # fmt: skip
    assert merged.units[0].index.num_docs == 80 + 2 * 15 + 12


def test_hnsw_insertion_threshold_and_off(monkeypatch):
    """Below ABSORB_HNSW_DOCS (or with absorb off) the segments keep their own units; an unknown mode
    is refused by name."""
    from braid.data.errors import OptionError
    from braid.index import segments as S

    monkeypatch.setattr(S, "ABSORB_HNSW_DOCS", 61)  # 4 x 15 = 60 documents beside the base: below it
    index = _hnsw_generation(4, "sync")[0]
    assert index.wait_graph(timeout=0) and [u.index.config.kind for u in index.units] == ["hnsw", "flat"]
    monkeypatch.setattr(S, "ABSORB_HNSW_DOCS", 30)
    index = _hnsw_generation(4, "off")[0]
    assert [u.index.config.kind for u in index.units] == ["hnsw", "flat"] and index.graph_seconds is None
    with pytest.raises(OptionError, match="absorb"):
        _hnsw_generation(4, "later")


def _rows(docs: SparseVectors, rows: np.ndarray) -> SparseVectors:
    return SparseVectors.from_rows([(docs.indices[docs.indptr[r] : docs.indptr[r + 1]], docs.data[docs.indptr[r] : docs.indptr[r + 1]]) for r in rows], docs.vocab_size)


def _dense(v: SparseVectors) -> np.ndarray:
    out = np.zeros((v.n_rows, v.vocab_size), np.float32)
    for i in range(v.n_rows):
        s, e = v.indptr[i], v.indptr[i + 1]
        out[i, v.indices[s:e]] = v.data[s:e]
    return out


@pytest.mark.parametrize("forward_dtype", ["float16", "float32"])
def test_inverted_flat_search_equals_the_forward_scan_bit_for_bit(forward_dtype):
    """Real-valued weights: the term-at-a-time sums round differently from score_doc's, so the joined
    unit's candidates are rescored; the result must be the forward scan's, scores and ties included."""
    from braid.index.sparse.blocked import exclusion_bitset
    from braid.index.sparse.flat import FlatSparseIndex

    rng = np.random.default_rng(3)
    vocab, n = 300, 400
    rows = []
    for _ in range(n):
        terms = np.sort(rng.choice(vocab, size=int(rng.integers(5, 60)), replace=False)).astype(np.int32)
        rows.append((terms, rng.gamma(1.0, 1.0, size=terms.size).astype(np.float32)))
    docs = SparseVectors.from_rows(rows, vocab)
    rows = []
    for _ in range(40):
        terms = np.sort(rng.choice(vocab, size=int(rng.integers(1, 120)), replace=False)).astype(np.int32)
        rows.append((terms, rng.gamma(1.0, 1.0, size=terms.size).astype(np.float32)))
    queries = SparseVectors.from_rows(rows, vocab)
    plain = FlatSparseIndex.build(docs, forward_dtype=forward_dtype)
    inverted = FlatSparseIndex.build(docs, forward_dtype=forward_dtype).invert()
    excluded = exclusion_bitset(rng.random(n) < 0.3)
    for k in (1, 10, 500):
        for bits in (None, excluded):
            a, b = plain.search(queries, k=k, excluded=bits), inverted.search(queries, k=k, excluded=bits)
            np.testing.assert_array_equal(a.docnos, b.docnos)
            np.testing.assert_array_equal(a.scores, b.scores)


def test_flat_unit_serial_path_equals_the_parallel_one_and_ignores_the_knobs():
    """One query (or one thread) takes the serial term-at-a-time kernel with per-thread scratch: the same
    exact top-k as the parallel kernel and a brute-force product, the scratch left clean for the next
    query; the blocked index's knobs do not make a flat unit approximate."""
    from braid.index.sparse.blocked import exclusion_bitset
    from braid.index.sparse.flat import FlatSparseIndex

    rng = np.random.default_rng(8)
    vocab, n = 200, 500
    docs = SparseVectors.from_rows([
        (t, rng.gamma(1.0, 1.0, size=t.size).astype(np.float32))
        for t in (np.sort(rng.choice(vocab, size=int(rng.integers(5, 40)), replace=False)).astype(np.int32) for _ in range(n))
    ], vocab)  # fmt: skip
    queries = SparseVectors.from_rows([
        (t, rng.gamma(1.0, 1.0, size=t.size).astype(np.float32))
        for t in (np.sort(rng.choice(vocab, size=int(rng.integers(1, 40)), replace=False)).astype(np.int32) for _ in range(30))
    ], vocab)  # fmt: skip
    index = FlatSparseIndex.build(docs, forward_dtype="float32").invert()
    dead = rng.random(n) < 0.2
    true = _dense(queries) @ _dense(docs).T
    for bits in (None, exclusion_bitset(dead)):
        batch = index.search(queries, k=10, threads=2, excluded=bits)
        for q in range(queries.n_rows):
            one = queries.take(np.array([q]))
            for kwargs in ({}, {"threads": 1}, {"query_cut": 1, "heap_factor": 1.5}):
                got = index.search(one, k=10, excluded=bits, **kwargs)
                np.testing.assert_array_equal(got.docnos[0], batch.docnos[q])
                np.testing.assert_array_equal(got.scores[0], batch.scores[q])
        live = ~dead if bits is not None else np.ones(n, bool)
        ref = brute_force(true.astype(np.float32), live, 10)
        got = [[(int(d), float(s)) for d, s in zip(batch.docnos[q], batch.scores[q]) if d >= 0] for q in range(queries.n_rows)]
        assert [[d for d, _ in row] for row in got] == [[d for d, s in row if s > 0] for row in ref]
    acc, seen, _, dense_q = index._taat_scratch()
    assert not acc.any() and not seen.any() and not dense_q.any()


def test_single_query_merge_equals_the_batched_merge():
    from braid.index.hits import Hits
    from braid.index.segments import merge_hits

    rng = np.random.default_rng(9)
    parts = []
    for _ in range(3):
        docnos = rng.integers(-1, 50, size=(6, 8)).astype(np.int64)
        scores = rng.integers(0, 4, size=(6, 8)).astype(np.float32)  # ties across parts
        scores[docnos < 0] = -np.inf
        parts.append(Hits(docnos, scores))
    for k in (1, 5, 30):
        batched = merge_hits(parts, 6, k)
        for q in range(6):
            one = merge_hits([Hits(p.docnos[q : q + 1], p.scores[q : q + 1]) for p in parts], 1, k)
            np.testing.assert_array_equal(one.docnos[0], batched.docnos[q])
            np.testing.assert_array_equal(one.scores[0], batched.scores[q])


@pytest.mark.parametrize("k", [5, 200])  # a Python sort of the pairs / lexsort (beyond MERGE_ONE_MAX)
def test_merge_hits_orders_by_score_then_docno(k):
    from braid.index.hits import Hits
    from braid.index.segments import merge_hits

    rng = np.random.default_rng(k)
    parts = []
    for p in range(3):
        docnos = rng.permutation(1000)[:k] + 1000 * p  # disjoint docnos per part, as segments hold
        scores = rng.integers(0, 5, size=k).astype(np.float32)  # many ties
        order = np.lexsort((docnos, -scores))
        docnos, scores = docnos[order], scores[order]
        docnos[-1], scores[-1] = -1, -np.inf  # a padded tail
        parts.append(Hits(docnos[None].astype(np.int64), scores[None]))
    got = merge_hits(parts, 1, k)
    pairs = sorted((-float(s), int(d)) for p in parts for d, s in zip(p.docnos[0], p.scores[0]) if d >= 0)[:k]
    assert got.docnos[0].tolist() == [d for _, d in pairs]
    assert got.scores[0].tolist() == [-s for s, _ in pairs]


@pytest.mark.parametrize("join", ["sync", "background"])
def test_blocked_segments_beside_the_largest_are_joined_into_one(monkeypatch, join):
    """Several blocked segments beside the largest become one blocked index over their documents (in
    increasing docno order), searched beside the largest: two units; exact mode equals brute force,
    deletions and filters included, and a generation with the same segments reuses the joined index."""
    from braid.index import segments as S
    from braid.index.segments import SegmentedSparseIndex
    from braid.index.sparse.blocked import BlockedSparseIndex

    monkeypatch.setattr(S, "ABSORB_SPARSE_DOCS", 10)
    monkeypatch.setattr(S, "_GRAPHS", type(S._GRAPHS)())
    rng = np.random.default_rng(21)
    n = 150
    docs = random_sparse(rng, n)
    queries = random_sparse(rng, 6)
    docnos = split_docnos(rng, n, [60, 30, 30, 30])  # interleaved
    segments = [BlockedSparseIndex.build(_rows(docs, d)) for d in docnos]
    deleted = np.zeros(n, bool)
    deleted[rng.choice(n, 12, replace=False)] = True
    keys = [("test-sparse", i) for i in range(4)]
    index = SegmentedSparseIndex(segments, docnos, n, deleted, VOCAB, join=join, keys=keys)
    assert index.wait_joined(timeout=60) and index.join_seconds > 0
    assert len(index.units) == 2 and index.units[0].index is segments[0]
    joined = index.units[1]
    assert joined.index.num_docs == 90 and np.all(np.diff(joined.docnos) > 0)
    scores = _dense(queries) @ _dense(docs).T
    allow = rng.random(n) < 0.6
    for mask, live in ((None, ~deleted), (allow, ~deleted & allow)):
        got = as_lists(index.search(queries, k=9, exact=True, allow=mask))
        want = [[(d, s) for d, s in row if s > 0] for row in brute_force(scores, live, 9)]
        assert got == want
        # pruning knobs that visit every block: the same lists as exact mode
        assert as_lists(index.search(queries, k=9, query_cut=VOCAB, heap_factor=0.0, allow=mask)) == got
    off = SegmentedSparseIndex(segments, docnos, n, deleted, VOCAB, join="off")
    assert len(off.units) == 4 and as_lists(off.search(queries, k=9, exact=True)) == as_lists(index.search(queries, k=9, exact=True))
    again = SegmentedSparseIndex(segments, docnos, n, deleted, VOCAB, join="background", keys=keys)
    assert again.wait_joined(timeout=0) and again.join_seconds == 0.0 and again.units[1].index is joined.index
    with pytest.raises(OptionError, match="join"):
        SegmentedSparseIndex(segments, docnos, n, deleted, VOCAB, join="later")


def test_a_second_generation_waits_for_the_join_under_way(monkeypatch):
    """Two generations with the same segments opened while the first join runs: one build, both use it."""
    import threading

    from braid.index import segments as S
    from braid.index.segments import SegmentedSparseIndex
    from braid.index.sparse import blocked as B

    monkeypatch.setattr(S, "ABSORB_SPARSE_DOCS", 10)
    monkeypatch.setattr(S, "_GRAPHS", type(S._GRAPHS)())
    rng = np.random.default_rng(5)
    n = 120
    docs = random_sparse(rng, n)
    docnos = split_docnos(rng, n, [60, 20, 20, 20])
    segments = [B.BlockedSparseIndex.build(_rows(docs, d)) for d in docnos]
    gate, builds = threading.Event(), []
    real = B.BlockedSparseIndex.build.__func__

    def slow_build(cls, *a, **kw):
        builds.append(1)
        gate.wait(30)
        return real(cls, *a, **kw)

    monkeypatch.setattr(B.BlockedSparseIndex, "build", classmethod(slow_build))
    keys = [("test-wait", i) for i in range(4)]
    first = SegmentedSparseIndex(segments, docnos, n, None, VOCAB, join="background", keys=keys)
    second = SegmentedSparseIndex(segments, docnos, n, None, VOCAB, join="background", keys=keys)
    assert not first.wait_joined(timeout=0.2) and not second.wait_joined(timeout=0)
    gate.set()
    assert first.wait_joined(timeout=30) and second.wait_joined(timeout=30)
    assert len(builds) == 1 and first.units[1].index is second.units[1].index
