"""The blocked inverted index for learned sparse vectors (the Seismic design), and its brute-force reference.

Seismic (Bruch, Nardini, Rulli, Venturini; SIGIR 2024): keep the ``n_postings`` x vocab_size largest
entries of the collection (one global threshold, no list longer than ``max_fraction x n_postings``),
split each posting list into blocks by a shallow k-means, summarize each block by the coordinate-wise
max of its documents (cut to ``summary_energy`` of its L1 mass, u8-quantized), and at query time score
a block's documents exactly (forward index) only when the block's summary estimate can still beat
``heap_factor`` x the current k-th score. Numba kernels live in :mod:`braid.index.sparse.kernels`;
this module owns the configuration, the build and search orchestration, and persistence.

Arrays (all flat, CSR style; ``V`` = vocab_size, ``B`` = blocks, ``C`` = (list, summary term) pairs,
``E`` = summary entries, ``P`` = kept postings, ``N`` = num_docs, ``Z`` = document nonzeros):

====================  ==========  =======  ==========================================================
name                  dtype       shape    meaning
====================  ==========  =======  ==========================================================
``list_ptr``          int64       V+1      blocks of term t: ``list_ptr[t]:list_ptr[t+1]``
``block_ptr``         int64       B+1      docs of block b: ``post_docs[block_ptr[b]:block_ptr[b+1]]``
``post_docs``         int32       P        docnos, grouped by block
``block_min``         float32     B        summary dequantization: ``min + code * step``
``block_step``        float32     B
``sum_list_ptr``      int64       V+1      summary terms of list t: ``sum_comp_ids[...]`` (sorted)
``sum_comp_ids``      u16/int32   C
``sum_comp_ptr``      u32/int64   C+1      entries of one (list, term): ``sum_blocks/sum_codes[...]``
``sum_blocks``        u8/u16/i32  E        block number within the list (narrowest that fits)
``sum_codes``         uint8       E        quantized summary weight
``fwd_ptr``           int64       N+1      forward index (all nonzeros, unpruned)
``fwd_terms``         u16/int32   Z
``fwd_weights``       f16/f32     Z        float16 stored as its uint16 bits
====================  ==========  =======  ==========================================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from braid.data import csr_numpy
from braid.data.errors import DataError, IndexFormatError, OptionError, check_finite, check_int, check_positive_int
from braid.data.lazy import LazyModule, tier0
from braid.index.hits import Hits
from braid.index.sparse import numpy_search
from braid.index.sparse.layout import BlockedArrays
from braid.data.vectors import SparseVectors

# numba and the kernels on it are imported on first use (numba's start-up: ~1.5 s); until then the first
# single queries of a process run on the numpy tier (braid.data.lazy.tier0, numpy_search), bit for bit the same
numba = LazyModule("numba", globals(), "numba")
kernels = LazyModule("braid.index.sparse.kernels", globals(), "kernels")

FORMAT = "braid-blocked-sparse"
FORMAT_VERSION = 1
_F16_MAX = 65504.0

_BLOCK_ORDERS = {"seismic": 1, "best_first": 3}  # kernels.search_query's sort_blocks
_ARRAYS = BlockedArrays._fields  # the saved arrays, in kernel order


@dataclass(frozen=True)
class BlockedIndexConfig:
    """Build-time settings of :class:`BlockedSparseIndex` (query-time knobs are search arguments).

    ``n_postings``: average postings kept per term (global threshold on weights: the
    ``n_postings x vocab_size`` largest entries of the collection); ``None`` scales with the corpus
    (:meth:`resolve`). ``max_fraction``: no list keeps more than ``max_fraction x n_postings``.
    ``centroid_fraction``: k-means centroids per list as a fraction of its length, at most
    ``max_centroids`` (None: no cap, as in Seismic; the k-means costs list length x centroids, so
    without a cap the build grows with the square of the list length); ``min_cluster_size``:
    clusters of at most this many docs are dissolved (Seismic's rule); ``doc_cut``: a doc is assigned
    by its ``doc_cut`` largest terms; ``summary_energy``: fraction of a block summary's L1 mass kept;
    ``forward_dtype``: weights of the forward index (exact scoring); ``seed``: centroid sampling.
    """

    n_postings: int | None = None
    centroid_fraction: float = 0.1
    min_cluster_size: int = 2
    summary_energy: float = 0.4
    max_fraction: float = 1.5
    doc_cut: int = 15
    forward_dtype: str = "float16"
    seed: int = 0
    max_centroids: int | None = 256

    def __post_init__(self) -> None:
        def _int(name: str, low: int, allow_none: bool = False) -> None:
            object.__setattr__(self, name, check_int(name, getattr(self, name), low=low, allow_none=allow_none))

        def _float(name: str, low: float, high: float, low_open: bool) -> None:
            value = getattr(self, name)
            ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (value > low if low_open else value >= low) and value <= high
            if not ok:
                raise OptionError(name, value, f"a number in {'(' if low_open else '['}{low}, {high}]")
            object.__setattr__(self, name, float(value))

        _int("n_postings", 1, allow_none=True)
        _float("centroid_fraction", 0.0, 1.0, low_open=True)
        _int("min_cluster_size", 0)
        _float("summary_energy", 0.0, 1.0, low_open=True)
        _float("max_fraction", 1.0, 1e6, low_open=False)
        _int("doc_cut", 1)
        if self.forward_dtype not in ("float16", "float32"):
            raise OptionError("forward_dtype", self.forward_dtype, "'float16' or 'float32'")
        _int("seed", 0)
        _int("max_centroids", 1, allow_none=True)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BlockedIndexConfig":
        if not isinstance(d, dict):
            raise OptionError("config", d, "a dict of BlockedIndexConfig fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise OptionError("config", unknown, f"unknown field(s); known: {sorted(known)}")
        return cls(**d)

    def resolve(self, num_docs: int, nnz: int, vocab_size: int) -> "BlockedIndexConfig":
        """The config with ``n_postings`` fixed for a corpus: 1% of the documents, at least 1000.

        Why: with splade-tiny vectors (scifact, and the 1M synthetic corpus fitted to it) the top 10
        of a query are reachable from its 20 heaviest terms' lists only when a list keeps about 1.5%
        of the collection (``max_fraction x n_postings``): at 1M documents, lists cut at 1,500 / 5,000
        / 15,000 postings reach 49% / 83% / 99% of the exact top 10 (docs/benchmarks/sparse.md).
        Seismic's fixed 3500 suits MS MARCO's short passages; here it would cap accuracy near 0.5
        at 1M. Below 100k documents the floor of 1000 leaves most lists whole.
        """
        if self.n_postings is not None:
            return self
        return dataclasses.replace(self, n_postings=int(max(1000, round(num_docs / 100))))


@contextlib.contextmanager
def numba_threads(threads: int | None) -> Iterator[int]:
    """Run the body with ``numba.set_num_threads(threads)`` (None: unchanged); restore afterwards."""
    previous = numba.get_num_threads()
    if threads is None:
        yield previous
        return
    _check_threads(threads)
    threads = min(int(threads), numba.config.NUMBA_NUM_THREADS)
    if threads == previous:
        yield threads
        return
    numba.set_num_threads(threads)
    try:
        yield threads
    finally:
        numba.set_num_threads(previous)


def _check_threads(threads) -> None:
    check_positive_int("threads", threads, allow_none=True)


@dataclass(frozen=True)
class SearchStats:
    """What a :meth:`BlockedSparseIndex.search_with_stats` call did, per query.

    ``docs_scored``: int64 (n_queries,), the documents scored exactly through the forward index (each at
    most once per query; every document when an exact search scans the forward index of a pruned index).
    """

    docs_scored: np.ndarray


class _Scratch(threading.local):
    """Per-thread search scratch for the serial path (allocated once, left zeroed by the kernel): the
    :class:`kernels.SearchScratch` fields as a plain tuple (see :meth:`BlockedSparseIndex._run`)."""

    arrays: tuple | None = None


class BlockedSparseIndex:
    """A Seismic-style blocked inverted index over documents numbered ``0..num_docs-1``.

    Build with :meth:`build`, query with :meth:`search` (or :meth:`search_with_stats`, which also returns
    the documents scored per query), persist with :meth:`save` / :meth:`load`.
    """

    def __init__(self, arrays: dict[str, np.ndarray], num_docs: int, vocab_size: int, config: BlockedIndexConfig, info: dict):
        self._a = BlockedArrays(**arrays)
        # the kernels' index argument, built once: a plain tuple, because numba's dispatcher fingerprints a
        # named tuple by encoding its field names on every call (~1.5 us more per search, measured)
        self._kernel_arrays = tuple(self._a)
        self.num_docs = int(num_docs)
        self.vocab_size = int(vocab_size)
        self.config = config
        self.info = info
        self._max_blocks = int(info["max_blocks"])
        self._pruned = bool(info["pruned"])
        self._scratch = _Scratch()

    # ------------------------------------------------------------------------------------------
    # build
    # ------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, docs: SparseVectors, config: BlockedIndexConfig | None = None, progress: bool = False) -> "BlockedSparseIndex":
        """Build over ``docs`` (row i = docno i). Uses ``numba.get_num_threads()`` threads.

        Memory beyond ``docs``: the forward index (4 bytes per nonzero with float16 weights) plus the
        kept postings and summaries; ``docs`` itself is not copied and may be freed afterwards.
        """
        if not isinstance(docs, SparseVectors):
            raise OptionError("docs", type(docs).__name__, "a SparseVectors batch")
        config = config or BlockedIndexConfig()
        if not isinstance(config, BlockedIndexConfig):
            raise OptionError("config", type(config).__name__, "a BlockedIndexConfig")
        docs.validate("documents")
        t_start = time.perf_counter()
        num_docs, vocab_size = docs.n_rows, docs.vocab_size
        config = config.resolve(num_docs, docs.nnz, vocab_size)
        timings: dict[str, float] = {}

        def lap(name: str, t0: float) -> float:
            t1 = time.perf_counter()
            timings[name] = round(t1 - t0, 3)
            if progress:
                print(f"[blocked-sparse] {name}: {t1 - t0:.2f}s", flush=True)
            return t1

        t0 = time.perf_counter()
        # forward index
        term_dtype = np.uint16 if vocab_size <= 65536 else np.int32
        fwd_ptr = docs.indptr.copy()
        fwd_terms = np.empty(docs.nnz, term_dtype)
        if config.forward_dtype == "float16":
            if docs.nnz and float(docs.data.max()) > _F16_MAX:
                raise DataError(
                    f"documents: weight {float(docs.data.max())} exceeds float16's range; "
                    "use forward_dtype='float32'"
                )
            fwd_weights = np.empty(docs.nnz, np.uint16)  # float16 bits
        else:
            fwd_weights = np.empty(docs.nnz, np.float32)
        kernels.narrow_forward(docs.indices, docs.data, fwd_terms, fwd_weights)
        t0 = lap("forward", t0)

        # global-threshold pruning, then the per-list cap
        n_keep = config.n_postings * vocab_size
        thr, n_equal = kernels.select_threshold(docs.data, n_keep)
        post_ptr, post_docs, post_weights = kernels.invert_pruned(docs.indptr, docs.indices, docs.data, vocab_size, thr, n_equal)
        n_positive = int(np.count_nonzero(docs.data > 0)) if thr == 0 else None
        cap = max(1, int(config.n_postings * config.max_fraction))
        lengths = np.diff(post_ptr)
        pruned = thr > 0 or (n_positive is not None and int(post_ptr[-1]) < n_positive)
        if lengths.size and int(lengths.max()) > cap:
            post_ptr, post_docs = kernels.cap_lists(post_ptr, post_docs, post_weights, cap)
            pruned = True
        del post_weights
        t0 = lap("prune", t0)

        cut_terms, cut_weights = kernels.top_terms(docs.indptr, docs.indices, docs.data, config.doc_cut)
        t0 = lap("doc_cut", t0)

        # cluster + summarize, in contiguous term ranges of about equal cost over a thread pool
        lengths = np.diff(post_ptr).astype(np.float64)
        avg_nnz = docs.nnz / max(num_docs, 1)
        max_centroids = config.max_centroids or np.iinfo(np.int64).max
        n_centroids = np.minimum(np.maximum(1, (config.centroid_fraction * lengths).astype(np.int64)), max_centroids)
        most_blocks = int(n_centroids.max()) if n_centroids.size else 1
        block_id_like = np.zeros(0, np.uint8 if most_blocks <= 256 else np.uint16 if most_blocks <= 65536 else np.int32)
        cost = lengths * (n_centroids * 8.0 + 2.0 * avg_nnz)
        threads = numba.get_num_threads()
        ranges = _split_ranges(cost, n_parts=max(1, 8 * threads))

        def work(rng: tuple[int, int]):
            return kernels.build_lists(
                rng[0], rng[1], post_ptr, post_docs, docs.indptr, docs.indices, docs.data,
                cut_terms, cut_weights, vocab_size, config.centroid_fraction, max_centroids,
                config.min_cluster_size, config.summary_energy, config.seed, block_id_like,
            )  # fmt: skip

        if threads == 1 or len(ranges) == 1:
            parts = []
            for rng in _maybe_progress(ranges, progress):
                parts.append(work(rng))
        else:
            from concurrent.futures import ThreadPoolExecutor  # here: its import (with logging) costs a cold query ~8 ms

            with ThreadPoolExecutor(max_workers=threads) as pool:
                parts = list(_maybe_progress(pool.map(work, ranges), progress, total=len(ranges)))
        del cut_terms, cut_weights
        t0 = lap("blocks+summaries", t0)

        list_nblocks = np.concatenate([p[0] for p in parts])
        list_ptr = _ptr(list_nblocks)
        block_ptr = _ptr(np.concatenate([p[1] for p in parts]))
        block_min = np.concatenate([p[2] for p in parts])
        block_step = np.concatenate([p[3] for p in parts])
        sum_list_ptr = _ptr(np.concatenate([p[4] for p in parts]))
        sum_comp_ids = np.concatenate([p[5] for p in parts]).astype(term_dtype)
        sum_comp_ptr = _ptr(np.concatenate([p[6] for p in parts]))
        if int(sum_comp_ptr[-1]) < 2**32:  # 4 bytes per (list, term) pair instead of 8
            sum_comp_ptr = sum_comp_ptr.astype(np.uint32)
        max_blocks = int(list_nblocks.max()) if list_nblocks.size else 0
        sum_blocks = np.concatenate([p[7] for p in parts])
        sum_codes = np.concatenate([p[8] for p in parts])
        del parts
        if int(block_ptr[-1]) != post_docs.shape[0]:
            raise RuntimeError("internal error: blocks do not cover the kept postings")
        lap("assemble", t0)

        arrays = dict(
            list_ptr=list_ptr, block_ptr=block_ptr, post_docs=post_docs, block_min=block_min, block_step=block_step,
            sum_list_ptr=sum_list_ptr, sum_comp_ids=sum_comp_ids, sum_comp_ptr=sum_comp_ptr,
            sum_blocks=sum_blocks, sum_codes=sum_codes, fwd_ptr=fwd_ptr, fwd_terms=fwd_terms, fwd_weights=fwd_weights,
        )  # fmt: skip
        for arr in arrays.values():
            arr.flags.writeable = False  # same numba specialization as a loaded (read-only mmap) index
        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": config.to_dict(),
            "num_docs": num_docs,
            "vocab_size": vocab_size,
            "nnz": docs.nnz,
            "n_postings_kept": int(post_docs.shape[0]),
            "n_blocks": int(block_min.shape[0]),
            "n_summary_entries": int(sum_codes.shape[0]),
            "max_blocks": max_blocks,
            "pruned": bool(pruned),
            "build_seconds": round(time.perf_counter() - t_start, 3),
            "build_timings": timings,
        }
        return cls(arrays, num_docs, vocab_size, config, info)

    # ------------------------------------------------------------------------------------------
    # search
    # ------------------------------------------------------------------------------------------
    def search(
        self,
        queries: SparseVectors,
        k: int = 10,
        query_cut: int = 10,
        heap_factor: float = 0.7,
        exact: bool = False,
        threads: int | None = None,
        block_order: str = "seismic",
        excluded: np.ndarray | None = None,
    ) -> Hits:
        """Top-``k`` documents of each query by inner product: :class:`Hits` of shape (n_queries, k).

        ``query_cut``: the query's heaviest terms whose lists are traversed; ``heap_factor``: a block
        is skipped when its summary estimate is below ``heap_factor`` x the current k-th score
        (smaller = faster, less accurate). ``exact=True`` ignores both and returns exactly the
        brute-force top-k (:func:`exact_search`; blocked traversal of all query terms without skipping
        when the lists are unpruned, else a scan of the forward index). Only documents with a positive
        score are returned. ``threads``: numba threads for this call (None: ``numba.get_num_threads()``).
        ``block_order``: ``"seismic"`` visits each list's blocks in turn, the first list's by decreasing
        estimate (Seismic's order); ``"best_first"`` visits the blocks of all ``query_cut`` lists in one
        decreasing-estimate order and stops at the first block the heap rule skips.
        ``excluded``: documents never to return (deleted, or outside a filter), as the uint64 bitset
        :func:`exclusion_bitset` makes; the top-k is then the top-k of the other documents (exactly so
        with ``exact=True``), searched by the masked kernels (the unmasked ones are untouched).
        """
        return self._search(queries, k, query_cut, heap_factor, exact, threads, block_order, excluded)[0]

    def search_with_stats(
        self,
        queries: SparseVectors,
        k: int = 10,
        query_cut: int = 10,
        heap_factor: float = 0.7,
        exact: bool = False,
        threads: int | None = None,
        block_order: str = "seismic",
        excluded: np.ndarray | None = None,
    ) -> tuple[Hits, "SearchStats"]:
        """:meth:`search` (same arguments, same hits), and the work it did per query: :class:`SearchStats`."""
        hits, docs_scored = self._search(queries, k, query_cut, heap_factor, exact, threads, block_order, excluded)
        return hits, SearchStats(docs_scored)

    def _search(self, queries, k, query_cut, heap_factor, exact, threads, block_order, excluded=None) -> tuple[Hits, np.ndarray]:
        k, query_cut, heap_factor = _check_search_args(k, query_cut, heap_factor)
        if block_order not in _BLOCK_ORDERS:
            raise OptionError("block_order", block_order, f"one of {sorted(_BLOCK_ORDERS)}")
        self._check_queries(queries)
        if excluded is not None:
            excluded = check_exclusion(excluded, self.num_docs)
        nq = queries.n_rows
        if nq == 1 and not (exact and self._pruned) and tier0("braid.index.sparse.kernels"):
            if threads is not None:
                _check_threads(threads)
            q_terms, q_weights = queries.row(0)
            docs, scores, n = numpy_search.search_query(
                q_terms, q_weights, k, self.vocab_size if exact else query_cut, heap_factor, not exact,
                _BLOCK_ORDERS[block_order], self._a, self.vocab_size, excluded,
            )  # fmt: skip
            return Hits(docs[None, :], scores[None, :]), np.array([n], np.int64)
        out_docs = np.empty((nq, k), np.int64)
        out_scores = np.empty((nq, k), np.float32)
        if nq == 0:
            return Hits(out_docs, out_scores), np.zeros(0, np.int64)
        # one query or one thread: the serial kernel, without numba's thread-count switch (two
        # set_num_threads calls cost ~10 us); the pruned exact scan is always the parallel kernel
        serial = not (exact and self._pruned) and (nq == 1 or threads == 1)
        if serial and threads is not None:
            _check_threads(threads)
        with contextlib.nullcontext(1) if serial else numba_threads(threads) as n_threads:
            if exact and self._pruned:
                a = self._a
                n_chunks = min(nq, 4 * n_threads)
                if excluded is None:
                    kernels.scan_batch(
                        queries.indptr, queries.indices, queries.data, k,
                        a.fwd_ptr, a.fwd_terms, a.fwd_weights, self.vocab_size, n_chunks, out_docs, out_scores,
                    )  # fmt: skip
                else:
                    kernels.scan_batch_masked(
                        queries.indptr, queries.indices, queries.data, k,
                        a.fwd_ptr, a.fwd_terms, a.fwd_weights, self.vocab_size, n_chunks, excluded, out_docs, out_scores,
                    )  # fmt: skip
                return Hits(out_docs, out_scores), np.full(nq, self.num_docs, np.int64)
            n_scored = np.empty(nq, np.int64)
            query_cut = self.vocab_size if exact else query_cut
            order = _BLOCK_ORDERS[block_order]
            if excluded is None:
                self._run(queries, k, query_cut, heap_factor, not exact, order, n_threads, out_docs, out_scores, n_scored)
            else:
                self._run_masked(queries, k, query_cut, heap_factor, not exact, order, n_threads, excluded, out_docs, out_scores, n_scored)
        return Hits(out_docs, out_scores), n_scored

    def _run_masked(self, queries, k, query_cut, heap_factor, use_summaries, sort_blocks, n_threads, excluded, out_docs, out_scores, n_scored):
        nq = queries.n_rows
        if n_threads == 1 or nq == 1:
            kernels.search_batch_masked(
                queries.indptr, queries.indices, queries.data, k, query_cut, heap_factor, use_summaries, sort_blocks,
                self._kernel_arrays, self._serial_scratch(), excluded, out_docs, out_scores, n_scored, 0, 1,
            )  # fmt: skip
        else:
            kernels.search_batch_parallel_masked(
                queries.indptr, queries.indices, queries.data, k, query_cut, heap_factor, use_summaries, sort_blocks,
                self._kernel_arrays, self.vocab_size, self.num_docs, self._max_blocks, min(nq, n_threads), excluded,
                out_docs, out_scores, n_scored,
            )  # fmt: skip

    def _run(self, queries, k, query_cut, heap_factor, use_summaries, sort_blocks, n_threads, out_docs, out_scores, n_scored):
        nq = queries.n_rows
        if n_threads == 1 or nq == 1:
            kernels.search_batch(
                queries.indptr, queries.indices, queries.data, k, query_cut, heap_factor, use_summaries, sort_blocks,
                self._kernel_arrays, self._serial_scratch(), out_docs, out_scores, n_scored, 0, 1,
            )  # fmt: skip
        else:
            kernels.search_batch_parallel(
                queries.indptr, queries.indices, queries.data, k, query_cut, heap_factor, use_summaries, sort_blocks,
                self._kernel_arrays, self.vocab_size, self.num_docs, self._max_blocks, min(nq, n_threads),
                out_docs, out_scores, n_scored,
            )  # fmt: skip

    def _serial_scratch(self) -> tuple:
        s = self._scratch.arrays
        if s is None:
            s = tuple(kernels.new_scratch(self.vocab_size, self.num_docs, self._max_blocks))
            self._scratch.arrays = s
        return s

    def _check_queries(self, queries: SparseVectors) -> None:
        if not isinstance(queries, SparseVectors):
            raise OptionError("queries", type(queries).__name__, "a SparseVectors batch")
        if queries.vocab_size > self.vocab_size and queries.nnz and int(queries.indices.max()) >= self.vocab_size:
            raise DataError(
                f"queries use term id {int(queries.indices.max())} but the index vocabulary has {self.vocab_size} terms"
            )
        code, row, pos = queries.first_problem()  # term ids beyond the index's vocabulary: refused above
        if code != csr_numpy.ROW_OK:
            queries.validate("queries")  # raises with the message
            raise DataError(f"queries: row {row}: term id out of range for the index vocabulary ({self.vocab_size})")

    # ------------------------------------------------------------------------------------------
    # access
    # ------------------------------------------------------------------------------------------
    def forward_vectors(self, docnos: np.ndarray) -> SparseVectors:
        """Rows ``docnos`` of the forward index (all nonzeros, float32 weights): for PRF and rescoring."""
        docnos = np.asarray(docnos, dtype=np.int64).reshape(-1)
        if docnos.size and (docnos.min() < 0 or docnos.max() >= self.num_docs):
            raise OptionError("docnos", docnos.tolist()[:5], f"document numbers in [0, {self.num_docs})")
        a = self._a
        lengths = a.fwd_ptr[docnos + 1] - a.fwd_ptr[docnos]
        indptr = np.zeros(docnos.shape[0] + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        terms = np.empty(int(indptr[-1]), a.fwd_terms.dtype)
        weights = np.empty(int(indptr[-1]), a.fwd_weights.dtype)
        kernels.gather_rows(a.fwd_ptr, a.fwd_terms, a.fwd_weights, docnos, indptr, terms, weights)
        if weights.dtype == np.uint16:
            weights = weights.view(np.float16)
        return SparseVectors(indptr, terms.astype(np.int32), weights.astype(np.float32), self.vocab_size)

    def nbytes(self) -> int:
        """Bytes of all index arrays (what :meth:`save` writes, less the .npy headers)."""
        return int(sum(arr.nbytes for arr in self._a))

    def nbytes_by_array(self) -> dict[str, int]:
        return {name: int(arr.nbytes) for name, arr in self._a._asdict().items()}

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The index arrays (read-only), by name (see the module docstring)."""
        return self._a._asdict()

    # ------------------------------------------------------------------------------------------
    # persistence
    # ------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> dict:
        """Write the arrays as ``NAME.npy`` into ``directory`` (existing and empty: the caller builds
        in a temporary directory and renames it). Returns the info dict to record in the manifest."""
        directory = Path(directory)
        if not directory.is_dir():
            raise OptionError("directory", str(directory), "an existing directory")
        if any(directory.iterdir()):
            raise OptionError("directory", str(directory), "an empty directory")
        info = dict(self.info)
        info["arrays"] = {}
        for name in _ARRAYS:
            arr = getattr(self._a, name)
            np.save(directory / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
            info["arrays"][name] = {"dtype": arr.dtype.str, "shape": list(arr.shape)}
        return info

    @classmethod
    def load(cls, directory: str | Path, info: dict, mmap: bool = True) -> "BlockedSparseIndex":
        """Open an index written by :meth:`save`, with the info dict it returned.

        Arrays are memory-mapped read-only (``mmap=True``) or read into memory; a missing, truncated
        or inconsistent array, or an unknown format version, raises :class:`IndexFormatError`.
        """
        directory = Path(directory)
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise IndexFormatError(f"{directory}: not a blocked sparse index (format {info.get('format') if isinstance(info, dict) else None!r})")
        version = info.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFormatError(
                f"{directory}: blocked sparse index format version {version!r} is not supported (expected {FORMAT_VERSION}); rebuild the index"
            )
        try:
            config = BlockedIndexConfig.from_dict(info["config"])
            num_docs = int(info["num_docs"])
            vocab_size = int(info["vocab_size"])
            expected = info["arrays"]
            int(info["max_blocks"])
            bool(info["pruned"])
        except (KeyError, TypeError, ValueError, OptionError) as exc:
            raise IndexFormatError(f"{directory}: bad sparse index info ({exc})") from None
        arrays: dict[str, np.ndarray] = {}
        for name in _ARRAYS:
            path = directory / f"{name}.npy"
            if not path.exists():
                raise IndexFormatError(f"{directory}: sparse index array {path.name} is missing")
            try:
                arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
            except Exception as exc:  # truncated or foreign files raise ValueError/OSError/EOFError
                raise IndexFormatError(f"{path}: corrupted array ({type(exc).__name__}: {exc})") from None
            want = expected.get(name) if isinstance(expected, dict) else None
            if not want or arr.dtype.str != want.get("dtype") or list(arr.shape) != list(want.get("shape", [])):
                raise IndexFormatError(
                    f"{path}: array is {arr.dtype.str} {list(arr.shape)}, the index info says {want}"
                )
            arr = np.asarray(arr)  # a plain read-only ndarray view of the memmap (numba takes ndarrays)
            arr.flags.writeable = False
            arrays[name] = arr
        _check_structure(arrays, num_docs, vocab_size, int(info["max_blocks"]), directory)
        return cls(arrays, num_docs, vocab_size, config, info)


def exclusion_bitset(excluded: np.ndarray) -> np.ndarray:
    """A bool array over docnos (True = never return) as the uint64 bitset the masked kernels take:
    bit ``d & 63`` of word ``d >> 6``, ``(num_docs >> 6) + 1`` words (the ``visited`` scratch layout)."""
    excluded = np.ascontiguousarray(excluded, dtype=np.bool_)
    words = np.zeros((excluded.shape[0] >> 6) + 1, np.uint64)
    packed = np.packbits(excluded, bitorder="little")  # bit d & 7 of byte d >> 3: the words' little-endian bytes
    words.view(np.uint8)[: packed.shape[0]] = packed
    return words


def check_exclusion(excluded: np.ndarray, num_docs: int) -> np.ndarray:
    """``excluded`` if it is the bitset of an index of ``num_docs`` documents, else OptionError."""
    want = (num_docs >> 6) + 1
    if not isinstance(excluded, np.ndarray) or excluded.dtype != np.uint64 or excluded.shape != (want,):
        got = f"array {excluded.dtype} {excluded.shape}" if isinstance(excluded, np.ndarray) else type(excluded).__name__
        raise OptionError("excluded", got, f"a uint64 bitset of {want} words (exclusion_bitset of a bool array over the {num_docs} documents)")
    return np.ascontiguousarray(excluded)


def exact_search(docs: SparseVectors, queries: SparseVectors, k: int) -> Hits:
    """Brute-force top-``k`` by a scipy sparse product (the reference for accuracy and tests).

    Scores are float32 sums; only documents with a positive score are returned, rows ordered by
    (-score, docno) as every Braid retriever does. Memory: one dense float32 block of
    ``num_docs x chunk`` scores at a time (chunk chosen to keep it near 256 MB).
    """
    k = check_positive_int("k", k)
    if queries.vocab_size > docs.vocab_size and queries.nnz and int(queries.indices.max()) >= docs.vocab_size:
        raise DataError(f"queries use term id {int(queries.indices.max())} beyond the documents' vocabulary ({docs.vocab_size})")
    import scipy.sparse as sp

    nq = queries.n_rows
    out = Hits.empty(nq, k)
    if nq == 0 or docs.n_rows == 0:
        return out
    d = docs.to_scipy()
    q = sp.csr_matrix((queries.data, queries.indices, queries.indptr), shape=(nq, docs.vocab_size))
    chunk = max(1, min(nq, (64 << 20) // max(docs.n_rows, 1)))
    for lo in range(0, nq, chunk):
        hi = min(nq, lo + chunk)
        scores = (d @ q[lo:hi].T).toarray().astype(np.float32, copy=False)  # (num_docs, hi - lo)
        for j in range(hi - lo):
            col = scores[:, j]
            pos = np.flatnonzero(col > 0)
            if pos.size > k:
                kth = np.partition(col[pos], pos.size - k)[pos.size - k]
                pos = pos[col[pos] >= kth]
            order = np.lexsort((pos, -col[pos]))[:k]
            out.docnos[lo + j, : order.size] = pos[order]
            out.scores[lo + j, : order.size] = col[pos[order]]
    return out


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _check_search_args(k, query_cut, heap_factor) -> tuple[int, int, float]:
    hint = "1.0 skips only blocks that cannot enter the top k by their estimate"
    return check_positive_int("k", k), check_positive_int("query_cut", query_cut), check_finite("heap_factor", heap_factor, low=0, hint=hint)


def _ptr(counts: np.ndarray) -> np.ndarray:
    ptr = np.zeros(counts.shape[0] + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr


def _split_ranges(cost: np.ndarray, n_parts: int) -> list[tuple[int, int]]:
    """Contiguous ranges of ``[0, len(cost))`` with about equal total cost (at most ``n_parts``)."""
    n = cost.shape[0]
    total = float(cost.sum())
    if n == 0:
        return [(0, 0)]
    if total <= 0 or n_parts <= 1:
        return [(0, n)]
    cum = np.cumsum(cost)
    cuts = np.searchsorted(cum, total * np.arange(1, n_parts) / n_parts, side="left") + 1
    bounds = np.unique(np.concatenate([[0], np.clip(cuts, 0, n), [n]]))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _maybe_progress(it, progress: bool, total: int | None = None):
    if not progress:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc="blocks+summaries", unit="range")


def _first_decreasing(p: np.ndarray) -> int:
    """First ``i`` with ``p[i+1] < p[i]``, or -1: numpy in chunks (an index opened for one query need not load
    numba; 16M entries at a time keeps the temporary small)."""
    step = 1 << 24
    for lo in range(0, max(p.shape[0] - 1, 0), step):
        got = csr_numpy.first_decreasing(p[lo : lo + step + 1])
        if got >= 0:
            return lo + got
    return -1


def _check_structure(a: dict[str, np.ndarray], num_docs: int, vocab_size: int, max_blocks: int, where: Path) -> None:
    """Refuse arrays whose pointers or ids would send the kernels out of bounds."""

    def fail(msg: str) -> None:
        raise IndexFormatError(f"{where}: inconsistent sparse index: {msg}")

    def ptr_ok(name: str, length: int, end: int) -> None:
        p = a[name]
        if p.shape[0] != length:
            fail(f"{name} has {p.shape[0]} entries, expected {length}")
        if length and (p[0] != 0 or p[-1] != end or _first_decreasing(p) >= 0):
            fail(f"{name} is not a valid pointer array ending at {end}")

    n_blocks = a["block_min"].shape[0]
    ptr_ok("list_ptr", vocab_size + 1, n_blocks)
    ptr_ok("block_ptr", n_blocks + 1, a["post_docs"].shape[0])
    if a["block_step"].shape[0] != n_blocks:
        fail("block_step and block_min differ in length")
    ptr_ok("sum_list_ptr", vocab_size + 1, a["sum_comp_ids"].shape[0])
    ptr_ok("sum_comp_ptr", a["sum_comp_ids"].shape[0] + 1, a["sum_blocks"].shape[0])
    if a["sum_codes"].shape[0] != a["sum_blocks"].shape[0]:
        fail("sum_codes and sum_blocks differ in length")
    ptr_ok("fwd_ptr", num_docs + 1, a["fwd_terms"].shape[0])
    if a["fwd_weights"].shape[0] != a["fwd_terms"].shape[0]:
        fail("fwd_weights and fwd_terms differ in length")
    if n_blocks and int(np.diff(a["list_ptr"]).max()) > max_blocks:
        fail("a list has more blocks than max_blocks")
    for name, bound in (("post_docs", num_docs), ("sum_comp_ids", vocab_size), ("fwd_terms", vocab_size), ("sum_blocks", max(max_blocks, 1))):
        arr = a[name]
        if arr.size and (int(arr.max()) >= bound or (arr.dtype.kind == "i" and int(arr.min()) < 0)):
            fail(f"{name} has values outside [0, {bound})")


__all__ = ["BlockedIndexConfig", "BlockedSparseIndex", "SearchStats", "exact_search", "exclusion_bitset", "check_exclusion", "numba_threads", "FORMAT", "FORMAT_VERSION"]
