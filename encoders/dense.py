"""The dense encoder: any Hugging Face / sentence-transformers model folder, pooling read from the model's own config.

For a sentence-transformers folder, ``modules.json`` lists the pipeline: a Transformer, a Pooling
module (its ``config.json`` says cls / mean / max / lasttoken / mean_sqrt_len), optionally a
Normalize module; ``sentence_bert_config.json`` gives ``max_seq_length`` and
``config_sentence_transformers.json`` the query/document ``prompts``. A plain transformers model
(no ``modules.json``) gets mean pooling and no normalisation, as sentence-transformers would give
it. transformers is used directly (AutoModel), not sentence-transformers, to stay light; the
pooling follows sentence-transformers' ``Pooling`` module so the vectors agree with it.
The model runs on torch or ONNX Runtime (:mod:`braid.encoders.base`) with the same head
(:class:`PoolingHead`: pooling and normalisation inside the exported graph).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from braid.data.errors import BraidError, OptionError
from braid.encoders.base import RuntimeOptions, TransformerBackbone, check_texts, read_json
from braid.encoders.resolve import DEFAULT_DENSE_MODEL, ModelRef, resolve_model

POOLINGS = ("cls", "mean", "max", "lasttoken", "mean_sqrt_len")
KINDS = ("document", "query")
_ST_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
# sentence-transformers modules that do not change the vectors, or that this encoder implements.
_KNOWN_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class DenseEncoderConfig:
    """What determines a dense vector (recorded next to cached vectors and in the index manifest)."""

    model: str = DEFAULT_DENSE_MODEL
    max_length: int = 256
    pooling: str = "mean"
    normalize: bool = True
    query_prefix: str = ""
    document_prefix: str = ""
    dim: int = 0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise OptionError("pooling", self.pooling, f"one of {', '.join(POOLINGS)}")
        if not isinstance(self.normalize, bool):
            raise OptionError("normalize", self.normalize, "True or False")
        for name in ("query_prefix", "document_prefix"):
            if not isinstance(getattr(self, name), str):
                raise OptionError(name, getattr(self, name), "a string")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DenseEncoderConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise OptionError("dense encoder config", sorted(unknown), f"known keys: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass(frozen=True)
class ModelPipeline:
    """What the model folder says about itself: pooling, normalisation, max length, prompts, dimension."""

    pooling: str
    normalize: bool
    max_length: int | None
    prompts: dict
    dim: int | None
    source: str  # "sentence-transformers" or "transformers"


def read_pipeline(ref: ModelRef) -> ModelPipeline:
    """Read pooling / normalisation / max length / prompts from a model folder (see the module docstring)."""
    modules = read_json(ref.file("modules.json"), "sentence-transformers modules.json")
    st_cfg = read_json(ref.file("sentence_bert_config.json"), "sentence_bert_config.json") or {}
    prompts_cfg = read_json(ref.file("config_sentence_transformers.json"), "config_sentence_transformers.json") or {}
    prompts = prompts_cfg.get("prompts") or {}
    if not isinstance(prompts, dict):
        prompts = {}
    max_len = st_cfg.get("max_seq_length") if isinstance(st_cfg, dict) else None
    max_len = max_len if isinstance(max_len, int) and max_len > 1 else None
    if not modules:
        return ModelPipeline("mean", False, max_len, prompts, None, "transformers")
    if not isinstance(modules, list):
        raise BraidError(f"model={ref.name!r}: modules.json is not a list of modules")
    pooling = None
    normalize = False
    dim = None
    unsupported = []
    for mod in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind = str(mod.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Pooling":
            cfg = read_json(ref.file(f"{mod.get('path', '')}/config.json".lstrip("/")), "pooling config")
            if not isinstance(cfg, dict):
                raise BraidError(f"model={ref.name!r}: modules.json lists a Pooling module without its config.json")
            modes = [name for key, name in _ST_POOLING_KEYS.items() if cfg.get(key)]
            if cfg.get("pooling_mode_weightedmean_tokens"):
                unsupported.append("Pooling(weightedmean)")
            if len(modes) != 1:
                raise BraidError(
                    f"model={ref.name!r}: pooling config selects {modes or 'no mode'}; braid supports exactly one of "
                    f"{', '.join(POOLINGS)}"
                )
            pooling = modes[0]
            dim = cfg.get("word_embedding_dimension")
        elif kind == "Normalize":
            normalize = True
        elif kind not in _KNOWN_MODULES:
            unsupported.append(kind or "?")
    if unsupported:
        raise BraidError(
            f"model={ref.name!r}: its sentence-transformers pipeline has modules braid does not implement "
            f"({', '.join(unsupported)}); supported: {', '.join(_KNOWN_MODULES)}"
        )
    return ModelPipeline(pooling or "mean", normalize, max_len, prompts, dim if isinstance(dim, int) else None, "sentence-transformers")


def write_pipeline(directory: Path, pooling: str, normalize: bool, max_length: int, prompts: dict, dim: int) -> None:
    """Write the sentence-transformers files :func:`read_pipeline` reads (``modules.json``, pooling config, max length, prompts).

    ``prompts``: e.g. ``{"query": "query: "}``; empty prompts are left out, and with none
    ``config_sentence_transformers.json`` is not written.
    """
    if pooling not in POOLINGS:
        raise OptionError("pooling", pooling, f"one of {', '.join(POOLINGS)}")
    directory = Path(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    (directory / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    (directory / "1_Pooling").mkdir(exist_ok=True)
    config: dict = {"word_embedding_dimension": int(dim)}
    for key in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_lasttoken"):
        config[key] = _ST_POOLING_KEYS[key] == pooling
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": int(max_length), "do_lower_case": False}) + "\n", encoding="utf-8")
    kept = {k: str(v) for k, v in prompts.items() if v}
    if kept:
        (directory / "config_sentence_transformers.json").write_text(json.dumps({"prompts": kept}) + "\n", encoding="utf-8")


def pool(hidden: Any, attention_mask: Any, pooling: str, left_padded: bool = False) -> Any:
    """Pool token states into one vector per text (sentence-transformers' Pooling semantics).

    ``hidden``: float (B, L, H); ``attention_mask``: int (B, L). Returns float32 (B, H).
    """
    import torch

    hidden = hidden.float()
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling in ("mean", "mean_sqrt_len"):
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return summed / (counts if pooling == "mean" else counts.sqrt())
    if pooling == "max":
        return hidden.masked_fill(mask == 0, -1e9).amax(dim=1)
    if pooling == "lasttoken":
        if left_padded:
            return hidden[:, -1]
        last = attention_mask.sum(dim=1).clamp(min=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise OptionError("pooling", pooling, f"one of {', '.join(POOLINGS)}")


class PoolingHead:
    """Pooling (+ L2 normalisation) on a transformers encoder: the torch function and the exported graph are one module."""

    loader = "AutoModel"
    max_batch_tokens = None
    # torch's MKL GEMMs beat ONNX Runtime's on long batched texts (MiniLM: 0.8x in docs/CPU-s, encoders.md)
    cpu_documents = "torch"

    def __init__(self, pooling: str, normalize: bool, left_padded: bool):
        self.pooling, self.normalize, self.left_padded = pooling, normalize, left_padded
        self.key = f"pool-{pooling}{'-normalize' if normalize else ''}{'-left' if left_padded else ''}"

    def graph(self, model: Any, probe: dict) -> Any:
        return _pooling_graph(model, self.pooling, self.normalize, self.left_padded)

    def torch_forward(self, model: Any, probe: dict):
        module = self.graph(model, probe)
        return lambda batch: module(**batch)


def _pooling_graph(model: Any, pooling: str, normalize: bool, left_padded: bool) -> Any:
    import torch

    class PoolingGraph(torch.nn.Module):
        """token ids -> float32 (batch, dim) embeddings: the model's last hidden state pooled (and normalised)."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            batch = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                batch["token_type_ids"] = token_type_ids
            return pooled(self.model, batch, pooling, normalize, left_padded).float()

    return PoolingGraph()


def pooled(model: Any, batch: dict, pooling: str, normalize: bool, left_padded: bool) -> Any:
    """``model``'s last hidden state over ``batch`` (token tensors (B, L)) pooled, and L2-normalised if ``normalize``: tensor (B, dim).

    The one definition of a dense vector: the exported graph, the torch runtime and the trainable
    tower all run it.
    """
    import torch

    outputs = model(**batch)
    hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
    emb = pool(hidden, batch["attention_mask"], pooling, left_padded)
    if normalize:
        emb = torch.nn.functional.normalize(emb, p=2, dim=1)
    return emb


class DenseEncoder:
    """Texts -> float32 (n, dim) embeddings with the model's pooling and normalisation.

    ``model``: folder or hub id. ``pooling`` / ``normalize`` / ``max_length``: None reads them
    from the model folder (sentence-transformers files), falling back to mean / no normalisation /
    256. ``query_prefix`` / ``document_prefix``: None takes the model's ``prompts`` ("query",
    and "document" or "passage") when it has them, else no prefix.
    """

    def __init__(
        self,
        model: str = DEFAULT_DENSE_MODEL,
        *,
        max_length: int | None = None,
        batch_size: int = 32,
        device: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
        pooling: str | None = None,
        normalize: bool | None = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        runtime: str = "auto",
    ):
        ref = resolve_model(str(model))
        pipe = read_pipeline(ref)
        self.pipeline = pipe
        if max_length is None:
            max_length = pipe.max_length or 256
        self.options = RuntimeOptions(max_length, batch_size, device, precision, threads, runtime)
        prompts = pipe.prompts
        if query_prefix is None:
            query_prefix = str(prompts.get("query", ""))
        if document_prefix is None:
            document_prefix = str(prompts.get("document", prompts.get("passage", "")))
        self._config = DenseEncoderConfig(
            str(model),
            max_length,
            pipe.pooling if pooling is None else pooling,
            pipe.normalize if normalize is None else normalize,
            query_prefix,
            document_prefix,
            0,
            precision,
        )
        cfg = self._config
        left = _padding_side(ref) == "left"
        self.backbone = TransformerBackbone(ref, self.options, PoolingHead(cfg.pooling, cfg.normalize, left))

    @property
    def name(self) -> str:
        return self._config.model

    @property
    def dim(self) -> int:
        """Embedding dimension (from the pooling config, else the model's hidden_size)."""
        if self.pipeline.dim:
            return int(self.pipeline.dim)
        cfg = self.backbone.config
        size = cfg.get("hidden_size") or cfg.get("d_model")
        if not isinstance(size, int):
            raise BraidError(f"model={self.name!r}: cannot tell the embedding dimension from its config")
        return size

    @property
    def config(self) -> DenseEncoderConfig:
        from dataclasses import replace

        return replace(self._config, dim=self.dim)

    def describe(self, kind: str = "document") -> dict:
        """What determines the vectors of ``kind`` (for caches and manifests)."""
        if kind not in KINDS:
            raise OptionError("kind", kind, f"one of {', '.join(KINDS)}")
        return {"encoder": "dense", "kind": kind, **self.config.to_dict()}

    def prefixed(self, texts: Sequence[str], kind: str = "document") -> list[str]:
        """``texts`` with the ``kind`` prefix (``query_prefix`` or ``document_prefix``) prepended, as the model sees them."""
        if kind not in KINDS:
            raise OptionError("kind", kind, f"one of {', '.join(KINDS)}")
        texts = check_texts(texts)
        prefix = self._config.query_prefix if kind == "query" else self._config.document_prefix
        return [prefix + t for t in texts] if prefix else texts

    def embed(self, batch: dict, model: Any) -> Any:
        """The model's pooled (and normalised) vectors of one padded batch: float32 tensor (B, dim).

        ``batch``: token tensors from :meth:`TransformerBackbone.collate`; ``model``: this
        encoder's transformers model. Differentiable (a :class:`~braid.encoders.towers.DenseTower`
        trains through it); the same computation as the exported graph (:func:`pooled`).
        """
        head = self.backbone.head
        return pooled(model, batch, head.pooling, head.normalize, head.left_padded)

    def encode(self, texts: Sequence[str], kind: str = "document", on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Encode texts as ``kind`` (``"document"`` or ``"query"``) -> float32 (n, dim), C-contiguous, input order.

        ``on_batch(n)``: called after each model batch of ``n`` texts (progress; the ``n`` add up to ``len(texts)``)."""
        texts = self.prefixed(texts, kind)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        for positions, emb in self.backbone.run_batches(texts, kind, on_batch):
            if emb.shape[1] != out.shape[1]:
                raise BraidError(f"model={self.name!r} gives {emb.shape[1]}-d vectors, its config says {out.shape[1]}")
            out[positions] = emb
        return out

    def tower(self, kind: str = "query") -> Any:
        """This encoder's ``kind`` side as a trainable ``torch.nn.Module`` (:class:`~braid.encoders.towers.DenseTower`), sharing its model."""
        from braid.encoders.towers import DenseTower

        return DenseTower(self, kind)

    def save(self, directory: str | Path) -> None:
        """Write the model as a folder this class reads back to the same vectors: weights, tokenizer, sentence-transformers files.

        Pooling, normalisation, ``max_length`` and the non-empty prefixes (as ``prompts``
        "query" / "document") are those of this encoder, whatever the source folder said.
        """
        from transformers.utils import logging as hf_logging

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar under a caller's own
        try:
            self.backbone.model.save_pretrained(str(directory))
            self.backbone.hf_tokenizer().save_pretrained(str(directory))
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()
        cfg = self._config
        prompts = {"query": cfg.query_prefix, "document": cfg.document_prefix}
        write_pipeline(directory, cfg.pooling, cfg.normalize, self.options.max_length, prompts, self.dim)

    @property
    def runtime(self) -> str:
        """``"torch"`` or ``"onnx"``: what runs the model for documents (queries: ``backbone.runtime_for("query")``)."""
        return self.backbone.runtime

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts, "document")

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts, "query")


def _padding_side(ref: ModelRef) -> str:
    cfg = read_json(ref.file("tokenizer_config.json"), "tokenizer_config.json") or {}
    return "left" if isinstance(cfg, dict) and cfg.get("padding_side") == "left" else "right"
