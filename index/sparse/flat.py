"""A small sparse segment without blocks: the forward index alone, every search an exact scan.

A live index's new documents arrive in small batches; building a blocked index (k-means per posting
list, summaries) for a few hundred documents costs more than scanning them. Below a size threshold
(:class:`braid.index.segments.SparseSegmentPolicy`) a segment is this flat form, scored exactly by the
same ``score_doc`` the blocked index uses, so a document's score does not depend on the kind of
segment holding it; the merge policy turns flat segments into blocked ones as they grow.

Arrays: ``fwd_ptr`` int64 (N+1), ``fwd_terms`` u16/int32 (Z), ``fwd_weights`` float16 bits (uint16) or
float32 (Z), exactly the forward index of :class:`~braid.index.sparse.blocked.BlockedSparseIndex`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from braid.data.errors import DataError, IndexFormatError, OptionError, check_positive_int
from braid.data.vectors import SparseVectors
from braid.index.hits import Hits
from braid.index.sparse import flat_kernels, kernels
from braid.index.sparse.blocked import _F16_MAX, _check_threads, check_exclusion, numba_threads

FORMAT = "braid-flat-sparse"
FORMAT_VERSION = 1
_ARRAYS = ("fwd_ptr", "fwd_terms", "fwd_weights")
_NO_BITS = np.zeros(1, np.uint64)


class FlatSparseIndex:
    """Exact sparse search by scanning a forward index over documents ``0..num_docs-1``."""

    def __init__(self, arrays: dict[str, np.ndarray], num_docs: int, vocab_size: int, info: dict):
        self.fwd_ptr = arrays["fwd_ptr"]
        self.fwd_terms = arrays["fwd_terms"]
        self.fwd_weights = arrays["fwd_weights"]
        self.num_docs = int(num_docs)
        self.vocab_size = int(vocab_size)
        self.info = info
        self.inverted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (ptr, docs, weights): see invert()
        self._scratch = threading.local()  # the serial term-at-a-time path's (acc, seen, touched, dense_q)

    def invert(self) -> "FlatSparseIndex":
        """Add inverted lists (term -> documents) so that searches walk the query terms' postings
        (:func:`~braid.index.sparse.flat_kernels.taat_batch`) instead of every forward row: the same
        top-k and scores, cheaper when queries share terms with a small part of the documents."""
        ptr = np.zeros(self.vocab_size + 1, np.int64)
        docs = np.empty(self.fwd_terms.shape[0], np.int32)
        weights = np.empty(self.fwd_terms.shape[0], self.fwd_weights.dtype)
        flat_kernels.invert_forward(self.fwd_ptr, self.fwd_terms, self.fwd_weights, self.vocab_size, ptr, docs, weights)
        for arr in (ptr, docs, weights):
            arr.flags.writeable = False
        self.inverted = (ptr, docs, weights)
        return self

    @classmethod
    def build(cls, docs: SparseVectors, forward_dtype: str = "float16") -> "FlatSparseIndex":
        """The forward index of ``docs`` (row i = docno i), weights stored as ``forward_dtype``."""
        if not isinstance(docs, SparseVectors):
            raise OptionError("docs", type(docs).__name__, "a SparseVectors batch")
        if forward_dtype not in ("float16", "float32"):
            raise OptionError("forward_dtype", forward_dtype, "'float16' or 'float32'")
        docs.validate("documents")
        term_dtype = np.uint16 if docs.vocab_size <= 65536 else np.int32
        terms = np.empty(docs.nnz, term_dtype)
        if forward_dtype == "float16":
            if docs.nnz and float(docs.data.max()) > _F16_MAX:
                raise DataError(f"documents: weight {float(docs.data.max())} exceeds float16's range; use forward_dtype='float32'")
            weights = np.empty(docs.nnz, np.uint16)
        else:
            weights = np.empty(docs.nnz, np.float32)
        kernels.narrow_forward(docs.indices, docs.data, terms, weights)
        arrays = {"fwd_ptr": docs.indptr.astype(np.int64, copy=True), "fwd_terms": terms, "fwd_weights": weights}
        for arr in arrays.values():
            arr.flags.writeable = False
        info = {"format": FORMAT, "format_version": FORMAT_VERSION, "num_docs": docs.n_rows, "vocab_size": docs.vocab_size,
                "nnz": docs.nnz, "forward_dtype": forward_dtype}  # fmt: skip
        return cls(arrays, docs.n_rows, docs.vocab_size, info)

    @classmethod
    def join(cls, parts: list["FlatSparseIndex"], order: np.ndarray | None = None) -> "FlatSparseIndex":
        """One in-memory flat index holding the rows of ``parts`` one after the other (then permuted by
        ``order`` when given: row i of the result is joined row ``order[i]``). Weights and term ids
        keep their stored values (float16 bits stay float16 unless some part holds float32), so every
        document scores exactly as in its own part."""
        if not parts:
            raise OptionError("parts", parts, "at least one flat segment")
        vocab = {p.vocab_size for p in parts}
        if len(vocab) > 1:
            raise IndexFormatError(f"flat segments with different vocabularies {sorted(vocab)} cannot be joined")
        f16 = all(p.fwd_weights.dtype == np.uint16 for p in parts)
        u16 = all(p.fwd_terms.dtype == np.uint16 for p in parts)
        weights = np.concatenate([p.fwd_weights if f16 else _as_float32(p.fwd_weights) for p in parts])
        terms = np.concatenate([p.fwd_terms if u16 else p.fwd_terms.astype(np.int32) for p in parts])
        lengths = np.concatenate([np.diff(p.fwd_ptr) for p in parts])
        ptr = np.zeros(lengths.shape[0] + 1, np.int64)
        np.cumsum(lengths, out=ptr[1:])
        if order is not None:
            order = np.asarray(order, dtype=np.int64)
            new_ptr = np.zeros_like(ptr)
            np.cumsum(lengths[order], out=new_ptr[1:])
            new_terms, new_weights = np.empty_like(terms), np.empty_like(weights)
            kernels.gather_rows(ptr, terms, weights, order, new_ptr, new_terms, new_weights)
            ptr, terms, weights = new_ptr, new_terms, new_weights
        for arr in (ptr, terms, weights):
            arr.flags.writeable = False
        n = lengths.shape[0]
        info = {"format": FORMAT, "format_version": FORMAT_VERSION, "num_docs": n, "vocab_size": parts[0].vocab_size,
                "nnz": int(ptr[-1]), "forward_dtype": "float16" if f16 else "float32", "joined": len(parts)}  # fmt: skip
        return cls({"fwd_ptr": ptr, "fwd_terms": terms, "fwd_weights": weights}, n, parts[0].vocab_size, info).invert()

    def search(self, queries: SparseVectors, k: int = 10, threads: int | None = None, excluded: np.ndarray | None = None, **_ignored) -> Hits:
        """Exact top-``k`` by inner product (documents with a positive score), skipping ``excluded``
        (a uint64 bitset, :func:`~braid.index.sparse.blocked.exclusion_bitset`). Query knobs of the
        blocked index (``query_cut``, ``heap_factor``, ``exact``) do not apply: a flat segment is exact
        (making the joined flat unit approximate with them cost accuracy the blocked part then had to buy
        back: 1.54x the compacted latency at accuracy@10 0.95 against 1.43x exact, docs/live-index.md)."""
        k = check_positive_int("k", k)
        nq = queries.n_rows
        out_docs = np.empty((nq, k), np.int64)
        out_scores = np.empty((nq, k), np.float32)
        if nq == 0:
            return Hits(out_docs, out_scores)
        if queries.nnz and int(queries.indices.max()) >= self.vocab_size:
            raise DataError(f"queries use term id {int(queries.indices.max())} but the index vocabulary has {self.vocab_size} terms")
        if self.inverted is not None:
            use_mask = excluded is not None
            bits = check_exclusion(excluded, self.num_docs) if use_mask else _NO_BITS
            inv_ptr, inv_docs, inv_weights = self.inverted
        if self.inverted is not None and (nq == 1 or threads == 1):
            # one query or one thread: the serial kernel with per-thread scratch (no numba thread-count
            # switch, no parallel launch, no vocabulary-sized allocation per call)
            if threads is not None:
                _check_threads(threads)
            flat_kernels.taat_serial(queries.indptr, queries.indices, queries.data, k, inv_ptr, inv_docs, inv_weights,
                                     self.fwd_ptr, self.fwd_terms, self.fwd_weights, use_mask, bits, *self._taat_scratch(),
                                     out_docs, out_scores)  # fmt: skip
            return Hits(out_docs, out_scores)
        with numba_threads(threads) as n_threads:
            n_chunks = max(1, min(nq, 4 * n_threads))
            if self.inverted is not None:
                flat_kernels.taat_batch(queries.indptr, queries.indices, queries.data, k, inv_ptr, inv_docs, inv_weights, self.fwd_ptr,
                                   self.fwd_terms, self.fwd_weights, self.vocab_size, n_chunks, use_mask, bits, out_docs,
                                   out_scores)  # fmt: skip
            elif excluded is None:
                kernels.scan_batch(queries.indptr, queries.indices, queries.data, k, self.fwd_ptr, self.fwd_terms,
                                   self.fwd_weights, self.vocab_size, n_chunks, out_docs, out_scores)  # fmt: skip
            else:
                excluded = check_exclusion(excluded, self.num_docs)
                kernels.scan_batch_masked(queries.indptr, queries.indices, queries.data, k, self.fwd_ptr, self.fwd_terms,
                                          self.fwd_weights, self.vocab_size, n_chunks, excluded, out_docs, out_scores)  # fmt: skip
        return Hits(out_docs, out_scores)

    def _taat_scratch(self) -> tuple:
        got = getattr(self._scratch, "arrays", None)
        if got is None:
            n = max(self.num_docs, 1)
            got = (np.zeros(n, np.float32), np.zeros(n, np.uint8), np.empty(n, np.int64), np.zeros(self.vocab_size, np.float32))
            self._scratch.arrays = got
        return got

    def forward_vectors(self, docnos: np.ndarray) -> SparseVectors:
        """Rows ``docnos`` with float32 weights (as :meth:`BlockedSparseIndex.forward_vectors`)."""
        docnos = np.asarray(docnos, dtype=np.int64).reshape(-1)
        if docnos.size and (docnos.min() < 0 or docnos.max() >= self.num_docs):
            raise OptionError("docnos", docnos.tolist()[:5], f"document numbers in [0, {self.num_docs})")
        lengths = self.fwd_ptr[docnos + 1] - self.fwd_ptr[docnos]
        indptr = np.zeros(docnos.shape[0] + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        terms = np.empty(int(indptr[-1]), self.fwd_terms.dtype)
        weights = np.empty(int(indptr[-1]), self.fwd_weights.dtype)
        kernels.gather_rows(self.fwd_ptr, self.fwd_terms, self.fwd_weights, docnos, indptr, terms, weights)
        if weights.dtype == np.uint16:
            weights = weights.view(np.float16)
        return SparseVectors(indptr, terms.astype(np.int32), weights.astype(np.float32), self.vocab_size)

    def save(self, directory: str | Path) -> dict:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        info = dict(self.info)
        info["arrays"] = {}
        for name in _ARRAYS:
            arr = getattr(self, name)
            np.save(directory / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
            info["arrays"][name] = {"dtype": arr.dtype.str, "shape": list(arr.shape)}
        return info

    @classmethod
    def load(cls, directory: str | Path, info: dict) -> "FlatSparseIndex":
        directory = Path(directory)
        if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(f"{directory}: not a flat sparse segment of version {FORMAT_VERSION} ({info.get('format') if isinstance(info, dict) else None!r})")
        arrays = {}
        for name in _ARRAYS:
            path = directory / f"{name}.npy"
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except FileNotFoundError:
                raise IndexFormatError(f"{directory}: flat sparse segment array {path.name} is missing") from None
            except Exception as exc:
                raise IndexFormatError(f"{path}: corrupted array ({type(exc).__name__}: {exc})") from None
            want = info.get("arrays", {}).get(name, {})
            if arr.dtype.str != want.get("dtype") or list(arr.shape) != list(want.get("shape", [])):
                raise IndexFormatError(f"{path}: array is {arr.dtype.str} {list(arr.shape)}, the segment info says {want}")
            arr = np.asarray(arr)
            arr.flags.writeable = False
            arrays[name] = arr
        num_docs, vocab_size = int(info["num_docs"]), int(info["vocab_size"])
        p = arrays["fwd_ptr"]
        if p.shape[0] != num_docs + 1 or (num_docs and (p[0] != 0 or p[-1] != arrays["fwd_terms"].shape[0] or kernels.first_decreasing(p) >= 0)):
            raise IndexFormatError(f"{directory}: inconsistent flat sparse segment (fwd_ptr)")
        t = arrays["fwd_terms"]
        if t.size and int(t.max()) >= vocab_size:
            raise IndexFormatError(f"{directory}: inconsistent flat sparse segment (term ids beyond the vocabulary)")
        return cls(arrays, num_docs, vocab_size, info)


def _as_float32(weights: np.ndarray) -> np.ndarray:
    """Forward weights as float32 (float16 bits, uint16, are decoded)."""
    return weights.view(np.float16).astype(np.float32) if weights.dtype == np.uint16 else weights.astype(np.float32, copy=False)
