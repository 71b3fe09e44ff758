"""Sparse vectors in CSR form: the container every sparse index takes, its validation, and the file readers.

:class:`SparseVectors` is the one canonical form (int64 ``indptr``, int32 ``indices`` sorted and unique
per row, float32 ``data`` finite and non-negative). Readers convert once at the boundary and name the
file, line or row of anything they refuse:

* :func:`read_vectors_jsonl`: lines ``{"id": ..., "vector": {token: weight}}`` (the format Seismic and
  Pyserini's ``JsonVectorCollection`` read); tokens map through a vocabulary (a ``token -> id`` dict, or
  :func:`load_vocab` on a ``tokenizer.json`` / ``vocab.txt``) or are integer-like term ids.
* :func:`read_vectors_npz`: a scipy CSR matrix saved with ``scipy.sparse.save_npz``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braid.data import csr_numpy
from braid.data.errors import DataError, check_positive_int
from braid.data.lazy import LazyModule, loaded

kernels = LazyModule("braid.data.csr_kernels", globals(), "kernels")  # numba: imported on first use

_F32_MAX = float(np.finfo(np.float32).max)
_PROBLEMS = {
    csr_numpy.ROW_UNSORTED: "term ids are not strictly increasing (unsorted or duplicate ids)",
    csr_numpy.ROW_BAD_TERM: "term id out of range",
    csr_numpy.ROW_NOT_FINITE: "weight is not finite",
    csr_numpy.ROW_NEGATIVE: "weight is negative",
}


def _checks(size: int):
    """The module of CSR checks for an input of ``size`` entries: numpy while numba is not loaded and the
    input is small (a query, a few documents), else the numba kernels."""
    if size <= csr_numpy.SMALL and not loaded("braid.data.csr_kernels"):
        return csr_numpy
    return kernels


@dataclass(frozen=True)
class SparseVectors:
    """A batch of sparse vectors (documents or queries) in CSR layout.

    ``indptr``: int64 (n_rows + 1,), row ``i`` is ``indptr[i]:indptr[i + 1]``;
    ``indices``: int32 (nnz,), term ids in ``[0, vocab_size)``, strictly increasing within a row;
    ``data``: float32 (nnz,), finite weights ``>= 0``; ``vocab_size``: the dimension.

    Construction converts dtypes (without copying arrays that already have them) and checks the
    structure; :meth:`validate` checks the content (order, range, finiteness, sign).
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    vocab_size: int

    def __post_init__(self) -> None:
        indptr = np.asarray(self.indptr)
        indices = np.asarray(self.indices)
        data = np.asarray(self.data)
        for name, arr, kinds in (("indptr", indptr, "iu"), ("indices", indices, "iu"), ("data", data, "fiu")):
            if arr.ndim != 1:
                raise DataError(f"SparseVectors.{name} must be 1-d, got shape {arr.shape}")
            if arr.dtype.kind not in kinds:
                raise DataError(f"SparseVectors.{name} has dtype {arr.dtype}, expected a numeric type")
        if indptr.shape[0] < 1:
            raise DataError("SparseVectors.indptr must have at least one entry (n_rows + 1)")
        if indices.shape != data.shape:
            raise DataError(f"SparseVectors.indices {indices.shape} and data {data.shape} differ in length")
        vocab_size = int(self.vocab_size)
        if vocab_size < 1 or vocab_size > np.iinfo(np.int32).max:
            raise DataError(f"vocab_size must be in [1, 2**31 - 1], got {self.vocab_size!r}")
        indptr = indptr.astype(np.int64, copy=False)
        if indptr[0] != 0 or indptr[-1] != indices.shape[0]:
            raise DataError(
                f"SparseVectors.indptr must start at 0 and end at nnz={indices.shape[0]}, "
                f"got {int(indptr[0])} .. {int(indptr[-1])}"
            )
        bad = _checks(indptr.shape[0]).first_decreasing(indptr)
        if bad >= 0:
            raise DataError(f"SparseVectors.indptr decreases at row {bad}")
        if indices.dtype != np.int32:
            if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= vocab_size):
                row = _row_of(indptr, int(np.flatnonzero((indices < 0) | (indices >= vocab_size))[0]))
                raise DataError(f"row {row}: term id out of range [0, {vocab_size})")
            indices = indices.astype(np.int32)
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "data", data.astype(np.float32, copy=False))
        object.__setattr__(self, "vocab_size", vocab_size)

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Term ids (int32) and weights (float32) of row ``i`` (views, not copies)."""
        if not -self.n_rows <= i < self.n_rows:
            raise IndexError(f"row {i} out of range for {self.n_rows} rows")
        i = i % self.n_rows
        start, end = self.indptr[i], self.indptr[i + 1]
        return self.indices[start:end], self.data[start:end]

    def validate(self, what: str = "vectors") -> None:
        """Raise :class:`DataError` naming the first bad row: unsorted/duplicate or out-of-range term
        ids, non-finite or negative weights."""
        code, row, pos = self.first_problem()
        if code == csr_numpy.ROW_OK:
            return
        detail = ""
        if code == csr_numpy.ROW_UNSORTED:
            detail = f" (term {int(self.indices[pos - 1])} then {int(self.indices[pos])})"
        elif code == csr_numpy.ROW_BAD_TERM:
            detail = f" ({int(self.indices[pos])} not in [0, {self.vocab_size}))"
        else:
            detail = f" (term {int(self.indices[pos])} has weight {float(self.data[pos])!r})"
        raise DataError(f"{what}: row {row}: {_PROBLEMS[code]}{detail}")

    def first_problem(self) -> tuple[int, int, int]:
        """``(code, row, position)`` of the first bad entry (codes: :mod:`braid.data.csr_numpy`), or
        ``(ROW_OK, -1, -1)``: what :meth:`validate` reports, without raising."""
        return _checks(self.nnz).check_rows(self.indptr, self.indices, self.data, self.vocab_size)

    def sorted_rows(self) -> "SparseVectors":
        """A copy with each row's terms sorted by id (duplicates are kept: :meth:`validate` refuses them)."""
        indices = self.indices.copy()
        data = self.data.copy()
        kernels.sort_rows(self.indptr, indices, data)
        return SparseVectors(self.indptr, indices, data, self.vocab_size)

    def take(self, rows: np.ndarray) -> "SparseVectors":
        """The rows ``rows`` (int array) as a new batch, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise IndexError(f"row ids must be in [0, {self.n_rows})")
        lengths = self.indptr[rows + 1] - self.indptr[rows]
        indptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.empty(int(indptr[-1]), dtype=np.int32)
        data = np.empty(int(indptr[-1]), dtype=np.float32)
        kernels.gather_rows(self.indptr, self.indices, self.data, rows, indptr, indices, data)
        return SparseVectors(indptr, indices, data, self.vocab_size)

    @classmethod
    def from_scipy(cls, m, vocab_size: int | None = None) -> "SparseVectors":
        """From a scipy sparse matrix or array (rows = vectors). Rows are sorted by term id if needed;
        duplicate entries are refused by :meth:`validate`, not summed. Shares memory where dtypes allow."""
        import scipy.sparse as sp

        if not sp.issparse(m):
            raise DataError(f"expected a scipy sparse matrix, got {type(m).__name__}")
        if m.format != "csr":
            m = m.tocsr()
        n_cols = int(m.shape[1])
        if vocab_size is None:
            vocab_size = n_cols
        elif vocab_size < n_cols and m.nnz and int(m.indices.max()) >= vocab_size:
            raise DataError(f"matrix has term ids up to {int(m.indices.max())} but vocab_size is {vocab_size}")
        out = cls(m.indptr, m.indices, m.data, int(vocab_size))
        if not m.has_sorted_indices:
            out = out.sorted_rows()
        return out

    def to_scipy(self):
        """A ``scipy.sparse.csr_matrix`` of shape (n_rows, vocab_size) sharing these arrays."""
        import scipy.sparse as sp

        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=(self.n_rows, self.vocab_size), copy=False)

    @classmethod
    def from_dicts(cls, rows: list[dict[int, float]], vocab_size: int) -> "SparseVectors":
        """From one ``{term_id: weight}`` dict per row (convenience for tests and small inputs)."""
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        indices: list[int] = []
        data: list[float] = []
        for i, row in enumerate(rows):
            for term in sorted(row):
                indices.append(int(term))
                data.append(float(row[term]))
            indptr[i + 1] = len(indices)
        out = cls(indptr, np.asarray(indices, dtype=np.int64), np.asarray(data, dtype=np.float32), vocab_size)
        out.validate("from_dicts")
        return out

    @classmethod
    def from_rows(cls, rows, vocab_size: int) -> "SparseVectors":
        """A batch from per-row ``(indices, weights)`` pairs (each row already sorted and unique)."""
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(r[0]) for r in rows])
        indices = np.concatenate([r[0] for r in rows]).astype(np.int32) if rows else np.empty(0, np.int32)
        data = np.concatenate([r[1] for r in rows]).astype(np.float32) if rows else np.empty(0, np.float32)
        return cls(indptr, indices, data, vocab_size)

    @classmethod
    def concat(cls, parts: list["SparseVectors"], vocab_size: int) -> "SparseVectors":
        """The rows of several batches, one after the other."""
        if not parts:
            return cls.empty(0, vocab_size)
        lengths = np.concatenate([np.diff(np.asarray(p.indptr, dtype=np.int64)) for p in parts])
        indptr = np.zeros(lengths.shape[0] + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.concatenate([np.asarray(p.indices[p.indptr[0] : p.indptr[-1]], dtype=np.int32) for p in parts])
        data = np.concatenate([np.asarray(p.data[p.indptr[0] : p.indptr[-1]], dtype=np.float32) for p in parts])
        return cls(indptr, indices, data, int(vocab_size))

    @classmethod
    def empty(cls, n_rows: int, vocab_size: int) -> "SparseVectors":
        return cls(np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), vocab_size)


def _row_of(indptr: np.ndarray, pos: int) -> int:
    return int(np.searchsorted(indptr, pos, side="right") - 1)


def load_vocab(path: str | Path) -> dict[str, int]:
    """A ``token -> id`` dict from a Hugging Face ``tokenizer.json`` (its ``model.vocab``) or a
    ``vocab.txt`` (one token per line, id = line number - 1)."""
    path = Path(path)
    if not path.exists():
        raise DataError("no such vocabulary file", path=path)
    from braid.data.corpus import JSONProblem, decode_line, iter_raw_lines, parse_json

    if path.suffix == ".json":
        try:
            obj = parse_json(decode_line(path.read_bytes(), path, 1))
        except JSONProblem as exc:
            raise DataError(str(exc), path=path) from None
        model = obj.get("model") if isinstance(obj, dict) else None
        vocab = model.get("vocab") if isinstance(model, dict) else None
        if isinstance(vocab, list):  # unigram models store [token, score] pairs
            if not all(isinstance(entry, list) and entry and isinstance(entry[0], str) for entry in vocab):
                raise DataError("model.vocab is a list whose entries are not [token, score] pairs", path=path)
            vocab = {entry[0]: i for i, entry in enumerate(vocab)}
        if not isinstance(vocab, dict) or not vocab:
            raise DataError("tokenizer.json has no model.vocab mapping", path=path)
        bad = [v for v in vocab.values() if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**31 - 1]
        if bad or len(set(vocab.values())) != len(vocab):
            found = _short(bad[0]) if bad else "a repeated id"
            raise DataError(f"model.vocab ids must be distinct integers in [0, 2**31 - 1) (found {found})", path=path)
        return dict(vocab)
    vocab = {}
    for line_no, raw in iter_raw_lines(path):
        token = decode_line(raw, path, line_no).rstrip("\r\n")
        if token in vocab:
            raise DataError(f"token {token!r} appears twice", path=path, line=line_no)
        vocab[token] = line_no - 1
    if not vocab:
        raise DataError("empty vocabulary", path=path)
    return vocab


def read_vectors_jsonl(
    path: str | Path,
    vocab: dict[str, int] | str | Path | None = None,
    vocab_size: int | None = None,
) -> tuple[list[str], SparseVectors]:
    """Read ``{"id": ..., "vector": {token: weight}}`` lines (``.jsonl`` or ``.jsonl.gz``).

    ``vocab``: ``token -> id`` (or a path for :func:`load_vocab`); without one, tokens must be
    integer-like term ids. ``vocab_size`` defaults to the vocabulary's size (max id + 1), or without a
    vocabulary to the largest term id + 1. Rows are sorted by term id. Returns (ids, vectors);
    every error names the file and line.
    """
    path = Path(path)
    if isinstance(vocab, (str, Path)):
        vocab = load_vocab(vocab)
    check_positive_int("vocab_size", vocab_size, allow_none=True)
    if vocab is not None and vocab_size is None:
        vocab_size = max(vocab.values()) + 1 if vocab else 1
    from braid.data.corpus import _as_id, _parse_json_line, decode_line, iter_raw_lines

    if not path.exists():
        raise DataError("no such file", path=path)
    ids: list[str] = []
    seen: set[str] = set()
    indptr = [0]
    terms: list[int] = []
    weights: list[float] = []
    # one reader of lines for every format: a BOM, gzip errors, invalid UTF-8 and JSON failures name the line
    for lineno, raw in iter_raw_lines(path):
        line = decode_line(raw, path, lineno)
        if not line.strip():
            continue
        obj = _parse_json_line(line, path, lineno)
        if "id" not in obj:
            raise DataError('missing "id"', path=path, line=lineno)
        doc_id = _as_id(obj["id"], "id", path, lineno)
        if doc_id in seen:
            raise DataError(f"duplicate id {doc_id!r}", path=path, line=lineno)
        seen.add(doc_id)
        vector = obj.get("vector")
        if not isinstance(vector, dict):
            raise DataError('missing or non-object "vector" (expected {token: weight})', path=path, line=lineno)
        row: dict[int, float] = {}
        for token, weight in vector.items():
            term = _term_id(token, vocab, path, lineno)
            if vocab_size is not None and term >= vocab_size:
                raise DataError(f"term id {term} (token {token!r}) >= vocab_size {vocab_size}", path=path, line=lineno)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise DataError(f"weight of {token!r} is not a number: {_short(weight)}", path=path, line=lineno)
            if isinstance(weight, int) and abs(weight) > _F32_MAX:  # math.isfinite(10**400) raises OverflowError
                raise DataError(f"weight of {token!r} overflows float32: {_short(weight)}", path=path, line=lineno)
            if not math.isfinite(weight):
                raise DataError(f"weight of {token!r} is not finite: {weight!r}", path=path, line=lineno)
            if weight < 0:
                raise DataError(f"weight of {token!r} is negative: {weight!r}", path=path, line=lineno)
            if weight > _F32_MAX:
                raise DataError(f"weight of {token!r} overflows float32: {weight!r}", path=path, line=lineno)
            if term in row:
                raise DataError(f"token {token!r} maps to term id {term}, which the line already has", path=path, line=lineno)
            row[term] = float(weight)
        for term in sorted(row):
            terms.append(term)
            weights.append(row[term])
        indptr.append(len(terms))
        ids.append(doc_id)
    if vocab_size is None:
        vocab_size = max(terms) + 1 if terms else 1
    vectors = SparseVectors(
        np.asarray(indptr, dtype=np.int64),
        np.asarray(terms, dtype=np.int64),
        np.asarray(weights, dtype=np.float32),
        vocab_size,
    )
    return ids, vectors


def _term_id(token: str, vocab: dict[str, int] | None, path: Path, lineno: int) -> int:
    if vocab is not None:
        term = vocab.get(token)
        if term is None:
            raise DataError(f"token {token!r} is not in the vocabulary", path=path, line=lineno)
        return int(term)
    try:
        term = int(token)
    except ValueError:
        raise DataError(
            f"token {token!r} is not an integer term id and no vocabulary was given", path=path, line=lineno
        ) from None
    if term < 0:
        raise DataError(f"negative term id {term}", path=path, line=lineno)
    if term >= 2**31 - 1:  # term ids are int32 in every index (and vocab_size is at most 2**31 - 1)
        raise DataError(f"term id {_short(term)} is beyond the largest vocabulary (2**31 - 1)", path=path, line=lineno)
    return term


def _short(value: object) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
    return text if len(text) <= 60 else text[:57] + "..."


def read_vectors_npz(path: str | Path, vocab_size: int | None = None) -> SparseVectors:
    """Read a matrix saved with ``scipy.sparse.save_npz`` (rows = vectors; CSR, or converted to it).

    ``vocab_size`` defaults to the matrix's column count. Rows are sorted by term id; duplicate
    entries, out-of-range ids and bad weights are refused with the row named.
    """
    import scipy.sparse as sp

    path = Path(path)
    if not path.exists():
        raise DataError("no such file", path=path)
    try:
        m = sp.load_npz(path)
    except Exception as exc:  # scipy raises ValueError/OSError/KeyError/zipfile errors for foreign files
        raise DataError(f"not a scipy sparse .npz ({type(exc).__name__}: {exc})", path=path) from None
    if m.ndim != 2:
        raise DataError(f"expected a 2-d matrix, got shape {m.shape}", path=path)
    if m.dtype.kind not in "fiu":
        raise DataError(f"expected numeric weights, got dtype {m.dtype}", path=path)
    try:
        vectors = SparseVectors.from_scipy(m, vocab_size=vocab_size)
        vectors.validate("vectors")
    except DataError as exc:
        raise DataError(str(exc), path=path) from None
    return vectors
