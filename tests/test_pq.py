"""PQ internals (braid.index.pq) against brute-force NumPy references on seeded synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from braid.data.errors import OptionError  # noqa: E402
from braid.index import pq as pqmod  # noqa: E402
from braid.index.dense import DenseIndex, DenseIndexConfig  # noqa: E402

DIM = 16


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    # FAISS's OpenMP k-means on tiny data is 20x slower with 2 threads on a busy 2-core machine
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # clustered data, so that quantization error depends on the codebook size
    centers = rng.normal(size=(8, DIM)).astype(np.float32)
    x = centers[rng.integers(0, 8, size=n)] + 0.3 * rng.normal(size=(n, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _build(kind: str, m: int, nbits: int = 4, n: int = 400, **kw) -> tuple[DenseIndex, np.ndarray]:
    x = _vectors(n)
    return DenseIndex.build(x, DenseIndexConfig(kind=kind, m=m, nbits=nbits, **kw)), x


def _brute_force_codes(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (L2) of every sub-vector, by exhaustive search: the definition of a PQ code."""
    m, ksub, dsub = centroids.shape
    sub = x.reshape(len(x), m, dsub)
    d2 = ((sub[:, :, None, :] - centroids[None]) ** 2).sum(-1)  # (n, m, ksub)
    return d2.argmin(-1)


@pytest.mark.parametrize("kind,m,nbits", [("pq", 4, 4), ("pq", 8, 8), ("opq", 4, 4), ("ivfpq", 4, 4)])
def test_codebook_shapes_and_layout(kind, m, nbits):
    extra = {"nlist": 4} if kind == "ivfpq" else {}
    index, x = _build(kind, m, nbits, n=600 if nbits == 8 else 400, **extra)
    layout = pqmod.pq_layout(index.index)
    assert (layout.kind, layout.m, layout.nbits, layout.ksub, layout.dsub) == (kind, m, nbits, 2**nbits, DIM // m)
    assert layout.code_size == (m * nbits + 7) // 8
    assert layout.compression == pytest.approx(4 * DIM / layout.code_size)
    assert pqmod.get_codebooks(index.index).shape == (m, 2**nbits, DIM // m)
    codes = pqmod.get_codes(index.index)
    assert codes.shape == (len(x), m) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 2**nbits
    rotation = pqmod.get_rotation(index.index)
    if kind == "opq":
        assert rotation.shape == (DIM, DIM)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(DIM), atol=1e-4)  # orthonormal
    else:
        assert rotation is None


@pytest.mark.parametrize("kind", ["pq", "opq"])
def test_codes_are_nearest_centroids_and_decode_like_faiss(kind):
    index, x = _build(kind, 4, 4)
    centroids = pqmod.get_codebooks(index.index)
    codes = pqmod.get_codes(index.index)
    rotation = pqmod.get_rotation(index.index)
    xr = x @ rotation.T if rotation is not None else x
    expected = _brute_force_codes(xr, centroids)
    assert (codes == expected).mean() > 0.995  # ties in float32 distances may flip a rare code
    decoded = pqmod.reconstruct(codes, centroids)
    if rotation is not None:
        decoded = decoded @ rotation
    np.testing.assert_allclose(decoded, index.reconstruct(np.arange(len(x))), atol=1e-5)


def test_ivfpq_codes_are_residuals_in_docno_order():
    index, x = _build("ivfpq", 4, 4, nlist=4)
    lists = pqmod.get_list_assignments(index.index)
    coarse = pqmod.get_coarse_centroids(index.index)
    decoded = coarse[lists] + pqmod.reconstruct(pqmod.get_codes(index.index), pqmod.get_codebooks(index.index))
    np.testing.assert_allclose(decoded, index.reconstruct(np.arange(len(x))), atol=1e-5)


def test_reconstruction_error_falls_with_code_size():
    x = _vectors(800, seed=3)
    errors = []
    for m in (2, 4, 8, 16):
        index = DenseIndex.build(x, DenseIndexConfig(kind="pq", m=m, nbits=6))
        decoded = pqmod.reconstruct(pqmod.get_codes(index.index), pqmod.get_codebooks(index.index))
        errors.append(float(((decoded - x) ** 2).sum(1).mean()))
    baseline = float(((x - x.mean(0)) ** 2).sum(1).mean())  # the best a single centroid can do
    assert errors[0] < baseline
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * baseline


def test_unpack_codes_hand_worked():
    # nbits=4, m=3: indices (1, 2, 15) packed LSB first -> bytes 0x21, 0x0f
    packed = np.array([[0x21, 0x0F]], dtype=np.uint8)
    assert pqmod.unpack_codes(packed, 3, 4).tolist() == [[1, 2, 15]]
    # nbits=5, m=2: (3, 17) -> bits 11000 10001 (LSB first) -> byte0 = 0b00100011, byte1 = 0b10
    packed = np.array([[0b00100011, 0b10]], dtype=np.uint8)
    assert pqmod.unpack_codes(packed, 2, 5).tolist() == [[3, 17]]


@pytest.mark.parametrize("kind", ["pq", "opq"])
def test_adc_scores_match_faiss_search_and_decoded_dot_products(kind):
    index, x = _build(kind, 4, 4)
    rng = np.random.default_rng(7)
    q = rng.normal(size=(5, DIM)).astype(np.float32)
    codes, centroids = pqmod.get_codes(index.index), pqmod.get_codebooks(index.index)
    rotation = pqmod.get_rotation(index.index)
    scores = pqmod.adc_scores(q, codes, centroids, rotation, chunk=97)
    decoded = index.reconstruct(np.arange(len(x)))
    np.testing.assert_allclose(scores, q @ decoded.T, atol=1e-4)  # ADC = inner product with the decoded vector
    hits = index.search(q, k=10)
    np.testing.assert_allclose(hits.scores, np.take_along_axis(scores, hits.docnos, 1), atol=1e-4)
    np.testing.assert_allclose(hits.scores, -np.sort(-scores, axis=1)[:, :10], atol=1e-4)


@pytest.mark.parametrize("kind", ["pq", "opq", "ivfpq"])
def test_set_codebooks_changes_scores_not_codes(kind):
    extra = {"nlist": 4} if kind == "ivfpq" else {}
    index, x = _build(kind, 4, 4, **extra)
    codes_before = pqmod.get_codes(index.index)
    rng = np.random.default_rng(1)
    new = pqmod.get_codebooks(index.index) + 0.05 * rng.normal(size=(4, 16, DIM // 4)).astype(np.float32)
    pqmod.set_codebooks(index.index, new)
    np.testing.assert_array_equal(pqmod.get_codebooks(index.index), new)
    np.testing.assert_array_equal(pqmod.get_codes(index.index), codes_before)
    q = rng.normal(size=(3, DIM)).astype(np.float32)
    expected = pqmod.adc_scores(q, codes_before, new, pqmod.get_rotation(index.index))
    if kind == "ivfpq":
        coarse = pqmod.get_coarse_centroids(index.index)
        expected = expected + (q @ coarse.T)[:, pqmod.get_list_assignments(index.index)]
    hits = index.search(q, k=8, nprobe=4)
    np.testing.assert_allclose(hits.scores, -np.sort(-expected, axis=1)[:, :8], atol=1e-4)


def test_set_codebooks_validates_shape():
    index, _ = _build("pq", 4, 4)
    with pytest.raises(OptionError, match="centroids"):
        pqmod.set_codebooks(index.index, np.zeros((4, 16, 3), dtype=np.float32))
    with pytest.raises(OptionError, match="centroids"):
        pqmod.set_codebooks(index.index, np.full((4, 16, 4), np.nan, dtype=np.float32))


def test_non_pq_index_is_refused():
    flat = DenseIndex.build(_vectors(50), DenseIndexConfig(kind="flat"))
    with pytest.raises(OptionError, match="IndexPQ"):
        pqmod.get_codebooks(flat.index)


def test_sizes_and_gpu_limits():
    assert [pqmod.m_for_ratio(384, r) for r in (16, 32, 48)] == [96, 48, 32]
    assert pqmod.code_bytes(48) == 48 and pqmod.code_bytes(3, 4) == 2
    with pytest.raises(OptionError, match="ratio"):
        pqmod.m_for_ratio(384, 7)
    pqmod.check_gpu_pq(96)
    pqmod.check_gpu_pq(48)
    with pytest.raises(OptionError, match="at most 96 bytes"):
        pqmod.check_gpu_pq(192)
    with pytest.raises(OptionError, match="8 bits"):
        pqmod.check_gpu_pq(48, nbits=4)
    with pytest.raises(OptionError, match="code sizes"):
        pqmod.check_gpu_pq(36)
    index, _ = _build("pq", 8, 8, n=600)
    assert index.bytes_per_vector() == pqmod.pq_layout(index.index).code_size == 8
