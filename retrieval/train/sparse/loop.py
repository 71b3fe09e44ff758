"""Training an inference-free sparse encoder with sentence-transformers' SparseEncoder trainer (:func:`train_sparse`).

The student is sentence-transformers' inference-free layout: a ``Router`` whose document route is
the MLM transformer + ``SpladePooling`` (max of log1p(relu)) of a SPLADE model and whose query
route is a ``SparseStaticEmbedding`` initialised from the corpus IDF (the table Braid's
``sparse-if`` retriever uses), frozen unless ``train_query_weights``. The objective is
``SpladeLoss``: a ranking loss (``SparseDistillKLDivLoss`` / ``SparseMarginMSELoss`` over the
teacher's scores, or ``SparseMultipleNegativesRankingLoss`` without a teacher) plus a document
regulariser (:class:`~braid.retrieval.train.sparse.loss.IdfAwareFlopsLoss` or ``FlopsLoss``).
``SparseEncoderTrainer`` runs the optimisation (AdamW, linear warm-up and decay, seeded data
order), writes checkpoints (safetensors weights, optimizer, scheduler and RNG states) and resumes
from the latest one, so an interrupted run ends where an uninterrupted one does.

The result is an ordinary sentence-transformers model folder; Braid's
:class:`~braid.encoders.sparse.SparseEncoder` reads it (``read_router_layout``). torch,
sentence-transformers and datasets load inside the functions (the ``train`` extra).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from braid.data.errors import BraidError, OptionError
from braid.retrieval.train.checkpoint import check_fingerprint
from braid.retrieval.train.sparse.config import ADDED_AT_DEFAULT, RESUMABLE_CHANGES, SparseTrainConfig

TRAINING_FILE = "braid_training.json"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class TrainingExamples:
    """What the student is trained on: per example a query, its candidate docnos and the teacher's scores.

    ``queries``: texts (n,); ``candidates`` int64 (n, c) docnos (column 0 the positive for
    supervised and contrastive examples); ``labels`` float32 (n, c) teacher scores, or None
    (contrastive). ``source``: ``"supervised"`` or ``"corpus"``.
    """

    queries: tuple[str, ...]
    candidates: np.ndarray
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.queries)

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(self.candidates, dtype=np.int64).tobytes())
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels, dtype=np.float32).tobytes())
        h.update("\x00".join(self.queries).encode("utf-8"))
        h.update(self.source.encode())
        return h.hexdigest()

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "candidates.npy", np.asarray(self.candidates, dtype=np.int64), allow_pickle=False)
        if self.labels is not None:
            np.save(directory / "labels.npy", np.asarray(self.labels, dtype=np.float32), allow_pickle=False)
        (directory / "queries.json").write_text(json.dumps({"source": self.source, "queries": list(self.queries)}) + "\n", encoding="utf-8")

    @staticmethod
    def load(directory: Path) -> TrainingExamples | None:
        if not (directory / "queries.json").is_file() or not (directory / "candidates.npy").is_file():
            return None
        meta = json.loads((directory / "queries.json").read_text(encoding="utf-8"))
        labels = np.load(directory / "labels.npy", allow_pickle=False) if (directory / "labels.npy").is_file() else None
        return TrainingExamples(tuple(meta["queries"]), np.load(directory / "candidates.npy", allow_pickle=False), labels, str(meta["source"]))


@dataclass
class SparseTrainResult:
    """A finished training: where the model folder is, and the record of the run."""

    model_dir: Path
    config: SparseTrainConfig
    steps: int
    seconds: float
    history: list = field(default_factory=list)  # {"step", "loss", ...} as logged by the trainer
    resumed_at_step: int | None = None
    device: str = "cpu"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device", device, "cpu or auto: no CUDA device is visible")
    return device


def build_student(base_model: str | Path, idf: np.ndarray, config: SparseTrainConfig):
    """The inference-free SparseEncoder to train: Router(query: static IDF weights; document: MLM + SpladePooling)."""
    import torch
    from sentence_transformers.base.modules import Router
    from sentence_transformers.sparse_encoder import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import (
        MLMTransformer,
        SparseStaticEmbedding,
        SpladePooling,
    )

    from braid.encoders.sparse import read_router_layout

    layout = read_router_layout(base_model)
    doc_dir = str(layout.document_dir) if layout else str(base_model)
    with _quiet_logs():
        doc = MLMTransformer(doc_dir, max_seq_length=config.max_length)
    vocab = int(doc.auto_model.config.vocab_size)
    if len(idf) != vocab:
        raise OptionError("idf", f"{len(idf)} weights", f"the model's vocabulary ({vocab} ids)")
    pooling = SpladePooling(pooling_strategy="max", activation_function="relu", embedding_dimension=vocab)
    query = SparseStaticEmbedding(tokenizer=doc.tokenizer, weight=torch.tensor(np.asarray(idf, dtype=np.float32)), frozen=not config.train_query_weights)
    query.max_seq_length = config.query_max_length
    router = Router.for_query_document(query_modules=[query], document_modules=[doc, pooling])
    return SparseEncoder(modules=[router], similarity_fn_name="dot")


def _query_tables(model: Any) -> list:
    """The student's static query-weight tables (the SparseStaticEmbedding parameters)."""
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding

    return [m.weight for m in model.modules() if isinstance(m, SparseStaticEmbedding)]


def _query_lr_mapping(model: Any, config: SparseTrainConfig) -> dict[str, float]:
    """The trainer's ``learning_rate_mapping`` for the query-side token weights (empty when they are frozen).

    The trainer matches its patterns against the *parameter names* of the loss module (e.g.
    ``model.0.sub_modules.query.0.weight``), not against module class names, so the pattern is the
    static embedding's own parameter name, found by identity."""
    if not config.train_query_weights:
        return {}
    weights = _query_tables(model)
    names = [n for n, p in model.named_parameters() if any(p is w for w in weights)]
    if len(names) != 1:
        raise BraidError(f"expected one trainable query-weight table in the student, found {len(names)}")
    return {re.escape(names[0]) + "$": config.query_lr}


class _quiet_logs:
    """Silence sentence-transformers' and transformers' advisory warnings (deprecations, the inference-free query regulariser note)."""

    def __enter__(self):
        self._levels = {}
        for name in ("sentence_transformers", "transformers", "root"):
            lg = logging.getLogger(None if name == "root" else name)
            self._levels[name] = lg.level
            lg.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        for name, level in self._levels.items():
            logging.getLogger(None if name == "root" else name).setLevel(level)


def _columns(examples: TrainingExamples, doc_texts: Sequence[str]) -> dict:
    n_c = examples.candidates.shape[1]
    cols = {"query": list(examples.queries)}
    for j in range(n_c):
        cols[f"doc_{j}"] = [doc_texts[int(d)] for d in examples.candidates[:, j]]
    if examples.labels is not None:
        cols["label"] = [list(map(float, row)) for row in examples.labels]
    return cols


def _losses(model, config: SparseTrainConfig, idf: np.ndarray):
    from sentence_transformers.sparse_encoder import losses

    from braid.retrieval.train.sparse.loss import IdfAwareFlopsLoss

    if config.loss == "kl":
        base = losses.SparseDistillKLDivLoss(model, temperature=config.kl_temperature)
    elif config.loss == "margin-mse":
        base = losses.SparseMarginMSELoss(model)
    else:
        base = losses.SparseMultipleNegativesRankingLoss(model)
    if config.flops == "idf":
        reg = IdfAwareFlopsLoss(model, idf, config.idf_floor)
    else:
        reg = losses.FlopsLoss(model)
    weight = 0.0 if config.flops == "none" else config.flops_weight
    with _quiet_logs():
        return losses.SpladeLoss(model, loss=base, document_regularizer_weight=weight, query_regularizer_weight=None, document_regularizer=reg)


def run_fingerprint(base_model: str, idf: np.ndarray, examples: TrainingExamples, config: SparseTrainConfig) -> dict:
    cfg = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    cfg = {k: v for k, v in cfg.items() if (k, v) not in ADDED_AT_DEFAULT}
    return {
        "base_model": str(base_model),
        "idf_sha1": hashlib.sha1(np.ascontiguousarray(idf, dtype=np.float32).tobytes()).hexdigest(),
        "examples_sha1": examples.fingerprint(),
        "config": cfg,
    }


def _last_checkpoint(ckdir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` of the trainer (one with its trainer_state.json), or None."""
    best = None
    for p in ckdir.glob("checkpoint-*"):
        tail = p.name.split("-", 1)[1]
        if tail.isdigit() and (p / "trainer_state.json").is_file() and (best is None or int(tail) > best[0]):
            best = (int(tail), p)
    return best[1] if best else None


def train_sparse(
    base_model: str | Path,
    idf: np.ndarray,
    examples: TrainingExamples,
    doc_texts: Sequence[str],
    output_dir: str | Path,
    config: SparseTrainConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    stop_after_steps: int | None = None,
    threads: int | None = None,
    record: dict | None = None,
) -> SparseTrainResult:
    """Train the document encoder of ``base_model`` for IDF-weighted queries on ``examples``; save it to ``output_dir``.

    ``idf``: float32 (vocab,) query-side weights (the index's IDF table). ``doc_texts``: document
    text by docno (what the index encodes: title + text). ``checkpoint_dir``: where the trainer
    checkpoints and resumes (required: resuming is how a long CPU run is split); a directory
    holding another run's checkpoints is refused. ``stop_after_steps``: stop after that many
    steps of this call (a checkpoint is written there; the next call resumes). ``threads``: torch
    CPU threads. ``record``: extra JSON written into ``output_dir/braid_training.json`` (what
    it was trained on). The model folder is written atomically (a temporary sibling renamed into
    place) and only when training reached its last step; returns a :class:`SparseTrainResult`
    (``steps`` = the trainer's global step).
    """
    import torch
    from datasets import Dataset
    from sentence_transformers.sparse_encoder import (
        SparseEncoderTrainer,
        SparseEncoderTrainingArguments,
    )
    from transformers import TrainerCallback

    from braid.index.manifest import replace_directory

    config = config or SparseTrainConfig()
    log = log or (lambda _m: None)
    if checkpoint_dir is None:
        raise OptionError("checkpoint_dir", None, "a directory for the trainer's checkpoints")
    if threads is not None:
        torch.set_num_threads(int(threads))
    if not progress:  # transformers' and the hub's own bars (weights loading, shard writing) too
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        disable_progress_bars()
    device = resolve_device(config.device)
    ckdir = Path(checkpoint_dir)
    ckdir.mkdir(parents=True, exist_ok=True)
    fingerprint = run_fingerprint(str(base_model), idf, examples, config)
    state_path = ckdir / STATE_FILE
    if state_path.is_file():
        theirs = json.loads(state_path.read_text(encoding="utf-8")).get("fingerprint") or {}
        check_fingerprint(ckdir, theirs, fingerprint)
    else:
        state_path.write_text(json.dumps({"fingerprint": fingerprint}, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    torch.manual_seed(config.seed)
    model = build_student(base_model, idf, config)
    dataset = Dataset.from_dict(_columns(examples, doc_texts))
    loss = _losses(model, config, idf)
    n_c = examples.candidates.shape[1]
    router_mapping = {"query": "query", **{f"doc_{j}": "document" for j in range(n_c)}}
    args = SparseEncoderTrainingArguments(
        output_dir=str(ckdir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        warmup_steps=float(config.warmup),  # a float below 1: the fraction of the steps (transformers v5)
        lr_scheduler_type="linear",
        weight_decay=0.01,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps",
        save_steps=config.checkpoint_every,
        save_total_limit=1,
        logging_steps=max(1, min(10, config.checkpoint_every)),
        report_to="none",
        use_cpu=device == "cpu",
        router_mapping=router_mapping,
        learning_rate_mapping=_query_lr_mapping(model, config),
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_drop_last=False,
    )

    class _Stop(TrainerCallback):
        def __init__(self):
            self.start = None

        def on_step_end(self, args, state, control, **kwargs):
            if self.start is None:
                self.start = state.global_step - 1
            if stop_after_steps is not None and state.global_step - self.start >= stop_after_steps:
                control.should_save = True
                control.should_training_stop = True
            return control

    class _NonNegativeQueryWeights(TrainerCallback):
        """Projected steps for the trainable query table: clamp it at 0 after each optimizer step.

        A query term's weight multiplies non-negative document weights, and the index's inference-free
        queries (and its blocked kernels' skipping bounds) take non-negative weights only; unconstrained,
        Adam at ``query_lr`` 3e-2 drove some weights below 0 within 60 steps and the saved model was refused."""

        def __init__(self, weights):
            self.weights = weights

        def on_step_end(self, args, state, control, **kwargs):
            with torch.no_grad():
                for w in self.weights:
                    w.clamp_(min=0.0)
            return control

    stop = _Stop()
    callbacks = [stop]
    if config.train_query_weights:
        callbacks.insert(0, _NonNegativeQueryWeights(_query_tables(model)))
    with _quiet_logs():
        trainer = SparseEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=callbacks)
    resume = _last_checkpoint(ckdir)
    resumed_at = None
    if resume is not None:
        resumed_at = int(resume.name.split("-", 1)[1])
        log(f"sparse: resuming from {resume} at step {resumed_at}")
    previous = json.loads(state_path.read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    with _quiet_logs():
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    seconds = float(previous.get("seconds", 0.0)) + time.perf_counter() - t0
    state = trainer.state
    history = [{"step": h["step"], "loss": h["loss"], **{k: h[k] for k in h if k.endswith("_loss") or k == "learning_rate"}} for h in state.log_history if "loss" in h]
    done = state.global_step >= state.max_steps
    state_path.write_text(json.dumps({**previous, "fingerprint": fingerprint, "seconds": seconds, "step": state.global_step, "max_steps": state.max_steps}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    result = SparseTrainResult(Path(output_dir), config, int(state.global_step), seconds, history, resumed_at, device)
    if not done:
        log(f"sparse: stopped at step {state.global_step} of {state.max_steps}; run again to resume")
        return result
    for p in model.parameters():  # a finished step leaves no NaN behind unnoticed
        if not torch.isfinite(p).all():
            raise BraidError("sparse: the weights became non-finite; lower --lr")
    _document_module(model).max_seq_length = config.encode_max_length
    out = Path(output_dir)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_logs():
        model.save(str(tmp))
    meta = {
        "format": "braid-sparse-training",
        "format_version": 1,
        "base_model": str(base_model),
        "config": config.to_dict(),
        "examples": len(examples),
        "steps": result.steps,
        "train_seconds": round(seconds, 1),
        "device": device,
        "history": history,
        "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(record or {}),
    }
    (tmp / TRAINING_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    replace_directory(tmp, out)
    return result


def _document_module(model):
    router = model[0]
    return router.sub_modules["document"][0]
