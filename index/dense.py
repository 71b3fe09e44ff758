"""The dense index: a FAISS index over float32 vectors (kind ``bin``: and a binary index of their signs),
its build config, search, save and load.

Takes vectors, never text or models. Documents are the rows of the vectors given at build
(docno = row number). ``metric="ip"`` scores are inner products; ``metric="l2"`` scores are
negated squared L2 distances, so that for both a higher score is better and results are ordered
by (-score, docno). faiss is imported inside the functions that use it.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from braid.data.errors import BraidError, IndexFormatError, OptionError, check_int, check_nonneg_int, check_positive_int
from braid.index.hits import Hits

KINDS = ("flat", "hnsw", "ivf", "ivfpq", "pq", "opq", "bin")
METRICS = ("ip", "l2")
STORE_DTYPES = ("float32", "float16")
PQ_KINDS = ("ivfpq", "pq", "opq")
IVF_KINDS = ("ivf", "ivfpq")
INDEX_FILE = "dense.faiss"
BINARY_FILE = "dense.bin.faiss"  # kind "bin": the sign bits of every vector in a FAISS binary index
# Bytes per code that FAISS-GPU IVFPQ accepts (8 bits per sub-quantizer).
GPU_PQ_CODE_BYTES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
ADD_BATCH = 65536  # rows copied to RAM and added per step, so a memory-mapped corpus is never loaded whole
# A batch of one with at most this many hits fetched is ordered by a Python sort (6 vs 12 us at 20
# hits, 15 vs 19 at 64); deeper ones by lexsort (33 vs 16 us at 128, 308 vs 28 at 1,008).
ONE_QUERY_SORT_MAX = 64
TIE_MARGIN = 8  # extra candidates fetched so that ties at rank k are broken by docno
# HNSW with a filter that lets at most this many documents through, and at most this share of the
# graph: those are scored exactly from the graph's stored vectors instead of searched in the graph,
# whose beam finds few of them (a 1% filter on scifact: accuracy@10 0.29 through the graph at ef 20;
# scripts/bench_live_speed.py). A graph's own deletions (a live segment's ~10%) stay on the graph.
HNSW_EXACT_MAX_DOCS = 4_096
HNSW_EXACT_MAX_SHARE = 0.2
FEW_EXCLUDED = 8  # exhaustive kinds: up to this many x (k + TIE_MARGIN) excluded documents are fetched past, not selected


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class DenseIndexConfig:
    """Build-time settings of a dense index (saved in the manifest; query-time knobs are search arguments).

    ``kind``: ``flat`` (exact), ``hnsw`` (graph), ``ivf`` (inverted file, exact vectors), ``ivfpq``,
    ``pq``, ``opq`` (OPQ rotation + PQ), ``bin`` (flat, plus the sign bit of every dimension packed
    into a FAISS binary index for the ``dense-bin`` retriever; the dimension must be a multiple of 8).
    ``nlist``: IVF lists (None: ``4 * sqrt(n)``, at most
    ``n / 39``). ``m``: PQ sub-quantizers, must divide the dimension (None: the largest divisor of
    the dimension not above ``dim / 8``). ``nbits``: bits per sub-quantizer code. ``hnsw_m``,
    ``ef_construction``: HNSW graph degree and build beam. ``metric``: ``"ip"`` or ``"l2"``.
    ``store_dtype``: ``float16`` halves flat / hnsw / ivf storage (FAISS scalar quantizer).
    ``train_size``: vectors sampled (with ``seed``) to train IVF / PQ (None: ``max(40 * nlist,
    40 * 2**nbits)``, capped at n). ``seed``: sampling and k-means seed.
    """

    kind: str = "flat"
    nlist: int | None = None
    m: int | None = None
    nbits: int = 8
    hnsw_m: int = 32
    ef_construction: int = 200
    metric: str = "ip"
    store_dtype: str = "float32"
    train_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise OptionError("kind", self.kind, f"one of {', '.join(KINDS)}")
        if self.metric not in METRICS:
            raise OptionError("metric", self.metric, f"one of {', '.join(METRICS)}")
        if self.store_dtype not in STORE_DTYPES:
            raise OptionError("store_dtype", self.store_dtype, f"one of {', '.join(STORE_DTYPES)}")
        if self.store_dtype == "float16" and self.kind in PQ_KINDS:
            raise OptionError("store_dtype", self.store_dtype, f"float16 storage applies to flat, hnsw and ivf; {self.kind} stores PQ codes")
        for name, low in (("nlist", 1), ("m", 1), ("train_size", 1)):
            check_int(name, getattr(self, name), low=low, allow_none=True)
        if not _is_int(self.nbits) or not 1 <= self.nbits <= 16:
            raise OptionError("nbits", self.nbits, "an integer in 1..16")
        check_int("hnsw_m", self.hnsw_m, low=2)
        check_positive_int("ef_construction", self.ef_construction)
        check_nonneg_int("seed", self.seed)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DenseIndexConfig":
        if not isinstance(d, dict):
            raise OptionError("dense index config", d, "a dict")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise OptionError("dense index config", sorted(unknown), f"known keys: {', '.join(sorted(known))}")
        return cls(**d)

    def validate_for(self, num_docs: int, dim: int) -> None:
        """Checks that need the data: ``m`` divides ``dim``; IVF/PQ have enough vectors to train."""
        if self.kind == "bin" and dim % 8 != 0:
            raise OptionError("kind", self.kind, f"binary codes pack 8 dimensions per byte; the dimension {dim} is not a multiple of 8")
        if self.m is not None and self.kind in PQ_KINDS and dim % self.m != 0:
            raise OptionError("m", self.m, f"the number of PQ sub-quantizers must divide the dimension {dim}")
        if self.kind in IVF_KINDS and self.nlist is not None and self.nlist > num_docs:
            raise OptionError("nlist", self.nlist, f"at most the number of documents ({num_docs})")
        if self.kind in PQ_KINDS and num_docs < 2**self.nbits:
            raise OptionError(
                "nbits", self.nbits, f"PQ with {2 ** self.nbits} centroids per sub-quantizer needs at least that many vectors (have {num_docs})"
            )

    def resolved(self, num_docs: int, dim: int) -> "DenseIndexConfig":
        """The config with ``nlist``, ``m`` and ``train_size`` defaults filled in for this corpus."""
        self.validate_for(num_docs, dim)
        nlist, m, train = self.nlist, self.m, self.train_size
        if self.kind in IVF_KINDS and nlist is None:
            nlist = max(1, min(int(4 * math.sqrt(num_docs)), num_docs // 39))
        if self.kind in PQ_KINDS and m is None:
            m = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
        if train is None and self.kind in IVF_KINDS + PQ_KINDS:
            train = max(40 * (nlist or 1), 40 * 2**self.nbits)
        if train is not None:
            train = min(train, num_docs)
        return DenseIndexConfig(**{**self.to_dict(), "nlist": nlist, "m": m, "train_size": train})


def pack_signs(vectors: np.ndarray) -> np.ndarray:
    """Sign bits of float (n, dim) vectors, 8 dimensions per byte -> uint8 (n, dim / 8).

    Bit set where the value is > 0 (sentence-transformers' binary quantization), most significant bit
    first (``np.packbits``); queries and documents are packed alike, so Hamming distances are those of
    the sign vectors.
    """
    return np.packbits(np.asarray(vectors) > 0, axis=-1)


def _require_faiss() -> Any:
    import sys

    if "faiss" not in sys.modules:
        import logging

        # faiss's loader logs every CPU-specific library it fails to find at INFO ("Could not load library
        # with AVX512 support ..."), which reads like an error under `braid serve --log-level info`. Only
        # before the first import: setLevel clears every logger's cache (~1 ms), too slow per search.
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        import faiss
    except ImportError:  # pragma: no cover - depends on the installation
        raise BraidError("the dense index needs faiss; install it with: pip install 'braid[dense]'") from None
    return faiss


def _check_vectors(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if x.dtype == np.float32 and x.ndim == 2 and (dim is None or x.shape[1] == dim):  # the common case (per query)
        return x
    if x.ndim != 2:
        raise OptionError(name, f"array of shape {x.shape}", "a 2-d array (n, dim)")
    if dim is not None and x.shape[1] != dim:
        raise OptionError(name, f"dimension {x.shape[1]}", f"the index holds {dim}-d vectors")
    if not np.issubdtype(x.dtype, np.floating):
        raise OptionError(name, f"dtype {x.dtype}", "float32 (or another float dtype)")
    return x


def _new_index(cfg: DenseIndexConfig, dim: int) -> Any:
    faiss = _require_faiss()
    metric = faiss.METRIC_INNER_PRODUCT if cfg.metric == "ip" else faiss.METRIC_L2
    fp16 = cfg.store_dtype == "float16"
    if cfg.kind in ("flat", "bin"):
        if fp16:
            return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, metric)
        return faiss.IndexFlatIP(dim) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dim)
    if cfg.kind == "hnsw":
        if fp16:
            index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, cfg.hnsw_m, metric)
        else:
            index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, metric)
        index.hnsw.efConstruction = cfg.ef_construction
        return index
    if cfg.kind in IVF_KINDS:
        quantizer = faiss.IndexFlatIP(dim) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dim)
        if cfg.kind == "ivf":
            if fp16:
                index = faiss.IndexIVFScalarQuantizer(quantizer, dim, cfg.nlist, faiss.ScalarQuantizer.QT_fp16, metric)
            else:
                index = faiss.IndexIVFFlat(quantizer, dim, cfg.nlist, metric)
        else:
            index = faiss.IndexIVFPQ(quantizer, dim, cfg.nlist, cfg.m, cfg.nbits, metric)
        index.own_fields = True
        quantizer.this.disown()  # the IVF index owns (and frees) its quantizer
        index.cp.seed = cfg.seed
        if cfg.kind == "ivfpq":
            index.pq.cp.seed = cfg.seed
        return index
    if cfg.kind == "pq":
        index = faiss.IndexPQ(dim, cfg.m, cfg.nbits, metric)
        index.pq.cp.seed = cfg.seed
        return index
    # opq: rotation learnt to balance the sub-spaces (Ge et al., "Optimized Product Quantization", 2013)
    opq = faiss.OPQMatrix(dim, cfg.m)
    pq = faiss.IndexPQ(dim, cfg.m, cfg.nbits, metric)
    pq.pq.cp.seed = cfg.seed
    index = faiss.IndexPreTransform(opq, pq)
    index.own_fields = True
    opq.this.disown()
    pq.this.disown()
    return index


def _gpu_plan(cfg: DenseIndexConfig) -> tuple[bool, str | None]:
    """Whether to train/add on a GPU, and a note when one is present but cannot be used."""
    faiss = _require_faiss()
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if n_gpus <= 0 or not hasattr(faiss, "StandardGpuResources"):
        return False, None
    if cfg.kind == "hnsw":
        return False, "HNSW is built on the CPU (FAISS has no GPU HNSW)"
    if cfg.store_dtype == "float16" and cfg.kind in ("flat", "bin"):
        return False, "flat float16 (scalar quantizer) is built on the CPU (no FAISS-GPU equivalent)"
    if cfg.kind in PQ_KINDS:
        if cfg.nbits != 8:
            return False, f"FAISS-GPU PQ needs 8 bits per sub-quantizer (nbits={cfg.nbits}); built on the CPU"
        if cfg.m not in GPU_PQ_CODE_BYTES:
            return False, f"FAISS-GPU PQ supports codes of {', '.join(map(str, GPU_PQ_CODE_BYTES))} bytes (m={cfg.m}); built on the CPU"
    return True, None


class DenseIndex:
    """A FAISS index whose row ids are the docnos 0..num_docs-1 of the vectors given at build.

    Build with :meth:`build`, open with :meth:`load`. ``info`` (returned by :meth:`save`) records
    num_docs, dim, the resolved config and how it was built. ``binary`` (kind ``bin`` only): a FAISS
    ``IndexBinaryFlat`` over :func:`pack_signs` of the same vectors, same row ids.
    """

    def __init__(self, index: Any, config: DenseIndexConfig, num_docs: int, dim: int, info: dict | None = None, binary: Any = None):
        self.index = index
        self.config = config
        self.num_docs = int(num_docs)
        self.dim = int(dim)
        self.info = dict(info or {})
        self.binary = binary
        self._direct_map_lock = threading.Lock()  # searches may run in several threads; the direct map is built once

    # -- build ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, config: DenseIndexConfig | None = None, threads: int | None = None) -> "DenseIndex":
        """Train (on a seeded sample) and fill an index from ``vectors``: float (num_docs, dim), any layout.

        Trains and adds on a GPU when FAISS sees one and the config allows it (with a fallback to
        the CPU and a note in ``info["notes"]`` otherwise).
        """
        config = config or DenseIndexConfig()
        vectors = _check_vectors(vectors, "vectors")
        n, dim = vectors.shape
        if n == 0:
            raise OptionError("vectors", "0 rows", "at least one vector")
        cfg = config.resolved(n, dim)
        faiss = _require_faiss()
        notes: list[str] = []
        with _omp_threads(threads):
            index = _new_index(cfg, dim)
            use_gpu, note = _gpu_plan(cfg)
            if note:
                notes.append(note)
            built_on = "cpu"
            if use_gpu:
                try:
                    res = faiss.StandardGpuResources()
                    gpu_index = faiss.index_cpu_to_gpu(res, 0, index)
                    cls._train_and_add(gpu_index, vectors, cfg)
                    index = faiss.index_gpu_to_cpu(gpu_index)
                    built_on = "gpu"
                except Exception as exc:  # noqa: BLE001 - any GPU failure: build on the CPU instead
                    notes.append(f"GPU build failed ({type(exc).__name__}: {exc}); built on the CPU")
                    index = _new_index(cfg, dim)
            if built_on == "cpu":
                cls._train_and_add(index, vectors, cfg)
        for note in notes:
            warnings.warn(note, stacklevel=2)
        if index.ntotal != n:
            raise BraidError(f"internal error: FAISS index holds {index.ntotal} vectors after adding {n}")
        binary = None
        if cfg.kind == "bin":  # signs of the given vectors (not of float16-rounded ones)
            binary = faiss.IndexBinaryFlat(dim)
            for start in range(0, n, ADD_BATCH):
                binary.add(np.ascontiguousarray(pack_signs(vectors[start : start + ADD_BATCH])))
        info = {
            "num_docs": n,
            "dim": dim,
            "config": cfg.to_dict(),
            "requested_config": config.to_dict(),
            "built_on": built_on,
            "notes": notes,
            "file": INDEX_FILE,
        }
        return cls(index, cfg, n, dim, info, binary)

    @staticmethod
    def _train_and_add(index: Any, vectors: np.ndarray, cfg: DenseIndexConfig) -> None:
        n = vectors.shape[0]
        if not index.is_trained:
            rng = np.random.default_rng(cfg.seed)
            size = cfg.train_size or n
            rows = np.sort(rng.choice(n, size=size, replace=False)) if size < n else np.arange(n)
            sample = np.ascontiguousarray(vectors[rows], dtype=np.float32)
            index.train(sample)
        for start in range(0, n, ADD_BATCH):
            index.add(np.ascontiguousarray(vectors[start : start + ADD_BATCH], dtype=np.float32))

    # -- search --------------------------------------------------------------------------------
    def search(
        self,
        query_vectors: np.ndarray,
        k: int,
        nprobe: int | None = None,
        ef_search: int | None = None,
        threads: int | None = None,
        allowed: np.ndarray | None = None,
    ) -> Hits:
        """Top-``k`` documents of each query: ``query_vectors`` float32 (n_queries, dim) -> Hits (n_queries, k).

        ``nprobe``: IVF lists visited (ivf, ivfpq; FAISS default 1 otherwise); ``ef_search``: HNSW
        beam (default max(16, k)); both are ignored by kinds they do not apply to. ``threads``: OpenMP
        threads for this call. Scores: inner product (``ip``) or negated squared distance (``l2``).
        ``allowed``: bool (num_docs,) (or :meth:`prepare_allowed` of one), the documents that may be returned (deleted ones and those
        outside a filter are False), applied inside FAISS by an ``IDSelectorBitmap`` before the top-k:
        exact for flat, the candidates a filtered search visits for HNSW / IVF.
        """
        check_positive_int("k", k)
        for name, v in (("nprobe", nprobe), ("ef_search", ef_search), ("threads", threads)):
            check_positive_int(name, v, allow_none=True)
        q = _check_vectors(query_vectors, "query_vectors", self.dim)
        q = np.ascontiguousarray(q, dtype=np.float32)
        if q.shape[0] == 0 or self.num_docs == 0:
            return Hits.empty(q.shape[0], k)
        faiss = _require_faiss()
        fetch = min(self.num_docs, k + TIE_MARGIN)
        params = None
        selector = None
        if allowed is not None:
            prepared = allowed if isinstance(allowed, AllowedRows) else self.prepare_allowed(allowed)
            allowed, n_excluded = prepared.allowed, prepared.n_excluded
            if self.config.kind not in IVF_KINDS and self.config.kind != "hnsw" and n_excluded <= FEW_EXCLUDED * (k + TIE_MARGIN):
                # A few excluded documents (a live segment's deletions): one exhaustive scan that many
                # deeper, then dropped, is exact and cheaper than FAISS's selector path (a 288-document
                # flat segment with 10% deleted: 115 -> about 55 us a query, scripts/bench_live_speed.py)
                return self._search_deepening(q, k, allowed, threads, fetch=min(self.num_docs, fetch + n_excluded))
            n_allowed = self.num_docs - n_excluded
            if self.config.kind == "hnsw" and n_allowed <= HNSW_EXACT_MAX_DOCS and n_allowed <= HNSW_EXACT_MAX_SHARE * self.num_docs:
                return self._score_rows(q, k, np.flatnonzero(allowed))
            selector = prepared.selector()
        if self.config.kind in IVF_KINDS and (nprobe is not None or selector is not None):
            params = faiss.SearchParametersIVF(sel=selector) if selector is not None else faiss.SearchParametersIVF()
            params.nprobe = int(min(nprobe, self.config.nlist or nprobe)) if nprobe is not None else int(faiss.extract_index_ivf(self.index).nprobe)
        elif self.config.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=int(ef_search if ef_search is not None else max(16, fetch)))
            if selector is not None:
                params.sel = selector
        elif selector is not None and self.config.kind in ("flat", "bin"):
            params = faiss.SearchParameters(sel=selector)  # IndexFlat / IndexScalarQuantizer test the bitmap per vector
        elif selector is not None:
            # IndexPQ (and OPQ over it) takes no search parameters: an exhaustive ADC scan, deepened
            # until k allowed documents are in hand (the same top-k a selector would give)
            return self._search_deepening(q, k, allowed, threads)
        with _omp_threads(threads):
            if params is not None:
                dist, labels = self.index.search(q, fetch, params=params)
            else:
                dist, labels = self.index.search(q, fetch)
        scores = dist.astype(np.float32, copy=False)
        if self.config.metric == "l2":
            scores = -scores
        labels = labels.astype(np.int64, copy=False)
        if q.shape[0] == 1 and labels.shape[1] <= ONE_QUERY_SORT_MAX:
            return _top_k_one(scores[0], labels[0], k)
        pad = labels < 0
        scores = np.where(pad, np.float32(-np.inf), scores)
        # (-score, docno) within each row; padding (-inf) last
        order = np.lexsort((np.where(pad, np.iinfo(np.int64).max, labels), -scores), axis=-1)[:, :k]
        docnos = np.take_along_axis(labels, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        out = Hits.empty(q.shape[0], k)
        out.docnos[:, : docnos.shape[1]] = np.where(docnos < 0, -1, docnos)
        out.scores[:, : scores.shape[1]] = scores
        return out

    def prepare_allowed(self, allowed: np.ndarray) -> "AllowedRows":
        """``allowed`` (bool (num_docs,)) checked and counted once, its FAISS selector made on first use:
        pass the result as :meth:`search`'s ``allowed`` to reuse it across queries (a live segment's
        deletions: the same mask for every search of a generation)."""
        allowed = np.asarray(allowed)
        if allowed.dtype != np.bool_ or allowed.shape != (self.num_docs,):
            raise OptionError("allowed", f"array {allowed.dtype} {allowed.shape}", f"a bool array of shape ({self.num_docs},)")
        return AllowedRows(allowed, self.num_docs - int(np.count_nonzero(allowed)))

    def _score_rows(self, q: np.ndarray, k: int, rows: np.ndarray) -> Hits:
        """Exact top-``k`` among ``rows`` (the only documents allowed), scored from the stored vectors."""
        out = Hits.empty(q.shape[0], k)
        if rows.shape[0] == 0:
            return out
        vectors = np.asarray(self.index.reconstruct_batch(rows.astype(np.int64)), dtype=np.float32)
        if self.config.metric == "l2":
            scores = -(((q[:, None, :] - vectors[None, :, :]) ** 2).sum(axis=2))
        else:
            scores = q @ vectors.T
        scores = scores.astype(np.float32, copy=False)
        width = min(k, rows.shape[0])
        for i in range(q.shape[0]):
            order = np.lexsort((rows, -scores[i]))[:width]
            out.docnos[i, :width] = rows[order]
            out.scores[i, :width] = scores[i, order]
        return out

    def _search_deepening(self, q: np.ndarray, k: int, allowed: np.ndarray, threads: int | None, fetch: int | None = None) -> Hits:
        """Top-``k`` among ``allowed`` by searching deeper until every row has k allowed hits (or all documents)."""
        n_allowed = int(allowed.sum())
        want = min(k, n_allowed)
        fetch = min(self.num_docs, fetch if fetch is not None else 4 * (k + TIE_MARGIN))
        while True:
            hits = self.search(q, fetch, threads=threads)
            ok = np.where(hits.docnos >= 0, allowed[np.maximum(hits.docnos, 0)], False)
            enough = ok.sum(axis=1) >= want + min(TIE_MARGIN, n_allowed - want)
            if enough.all() or fetch >= self.num_docs:
                # keep the allowed hits in their (-score, docno) order: a stable sort on "not allowed"
                order = np.argsort(~ok, axis=1, kind="stable")[:, :k]
                kept = np.take_along_axis(ok, order, axis=1)
                out = Hits.empty(hits.n_queries, k)
                width = order.shape[1]
                out.docnos[:, :width] = np.where(kept, np.take_along_axis(hits.docnos, order, axis=1), -1)
                out.scores[:, :width] = np.where(kept, np.take_along_axis(hits.scores, order, axis=1), np.float32(-np.inf))
                return out
            fetch = min(self.num_docs, fetch * 4)

    # -- vectors back --------------------------------------------------------------------------
    def reconstruct(self, docnos: np.ndarray) -> np.ndarray:
        """Stored vectors of ``docnos`` (int (n,)) -> float32 (n, dim); exact for flat/hnsw/ivf, decoded for PQ kinds."""
        docnos = np.asarray(docnos)
        if docnos.ndim != 1 or not np.issubdtype(docnos.dtype, np.integer):
            raise OptionError("docnos", f"array {docnos.dtype} {docnos.shape}", "a 1-d integer array")
        if len(docnos) and (docnos.min() < 0 or docnos.max() >= self.num_docs):
            raise OptionError("docnos", "out of range", f"docnos in 0..{self.num_docs - 1}")
        if len(docnos) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        faiss = _require_faiss()
        if self.config.kind in IVF_KINDS:
            ivf = faiss.extract_index_ivf(self.index)
            with self._direct_map_lock:
                if not getattr(self, "_direct_map", False):
                    ivf.make_direct_map()
                    self._direct_map = True
        try:
            return np.ascontiguousarray(self.index.reconstruct_batch(docnos.astype(np.int64)), dtype=np.float32)
        except RuntimeError as exc:
            raise BraidError(f"this {self.config.kind} index cannot return its vectors ({exc})") from None

    def bytes_per_vector(self) -> float:
        """Approximate index memory per document: vector codes, plus ids (IVF) or graph links (HNSW level 0)."""
        c = self.config
        if c.kind in ("flat", "hnsw", "ivf", "bin"):
            code = self.dim * (2 if c.store_dtype == "float16" else 4)
        else:
            code = math.ceil(c.m * c.nbits / 8)
        if c.kind in IVF_KINDS:
            code += 8  # the id stored next to each code in its inverted list
        if c.kind == "hnsw":
            code += 2 * c.hnsw_m * 4  # level-0 neighbour list (upper levels add ~1/M more)
        if c.kind == "bin":
            code += self.dim // 8  # the sign bits, next to the float vectors they are rescored with
        return float(code)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> dict:
        """Write ``directory/dense.faiss`` (and ``dense.bin.faiss`` for kind ``bin``), each atomically,
        and return the info dict to keep in the manifest."""
        faiss = _require_faiss()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(lambda tmp: faiss.write_index(self.index, tmp), directory / INDEX_FILE)
        info = {**self.info, "num_docs": self.num_docs, "dim": self.dim, "config": self.config.to_dict(), "file": INDEX_FILE}
        if self.binary is not None:
            _write_atomic(lambda tmp: faiss.write_index_binary(self.binary, tmp), directory / BINARY_FILE)
            info["binary_file"] = BINARY_FILE
        info["bytes_per_vector"] = self.bytes_per_vector()
        return info

    @classmethod
    def load(cls, directory: str | Path, info: dict, mmap: bool = True) -> "DenseIndex":
        """Open a saved index; ``info`` is what :meth:`save` returned. IndexFormatError on any mismatch.

        ``mmap``: map the file instead of reading it (FAISS ``IO_FLAG_MMAP``) where the index
        type supports it; otherwise it is read into memory.
        """
        faiss = _require_faiss()
        directory = Path(directory)
        if not isinstance(info, dict):
            raise IndexFormatError(f"{directory}: dense index info must be a dict, got {type(info).__name__}")
        try:
            num_docs = int(info["num_docs"])
            dim = int(info["dim"])
            config = DenseIndexConfig.from_dict(info["config"])
        except (KeyError, TypeError, ValueError, OptionError) as exc:
            raise IndexFormatError(f"{directory}: dense index info is incomplete or invalid ({exc})") from None
        path = directory / str(info.get("file", INDEX_FILE))
        if not path.is_file():
            raise IndexFormatError(f"{directory}: dense index file {path.name} is missing")
        index = None
        if mmap:
            try:
                index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            except RuntimeError:
                index = None  # this index type cannot be mapped: read it
        if index is None:
            try:
                index = faiss.read_index(str(path))
            except RuntimeError as exc:
                raise IndexFormatError(f"{path}: not a readable FAISS index ({str(exc).strip().splitlines()[-1]})") from None
        if index.ntotal != num_docs:
            raise IndexFormatError(f"{path}: holds {index.ntotal} vectors but the index has {num_docs} documents")
        if index.d != dim:
            raise IndexFormatError(f"{path}: holds {index.d}-d vectors but the manifest says {dim}")
        binary = None
        if config.kind == "bin":
            bpath = directory / str(info.get("binary_file", BINARY_FILE))
            if not bpath.is_file():
                raise IndexFormatError(f"{directory}: binary index file {bpath.name} is missing")
            try:
                binary = faiss.read_index_binary(str(bpath))
            except RuntimeError as exc:
                raise IndexFormatError(f"{bpath}: not a readable FAISS binary index ({str(exc).strip().splitlines()[-1]})") from None
            if binary.ntotal != num_docs or binary.d != dim:
                raise IndexFormatError(f"{bpath}: holds {binary.ntotal} codes of {binary.d} bits; the index has {num_docs} documents of {dim} dimensions")
        return cls(index, config, num_docs, dim, info, binary)


class AllowedRows:
    """What :meth:`DenseIndex.prepare_allowed` returns: the mask, how many rows it excludes, and its
    ``IDSelectorBitmap`` (made once, kept with the packed bits it reads)."""

    __slots__ = ("allowed", "n_excluded", "_selector")

    def __init__(self, allowed: np.ndarray, n_excluded: int):
        self.allowed = allowed
        self.n_excluded = int(n_excluded)
        self._selector = None

    def selector(self) -> Any:
        if self._selector is None:
            faiss = _require_faiss()
            bits = np.packbits(self.allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(self.allowed.shape[0], faiss.swig_ptr(bits))
            selector.keep_bits = bits  # the selector reads this buffer: keep it alive with it
            self._selector = selector
        return self._selector


def _top_k_one(scores: np.ndarray, labels: np.ndarray, k: int) -> Hits:
    """One query's FAISS result -> Hits (1, k) in (-score, docno) order: a Python sort of a few dozen
    pairs costs less than the lexsort / take_along_axis path (:data:`ONE_QUERY_SORT_MAX`; a search
    request's common case; the same order, tests/test_dense_index.py)."""
    pairs = sorted((-s, d) for s, d in zip(scores.tolist(), labels.tolist()) if d >= 0)[:k]
    out = Hits.empty(1, k)
    if pairs:
        out.docnos[0, : len(pairs)] = [d for _, d in pairs]
        out.scores[0, : len(pairs)] = [-s for s, _ in pairs]
    return out


def _write_atomic(write, path: Path) -> None:
    """``write(tmp_name)`` into a temporary sibling of ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _omp_threads:
    """Set FAISS's OpenMP thread count for a block (None: leave it)."""

    def __init__(self, threads: int | None):
        self.threads = threads
        self.old = None

    def __enter__(self) -> None:
        if self.threads is not None:
            faiss = _require_faiss()
            self.old = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(int(self.threads))

    def __exit__(self, *exc: Any) -> None:
        if self.old is not None:
            _require_faiss().omp_set_num_threads(self.old)
