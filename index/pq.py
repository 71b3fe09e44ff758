"""Product-quantization internals of the dense index: codebooks, codes, OPQ rotation, ADC scoring, sizes.

:class:`braid.index.dense.DenseIndex` builds and searches PQ (``pq``), OPQ+PQ (``opq``) and IVF-PQ
(``ivfpq``) indexes through FAISS; this module opens them up, for JPQ training
(:mod:`braid.retrieval.train.jpq`) and for tests against independent references:

* :func:`pq_layout` / :func:`get_codebooks` / :func:`set_codebooks`: the PQ centroids, float32
  ``(m, ksub, dsub)`` (``ksub = 2**nbits``, ``dsub = dim / m``), read from and written back into
  the FAISS index, so that plain FAISS search uses trained centroids;
* :func:`get_codes`: the stored codes of every document, int64 ``(num_docs, m)`` in docno order
  (unpacked from FAISS's bit-packed layout, and gathered from the inverted lists for IVF-PQ);
* :func:`get_rotation`: the OPQ matrix ``R`` float32 ``(dim, dim)``; PQ runs on ``x @ R.T``;
* :func:`reconstruct` and :func:`adc_scores`: decoding and asymmetric-distance (ADC) inner
  products in NumPy, the brute-force reference FAISS's search must agree with;
* :func:`code_bytes`, :func:`m_for_ratio`, :func:`check_gpu_pq`: sizes and FAISS-GPU's limits.

Everything here takes FAISS index objects (``DenseIndex.index``) and arrays; faiss is imported
inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from braid.data.errors import BraidError, OptionError

# FAISS-GPU product quantization: at most 96 bytes per code, 8 bits per sub-quantizer, and only
# these code sizes (faiss/gpu/impl/IVFPQ.cu, GpuIndexIVFPQ::verifyPQSettings_).
GPU_MAX_CODE_BYTES = 96
GPU_NBITS = 8
GPU_PQ_CODE_BYTES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)


@dataclass(frozen=True)
class PQLayout:
    """Shape of a product quantizer and where it sits in a FAISS index.

    ``kind``: ``"pq"`` (IndexPQ), ``"opq"`` (IndexPreTransform(OPQMatrix, IndexPQ)) or
    ``"ivfpq"`` (IndexIVFPQ, codes of residuals to the coarse centroid when ``by_residual``).
    ``dim = m * dsub``; ``ksub = 2**nbits``; ``code_size``: bytes per stored code.
    """

    kind: str
    dim: int
    m: int
    nbits: int
    ksub: int
    dsub: int
    code_size: int
    by_residual: bool
    metric: str

    @property
    def compression(self) -> float:
        """float32 bytes of a vector divided by the bytes of its code."""
        return 4.0 * self.dim / self.code_size


def _require_faiss() -> Any:
    from braid.index.dense import _require_faiss as require

    try:
        return require()
    except BraidError:  # pragma: no cover - depends on the installation
        raise BraidError("product quantization needs faiss; install it with: pip install 'braid[dense]'") from None


def _parts(index: Any) -> tuple[str, Any, Any, Any]:
    """(kind, the index holding the codes, its ProductQuantizer, the OPQ transform or None)."""
    faiss = _require_faiss()
    index = faiss.downcast_index(index)
    transform = None
    if isinstance(index, faiss.IndexPreTransform):
        if index.chain.size() != 1:
            raise OptionError("index", f"IndexPreTransform with {index.chain.size()} transforms", "one OPQ transform before PQ")
        transform = faiss.downcast_VectorTransform(index.chain.at(0))
        # an OPQMatrix reads back from a file as its parent LinearTransform
        if not isinstance(transform, faiss.LinearTransform) or transform.d_in != transform.d_out:
            raise OptionError("index", type(transform).__name__, "an OPQ rotation (OPQMatrix) before PQ")
        index = faiss.downcast_index(index.index)
    if isinstance(index, faiss.IndexIVFPQ):
        if transform is not None:
            raise OptionError("index", "OPQ + IVF-PQ", "pq, opq (OPQ + PQ) or ivfpq")
        return "ivfpq", index, index.pq, None
    if isinstance(index, faiss.IndexPQ):
        return ("opq" if transform is not None else "pq"), index, index.pq, transform
    raise OptionError("index", type(index).__name__, "a FAISS IndexPQ, OPQ + IndexPQ or IndexIVFPQ (dense kinds pq, opq, ivfpq)")


def pq_layout(index: Any) -> PQLayout:
    """The :class:`PQLayout` of a FAISS PQ / OPQ+PQ / IVF-PQ index (OptionError for any other index)."""
    faiss = _require_faiss()
    kind, inner, pq, _ = _parts(index)
    metric = "ip" if inner.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
    by_residual = bool(inner.by_residual) if kind == "ivfpq" else False
    return PQLayout(kind, int(pq.d), int(pq.M), int(pq.nbits), int(pq.ksub), int(pq.dsub), int(pq.code_size), by_residual, metric)


def get_codebooks(index: Any) -> np.ndarray:
    """The PQ centroids: float32 ``(m, ksub, dsub)``, a copy (sub-space ``j`` covers dims ``j*dsub:(j+1)*dsub``)."""
    faiss = _require_faiss()
    _, _, pq, _ = _parts(index)
    return faiss.vector_to_array(pq.centroids).astype(np.float32).reshape(pq.M, pq.ksub, pq.dsub)


def set_codebooks(index: Any, centroids: np.ndarray) -> None:
    """Write ``centroids`` float ``(m, ksub, dsub)`` into the index in place; the stored codes are untouched.

    Searching afterwards scores the same codes with the new centroids (IVF-PQ: its precomputed
    tables are rebuilt).
    """
    faiss = _require_faiss()
    kind, inner, pq, _ = _parts(index)
    c = np.asarray(centroids)
    if c.shape != (pq.M, pq.ksub, pq.dsub):
        raise OptionError("centroids", f"shape {c.shape}", f"({pq.M}, {pq.ksub}, {pq.dsub}) to match the index")
    if not np.issubdtype(c.dtype, np.floating) or not np.isfinite(c).all():
        raise OptionError("centroids", f"dtype {c.dtype}", "finite floats")
    faiss.copy_array_to_vector(np.ascontiguousarray(c, dtype=np.float32).ravel(), pq.centroids)
    if hasattr(pq, "transposed_centroids") and pq.transposed_centroids.size() > 0:
        pq.sync_transposed_centroids()  # FAISS encodes with this cached copy when it is filled
    if kind == "ivfpq" and inner.use_precomputed_table:
        inner.precompute_table()


def get_rotation(index: Any) -> np.ndarray | None:
    """The OPQ rotation ``R`` float32 ``(dim, dim)`` (PQ encodes ``x @ R.T``), or None without OPQ."""
    faiss = _require_faiss()
    _, _, _, transform = _parts(index)
    if transform is None:
        return None
    if transform.have_bias:  # OPQMatrix never has one; refuse rather than silently ignore it
        raise OptionError("index", "OPQ transform with a bias", "a linear OPQ rotation")
    return faiss.vector_to_array(transform.A).astype(np.float32).reshape(transform.d_out, transform.d_in)


def unpack_codes(packed: np.ndarray, m: int, nbits: int) -> np.ndarray:
    """FAISS's packed PQ codes uint8 ``(n, code_size)`` -> int64 ``(n, m)`` sub-quantizer indices.

    FAISS writes each index in ``nbits`` bits, least significant bit first, sub-quantizer after
    sub-quantizer (``faiss/impl/code_distance``'s ``PQDecoderGeneric``).
    """
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.ndim != 2:
        raise OptionError("packed", f"shape {packed.shape}", "a 2-d uint8 array (n, code_size)")
    if nbits == 8:
        return packed[:, :m].astype(np.int64)
    bits = np.unpackbits(packed, axis=1, bitorder="little")[:, : m * nbits].reshape(packed.shape[0], m, nbits)
    weights = (1 << np.arange(nbits, dtype=np.int64))
    return (bits.astype(np.int64) * weights).sum(axis=2)


def get_codes(index: Any) -> np.ndarray:
    """Stored codes of every document: int64 ``(num_docs, m)``, row = docno, values in ``0..ksub-1``.

    IVF-PQ codes are gathered from the inverted lists through their ids (which must be the docnos
    0..ntotal-1, as :class:`DenseIndex` adds them); for IVF-PQ with ``by_residual`` they encode
    the residual to the document's coarse centroid (see :func:`get_list_assignments`).
    """
    faiss = _require_faiss()
    kind, inner, pq, _ = _parts(index)
    n, cs = int(inner.ntotal), int(pq.code_size)
    if kind in ("pq", "opq"):
        packed = faiss.vector_to_array(inner.codes).reshape(n, cs)
    else:
        packed = np.zeros((n, cs), dtype=np.uint8)
        seen = np.zeros(n, dtype=bool)
        for list_no, ids, codes in _iter_lists(inner):
            if len(ids) and (ids.min() < 0 or ids.max() >= n):
                raise OptionError("index", "IVF ids outside 0..ntotal-1", "an index whose ids are the docnos")
            packed[ids] = codes.reshape(len(ids), cs)
            seen[ids] = True
        if not seen.all():
            raise OptionError("index", "IVF ids with gaps", "an index whose ids are the docnos 0..ntotal-1")
    return unpack_codes(packed, int(pq.M), int(pq.nbits))


def get_list_assignments(index: Any) -> np.ndarray:
    """IVF-PQ only: the inverted list (coarse centroid) of every document, int64 ``(num_docs,)``."""
    kind, inner, _, _ = _parts(index)
    if kind != "ivfpq":
        raise OptionError("index", kind, "an IVF-PQ index (only IVF indexes have lists)")
    out = np.full(int(inner.ntotal), -1, dtype=np.int64)
    for list_no, ids, _ in _iter_lists(inner):
        out[ids] = list_no
    return out


def get_coarse_centroids(index: Any) -> np.ndarray:
    """IVF-PQ only: the coarse centroids float32 ``(nlist, dim)``."""
    faiss = _require_faiss()
    kind, inner, _, _ = _parts(index)
    if kind != "ivfpq":
        raise OptionError("index", kind, "an IVF-PQ index")
    return np.asarray(inner.quantizer.reconstruct_n(0, inner.nlist), dtype=np.float32)


def _iter_lists(ivf: Any):
    faiss = _require_faiss()
    invlists = ivf.invlists
    cs = int(invlists.code_size)
    for list_no in range(int(ivf.nlist)):
        size = int(invlists.list_size(list_no))
        if size == 0:
            continue
        ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy().astype(np.int64)
        codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * cs).copy()
        yield list_no, ids, codes


def reconstruct(codes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Decode: int ``(n, m)`` codes and float32 ``(m, ksub, dsub)`` centroids -> float32 ``(n, m*dsub)``.

    Row ``i`` is the concatenation of ``centroids[j, codes[i, j]]`` over ``j``; in the rotated space
    for OPQ (multiply by ``R`` to go back: ``x ~ reconstruct(...) @ R``), and a residual for IVF-PQ.
    """
    codes = np.asarray(codes)
    centroids = np.asarray(centroids, dtype=np.float32)
    if codes.ndim != 2 or centroids.ndim != 3 or codes.shape[1] != centroids.shape[0]:
        raise OptionError("codes/centroids", f"{codes.shape} / {centroids.shape}", "codes (n, m) and centroids (m, ksub, dsub)")
    m, ksub, dsub = centroids.shape
    if codes.size and (codes.min() < 0 or codes.max() >= ksub):
        raise OptionError("codes", "out of range", f"values in 0..{ksub - 1}")
    parts = centroids[np.arange(m)[None, :], codes]  # (n, m, dsub)
    return parts.reshape(codes.shape[0], m * dsub)


def adc_scores(
    queries: np.ndarray, codes: np.ndarray, centroids: np.ndarray, rotation: np.ndarray | None = None, chunk: int = 65536
) -> np.ndarray:
    """Asymmetric inner products: float32 ``(n_queries, num_docs)``, query ``q`` against decoded documents.

    ``queries``: float (n_queries, dim) in the original space (rotated by ``rotation`` first, as
    FAISS's OPQ does). Uses per-query lookup tables ``LUT[q, j, c] = <q_j, centroids[j, c]>``
    summed over sub-spaces (Jegou et al., PAMI 2011), documents in chunks of ``chunk``.
    """
    q = np.asarray(queries, dtype=np.float32)
    centroids = np.asarray(centroids, dtype=np.float32)
    m, ksub, dsub = centroids.shape
    if q.ndim != 2 or q.shape[1] != m * dsub:
        raise OptionError("queries", f"shape {q.shape}", f"(n, {m * dsub})")
    if rotation is not None:
        q = q @ np.asarray(rotation, dtype=np.float32).T
    lut = np.einsum("qjd,jkd->qjk", q.reshape(len(q), m, dsub), centroids)  # (nq, m, ksub)
    codes = np.asarray(codes)
    out = np.zeros((len(q), codes.shape[0]), dtype=np.float32)
    for start in range(0, codes.shape[0], chunk):
        block = codes[start : start + chunk]
        acc = np.zeros((len(q), len(block)), dtype=np.float32)
        for j in range(m):
            acc += lut[:, j, block[:, j]]
        out[:, start : start + len(block)] = acc
    return out


def code_bytes(m: int, nbits: int = 8) -> int:
    """Bytes of one PQ code: ``ceil(m * nbits / 8)``."""
    return (int(m) * int(nbits) + 7) // 8


def m_for_ratio(dim: int, ratio: float, nbits: int = 8, dtype_bytes: int = 4) -> int:
    """Sub-quantizers giving ``ratio``-times compression of ``dim``-d vectors (384-d float32: 16 -> 96, 32 -> 48, 48 -> 32).

    OptionError when the result is not a whole divisor of ``dim``.
    """
    total_bits = dim * dtype_bytes * 8 / float(ratio)
    m = total_bits / nbits
    if m < 1 or abs(m - round(m)) > 1e-9 or dim % round(m) != 0:
        raise OptionError("ratio", ratio, f"a compression giving a whole number of sub-quantizers that divides {dim} (m = {m:g})")
    return int(round(m))


def check_gpu_pq(m: int, nbits: int = 8) -> None:
    """Raise OptionError when FAISS-GPU cannot hold this PQ (8 bits per sub-quantizer, code sizes up to 96 bytes)."""
    if nbits != GPU_NBITS:
        raise OptionError("nbits", nbits, f"FAISS-GPU PQ uses {GPU_NBITS} bits per sub-quantizer")
    size = code_bytes(m, nbits)
    if size > GPU_MAX_CODE_BYTES:
        raise OptionError("m", m, f"FAISS-GPU PQ codes are at most {GPU_MAX_CODE_BYTES} bytes ({size} asked)")
    if size not in GPU_PQ_CODE_BYTES:
        raise OptionError("m", m, f"FAISS-GPU PQ code sizes are {', '.join(map(str, GPU_PQ_CODE_BYTES))} bytes")
