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
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

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
# The encoder
# --------------------------------------------------------------------------------------------
class SparseEncoder:
    """SPLADE documents and queries, or inference-free queries, from one masked-LM model.

    ``model``: folder or hub id (see :mod:`braid.encoders.resolve`). ``idf``: for
    ``query_mode="idf"``, an :class:`IdfTable` or the path of a saved one; by default the model
    folder's ``idf.json``. Runtime options (``batch_size``, ``device``, ``threads``) change speed,
    not results. The model is loaded on first use; inference-free queries never load it.
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
    ):
        self.options = RuntimeOptions(max_length, batch_size, device, precision, threads)
        self.config = SparseEncoderConfig(
            str(model), max_length, top_k, query_top_k, quantization_step, query_mode, precision
        )
        self.backbone = TransformerBackbone(str(model), self.options, "AutoModelForMaskedLM")
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
            from transformers import AutoConfig

            cfg = self.backbone.ref.load(AutoConfig, "model", what="config")
            size = getattr(cfg, "vocab_size", None)
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
            ids = [i for i in tok.all_special_ids if i is not None and 0 <= i < self.vocab_size]
            self._special = np.asarray(sorted(set(ids)), dtype=np.int64)
        return self._special

    def _token_ids(self, texts: Sequence[str], max_length: int | None) -> list[np.ndarray]:
        """Tokenizer ids of each text without special tokens (truncated to ``max_length`` ids)."""
        tok = self.backbone.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is not None:
            # The Rust tokenizer directly: several times less overhead per query than the Python
            # wrapper. Truncation is done below, so the backend's own (stateful) setting is cleared.
            if backend.truncation is not None or backend.padding is not None:
                backend.no_truncation()
                backend.no_padding()
            if len(texts) == 1:
                encs = [backend.encode(texts[0], add_special_tokens=False)]
            else:
                encs = backend.encode_batch(list(texts), add_special_tokens=False)
            out = [np.array(e.ids, dtype=np.int64) for e in encs]
        else:
            out = [np.array(ids, dtype=np.int64) for ids in tok(list(texts), add_special_tokens=False)["input_ids"]]
        if max_length is not None:
            out = [ids[:max_length] for ids in out]
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
        if self._idf is None:
            path = self.backbone.ref.file("idf.json")
            if path is None:
                raise BraidError(
                    f"query_mode='idf' needs an IDF table: model {self.name!r} has no idf.json; compute one over "
                    "the corpus with braid.encoders.sparse.compute_idf(texts, encoder) and pass it as idf=..."
                )
            self._idf = idf_from_json(path, self.backbone.tokenizer, self.vocab_size, self.name)
        return self._idf

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

    def encode_csr(self, texts: Sequence[str], kind: str = "document") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`encode` but returns the CSR arrays ``(indptr int64, indices int32, data float32)``."""
        self._check_kind(kind)
        texts = check_texts(texts)
        if kind == "query" and self.config.query_mode == "idf":
            indptr, indices, data = self._encode_idf(texts)
            top_k = self.config.query_top_k
        else:
            indptr, indices, data = self._encode_model(texts)
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
            ids = np.unique(ids)
            w = weights[ids]
            keep = w > 0
            rows.append((ids[keep], w[keep]))
        return _rows_to_csr(rows)

    def _encode_model(self, texts: list[str]):
        vocab_size = self.vocab_size
        if not texts:
            return _rows_to_csr([])
        head = self._pooling_head(texts[:2])
        rows: list = [None] * len(texts)
        for positions, dense in self.backbone.run_batches(texts, head):
            if dense.shape[1] != vocab_size:
                raise BraidError(f"model={self.name!r} returns {dense.shape[1]} logits per token, config says {vocab_size}")
            r, c = np.nonzero(dense)
            bounds = np.searchsorted(r, np.arange(len(positions) + 1))
            vals = dense[r, c]
            for j, p in enumerate(positions):
                lo, hi = bounds[j], bounds[j + 1]
                rows[p] = (c[lo:hi], vals[lo:hi])
        return _rows_to_csr(rows)

    def _pooling_head(self, probe: list[str]):
        """The batch -> (B, V) float32 SPLADE weights function, packed when the model allows it.

        The packed head runs the backbone with the output projection swapped out, then projects only
        the non-padding tokens, a few hundred at a time, and max-pools each text's slice: no work
        on padding and no (B, L, V) logits tensor (1 GB for 32 x 256 tokens of a BERT vocabulary).
        It is used only when the model's output embedding is a plain Linear and the two heads
        agree on ``probe`` (checked once per encoder); otherwise the plain head runs.
        """
        if getattr(self, "_head", None) is not None:
            return self._head
        import torch

        plain = _plain_splade_head
        model = self.backbone.model
        decoder = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        slot = _find_slot(model, decoder) if isinstance(decoder, torch.nn.Linear) else None
        if slot is None:
            self._head = plain
            return plain
        packed = _PackedSpladeHead(decoder, slot)
        checked = [t for t in probe if t.strip()] or ["splade"]
        batch = self.backbone.tokenize(checked)
        width = max(len(x) for x in batch["input_ids"])
        pad = self.backbone.tokenizer.pad_token_id or 0
        inputs = {}
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key in batch:
                fill = pad if key == "input_ids" else 0
                inputs[key] = torch.tensor(
                    [list(x) + [fill] * (width - len(x)) for x in batch[key]], device=self.backbone.device
                )
        with torch.inference_mode():
            a = plain(inputs, model)
            b = packed(inputs, model)
        scale = max(float(np.abs(a).max()), 1.0)
        self._head = packed if a.shape == b.shape and float(np.abs(a - b).max()) <= 1e-4 * scale else plain
        return self._head


def _plain_splade_head(batch: dict, model: Any) -> np.ndarray:
    """SPLADE pooling over the full (B, L, V) logits: max over non-padding positions, then log1p(relu)."""
    import torch

    logits = model(**batch).logits  # (B, L, V)
    mask = batch["attention_mask"].unsqueeze(-1).to(torch.bool)
    pooled = logits.masked_fill_(~mask, float("-inf")).amax(dim=1)  # max first: log1p(relu) is monotone
    return torch.log1p(torch.relu(pooled.float())).cpu().numpy()


def _find_slot(model: Any, module: Any) -> tuple[Any, str] | None:
    """(parent module, attribute name) holding ``module`` inside ``model``, or None."""
    for _, parent in model.named_modules():
        for attr, child in parent.named_children():
            if child is module:
                return parent, attr
    return None


class _PackedSpladeHead:
    """SPLADE pooling that projects only non-padding tokens (see SparseEncoder._pooling_head)."""

    TOKENS_PER_STEP = 512  # (512, 30522) float32 logits = 62 MB per step

    def __init__(self, decoder: Any, slot: tuple[Any, str]):
        self.decoder = decoder
        self.parent, self.attr = slot

    def __call__(self, batch: dict, model: Any) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        setattr(self.parent, self.attr, torch.nn.Identity())
        try:
            hidden = model(**batch).logits  # (B, L, H): the hidden states the projection would see
        finally:
            setattr(self.parent, self.attr, self.decoder)
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
        return torch.log1p(torch.relu(out)).cpu().numpy()
