"""BlockedSparseIndex against independent references: exact mode = brute force, a recall floor for the
default approximate settings on seeded topical data, save/load round trips, and argument checks."""

from __future__ import annotations

import json

import numba
import numpy as np
import pytest

from braid.data.errors import DataError, IndexFormatError, OptionError
from braid.index.sparse import BlockedIndexConfig, BlockedSparseIndex, SparseVectors, exact_search
from braid.index.sparse.blocked import numba_threads


def _random_vectors(rng, n, vocab, nnz_low, nnz_high):
    rows = []
    for _ in range(n):
        m = int(rng.integers(nnz_low, nnz_high + 1))
        terms = rng.choice(vocab, size=m, replace=False)
        rows.append({int(t): float(w) for t, w in zip(terms, rng.gamma(1.5, 0.6, size=m) + 1e-3)})
    return SparseVectors.from_dicts(rows, vocab)


def _topical_vectors(rng, n, vocab, n_topics, nnz, topic_share, topic_terms):
    """Docs/queries drawn from ``n_topics`` topics, each a set of ``topic_terms`` terms (Zipf-weighted),
    mixed with a Zipfian background: enough structure for blocks to cluster."""
    background = 1.0 / np.arange(1, vocab + 1) ** 1.1
    background /= background.sum()
    topic_sets = [rng.choice(vocab, size=topic_terms, replace=False) for _ in range(n_topics)]
    rows = []
    for _ in range(n):
        topic = topic_sets[int(rng.integers(n_topics))]
        m = int(rng.integers(nnz // 2, nnz + nnz // 2 + 1))
        n_topic = int(m * topic_share)
        terms = set(rng.choice(topic, size=min(n_topic, topic.size), replace=False, p=_zipf(topic.size)).tolist())
        while len(terms) < m:
            terms.update(rng.choice(vocab, size=m - len(terms), p=background).tolist())
        row = {}
        for t in terms:
            boost = 1.5 if t in topic else 0.6
            row[int(t)] = float(rng.gamma(2.0, 0.5) * boost + 1e-3)
        rows.append(row)
    return SparseVectors.from_dicts(rows, vocab)


def _zipf(n):
    p = 1.0 / np.arange(1, n + 1)
    return p / p.sum()


def _dense_scores(docs: SparseVectors, queries: SparseVectors) -> np.ndarray:
    """Independent float64 reference: dense matrix product."""
    d = docs.to_scipy().toarray().astype(np.float64)
    q = queries.to_scipy().toarray().astype(np.float64)
    return q @ d.T


def _assert_exact(hits, docs, queries, k, rtol=1e-5):
    """Hits equal the brute-force top-k: scores match the float64 reference, docnos match wherever the
    reference has no near-tie at that rank."""
    ref = _dense_scores(docs, queries)
    for i in range(queries.n_rows):
        row = ref[i]
        order = np.lexsort((np.arange(row.size), -row))
        order = order[row[order] > 0][:k]
        got_docs, got_scores = hits.row(i)
        assert got_docs.size == order.size, f"query {i}: {got_docs.size} hits, expected {order.size}"
        np.testing.assert_allclose(got_scores, row[order], rtol=rtol, atol=1e-6)
        np.testing.assert_allclose(row[got_docs], row[order], rtol=rtol, atol=1e-6)  # same scores => a valid top-k
        assert len(set(got_docs.tolist())) == got_docs.size
        gaps = np.abs(np.diff(np.concatenate([[np.inf], row[order], [0.0]])))
        clear = (gaps[:-1] > 1e-4 * row[order].max()) & (gaps[1:] > 1e-4 * row[order].max())
        assert np.array_equal(got_docs[clear], order[clear]), f"query {i}"


def _accuracy(hits, ref, k):
    return float(np.mean([len(set(hits.row(i)[0]) & set(ref.row(i)[0])) / k for i in range(ref.n_queries)]))


@pytest.fixture(scope="module")
def random_data():
    rng = np.random.default_rng(7)
    docs = _random_vectors(rng, 600, 300, 5, 40)
    queries = _random_vectors(rng, 25, 300, 2, 12)
    return docs, queries


@pytest.mark.parametrize("n_postings", [10_000, 3])
def test_exact_mode_equals_brute_force(random_data, n_postings):
    """Unpruned lists: exact blocked traversal; pruned lists (n_postings 3): the forward-index scan."""
    docs, queries = random_data
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=n_postings, forward_dtype="float32"))
    assert index.info["pruned"] == (n_postings == 3)
    for k in (1, 10, 700):
        hits = index.search(queries, k=k, exact=True)
        _assert_exact(hits, docs, queries, k)
        ref = exact_search(docs, queries, k)
        assert np.array_equal(hits.docnos, ref.docnos)
        np.testing.assert_allclose(hits.scores, ref.scores, rtol=1e-5)


def test_exact_search_reference_matches_dense_product(random_data):
    docs, queries = random_data
    _assert_exact(exact_search(docs, queries, 10), docs, queries, 10)


def test_exact_mode_half_precision_forward_index(random_data):
    docs, queries = random_data
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=10_000))
    hits = index.search(queries, k=10, exact=True)
    ref = exact_search(docs, queries, 10)
    np.testing.assert_allclose(hits.scores, ref.scores, rtol=3e-3)  # float16 weights: ~3 significant digits
    assert _accuracy(hits, ref, 10) >= 0.97


def test_ties_broken_by_docno():
    docs = SparseVectors.from_dicts([{0: 1.0}, {0: 1.0}, {1: 1.0}, {0: 1.0, 1: 1.0}, {0: 1.0}], vocab_size=2)
    queries = SparseVectors.from_dicts([{0: 2.0}], vocab_size=2)
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig(forward_dtype="float32"))
    for exact in (True, False):
        hits = index.search(queries, k=3, exact=exact, heap_factor=0.0)
        assert hits.docnos.tolist() == [[0, 1, 3]] and hits.scores.tolist() == [[2.0, 2.0, 2.0]]


@pytest.fixture(scope="module")
def topical_data():
    rng = np.random.default_rng(11)
    vocab = 2000
    docs = _topical_vectors(rng, 4000, vocab, n_topics=40, nnz=60, topic_share=0.6, topic_terms=150)
    queries = _topical_vectors(rng, 60, vocab, n_topics=40, nnz=16, topic_share=0.7, topic_terms=150)
    return docs, queries


def test_default_settings_meet_recall_floor(topical_data):
    docs, queries = topical_data
    config = BlockedIndexConfig()
    index = BlockedSparseIndex.build(docs, config)
    assert index.config.n_postings == 1000  # resolved: small corpus -> the floor of the default rule
    assert index.info["pruned"]  # lists longer than max_fraction * n_postings are cut
    ref = exact_search(docs, queries, 10)
    hits = index.search(queries, k=10)  # query_cut 10, heap_factor 0.7
    assert _accuracy(hits, ref, 10) >= 0.90
    # more of the query and less skipping cannot lose accuracy here
    assert _accuracy(index.search(queries, k=10, query_cut=30, heap_factor=1.0), ref, 10) >= 0.97


def _docs_sharing_a_term(docs: SparseVectors, queries: SparseVectors) -> np.ndarray:
    """Per query, the documents with a positive weight on one of its positive-weight terms (scipy)."""
    d = docs.to_scipy() > 0
    q = queries.to_scipy() > 0
    return np.asarray(((d @ q.T).astype(np.int64) > 0).sum(axis=0)).ravel()


def test_docs_scored_exact_and_approximate(topical_data):
    """Exact traversal of unpruned lists scores every document that shares a term with the query (what
    brute force implies); the approximate settings score strictly fewer, and fewer with more skipping."""
    docs, queries = topical_data
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=docs.n_rows))
    assert not index.info["pruned"]
    exact_hits, exact_stats = index.search_with_stats(queries, k=10, exact=True)
    assert np.array_equal(exact_hits.docnos, index.search(queries, k=10, exact=True).docnos)
    sharing = _docs_sharing_a_term(docs, queries)
    assert exact_stats.docs_scored.dtype == np.int64 and exact_stats.docs_scored.shape == (queries.n_rows,)
    assert np.array_equal(exact_stats.docs_scored, sharing)
    previous = exact_stats.docs_scored
    for heap_factor in (0.7, 1.0, 1.3):
        hits, stats = index.search_with_stats(queries, k=10, query_cut=10, heap_factor=heap_factor)
        assert np.array_equal(hits.docnos, index.search(queries, k=10, query_cut=10, heap_factor=heap_factor).docnos)
        assert np.all(stats.docs_scored >= 1) and np.all(stats.docs_scored <= sharing)
        assert np.all(stats.docs_scored < sharing), heap_factor  # every query skips blocks
        assert stats.docs_scored.sum() < previous.sum()  # a larger heap_factor skips more
        previous = stats.docs_scored
    # serial and parallel paths count alike
    one = index.search_with_stats(queries, k=10, threads=1)[1]
    two = index.search_with_stats(queries, k=10, threads=2)[1]
    assert np.array_equal(one.docs_scored, two.docs_scored)
    # a pruned index answers exact queries by scanning every document
    pruned = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=20))
    assert pruned.info["pruned"]
    hits, stats = pruned.search_with_stats(queries, k=10, exact=True)
    assert np.array_equal(stats.docs_scored, np.full(queries.n_rows, docs.n_rows))
    assert pruned.search_with_stats(SparseVectors.empty(0, docs.vocab_size))[1].docs_scored.shape == (0,)


def test_best_first_block_order(topical_data):
    docs, queries = topical_data
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig())
    ref = exact_search(docs, queries, 10)
    hits = index.search(queries, k=10, query_cut=30, heap_factor=1.0, block_order="best_first")
    assert _accuracy(hits, ref, 10) >= 0.95
    # with no skipping (heap_factor 0) both orders score the same documents: identical results
    a = index.search(queries, k=10, query_cut=5, heap_factor=0.0, block_order="best_first")
    b = index.search(queries, k=10, query_cut=5, heap_factor=0.0, block_order="seismic")
    assert np.array_equal(a.docnos, b.docnos)
    with pytest.raises(OptionError, match="block_order"):
        index.search(queries, block_order="random")


def test_threads_give_identical_results_and_are_restored(topical_data):
    docs, queries = topical_data
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=200))
    before = numba.get_num_threads()
    one = index.search(queries, k=10, threads=1)
    two = index.search(queries, k=10, threads=2)
    assert numba.get_num_threads() == before
    assert np.array_equal(one.docnos, two.docnos) and np.array_equal(one.scores, two.scores)
    single = [index.search(queries.take([i]), k=10) for i in range(5)]
    assert all(np.array_equal(s.docnos[0], one.docnos[i]) for i, s in enumerate(single))


def test_build_is_deterministic(topical_data):
    """One build thread or two: the same arrays (the term ranges are split by cost, not by thread); another
    seed: other centroids, so other blocks (the seed is used)."""
    docs, _ = topical_data
    with numba_threads(1):
        one = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=200))
    with numba_threads(2) as n:
        assert n == min(2, numba.config.NUMBA_NUM_THREADS)
        two = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=200))
    for name, arr in one.arrays.items():
        assert np.array_equal(arr, two.arrays[name]), name
    other = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=200, seed=1))
    assert not np.array_equal(one.arrays["post_docs"], other.arrays["post_docs"])


def test_forward_vectors(random_data):
    docs, _ = random_data
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig(forward_dtype="float32"))
    rows = index.forward_vectors(np.array([5, 0, 5]))
    assert rows.n_rows == 3
    for i, d in enumerate([5, 0, 5]):
        assert np.array_equal(rows.row(i)[0], docs.row(d)[0]) and np.array_equal(rows.row(i)[1], docs.row(d)[1])
    half = BlockedSparseIndex.build(docs, BlockedIndexConfig()).forward_vectors(np.array([3]))
    np.testing.assert_allclose(half.row(0)[1], docs.row(3)[1], rtol=1e-3)
    with pytest.raises(OptionError):
        index.forward_vectors(np.array([len(docs.indptr)]))


def test_save_load_round_trip(tmp_path, topical_data):
    docs, queries = topical_data
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=300, seed=3))
    (tmp_path / "sparse").mkdir()
    info = index.save(tmp_path / "sparse")
    info = json.loads(json.dumps(info))  # what the manifest stores
    for mmap in (True, False):
        loaded = BlockedSparseIndex.load(tmp_path / "sparse", info, mmap=mmap)
        assert loaded.config == index.config and loaded.num_docs == index.num_docs
        assert loaded.nbytes() == index.nbytes()
        a, b = index.search(queries, k=10), loaded.search(queries, k=10)
        assert np.array_equal(a.docnos, b.docnos) and np.array_equal(a.scores, b.scores)
    assert not loaded.arrays["post_docs"].flags.writeable
    with pytest.raises(OptionError, match="empty directory"):
        index.save(tmp_path / "sparse")


def test_load_refuses_missing_or_corrupt_arrays(tmp_path, random_data):
    docs, _ = random_data
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=50))
    (tmp_path / "s").mkdir()
    info = index.save(tmp_path / "s")
    (tmp_path / "s" / "block_ptr.npy").unlink()
    with pytest.raises(IndexFormatError, match="block_ptr.npy is missing"):
        BlockedSparseIndex.load(tmp_path / "s", info)
    (tmp_path / "t").mkdir()
    index.save(tmp_path / "t")
    path = tmp_path / "t" / "fwd_terms.npy"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IndexFormatError, match="fwd_terms.npy: corrupted array"):
        BlockedSparseIndex.load(tmp_path / "t", info)
    (tmp_path / "u").mkdir()
    index.save(tmp_path / "u")
    bad = np.load(tmp_path / "u" / "post_docs.npy")
    bad[0] = docs.n_rows + 5
    np.save(tmp_path / "u" / "post_docs.npy", bad)
    with pytest.raises(IndexFormatError, match="post_docs has values outside"):
        BlockedSparseIndex.load(tmp_path / "u", info)
    with pytest.raises(IndexFormatError, match="format version 99"):
        BlockedSparseIndex.load(tmp_path / "u", {**info, "format_version": 99})
    shape_lie = json.loads(json.dumps(info))
    shape_lie["arrays"]["fwd_ptr"]["shape"] = [3]
    with pytest.raises(IndexFormatError, match="fwd_ptr.npy: array is"):
        BlockedSparseIndex.load(tmp_path / "u", shape_lie)


def test_config_round_trip_and_validation():
    config = BlockedIndexConfig(n_postings=500, summary_energy=0.5, forward_dtype="float32")
    assert BlockedIndexConfig.from_dict(config.to_dict()) == config
    assert BlockedIndexConfig().resolve(5183, 1_300_000, 30522).n_postings == 1000
    assert BlockedIndexConfig().resolve(1_000_000, 250_000_000, 30522).n_postings == 10_000
    for field, value in [("n_postings", 0), ("centroid_fraction", 0.0), ("summary_energy", 1.5), ("max_fraction", 0.5),
                         ("doc_cut", 0), ("forward_dtype", "int8"), ("min_cluster_size", -1), ("seed", True),
                         ("max_centroids", 0)]:  # fmt: skip
        with pytest.raises(OptionError, match=field):
            BlockedIndexConfig(**{field: value})
    with pytest.raises(OptionError, match="unknown field"):
        BlockedIndexConfig.from_dict({"n_postings": 10, "bogus": 1})


def test_search_argument_and_query_checks(random_data):
    docs, queries = random_data
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=50))
    for kwargs, name in [({"k": 0}, "k"), ({"query_cut": 0}, "query_cut"), ({"heap_factor": -1.0}, "heap_factor"),
                         ({"threads": 0}, "threads")]:  # fmt: skip
        with pytest.raises(OptionError, match=name):
            index.search(queries, **kwargs)
    wide = SparseVectors.from_dicts([{400: 1.0}], vocab_size=500)
    with pytest.raises(DataError, match="term id 400"):
        index.search(wide)
    unsorted = SparseVectors(np.array([0, 2]), np.array([5, 1], np.int32), np.ones(2, np.float32), 300)
    with pytest.raises(DataError, match="queries: row 0: term ids are not strictly increasing"):
        index.search(unsorted)
    with pytest.raises(DataError, match="float16"):
        BlockedSparseIndex.build(SparseVectors.from_dicts([{0: 1e6}], vocab_size=3))
    empty = index.search(SparseVectors.empty(0, 300))
    assert empty.docnos.shape == (0, 10)
