"""The learned sparse encoder: any masked-LM model with SPLADE pooling, plus an inference-free query mode.

Documents (and, in ``query_mode="model"``, queries) go through the model: SPLADE max pooling
(Formal et al., "SPLADE v2", 2021: ``w_j = max_i log(1 + relu(logit_ij))`` over the non-padding
positions ``i``). log1p and relu are monotone, so the max is taken over the raw logits first and
activated once per (text, term): same result, about half the cost.

Inference-free queries (``query_mode="idf"``; OpenSearch's doc-only mode, Geng et al. 2024) are the
query's tokenizer ids, special tokens dropped, each id once, weighted by an IDF table: the model's
``idf.json`` (token -> weight; tokens absent from it weigh 0) when its folder has one, else a table
computed over the indexed corpus with :func:`compute_idf`, kept as float32 ``.npy`` + json metadata.

Output is :class:`braid.data.vectors.SparseVectors` (CSR, term id = tokenizer id).

The model runs on torch or ONNX Runtime (:mod:`braid.encoders.base`); :class:`SpladeHead` is the
pooling both run. Inference-free queries need only the tokenizer (the ``tokenizers`` library),
the model's ``config.json`` and the IDF table: neither torch nor onnxruntime is imported.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from braid.data.errors import BraidError, DataError, OptionError, check_finite, check_positive_int
from braid.encoders.base import RuntimeOptions, TransformerBackbone, check_texts
from braid.encoders.resolve import DEFAULT_SPARSE_MODEL

QUERY_MODES = ("model", "idf")
KINDS = ("document", "query")
IDF_FORMAT = "braid-idf"
IDF_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SparseEncoderConfig:
    """What determines a sparse vector (recorded next to cached vectors and in the index manifest).

    ``top_k`` / ``query_top_k``: keep at most this many terms per document / query vector (the
    largest weights; ties to the smaller term id); None keeps all. ``quantization_step``: round
    weights to multiples of this step (terms that round to 0 are dropped), None leaves float32;
    with step ``s``, ``round(w / s)`` is the exact integer code (e.g. u8 storage with scale ``s``).
    ``query_mode``: ``"model"`` (SPLADE queries) or ``"idf"`` (inference-free).
    ``precision`` is listed because bf16/fp16 change the weights slightly.
    """

    model: str = DEFAULT_SPARSE_MODEL
    max_length: int = 256
    top_k: int | None = None
    query_top_k: int | None = None
    quantization_step: float | None = None
    query_mode: str = "model"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name in ("top_k", "query_top_k"):
            check_positive_int(name, getattr(self, name), allow_none=True)
        check_finite("quantization_step", self.quantization_step, low=0, low_open=True, allow_none=True)
        if self.query_mode not in QUERY_MODES:
            raise OptionError("query_mode", self.query_mode, f"one of {', '.join(QUERY_MODES)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SparseEncoderConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise OptionError("sparse encoder config", sorted(unknown), f"known keys: {', '.join(sorted(known))}")
        return cls(**d)


# --------------------------------------------------------------------------------------------
# Array helpers (pure numpy, no model)
# --------------------------------------------------------------------------------------------
def prune_top_k(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the ``k`` largest weights of each CSR row (ties: smaller term id first); rows stay sorted by term id.

    ``indptr`` int64 (n+1,), ``indices`` int32 (nnz,), ``data`` float32 (nnz,) -> the same, pruned.
    """
    counts = np.diff(indptr)
    if len(counts) == 0 or counts.max(initial=0) <= k:
        return indptr, indices, data
    keep = np.ones(len(indices), dtype=bool)
    for row in np.flatnonzero(counts > k):
        lo, hi = int(indptr[row]), int(indptr[row + 1])
        order = np.lexsort((indices[lo:hi], -data[lo:hi]))
        keep[lo + order[k:]] = False
    return _compact(indptr, indices, data, keep)


def quantize_weights(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round ``data`` to multiples of ``step`` (float32) and drop the entries that become 0."""
    q = (np.round(data.astype(np.float64) / step) * step).astype(np.float32)
    keep = q > 0
    return _compact(indptr, indices, q, keep)


def quantize_u8(data: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Weights -> (uint8 codes, scale) with ``weight ~= code * scale``; default scale = max / 255.

    Weights above ``255 * scale`` saturate at 255. ``data``: float32 (nnz,) >= 0.
    """
    data = np.asarray(data, dtype=np.float32)
    if scale is None:
        top = float(data.max(initial=0.0))
        scale = top / 255.0 if top > 0 else 1.0
    check_finite("scale", scale, low=0, low_open=True)
    codes = np.clip(np.round(data / scale), 0, 255).astype(np.uint8)
    return codes, float(scale)


def dequantize_u8(codes: np.ndarray, scale: float) -> np.ndarray:
    """uint8 codes -> float32 weights (``codes * scale``)."""
    return codes.astype(np.float32) * np.float32(scale)


def _compact(indptr, indices, data, keep):
    n = len(indptr) - 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    counts = np.bincount(rows[keep], minlength=n)
    new_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=new_ptr[1:])
    return new_ptr, indices[keep], data[keep]


def make_sparse_vectors(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, vocab_size: int) -> Any:
    """Build :class:`braid.data.vectors.SparseVectors` from CSR arrays (canonical dtypes)."""
    from braid.data.vectors import SparseVectors

    return SparseVectors(
        np.ascontiguousarray(indptr, dtype=np.int64),
        np.ascontiguousarray(indices, dtype=np.int32),
        np.ascontiguousarray(data, dtype=np.float32),
        int(vocab_size),
    )


def _rows_to_csr(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    if len(rows) == 1:  # one query: skip the list -> array conversions (a third of the per-query cost)
        indptr[1] = len(rows[0][0])
        return indptr, rows[0][0].astype(np.int32), rows[0][1].astype(np.float32)
    np.cumsum(np.fromiter((len(r[0]) for r in rows), dtype=np.int64, count=len(rows)), out=indptr[1:])
    if rows:
        indices = np.concatenate([r[0] for r in rows]).astype(np.int32, copy=False)
        data = np.concatenate([r[1] for r in rows]).astype(np.float32, copy=False)
    else:
        indices = np.zeros(0, np.int32)
        data = np.zeros(0, np.float32)
    return indptr, indices, data


# --------------------------------------------------------------------------------------------
# IDF tables for inference-free queries
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IdfTable:
    """Query term weights for inference-free queries.

    ``weights``: float32 (vocab_size,), indexed by tokenizer id (special tokens weigh 0).
    ``num_docs``: documents counted (0 for a table read from ``idf.json``). ``source``: where it
    came from (``"idf.json"``, ``"corpus"``). ``model``: the model whose tokenizer numbers the ids.
    """

    weights: np.ndarray
    num_docs: int
    source: str
    model: str

    def save(self, path: str | Path) -> None:
        """Write ``PATH`` (float32 .npy) and ``PATH`` with suffix ``.json`` (metadata), each atomically."""
        path = Path(path)
        if path.suffix != ".npy":
            raise OptionError("path", str(path), "an IDF table is saved as a .npy file")
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda fh: np.save(fh, np.asarray(self.weights, dtype=np.float32), allow_pickle=False))
        meta = {
            "format": IDF_FORMAT,
            "format_version": IDF_FORMAT_VERSION,
            "vocab_size": int(len(self.weights)),
            "num_docs": int(self.num_docs),
            "source": self.source,
            "model": self.model,
            "formula": "log(1 + (N - df + 0.5) / (df + 0.5))" if self.source == "corpus" else None,
        }
        _atomic_write(path.with_suffix(".json"), lambda fh: fh.write(json.dumps(meta, indent=2).encode()))

    @staticmethod
    def load(path: str | Path) -> "IdfTable":
        """Read a table written by :meth:`save`; DataError if missing, foreign or inconsistent."""
        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise DataError(f"IDF table not found (need {path.name} and {meta_path.name})", path)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"corrupted IDF metadata ({exc})", meta_path) from None
        if not isinstance(meta, dict) or meta.get("format") != IDF_FORMAT:
            raise DataError(f"not a braid IDF table (format {meta.get('format') if isinstance(meta, dict) else None!r})", meta_path)
        if meta.get("format_version") != IDF_FORMAT_VERSION:
            raise DataError(f"unsupported IDF table version {meta.get('format_version')!r} (supported: {IDF_FORMAT_VERSION})", meta_path)
        try:
            weights = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"unreadable IDF array ({exc})", path) from None
        if weights.dtype != np.float32 or weights.ndim != 1 or len(weights) != meta.get("vocab_size"):
            raise DataError(
                f"IDF array has dtype {weights.dtype} shape {weights.shape}; metadata says float32 ({meta.get('vocab_size')},)",
                path,
            )
        return IdfTable(weights, int(meta.get("num_docs", 0)), str(meta.get("source")), str(meta.get("model")))


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def idf_from_json(path: str | Path, tokenizer: Any, vocab_size: int, model: str = "") -> IdfTable:
    """Read an OpenSearch-style ``idf.json`` (token string -> weight) into a table over tokenizer ids.

    Tokens absent from the file weigh 0 (as in sentence-transformers' SparseStaticEmbedding);
    tokens unknown to the tokenizer are ignored.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read idf.json ({exc})", path) from None
    if not isinstance(raw, dict):
        raise DataError("idf.json must be a JSON object mapping tokens to weights", path)
    vocab = tokenizer.get_vocab()
    weights = np.zeros(vocab_size, dtype=np.float32)
    for token, w in raw.items():
        tid = vocab.get(token)
        if tid is None or tid >= vocab_size:
            continue
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise DataError(f"weight of token {token!r} must be a finite number >= 0, got {w!r}", path)
        weights[tid] = w
    return IdfTable(weights, 0, "idf.json", model)


def compute_idf(
    texts: Iterable[str],
    model: "str | SparseEncoder",
    *,
    max_length: int | None = None,
    batch_size: int = 1024,
) -> IdfTable:
    """IDF over a corpus with the model's tokenizer: ``idf(t) = log(1 + (N - df + 0.5) / (df + 0.5))``.

    (Robertson-Sparck Jones IDF as in Lucene's BM25.) ``df`` counts the texts that contain token
    ``t`` (special tokens excluded, which weigh 0); ``max_length`` truncates each text to that many
    tokens (None: whole texts). Streams ``texts`` in batches of ``batch_size``.
    Returns an :class:`IdfTable`, float32 (vocab_size,).
    """
    encoder = model if isinstance(model, SparseEncoder) else SparseEncoder(model)
    vocab_size = encoder.vocab_size
    df = np.zeros(vocab_size, dtype=np.int64)
    n = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal n
        for ids in encoder._token_ids(batch, max_length):
            df[np.unique(ids)] += 1
        n += len(batch)
        batch.clear()

    if isinstance(texts, (str, bytes)):
        raise OptionError("texts", "a single string", "an iterable of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise OptionError(f"texts[{i}]", type(text).__name__, "every text must be a str")
        batch.append(text)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
    idf[encoder._special_ids] = 0.0
    return IdfTable(idf, n, "corpus", encoder.config.model)


# --------------------------------------------------------------------------------------------
# sentence-transformers' inference-free layout (a Router)
# --------------------------------------------------------------------------------------------
ROUTER_CONFIG = "router_config.json"
_MLM_TYPES = ("MLMTransformer", "Transformer")


@dataclass(frozen=True)
class RouterLayout:
    """An inference-free sentence-transformers SparseEncoder folder, as Braid reads it.

    ``document_dir``: the folder of the document route's masked-LM transformer (config.json,
    weights, tokenizer); its SPLADE pooling is max over tokens of log1p(relu(logit)), Braid's own.
    ``query_weights``: the query route's SparseStaticEmbedding weights (``model.safetensors``,
    tensor ``weight`` of shape (vocab_size,)), None when the query route is not a static table.
    """

    root: Path
    document_dir: Path
    query_weights: Path | None

    def idf_table(self, vocab_size: int, model: str) -> IdfTable:
        """The query route's token weights as an :class:`IdfTable` (special tokens weigh 0 at encoding)."""
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(self.query_weights))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem to the user
            raise DataError(f"cannot read the static query weights ({exc})", self.query_weights) from None
        weights = tensors.get("weight")
        if weights is None or weights.ndim != 1 or len(weights) != vocab_size:
            raise DataError(f"expected a tensor 'weight' of shape ({vocab_size},), got {None if weights is None else weights.shape}", self.query_weights)
        weights = np.asarray(weights, dtype=np.float32)
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise DataError("static query weights must be finite and >= 0", self.query_weights)
        return IdfTable(weights, 0, "router-static-embedding", model)


def read_router_layout(model: str | os.PathLike) -> RouterLayout | None:
    """The :class:`RouterLayout` of a local folder saved by sentence-transformers with a Router, else None.

    A folder with ``router_config.json`` must route documents through an MLM transformer and
    ``SpladePooling(max, relu)`` (what :class:`SpladeHead` computes); anything else is a BraidError
    naming what Braid cannot run. Hub ids and plain Hugging Face folders give None.
    """
    try:
        root = Path(os.fspath(model)).expanduser()
    except TypeError:
        return None
    cfg_path = root / ROUTER_CONFIG
    if not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        types, structure = dict(cfg["types"]), dict(cfg["structure"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"unreadable sentence-transformers router config ({exc})", cfg_path) from None
    document = list(structure.get("document") or [])
    kinds = [str(types.get(name, "")).rsplit(".", 1)[-1] for name in document]
    if len(document) != 2 or kinds[0] not in _MLM_TYPES or kinds[1] != "SpladePooling":
        raise BraidError(f"model={str(model)!r}: its document route is {kinds}; Braid runs an MLM transformer + SpladePooling")
    pooling = json.loads((root / document[1] / "config.json").read_text(encoding="utf-8")) if (root / document[1] / "config.json").is_file() else {}
    if pooling.get("pooling_strategy", "max") != "max" or pooling.get("activation_function", "relu") != "relu":
        raise BraidError(f"model={str(model)!r}: SpladePooling {pooling}; Braid's SPLADE head is max pooling of log1p(relu)")
    query = list(structure.get("query") or [])
    weights = None
    if len(query) == 1 and str(types.get(query[0], "")).endswith("SparseStaticEmbedding"):
        path = root / query[0] / "model.safetensors"
        weights = path if path.is_file() else None
    return RouterLayout(root, root / document[0], weights)


# --------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------
class SparseEncoder:
    """SPLADE documents and queries, or inference-free queries, from one masked-LM model.

    ``model``: folder or hub id (see :mod:`braid.encoders.resolve`). ``idf``: for
    ``query_mode="idf"``, an :class:`IdfTable` or the path of a saved one; by default the model
    folder's ``idf.json``. Runtime options (``batch_size``, ``device``, ``threads``, ``runtime``)
    change speed, not results (beyond float rounding); ``precision="int8"`` (ONNX) changes the
    weights slightly and is recorded in the config. The model is loaded on first use;
    inference-free queries never load it. Safe to call from several threads.
    """

    def __init__(
        self,
        model: str = DEFAULT_SPARSE_MODEL,
        *,
        max_length: int = 256,
        batch_size: int = 32,
        device: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
        top_k: int | None = None,
        query_top_k: int | None = None,
        quantization_step: float | None = None,
        query_mode: str = "model",
        idf: "IdfTable | str | Path | None" = None,
        runtime: str = "auto",
    ):
        self.options = RuntimeOptions(max_length, batch_size, device, precision, threads, runtime)
        self.config = SparseEncoderConfig(
            str(model), max_length, top_k, query_top_k, quantization_step, query_mode, precision
        )
        # An inference-free sentence-transformers folder (a Router: documents through an MLM
        # transformer + SPLADE pooling, queries through a static token-weight table) runs its
        # document route here, and its query table is the IDF table (see read_router_layout).
        self.router = read_router_layout(model)
        self.backbone = TransformerBackbone(str(self.router.document_dir) if self.router else str(model), self.options, SpladeHead())
        self._idf: IdfTable | None = None
        self._vocab_size: int | None = None
        self._special: np.ndarray | None = None
        self._special_bool: np.ndarray | None = None
        if idf is not None:
            self.set_idf(idf)

    # -- vocabulary ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.model

    @property
    def vocab_size(self) -> int:
        """Dimension of the vectors: the model's vocabulary size (``config.vocab_size``)."""
        if self._vocab_size is None:
            size = self.backbone.config.get("vocab_size")
            if not isinstance(size, int) or size <= 0:
                raise BraidError(f"model={self.name!r}: its config has no vocab_size; not a masked-LM model")
            self._vocab_size = size
        return self._vocab_size

    @property
    def vocabulary(self) -> list[str]:
        """Token string of each term id, ``vocabulary[term_id]`` (length vocab_size; unused ids ``"[unused:N]"``)."""
        tok = self.backbone.tokenizer
        inv = {i: t for t, i in tok.get_vocab().items()}
        return [inv.get(i, f"[unused:{i}]") for i in range(self.vocab_size)]

    @property
    def _special_ids(self) -> np.ndarray:
        if self._special is None:
            tok = self.backbone.tokenizer
            ids = [i for i in tok.special_ids if 0 <= i < self.vocab_size]
            self._special = np.asarray(sorted(set(ids)), dtype=np.int64)
        return self._special

    def _token_ids(self, texts: Sequence[str], max_length: int | None) -> list[np.ndarray]:
        """Tokenizer ids of each text without special tokens (truncated to ``max_length`` ids)."""
        out = self.backbone.tokenizer.token_ids(texts, max_length)
        is_special, top = self._special_mask, self.vocab_size
        return [ids[~is_special[np.minimum(ids, top)]] if len(ids) else ids for ids in out]

    @property
    def _special_mask(self) -> np.ndarray:
        """bool (vocab_size,): True at special token ids (ids beyond the vocabulary count as special)."""
        if self._special_bool is None:
            mask = np.zeros(self.vocab_size + 1, dtype=bool)
            mask[self._special_ids] = True
            mask[self.vocab_size] = True  # ids past the model's vocabulary (added tokens) are dropped
            self._special_bool = mask
        return self._special_bool

    # -- IDF -------------------------------------------------------------------------------------
    def set_idf(self, idf: "IdfTable | str | Path") -> None:
        table = idf if isinstance(idf, IdfTable) else IdfTable.load(idf)
        if len(table.weights) != self.vocab_size:
            raise OptionError("idf", f"table of {len(table.weights)} weights", f"the model's vocabulary has {self.vocab_size} ids")
        self._idf = table

    @property
    def idf(self) -> IdfTable:
        """The IDF table of inference-free queries (model's idf.json unless one was set)."""
        if self._idf is None and self.router is not None and self.router.query_weights is not None:
            self._idf = self.router.idf_table(self.vocab_size, self.name)
        if self._idf is None:
            path = self.model_idf_file()
            if path is None:
                raise BraidError(
                    f"query_mode='idf' needs an IDF table: model {self.name!r} has no idf.json; compute one over "
                    "the corpus with braid.encoders.sparse.compute_idf(texts, encoder) and pass it as idf=..."
                )
            self._idf = idf_from_json(path, self.backbone.tokenizer, self.vocab_size, self.name)
        return self._idf

    def model_idf_file(self) -> Path | None:
        """The query-weight file the model ships (a Router's static query weights, else ``idf.json``), or None."""
        if self.router is not None and self.router.query_weights is not None:
            return self.router.query_weights
        return self.backbone.ref.file("idf.json")

    # -- encoding ----------------------------------------------------------------------------------
    def describe(self, kind: str = "document") -> dict:
        """What determines the vectors of ``kind`` (for caches and manifests): encoder type, config, mode."""
        self._check_kind(kind)
        d = {
            "encoder": "sparse",
            "pooling": "splade-max-log1p-relu",
            "kind": kind,
            "vocab_size": self.vocab_size,
            **self.config.to_dict(),
        }
        if kind == "query" and self.config.query_mode == "idf":
            d["pooling"] = "inference-free-idf"
            d["idf_source"] = self.idf.source
            d["idf_num_docs"] = self.idf.num_docs
        return d

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise OptionError("kind", kind, f"one of {', '.join(KINDS)}")

    def encode(self, texts: Sequence[str], kind: str = "document") -> Any:
        """Encode texts as ``kind`` (``"document"`` or ``"query"``) -> SparseVectors (n rows, vocab_size).

        Rows are in input order; indices int32 sorted per row; data float32 > 0.
        """
        return make_sparse_vectors(*self.encode_csr(texts, kind), self.vocab_size)

    def encode_csr(
        self, texts: Sequence[str], kind: str = "document", on_batch: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`encode` but returns the CSR arrays ``(indptr int64, indices int32, data float32)``.

        ``on_batch(n)``: called after each model batch of ``n`` texts (progress; the ``n`` add up to
        ``len(texts)``; inference-free queries run no model and report nothing)."""
        self._check_kind(kind)
        texts = check_texts(texts)
        if kind == "query" and self.config.query_mode == "idf":
            indptr, indices, data = self._encode_idf(texts)
            top_k = self.config.query_top_k
        else:
            indptr, indices, data = self._encode_model(texts, kind, on_batch)
            top_k = self.config.top_k if kind == "document" else self.config.query_top_k
        if top_k is not None:
            indptr, indices, data = prune_top_k(indptr, indices, data, top_k)
        if self.config.quantization_step is not None:
            indptr, indices, data = quantize_weights(indptr, indices, data, float(self.config.quantization_step))
        return indptr, indices.astype(np.int32, copy=False), data.astype(np.float32, copy=False)

    def encode_documents(self, texts: Sequence[str]) -> Any:
        return self.encode(texts, "document")

    def encode_queries(self, texts: Sequence[str]) -> Any:
        return self.encode(texts, "query")

    def _encode_idf(self, texts: list[str]):
        weights = self.idf.weights
        rows = []
        for ids in self._token_ids(texts, self.options.max_length):
            ids = np.sort(ids)  # np.unique without its import of numpy.ma (~25 ms of a cold query)
            if ids.shape[0] > 1:
                ids = ids[np.concatenate(([True], ids[1:] != ids[:-1]))]
            w = weights[ids]
            keep = w > 0
            rows.append((ids[keep], w[keep]))
        return _rows_to_csr(rows)

    def _encode_model(self, texts: list[str], kind: str, on_batch: Callable[[int], None] | None = None):
        vocab_size = self.vocab_size
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        rows: list = [empty] * len(texts)
        for positions, (r, c, vals) in self.backbone.run_batches(texts, kind, on_batch, nonzero=True):
            if c.size and int(c.max()) >= vocab_size:
                raise BraidError(f"model={self.name!r} returns more logits per token than its config's vocab_size {vocab_size}")
            bounds = np.searchsorted(r, np.arange(len(positions) + 1))
            for j, p in enumerate(positions):
                lo, hi = bounds[j], bounds[j + 1]
                rows[p] = (c[lo:hi], vals[lo:hi])
        return _rows_to_csr(rows)

    @property
    def runtime(self) -> str:
        """``"torch"`` or ``"onnx"``: what runs the model for documents (queries: ``backbone.runtime_for("query")``)."""
        return self.backbone.runtime


# --------------------------------------------------------------------------------------------
# SPLADE pooling, in both runtimes
# --------------------------------------------------------------------------------------------
class SpladeHead:
    """SPLADE max pooling on a masked-LM model, as a torch function and as an exportable graph.

    Both forms split the output projection (the vocabulary decoder, a plain Linear) off the model,
    once, when the model is loaded, so no module is ever swapped during a forward pass, and check
    on a probe batch that model-without-decoder + decoder gives the model's own logits; a model
    whose output embedding is not a plain Linear, or that fails the check, runs whole (plain head).

    * torch: the packed head (:class:`_PackedSpladeHead`): only non-padding tokens are projected.
    * ONNX: the SpladeGraph module (:func:`_splade_graph`): padding positions take the hidden state of their text's first
      token, so their logits are already in the max and no (batch, length, vocab) masking is needed;
      the bias is added after the max (``max_i(h_i W + b) = max_i(h_i W) + b``).
    """

    key = "splade-max-log1p-relu"
    loader = "AutoModelForMaskedLM"
    # (tokens, 30522) float32 logits per batch: 2048 tokens = 250 MB; more buys no speed on a CPU.
    max_batch_tokens = 2048
    # torch: with the tiled vocabulary projection its packed head encodes 1.2-1.3x the documents of the ONNX graph
    # per CPU-second at 1 thread and 1.3x per second at 2 (encoders.md, "the tiled SPLADE head"); same weights
    cpu_documents = "torch"

    def torch_forward(self, model: Any, probe: dict):
        plain = _PlainSpladeHead(model)
        split = _split_decoder(model, plain, probe)
        if split is None:
            return plain
        return _PackedSpladeHead(model, split)

    def graph(self, model: Any, probe: dict):
        split = _split_decoder(model, _PlainSpladeHead(model), probe)
        return _splade_graph(model, split)


def _split_decoder(model: Any, plain: Any, probe: dict):
    """Replace the model's output projection by Identity (permanently) and return it, or None when unsafe.

    The replacement happens before the model serves any request (at load time, under the
    backbone's lock); the packed projection is checked against ``plain`` on ``probe``.
    """
    import torch

    decoder = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    slot = _find_slot(model, decoder) if isinstance(decoder, torch.nn.Linear) else None
    if slot is None:
        return None
    with torch.inference_mode():
        want = plain(probe).float().cpu().numpy()
        parent, attr = slot
        setattr(parent, attr, torch.nn.Identity())
        got = _PackedSpladeHead(model, decoder)(probe).float().cpu().numpy()
    scale = max(float(np.abs(want).max()), 1.0)
    if want.shape == got.shape and float(np.abs(want - got).max()) <= 1e-4 * scale:
        return decoder
    setattr(parent, attr, decoder)
    return None


class _PlainSpladeHead:
    """SPLADE pooling over the full (B, L, V) logits: max over non-padding positions, then log1p(relu)."""

    def __init__(self, model: Any):
        self.model = model

    def __call__(self, batch: dict) -> Any:
        import torch

        logits = self.model(**batch).logits  # (B, L, V)
        mask = batch["attention_mask"].unsqueeze(-1).to(torch.bool)
        pooled = logits.masked_fill(~mask, float("-inf")).amax(dim=1)  # max first: log1p(relu) is monotone
        return torch.log1p(torch.relu(pooled.float()))


def _find_slot(model: Any, module: Any) -> tuple[Any, str] | None:
    """(parent module, attribute name) holding ``module`` inside ``model``, or None."""
    for _, parent in model.named_modules():
        for attr, child in parent.named_children():
            if child is module:
                return parent, attr
    return None


class _PackedSpladeHead:
    """SPLADE pooling that projects only non-padding tokens (the model's decoder split off, see SpladeHead)."""

    TOKENS_PER_STEP = 512  # (512, 30522) float32 logits = 62 MB per step
    # On a CPU the vocabulary is projected and max-pooled 1,024 columns at a time: a (512, 1024) float32
    # tile (2 MB) stays in the core's L2 between the product and the max, where a whole (512, 30522) step
    # went to memory and back. Same products (each column's dot products are the same), so the same
    # weights bit for bit; the head's time halves on scifact (docs/benchmarks/encoders.md).
    VOCAB_TILE = 1024

    def __init__(self, model: Any, decoder: Any):
        self.model = model
        self.decoder = decoder
        self._weight_t = None  # (H, V) contiguous, made on the first CPU batch

    def __call__(self, batch: dict) -> Any:
        import torch
        import torch.nn.functional as F

        hidden = self.model(**batch).logits  # (B, L, H): the decoder is an Identity, these are its inputs
        mask = batch["attention_mask"].to(torch.bool)
        lengths = mask.sum(dim=1).tolist()
        packed = hidden[mask]  # (n_tokens, H), each text's tokens contiguous, in batch order
        weight, bias = self.decoder.weight, self.decoder.bias
        out = torch.zeros((len(lengths), weight.shape[0]), dtype=torch.float32, device=hidden.device)
        start = 0  # token offset of text i in packed
        i = 0
        while i < len(lengths):
            # a group of whole texts with at most TOKENS_PER_STEP tokens (at least one text)
            j, n = i, 0
            while j < len(lengths) and (j == i or n + lengths[j] <= self.TOKENS_PER_STEP):
                n += lengths[j]
                j += 1
            if hidden.device.type == "cpu":
                self._project_tiled(packed[start : start + n], lengths[i:j], out[i:j])
            else:
                logits = F.linear(packed[start : start + n], weight, bias)
                at = 0
                for t in range(i, j):
                    if lengths[t]:
                        out[t] = logits[at : at + lengths[t]].amax(dim=0).float()
                    else:
                        out[t] = float("-inf")
                    at += lengths[t]
            start += n
            i = j
        return torch.log1p(torch.relu(out))

    def _project_tiled(self, tokens: Any, lengths: list[int], out: Any) -> None:
        """``out[t] = max over text t's tokens of (tokens W^T + b)``, vocabulary tile by tile (CPU).

        The bias is added after the max: ``max_i(x_i + b) = max_i(x_i) + b`` holds exactly in floating
        point too, as rounding ``x + b`` is monotone in ``x``.
        """
        import torch

        if self._weight_t is None:
            self._weight_t = self.decoder.weight.detach().t().contiguous()
        weight_t, bias = self._weight_t, self.decoder.bias
        vocab = weight_t.shape[1]
        for lo in range(0, vocab, self.VOCAB_TILE):
            hi = min(vocab, lo + self.VOCAB_TILE)
            logits = torch.mm(tokens, weight_t[:, lo:hi])
            at = 0
            for t, n in enumerate(lengths):
                out[t, lo:hi] = logits[at : at + n].amax(dim=0) if n else float("-inf")
                at += n
        if bias is not None:
            out += bias


def _splade_graph_class():
    import torch

    class SpladeGraph(torch.nn.Module):
        """The exported SPLADE graph: token ids -> float32 (batch, vocab) weights (see SpladeHead)."""

        def __init__(self, model: Any, decoder: Any | None):
            super().__init__()
            self.model = model
            self.packed = decoder is not None
            if self.packed:
                self.register_buffer("weight_t", decoder.weight.detach().t().contiguous())
                bias = decoder.bias if decoder.bias is not None else torch.zeros(decoder.weight.shape[0])
                self.register_buffer("bias", bias.detach().clone())

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            out = self.model(**kwargs).logits
            keep = attention_mask.unsqueeze(-1).to(torch.bool)
            if not self.packed:
                pooled = out.masked_fill(~keep, float("-inf")).amax(dim=1)
                return torch.log1p(torch.relu(pooled))
            first = torch.argmax(attention_mask.to(out.dtype), dim=1)  # a real token of each text
            fill = torch.gather(out, 1, first.view(-1, 1, 1).expand(-1, 1, out.shape[-1]))  # (B, 1, H)
            hidden = torch.where(keep, out, fill)
            pooled = torch.matmul(hidden, self.weight_t).amax(dim=1) + self.bias
            return torch.log1p(torch.relu(pooled))

    return SpladeGraph


def _splade_graph(model: Any, decoder: Any | None):
    return _splade_graph_class()(model, decoder)
