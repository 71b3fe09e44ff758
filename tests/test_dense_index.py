"""Dense index: flat = brute force, approximate kinds meet recall floors, save/load, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from braid.data.errors import IndexFormatError, OptionError

faiss = pytest.importorskip("faiss")

from braid.index.dense import DenseIndex, DenseIndexConfig  # noqa: E402
from braid.index.hits import Hits  # noqa: E402


def clustered(n: int, dim: int, n_clusters: int, seed: int, noise: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, n_clusters, n)] + noise * rng.standard_normal((n, dim)).astype(np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    # FAISS's OpenMP threads spin; on a shared 2-core machine one thread is ten times faster.
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(old)


@pytest.fixture(scope="module")
def data():
    x = clustered(3000, 32, 30, seed=1)
    q = clustered(40, 32, 30, seed=2)
    return x, q


def brute_force(x: np.ndarray, q: np.ndarray, k: int, metric: str = "ip") -> tuple[np.ndarray, np.ndarray]:
    if metric == "ip":
        s = q.astype(np.float64) @ x.T.astype(np.float64)
    else:
        s = -((q[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(x.shape[0]), s.shape), -s), axis=-1)[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, want)]))


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_equals_brute_force(data, metric):
    x, q = data
    idx = DenseIndex.build(x, DenseIndexConfig(kind="flat", metric=metric))
    hits = idx.search(q, 10)
    docnos, scores = brute_force(x, q, 10, metric)
    np.testing.assert_array_equal(hits.docnos, docnos)
    np.testing.assert_allclose(hits.scores, scores, atol=1e-5)
    assert hits.docnos.dtype == np.int64 and hits.scores.dtype == np.float32


def test_ties_are_broken_by_docno_and_padding_fills_short_results():
    x = np.array([[0, 1], [1, 0], [0.5, 0.5], [1, 0], [1, 0]], dtype=np.float32)
    idx = DenseIndex.build(x, DenseIndexConfig())
    hits = idx.search(np.array([[1, 0]], dtype=np.float32), 7)
    assert hits.docnos[0].tolist() == [1, 3, 4, 2, 0, -1, -1]
    assert hits.scores[0, :5].tolist() == [1.0, 1.0, 1.0, 0.5, 0.0]
    assert np.isneginf(hits.scores[0, 5:]).all()
    # exact ties straddling k: the smaller docnos win
    hits = idx.search(np.array([[1, 0]], dtype=np.float32), 2)
    assert hits.docnos[0].tolist() == [1, 3]


@pytest.mark.parametrize(
    "config, search, floor",
    [
        (DenseIndexConfig(kind="hnsw", hnsw_m=16, ef_construction=80), {"ef_search": 64}, 0.95),
        (DenseIndexConfig(kind="ivf", nlist=32), {"nprobe": 8}, 0.9),
        (DenseIndexConfig(kind="ivfpq", nlist=16, m=16, nbits=6), {"nprobe": 8}, 0.6),
        (DenseIndexConfig(kind="pq", m=16, nbits=6), {}, 0.55),
        (DenseIndexConfig(kind="opq", m=16, nbits=4, train_size=600), {}, 0.3),
        (DenseIndexConfig(kind="flat", store_dtype="float16"), {}, 0.99),
        (DenseIndexConfig(kind="hnsw", store_dtype="float16", hnsw_m=16), {"ef_search": 64}, 0.95),
    ],
    ids=["hnsw", "ivf", "ivfpq", "pq", "opq", "flat-fp16", "hnsw-fp16"],
)
def test_approximate_kinds_meet_recall_floors(data, config, search, floor):
    x, q = data
    want, _ = brute_force(x, q, 10)
    idx = DenseIndex.build(x, config)
    hits = idx.search(q, 10, **search)
    assert recall(hits.docnos, want) >= floor
    # every row is ordered by (-score, docno)
    for d, s in zip(hits.docnos, hits.scores):
        assert all((s[i] > s[i + 1]) or (s[i] == s[i + 1] and d[i] < d[i + 1]) for i in range(len(d) - 1))


def test_ivf_probing_every_list_is_exact(data):
    x, q = data
    idx = DenseIndex.build(x, DenseIndexConfig(kind="ivf", nlist=16, seed=3))
    want, _ = brute_force(x, q, 10)
    np.testing.assert_array_equal(idx.search(q, 10, nprobe=16).docnos, want)


def test_training_is_seeded(data):
    x, q = data
    a = DenseIndex.build(x, DenseIndexConfig(kind="ivfpq", nlist=16, m=8, nbits=6, seed=7, train_size=1500))
    b = DenseIndex.build(x, DenseIndexConfig(kind="ivfpq", nlist=16, m=8, nbits=6, seed=7, train_size=1500))
    np.testing.assert_array_equal(a.search(q, 10, nprobe=4).docnos, b.search(q, 10, nprobe=4).docnos)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "pq"])
def test_save_load_round_trip(data, tmp_path, kind):
    x, q = data
    cfg = {"flat": DenseIndexConfig(), "hnsw": DenseIndexConfig(kind="hnsw", hnsw_m=8),
           "ivf": DenseIndexConfig(kind="ivf", nlist=16), "pq": DenseIndexConfig(kind="pq", m=4, nbits=6)}[kind]
    idx = DenseIndex.build(x, cfg)
    info = idx.save(tmp_path / "dense")
    assert info["num_docs"] == 3000 and info["dim"] == 32 and info["config"]["kind"] == kind
    assert (tmp_path / "dense" / info["file"]).is_file()
    for mmap in (True, False):
        back = DenseIndex.load(tmp_path / "dense", info, mmap=mmap)
        assert back.config == idx.config
        a, b = idx.search(q, 10, nprobe=4), back.search(q, 10, nprobe=4)
        np.testing.assert_array_equal(a.docnos, b.docnos)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_load_refuses_mismatches(data, tmp_path):
    x, _ = data
    info = DenseIndex.build(x[:100], DenseIndexConfig()).save(tmp_path / "d")
    with pytest.raises(IndexFormatError, match="holds 100 vectors but the index has 101"):
        DenseIndex.load(tmp_path / "d", {**info, "num_docs": 101})
    with pytest.raises(IndexFormatError, match="32-d vectors but the manifest says 16"):
        DenseIndex.load(tmp_path / "d", {**info, "dim": 16})
    with pytest.raises(IndexFormatError, match="missing"):
        DenseIndex.load(tmp_path / "nowhere", info)
    with pytest.raises(IndexFormatError, match="incomplete or invalid"):
        DenseIndex.load(tmp_path / "d", {"num_docs": 100})
    (tmp_path / "d" / info["file"]).write_bytes(b"not a faiss index at all")
    with pytest.raises(IndexFormatError, match="not a readable FAISS index"):
        DenseIndex.load(tmp_path / "d", info, mmap=False)


def test_config_round_trip_and_validation(data):
    x, q = data
    cfg = DenseIndexConfig(kind="ivfpq", nlist=8, m=4, nbits=8, seed=3)
    assert DenseIndexConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(OptionError, match="kind"):
        DenseIndexConfig(kind="annoy")
    with pytest.raises(OptionError, match="metric"):
        DenseIndexConfig(metric="cosine")
    with pytest.raises(OptionError, match="store_dtype"):
        DenseIndexConfig(kind="pq", store_dtype="float16")
    with pytest.raises(OptionError, match="known keys"):
        DenseIndexConfig.from_dict({"kind": "flat", "nprobe": 3})
    with pytest.raises(OptionError, match="must divide the dimension 32"):
        DenseIndex.build(x, DenseIndexConfig(kind="pq", m=5))
    with pytest.raises(OptionError, match="nlist"):
        DenseIndex.build(x[:10], DenseIndexConfig(kind="ivf", nlist=11))
    idx = DenseIndex.build(x[:50], DenseIndexConfig())
    with pytest.raises(OptionError, match="query_vectors"):
        idx.search(q[:, :16], 5)
    with pytest.raises(OptionError, match="k"):
        idx.search(q, 0)
    with pytest.raises(OptionError, match="vectors"):
        DenseIndex.build(np.zeros((0, 8), np.float32))


def test_defaults_are_resolved_from_the_data(data):
    x, _ = data
    cfg = DenseIndexConfig(kind="ivfpq").resolved(3000, 32)
    assert cfg.nlist == min(int(4 * 3000**0.5), 3000 // 39) and cfg.m == 4 and cfg.train_size == 3000
    assert DenseIndexConfig(kind="pq").resolved(10000, 384).m == 48


def test_reconstruct_and_bytes_per_vector(data):
    x, _ = data
    rows = np.array([0, 7, 2999])
    for cfg in (DenseIndexConfig(), DenseIndexConfig(kind="hnsw", hnsw_m=8), DenseIndexConfig(kind="ivf", nlist=8)):
        idx = DenseIndex.build(x, cfg)
        np.testing.assert_array_equal(idx.reconstruct(rows), x[rows])
    pq = DenseIndex.build(x, DenseIndexConfig(kind="pq", m=8, nbits=6))
    approx = pq.reconstruct(rows)
    assert approx.shape == (3, 32) and np.linalg.norm(approx - x[rows], axis=1).max() < 0.8
    assert DenseIndex.build(x[:300], DenseIndexConfig()).bytes_per_vector() == 128
    assert DenseIndex.build(x[:300], DenseIndexConfig(store_dtype="float16")).bytes_per_vector() == 64
    assert pq.bytes_per_vector() == 6  # 8 codes of 6 bits
    with pytest.raises(OptionError, match="docnos"):
        idx.reconstruct(np.array([3000]))


def test_threads_and_memory_mapped_input(data, tmp_path):
    x, q = data
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    idx = DenseIndex.build(mm, DenseIndexConfig(), threads=1)
    np.testing.assert_array_equal(idx.search(q, 5, threads=1).docnos, brute_force(x, q, 5)[0])


@pytest.mark.parametrize("kind", ["flat", "pq"])
@pytest.mark.parametrize("n_excluded", [0, 3, 200, 2990])  # none, a few (scanned past), many (FAISS selector / deepening), nearly all
def test_allowed_is_the_top_k_of_the_allowed_documents(data, kind, n_excluded):
    """``allowed`` (deletions, filters) returns the top-k of the unrestricted ranking restricted to
    the allowed documents: for the few-excluded path (one deeper scan, then dropped), the selector
    path and the deepening path alike."""
    x, q = data
    idx = DenseIndex.build(x, DenseIndexConfig(kind=kind, m=8 if kind == "pq" else None))
    allowed = np.ones(x.shape[0], bool)
    allowed[np.random.default_rng(n_excluded).choice(x.shape[0], n_excluded, replace=False)] = False
    full = idx.search(q, x.shape[0])
    got = idx.search(q, 10, allowed=allowed)
    for i in range(q.shape[0]):
        keep = allowed[full.docnos[i]]
        want_d, want_s = full.docnos[i][keep][:10], full.scores[i][keep][:10]
        n = want_d.shape[0]
        np.testing.assert_array_equal(got.docnos[i][:n], want_d)
        np.testing.assert_allclose(got.scores[i][:n], want_s, rtol=1e-6)
        assert (got.docnos[i][n:] == -1).all()


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_one_query_takes_the_batch_order_ties_included(metric):
    """A batch of one is ordered by a Python sort, a batch by lexsort: the same (-score, docno) order,
    scores, ties straddling k and padding alike, against brute force."""
    rng = np.random.default_rng(4)
    x = rng.integers(-1, 2, size=(100, 4)).astype(np.float32)  # few distinct scores: many exact ties
    q = rng.integers(-1, 2, size=(6, 4)).astype(np.float32)
    idx = DenseIndex.build(x, DenseIndexConfig(metric=metric))
    batch = idx.search(q, 12)
    for i in range(q.shape[0]):
        one = idx.search(q[i : i + 1], 12)
        np.testing.assert_array_equal(one.docnos[0], batch.docnos[i])
        np.testing.assert_array_equal(one.scores[0], batch.scores[i])
        s = q[i] @ x.T if metric == "ip" else -((x - q[i]) ** 2).sum(axis=1)
        want = sorted(range(100), key=lambda d: (-s[d], d))[:12]
        np.testing.assert_allclose(one.scores[0], s[want], rtol=1e-6)  # the true top-12 scores
        pairs = list(zip((-one.scores[0]).tolist(), one.docnos[0].tolist()))
        assert pairs == sorted(pairs)  # in (-score, docno) order (which tied documents FAISS fetched aside)
    deep = idx.search(q[:1], 70)  # 78 fetched, beyond ONE_QUERY_SORT_MAX: the lexsort path, the same order
    np.testing.assert_array_equal(deep.docnos[0, :12], batch.docnos[0])
    short = idx.search(q[:1], 110)  # k beyond the collection: padded with -1 / -inf
    assert (short.docnos[0, 100:] == -1).all() and np.isneginf(short.scores[0, 100:]).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_prepared_mask_gives_the_plain_masks_results(data, kind):
    x, q = data
    idx = DenseIndex.build(x, DenseIndexConfig(kind=kind, hnsw_m=16))
    allowed = np.random.default_rng(1).random(x.shape[0]) < 0.7
    prepared = idx.prepare_allowed(allowed)
    assert prepared.n_excluded == int((~allowed).sum())
    for _ in range(2):  # the selector is made once and reused
        got = idx.search(q, 10, ef_search=32, allowed=prepared)
        want = idx.search(q, 10, ef_search=32, allowed=allowed)
        np.testing.assert_array_equal(got.docnos, want.docnos)
        np.testing.assert_array_equal(got.scores, want.scores)
    with pytest.raises(OptionError, match="allowed"):
        idx.prepare_allowed(allowed[:-1])


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_hnsw_with_a_narrow_filter_scores_the_allowed_documents_exactly(data, metric):
    """A filter letting few documents through (<= HNSW_EXACT_MAX_DOCS) is answered by scoring those
    exactly, not by the graph's beam (which finds few of them): the brute-force top-k among them."""
    from braid.index import dense as D

    x, q = data
    idx = DenseIndex.build(x, DenseIndexConfig(kind="hnsw", hnsw_m=8, metric=metric))
    allowed = np.zeros(x.shape[0], bool)
    allowed[np.random.default_rng(2).choice(x.shape[0], 30, replace=False)] = True
    assert 30 <= D.HNSW_EXACT_MAX_DOCS and 30 <= D.HNSW_EXACT_MAX_SHARE * x.shape[0]
    got = idx.search(q, 10, ef_search=10, allowed=allowed)
    rows = np.flatnonzero(allowed)
    s = q @ x[rows].T if metric == "ip" else -((q[:, None, :] - x[rows][None]) ** 2).sum(axis=2)
    for i in range(q.shape[0]):
        want = rows[np.lexsort((rows, -s[i]))[:10]]
        np.testing.assert_array_equal(got.docnos[i], want)
        np.testing.assert_allclose(got.scores[i], np.sort(s[i])[::-1][:10], rtol=1e-4, atol=1e-4)
    few = np.zeros(x.shape[0], bool)
    few[[3, 7]] = True  # fewer than k: padded
    h = idx.search(q[:1], 5, allowed=few)
    assert sorted(h.docnos[0, :2].tolist()) == [3, 7] and (h.docnos[0, 2:] == -1).all()


def test_hnsw_deletions_stay_on_the_graph(data, monkeypatch):
    """A mask letting most documents through (a segment's deletions) is searched in the graph, not scored
    row by row: the exact route is for filters under HNSW_EXACT_MAX_SHARE of the graph."""
    x, q = data
    idx = DenseIndex.build(x, DenseIndexConfig(kind="hnsw", hnsw_m=8))
    calls = []
    monkeypatch.setattr(DenseIndex, "_score_rows", lambda self, *a: calls.append(a) or Hits.empty(a[0].shape[0], a[1]))
    allowed = np.ones(x.shape[0], bool)
    allowed[::10] = False
    idx.search(q, 10, allowed=allowed)
    assert calls == []
    narrow = np.zeros(x.shape[0], bool)
    narrow[:50] = True
    idx.search(q, 10, allowed=narrow)
    assert len(calls) == 1
