"""JPQ: train the query encoder and the PQ centroids jointly, document codes frozen (Zhan et al., CIKM 2021).

Starting from a trained PQ or OPQ+PQ dense index, the query encoder (the bi-encoder the documents
were encoded with) and the PQ centroids are optimised together on a listwise ranking loss; the
document encoder is never run and the document codes (the assignment of every document to one
centroid per sub-space) never change. A document's vector is the concatenation of its
centroids, ``d = [C_1[c_1(d)], ..., C_m[c_m(d)]]``, which is differentiable in the centroids.

One training step, for a batch of (query, relevant document) pairs of the training qrels:

1. encode the queries with the current encoder (with gradients);
2. retrieve the top ``negative_depth`` documents of each query from the PQ index itself, with the
   current centroids (FAISS ADC search; JPQ's "end-to-end negative sampling"), and sample
   ``negatives`` of them that are not relevant;
3. score every query against the reconstructed vectors of all the batch's positives and
   negatives (the other queries' documents act as extra negatives; a query's other relevant
   documents are masked) and take the softmax cross-entropy of its positive, at ``temperature``;
4. one AdamW step on the encoder (``lr``) and the centroids (``centroid_lr``), with linear warm-up
   and decay.

Training is seeded (data order from ``(seed, epoch)``, dropout and negative sampling from
``(seed, step)``), so a run resumed from its checkpoint ends with the same weights as one that
was never interrupted. A checkpoint (``CHECKPOINT_DIR/latest``, replaced atomically) holds the
encoder weights (safetensors), the centroids (.npy), the optimizer state (``torch.save`` of
tensors, read back with ``weights_only=True``) and ``state.json``; no pickle of objects.

The result is saved into the index (:func:`install_jpq`): ``INDEX/dense/jpq/`` holds the query
encoder (a Hugging Face folder with its sentence-transformers pooling files), ``centroids.npy``,
``base_centroids.npy`` (the centroids before training, so that training again starts from the
same point) and ``jpq.json``; the FAISS index file gets the trained centroids, so plain FAISS
search scores documents with them; the manifest's ``components["dense"]["jpq"]`` records it all.
:func:`open_jpq_query_encoder` gives the encoder searching must use for such an index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from braid.data.errors import BraidError, DataError, IndexFormatError, OptionError
from braid.encoders.jpq import JPQ_FORMAT_VERSION, is_jpq, open_jpq_query_encoder  # noqa: F401 (the trained index's reader)

JPQ_DIR = "jpq"
JPQ_KINDS = ("pq", "opq")
CHECKPOINT_LATEST = "latest"
# Settings that may change when a checkpoint is resumed (they do not change what a step computes).
_RESUMABLE_CHANGES = ("epochs", "checkpoint_every", "device")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass(frozen=True)
class JPQConfig:
    """JPQ training settings (saved with the trained index and in checkpoints).

    ``epochs``: passes over the training pairs. ``batch_size``: pairs per step. ``lr``: AdamW
    learning rate of the query encoder; ``centroid_lr``: of the PQ centroids. ``warmup``: fraction
    of the steps with a linearly rising learning rate (then linear decay to 0). ``negatives``:
    hard negatives sampled per query from its top ``negative_depth`` PQ hits. ``temperature``:
    softmax temperature of the inner products (0.05 = the scale 20 MiniLM was trained with).
    ``max_length``: query tokens (also used at search time). ``seed``: everything random.
    ``checkpoint_every``: steps between checkpoints (0: only at the end of each epoch).
    ``device``: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.

    Defaults chosen on scifact with 150 train queries held out (docs/benchmarks/compression.md):
    ``centroid_lr`` 1e-4 / 3e-4 / 1e-3 gave held-out nDCG@10 0.746 / 0.773 / 0.817, the gain
    coming from queries whose relevant documents are also relevant to training queries; on the
    other queries 0.704 / 0.705 / 0.698, so larger rates mostly memorise training documents.
    """

    epochs: int = 3
    batch_size: int = 32
    lr: float = 2e-5
    centroid_lr: float = 3e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    negatives: int = 16
    negative_depth: int = 100
    temperature: float = 0.05
    max_length: int = 64
    seed: int = 42
    checkpoint_every: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 1), ("negatives", 0), ("negative_depth", 1), ("max_length", 2), ("seed", 0), ("checkpoint_every", 0)):
            v = getattr(self, name)
            if not _is_int(v) or v < low:
                raise OptionError(name, v, f"an integer >= {low}")
        for name in ("lr", "centroid_lr"):
            v = getattr(self, name)
            if not _is_num(v) or v < 0:
                raise OptionError(name, v, "a finite number >= 0 (0 freezes that part)")
        if not _is_num(self.temperature) or self.temperature <= 0:
            raise OptionError("temperature", self.temperature, "a finite number > 0")
        if not _is_num(self.warmup) or not 0 <= self.warmup < 1:
            raise OptionError("warmup", self.warmup, "a fraction in [0, 1)")
        if not _is_num(self.weight_decay) or self.weight_decay < 0:
            raise OptionError("weight_decay", self.weight_decay, "a finite number >= 0")
        if self.negatives > self.negative_depth:
            raise OptionError("negatives", self.negatives, f"at most negative_depth ({self.negative_depth})")
        if self.device not in ("auto", "cpu", "cuda"):
            raise OptionError("device", self.device, "one of auto, cpu, cuda")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "JPQConfig":
        if not isinstance(d, Mapping):
            raise OptionError("jpq config", d, "a dict")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise OptionError("jpq config", sorted(unknown), f"known keys: {', '.join(sorted(known))}")
        return cls(**dict(d))


# ---------------------------------------------------------------------------- training data
@dataclass(frozen=True)
class TrainingSet:
    """Training queries and their relevant documents, as flat arrays.

    ``query_ids`` / ``texts``: the queries with at least one relevant document in the index.
    ``pos_ptr`` int64 (n_queries + 1) / ``pos_docnos`` int64 (n_relevant,): CSR of each query's
    relevant docnos. ``pair_query`` / ``pair_docno`` int64 (n_pairs,): one training example per
    (query, relevant document). ``skipped``: judged queries left out (no text, or no relevant
    document in the index).
    """

    query_ids: tuple[str, ...]
    texts: tuple[str, ...]
    pos_ptr: np.ndarray
    pos_docnos: np.ndarray
    pair_query: np.ndarray
    pair_docno: np.ndarray
    skipped: int = 0

    @property
    def n_pairs(self) -> int:
        return int(self.pair_query.shape[0])

    def positives(self, q: int) -> np.ndarray:
        return self.pos_docnos[self.pos_ptr[q] : self.pos_ptr[q + 1]]

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for arr in (self.pos_ptr, self.pos_docnos, self.pair_query, self.pair_docno):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update("\x00".join(self.texts).encode("utf-8"))
        return h.hexdigest()


def make_training_set(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], doc_ids: Sequence[str]) -> TrainingSet:
    """Pairs (query, relevant document) from ``qrels`` (relevance > 0), with docnos from ``doc_ids`` (docno order).

    Queries without text, and judgments of documents that are not in the index, are left out
    (counted in ``skipped`` per query); DataError when nothing is left to train on.
    """
    position = {d: i for i, d in enumerate(doc_ids)}
    ids, texts, ptr, pos = [], [], [0], []
    skipped = 0
    for qid in sorted(qrels, key=lambda q: (len(q), q)):
        rel = sorted(position[d] for d, r in qrels[qid].items() if int(r) > 0 and d in position)
        if not rel or qid not in queries or not str(queries[qid]).strip():
            skipped += 1
            continue
        ids.append(qid)
        texts.append(str(queries[qid]))
        pos.extend(rel)
        ptr.append(len(pos))
    if not ids:
        raise DataError("no training query has both a text and a relevant document in the index")
    pos_ptr = np.asarray(ptr, dtype=np.int64)
    pos_docnos = np.asarray(pos, dtype=np.int64)
    pair_query = np.repeat(np.arange(len(ids), dtype=np.int64), np.diff(pos_ptr))
    return TrainingSet(tuple(ids), tuple(texts), pos_ptr, pos_docnos, pair_query, pos_docnos.copy(), skipped)


def training_set_from_dataset(dataset_dir: str | Path, split: str, doc_ids: Sequence[str]) -> TrainingSet:
    """:func:`make_training_set` from a BEIR folder's ``queries.jsonl`` and ``qrels/<split>.tsv``."""
    from braid.data.beir import BeirDataset

    ds = BeirDataset(Path(dataset_dir))
    qrels = ds.qrels(split)
    return make_training_set(ds.queries(split), qrels, doc_ids)


# ---------------------------------------------------------------------------- the query tower
def _tower_class():
    import torch

    from braid.encoders.dense import pool

    class QueryTower(torch.nn.Module):
        """A transformers backbone + pooling (+ L2 normalisation): token ids -> float (B, dim), with gradients."""

        def __init__(self, backbone, pooling: str, normalize: bool):
            super().__init__()
            self.backbone = backbone
            self.pooling = pooling
            self.normalize = normalize

        def forward(self, batch: dict):
            out = self.backbone(**batch)
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            emb = pool(hidden, batch["attention_mask"], self.pooling)
            return torch.nn.functional.normalize(emb, p=2, dim=1) if self.normalize else emb

    return QueryTower


@dataclass
class QueryModel:
    """The trainable query side: tokenizer, tower (torch module), how texts are prepared."""

    name: str
    tokenizer: Any
    tower: Any
    pooling: str
    normalize: bool
    query_prefix: str
    max_length: int
    device: Any

    def batch(self, texts: Sequence[str]) -> dict:
        import torch

        enc = self.tokenizer(
            [self.query_prefix + t for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        return {k: torch.as_tensor(enc[k]).to(self.device) for k in keys}

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Eval-mode embeddings float32 (n, dim) (no dropout, no gradients)."""
        import torch

        was_training = self.tower.training
        self.tower.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                out.append(self.tower(self.batch(texts[start : start + batch_size])).float().cpu().numpy())
        self.tower.train(was_training)
        if not out:
            return np.zeros((0, int(self.tower.backbone.config.hidden_size)), dtype=np.float32)
        return np.concatenate(out)


def load_query_model(model: str, max_length: int, device: str = "auto", pooling: str | None = None,
                     normalize: bool | None = None, query_prefix: str | None = None) -> QueryModel:
    """Load a bi-encoder's query side for training; pooling / normalisation / prefix default to the model folder's own."""
    from transformers import AutoModel, AutoTokenizer

    from braid.encoders.base import torch_device
    from braid.encoders.dense import read_pipeline
    from braid.encoders.resolve import resolve_model

    ref = resolve_model(model)
    pipe = read_pipeline(ref)
    dev = torch_device(device)
    tokenizer = ref.load(AutoTokenizer, "model", what="tokenizer")
    backbone = ref.load(AutoModel, "model", what="model")
    tower = _tower_class()(backbone, pipe.pooling if pooling is None else pooling, pipe.normalize if normalize is None else bool(normalize)).to(dev)
    prefix = str(pipe.prompts.get("query", "")) if query_prefix is None else query_prefix
    return QueryModel(str(model), tokenizer, tower, tower.pooling, tower.normalize, prefix, int(max_length), dev)


# ---------------------------------------------------------------------------- loss
def batch_loss(q, centroids, codes, rotation, targets: np.ndarray, candidates: np.ndarray, masked: np.ndarray, temperature: float):
    """Listwise softmax cross-entropy of each query's positive among a shared candidate list.

    ``q``: float tensor (B, dim) queries in the original space; ``centroids``: (m, ksub, dsub)
    tensor (trainable); ``codes``: int64 tensor (num_docs, m), frozen; ``rotation``: (dim, dim)
    tensor or None (OPQ: scores are ``(q @ R.T) . reconstruction``); ``candidates``: int64 (C,)
    docnos; ``targets``: int64 (B,) positions in ``candidates`` of each query's positive;
    ``masked``: bool (B, C), candidates left out of a query's softmax (its other relevant
    documents). Returns the mean loss (a 0-d tensor).
    """
    import torch

    m = centroids.shape[0]
    cand = torch.as_tensor(candidates, device=codes.device)
    docs = centroids[torch.arange(m, device=codes.device)[None, :], codes[cand]].reshape(len(candidates), -1)  # (C, dim)
    qr = q @ rotation.T if rotation is not None else q
    scores = (qr @ docs.T) / temperature
    scores = scores.masked_fill(torch.as_tensor(masked, device=scores.device), float("-inf"))
    return torch.nn.functional.cross_entropy(scores, torch.as_tensor(targets, device=scores.device))


def _candidates(rows: np.ndarray, data: TrainingSet, hits: np.ndarray, n_neg: int, rng: np.random.Generator | None):
    """Shared candidate list of a batch: its positives + per query ``n_neg`` non-relevant PQ hits.

    ``rows``: pair indices; ``hits``: int64 (B, depth) PQ top hits (-1 padding). With ``rng`` the
    negatives are sampled from the hits, else the top ``n_neg`` are taken. Returns (candidates,
    targets, masked) as :func:`batch_loss` takes them.
    """
    queries = data.pair_query[rows]
    chosen = [data.pair_docno[rows]]
    for i, qn in enumerate(queries):
        row = hits[i][hits[i] >= 0]
        row = row[~np.isin(row, data.positives(qn))]
        if n_neg and len(row):
            pick = rng.choice(len(row), size=min(n_neg, len(row)), replace=False) if rng is not None else np.arange(min(n_neg, len(row)))
            chosen.append(row[np.sort(pick)])
    candidates = np.unique(np.concatenate(chosen))
    targets = np.searchsorted(candidates, data.pair_docno[rows])
    masked = np.zeros((len(rows), len(candidates)), dtype=bool)
    for i, qn in enumerate(queries):
        pos = data.positives(qn)
        at = np.searchsorted(candidates, pos)
        ok = (at < len(candidates)) & (candidates[np.minimum(at, len(candidates) - 1)] == pos)
        masked[i, at[ok]] = True
        masked[i, targets[i]] = False
    return candidates, targets, masked


def _search_negatives(search_index: Any, q: np.ndarray, depth: int) -> np.ndarray:
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # a batch is a few queries: threads only fight the encoder's
    try:
        _, labels = search_index.search(np.ascontiguousarray(q, dtype=np.float32), min(depth, search_index.ntotal))
    finally:
        faiss.omp_set_num_threads(before)
    return labels.astype(np.int64)


# ---------------------------------------------------------------------------- training
@dataclass
class JPQResult:
    """A finished training: the query model, trained centroids float32 (m, ksub, dsub), and the record of the run."""

    model: QueryModel
    centroids: np.ndarray
    base_centroids: np.ndarray
    config: JPQConfig
    history: list = field(default_factory=list)  # per step: {"step", "epoch", "loss"}
    seconds: float = 0.0
    resumed_at_step: int | None = None

    @property
    def epoch_losses(self) -> list[float]:
        out: dict[int, list[float]] = {}
        for h in self.history:
            out.setdefault(int(h["epoch"]), []).append(float(h["loss"]))
        return [float(np.mean(out[e])) for e in sorted(out)]

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode(list(texts))


def _fingerprint(model_name: str, layout, codes: np.ndarray, base: np.ndarray, data: TrainingSet, config: JPQConfig) -> dict:
    cfg = {k: v for k, v in config.to_dict().items() if k not in _RESUMABLE_CHANGES}
    return {
        "model": model_name,
        "kind": layout.kind,
        "m": layout.m,
        "ksub": layout.ksub,
        "dsub": layout.dsub,
        "num_docs": int(codes.shape[0]),
        "codes_sha1": hashlib.sha1(np.ascontiguousarray(codes).tobytes()).hexdigest(),
        "base_centroids_sha1": hashlib.sha1(np.ascontiguousarray(base, dtype=np.float32).tobytes()).hexdigest(),
        "training_set_sha1": data.fingerprint(),
        "config": cfg,
    }


def _lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up over ``warmup * total`` steps, then linear decay to 0 at ``total``."""
    w = int(warmup * total)
    if w and step < w:
        return (step + 1) / w
    return max(0.0, (total - step) / max(1, total - w))


def _step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step)) % (2**63)


def train_jpq(
    model: str | QueryModel,
    pq_index: Any,
    data: TrainingSet,
    config: JPQConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
    query_prefix: str | None = None,
    stop_after_steps: int | None = None,
    threads: int | None = None,
) -> JPQResult:
    """Train the query encoder ``model`` (folder / hub id, or a loaded :class:`QueryModel`) and the centroids of ``pq_index``.

    ``pq_index``: a FAISS PQ or OPQ+PQ index over the corpus (row = docno; e.g. ``DenseIndex.index``),
    not modified (negatives are searched in a private copy). ``data``: the training pairs.
    ``checkpoint_dir``: where to save and resume (None: no checkpoints). ``stop_after_steps``:
    stop early after this many steps of this call (for tests of resumption). ``threads``: torch
    intra-op threads (process-wide; None leaves torch's setting). Returns a
    :class:`JPQResult`; the document codes are those of ``pq_index``, untouched.
    """
    import faiss
    import torch

    from braid.index import pq as pqmod

    config = config or JPQConfig()
    log = log or (lambda _msg: None)
    if threads is not None:
        if not _is_int(threads) or threads < 1:
            raise OptionError("threads", threads, "None or an integer >= 1")
        torch.set_num_threads(int(threads))
    layout = pqmod.pq_layout(pq_index)
    if layout.kind not in JPQ_KINDS:
        raise OptionError("dense index kind", layout.kind, f"JPQ trains {' or '.join(JPQ_KINDS)} indexes (IVF-PQ codes are residuals of a coarse quantizer)")
    if layout.metric != "ip":
        raise OptionError("dense index metric", layout.metric, "JPQ here trains inner-product indexes (metric ip)")
    codes_np = pqmod.get_codes(pq_index)
    base = pqmod.get_codebooks(pq_index)
    rotation_np = pqmod.get_rotation(pq_index)
    if data.pair_docno.size and data.pair_docno.max() >= codes_np.shape[0]:
        raise OptionError("training set", "docnos beyond the index", f"docnos in 0..{codes_np.shape[0] - 1}")

    torch.manual_seed(config.seed)
    qm = model if isinstance(model, QueryModel) else load_query_model(model, config.max_length, config.device, pooling, normalize, query_prefix)
    qm.max_length = config.max_length
    dev = qm.device
    tower = qm.tower
    centroids = torch.nn.Parameter(torch.tensor(base, dtype=torch.float32, device=dev))
    codes = torch.as_tensor(codes_np, dtype=torch.int64, device=dev)
    rotation = torch.as_tensor(rotation_np, device=dev) if rotation_np is not None else None
    # lr == 0 trains the centroids alone: the encoder runs frozen, in eval mode, without gradients
    frozen_encoder = config.lr == 0
    decay, no_decay = [], []
    for name, p in tower.named_parameters():
        p.requires_grad_(not frozen_encoder)
        if not frozen_encoder:
            (no_decay if (p.ndim < 2 or "LayerNorm" in name or "bias" in name) else decay).append(p)
    groups = [
        {"params": decay, "lr": config.lr, "weight_decay": config.weight_decay},
        {"params": no_decay, "lr": config.lr, "weight_decay": 0.0},
        {"params": [centroids], "lr": config.centroid_lr, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]])
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    steps_per_epoch = math.ceil(data.n_pairs / config.batch_size)
    total = steps_per_epoch * config.epochs
    fingerprint = _fingerprint(qm.name, layout, codes_np, base, data, config)

    history: list[dict] = []
    start_step, elapsed, resumed = 0, 0.0, None
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckdir is not None:
        state = _read_checkpoint(ckdir, fingerprint, tower.backbone, centroids, optimizer, dev)
        if state is not None:
            start_step, history, elapsed = int(state["step"]), list(state["history"]), float(state["seconds"])
            resumed = start_step
            log(f"jpq: resuming from {ckdir / CHECKPOINT_LATEST} at step {start_step} of {total}")

    search_index = faiss.clone_index(pq_index)
    tower.train(not frozen_encoder)
    t0 = time.perf_counter()
    steps_done = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=min(start_step, total), desc="jpq", unit="step", dynamic_ncols=True)
    try:
        for step in range(start_step, total):
            if stop_after_steps is not None and steps_done >= stop_after_steps:
                break
            epoch, in_epoch = divmod(step, steps_per_epoch)
            order = np.random.default_rng([config.seed, epoch]).permutation(data.n_pairs)
            rows = order[in_epoch * config.batch_size : (in_epoch + 1) * config.batch_size]
            torch.manual_seed(_step_seed(config.seed, step))
            rng = np.random.default_rng([config.seed, 1, step])
            factor = _lr_factor(step, total, config.warmup)
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * factor

            with torch.no_grad() if frozen_encoder else contextlib.nullcontext():
                q = tower(qm.batch([data.texts[i] for i in data.pair_query[rows]]))
            with torch.no_grad():
                pqmod.set_codebooks(search_index, centroids.detach().float().cpu().numpy())
                hits = _search_negatives(search_index, q.detach().float().cpu().numpy(), config.negative_depth)
            candidates, targets, masked = _candidates(rows, data, hits, config.negatives, rng)
            loss = batch_loss(q, centroids, codes, rotation, targets, candidates, masked, config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise BraidError(f"jpq: the loss became {value} at step {step}; lower --lr / --centroid-lr")
            history.append({"step": step, "epoch": epoch, "loss": value})
            steps_done += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4f}")
            end_of_epoch = (step + 1) % steps_per_epoch == 0
            if ckdir is not None and (end_of_epoch or (config.checkpoint_every and (step + 1) % config.checkpoint_every == 0) or step + 1 == total):
                seconds = elapsed + time.perf_counter() - t0
                _write_checkpoint(ckdir, tower.backbone, centroids, optimizer, {"step": step + 1, "total": total, "history": history, "seconds": seconds, "fingerprint": fingerprint, "config": config.to_dict()})
    finally:
        if bar is not None:
            bar.close()
    tower.eval()
    for p in tower.parameters():
        p.requires_grad_(True)
    return JPQResult(
        model=qm,
        centroids=centroids.detach().float().cpu().numpy(),
        base_centroids=base,
        config=config,
        history=history,
        seconds=elapsed + time.perf_counter() - t0,
        resumed_at_step=resumed,
    )


def ranking_loss(qm: QueryModel, centroids: np.ndarray, pq_index: Any, data: TrainingSet, config: JPQConfig | None = None) -> float:
    """Deterministic evaluation of the training objective: eval-mode queries, top ``negatives`` PQ hits as negatives.

    Batches of ``config.batch_size`` pairs in pair order; the FAISS index is searched with
    ``centroids`` (in a private copy). Returns the mean loss over the pairs (a float).
    """
    import faiss
    import torch

    from braid.index import pq as pqmod

    config = config or JPQConfig()
    index = faiss.clone_index(pq_index)
    pqmod.set_codebooks(index, centroids)
    dev = qm.device
    c = torch.as_tensor(np.asarray(centroids, dtype=np.float32), device=dev)
    codes = torch.as_tensor(pqmod.get_codes(index), device=dev)
    rot = pqmod.get_rotation(index)
    rot = torch.as_tensor(rot, device=dev) if rot is not None else None
    total, n = 0.0, 0
    for start in range(0, data.n_pairs, config.batch_size):
        rows = np.arange(start, min(start + config.batch_size, data.n_pairs))
        q = torch.as_tensor(qm.encode([data.texts[i] for i in data.pair_query[rows]]), device=dev)
        hits = _search_negatives(index, q.cpu().numpy(), config.negative_depth)
        cand, targets, masked = _candidates(rows, data, hits, config.negatives, None)
        with torch.no_grad():
            total += float(batch_loss(q, c, codes, rot, targets, cand, masked, config.temperature)) * len(rows)
        n += len(rows)
    return total / max(n, 1)


# ---------------------------------------------------------------------------- checkpoints
def _write_checkpoint(ckdir: Path, backbone: Any, centroids: Any, optimizer: Any, state: dict) -> None:
    """Replace ``ckdir/latest`` atomically with the current weights, centroids, optimizer state and ``state.json``."""
    import torch
    from safetensors.torch import save_model

    ckdir.mkdir(parents=True, exist_ok=True)
    tmp = ckdir / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(backbone, str(tmp / "encoder.safetensors"))
    np.save(tmp / "centroids.npy", centroids.detach().float().cpu().numpy(), allow_pickle=False)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    latest, old = ckdir / CHECKPOINT_LATEST, ckdir / f"{CHECKPOINT_LATEST}.old"
    if latest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(latest, old)
    os.replace(tmp, latest)
    shutil.rmtree(old, ignore_errors=True)


def _read_checkpoint(ckdir: Path, fingerprint: dict, backbone: Any, centroids: Any, optimizer: Any, device: Any) -> dict | None:
    """Load ``ckdir/latest`` (or ``latest.old`` left by a crash mid-replace) into the given objects; None if there is none."""
    import torch
    from safetensors.torch import load_model

    for name in (CHECKPOINT_LATEST, f"{CHECKPOINT_LATEST}.old"):
        path = ckdir / name
        if (path / "state.json").is_file():
            break
    else:
        return None
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise OptionError("checkpoint_dir", str(ckdir), f"unreadable checkpoint state ({exc}); remove {path}") from None
    theirs = state.get("fingerprint", {})
    if theirs != fingerprint:
        diff = sorted(k for k in set(theirs) | set(fingerprint) if theirs.get(k) != fingerprint.get(k))
        if "config" in diff:
            a, b = theirs.get("config", {}), fingerprint["config"]
            diff = [d for d in diff if d != "config"] + [f"config.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        raise OptionError(
            "checkpoint_dir",
            str(ckdir),
            f"it holds a checkpoint of another training run (differs in {', '.join(diff)}); remove it or choose another directory",
        )
    load_model(backbone, str(path / "encoder.safetensors"), device=str(device))
    with torch.no_grad():
        centroids.copy_(torch.as_tensor(np.load(path / "centroids.npy", allow_pickle=False), device=centroids.device))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    return state


# ---------------------------------------------------------------------------- the index
def save_query_encoder(model: QueryModel, directory: Path) -> None:
    """Write the query encoder as a Hugging Face folder with sentence-transformers pooling files (readable by DenseEncoder)."""
    from transformers.utils import logging as hf_logging

    directory.mkdir(parents=True, exist_ok=True)
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar under the training's own
    try:
        model.tower.backbone.save_pretrained(str(directory))
        model.tokenizer.save_pretrained(str(directory))
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if model.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    (directory / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    (directory / "1_Pooling").mkdir(exist_ok=True)
    dim = int(model.tower.backbone.config.hidden_size)
    pooling = {"word_embedding_dimension": dim}
    for key, mode in (
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_mean_tokens", "mean"),
        ("pooling_mode_max_tokens", "max"),
        ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
        ("pooling_mode_lasttoken", "lasttoken"),
    ):
        pooling[key] = model.pooling == mode
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n", encoding="utf-8")
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": model.max_length, "do_lower_case": False}) + "\n", encoding="utf-8")
    if model.query_prefix:
        (directory / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": model.query_prefix}}) + "\n", encoding="utf-8")


def _curve(history: list[dict], points: int = 50) -> list[list[float]]:
    """The loss curve, averaged over windows: ``[[last step of window, mean loss], ...]`` (at most ``points``)."""
    if not history:
        return []
    window = max(1, math.ceil(len(history) / points))
    out = []
    for start in range(0, len(history), window):
        part = history[start : start + window]
        out.append([int(part[-1]["step"]) + 1, round(float(np.mean([h["loss"] for h in part])), 6)])
    return out


def install_jpq(index_dir: str | Path, result: JPQResult, base_model: str) -> dict:
    """Put a trained JPQ into ``index_dir``'s dense component (atomically) and return the new manifest entry.

    The dense component is rebuilt in a temporary directory (its files copied, the FAISS index
    rewritten with the trained centroids, ``jpq/`` added) and swapped in by
    :func:`braid.index.manifest.adding_component`; the document codes are copied unchanged.
    """
    import faiss

    from braid.index import pq as pqmod
    from braid.index.manifest import adding_component, read_manifest

    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    dense = manifest["components"].get("dense")
    if not isinstance(dense, dict):
        raise OptionError("INDEX_DIR", str(index_dir), "an index with a dense component")
    src = index_dir / "dense"
    file = str(dense.get("index", {}).get("file", "dense.faiss"))
    qm = result.model
    meta = {
        "format_version": JPQ_FORMAT_VERSION,
        "dir": JPQ_DIR,
        "query_encoder": f"{JPQ_DIR}/query_encoder",
        "centroids": f"{JPQ_DIR}/centroids.npy",
        "base_centroids": f"{JPQ_DIR}/base_centroids.npy",
        "base_model": base_model,
        "pooling": qm.pooling,
        "normalize": qm.normalize,
        "query_prefix": qm.query_prefix,
        "max_length": qm.max_length,
        "config": result.config.to_dict(),
        "steps": len(result.history),
        "train_seconds": round(result.seconds, 1),
        "epoch_losses": [round(x, 6) for x in result.epoch_losses],
        "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    new_info = {**{k: v for k, v in dense.items() if k != "jpq"}, "jpq": meta}
    with adding_component(index_dir, "dense", new_info, overwrite=True) as tmp:
        for item in src.iterdir():
            if item.name == JPQ_DIR or item.name == file:
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
        index = faiss.read_index(str(src / file))
        before = pqmod.get_codes(index)
        pqmod.set_codebooks(index, result.centroids)
        if not np.array_equal(pqmod.get_codes(index), before):  # pragma: no cover - set_codebooks never re-encodes
            raise BraidError("internal error: document codes changed while installing JPQ centroids")
        faiss.write_index(index, str(tmp / file))
        out = tmp / JPQ_DIR
        save_query_encoder(qm, out / "query_encoder")
        np.save(out / "centroids.npy", result.centroids.astype(np.float32), allow_pickle=False)
        np.save(out / "base_centroids.npy", result.base_centroids.astype(np.float32), allow_pickle=False)
        record = {**meta, "history": result.history if len(result.history) <= 5000 else None, "curve": _curve(result.history)}
        (out / "jpq.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return new_info


def default_checkpoint_dir(index_dir: str | Path) -> Path:
    """``.NAME.jpq-train`` next to the index (like the encoding caches of a build)."""
    index_dir = Path(index_dir)
    return index_dir.parent / f".{index_dir.name}.jpq-train"


def train_jpq_index(
    index_dir: str | Path,
    dataset_dir: str | Path,
    split: str = "train",
    config: JPQConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> dict:
    """``braid train jpq``: train JPQ on ``dataset_dir``'s ``split`` qrels for the PQ/OPQ dense index of ``index_dir``, save it there.

    Training always starts from the index's pre-JPQ state (its base encoder and centroids), so
    training an index again replaces the previous JPQ rather than compounding it.
    ``checkpoint_dir``: None uses :func:`default_checkpoint_dir`, removed after a successful
    install; an explicit directory is kept. Re-running after an interruption resumes. Returns a
    summary dict (pairs, steps, seconds, losses, the manifest entry).
    """
    from braid.index import pq as pqmod
    from braid.index.dense import DenseIndex
    from braid.index.manifest import read_docids, read_manifest

    config = config or JPQConfig()
    log = log or (lambda _msg: None)
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    dense = manifest["components"].get("dense")
    if not isinstance(dense, dict):
        raise OptionError("INDEX_DIR", str(index_dir), "an index with a dense component (build it with --retrievers dense --dense-index pq or opq)")
    kind = (dense.get("index", {}).get("config") or {}).get("kind")
    if kind not in JPQ_KINDS:
        raise OptionError("dense index kind", kind, f"JPQ trains {' or '.join(JPQ_KINDS)} dense indexes; rebuild with --dense-index pq or opq")
    encoder = dense.get("encoder") or {}
    doc_ids = read_docids(index_dir)
    data = training_set_from_dataset(dataset_dir, split, doc_ids)
    log(f"jpq: {len(data.query_ids)} queries, {data.n_pairs} pairs from {split} ({data.skipped} judged queries skipped)")
    index = DenseIndex.load(index_dir / "dense", dense["index"], mmap=False).index
    if is_jpq(dense):
        jpq = dense["jpq"]
        base_model = str(jpq["base_model"])
        base = np.load(index_dir / "dense" / jpq["base_centroids"], allow_pickle=False)
        pqmod.set_codebooks(index, base)
    else:
        base_model = str(encoder.get("model") or "")
    if not base_model:
        raise IndexFormatError(f"{index_dir}: the dense component does not record its encoder model")
    explicit = checkpoint_dir is not None
    ckdir = Path(checkpoint_dir) if explicit else default_checkpoint_dir(index_dir)
    result = train_jpq(
        base_model,
        index,
        data,
        config,
        checkpoint_dir=ckdir,
        progress=progress,
        log=log,
        pooling=encoder.get("pooling"),
        normalize=encoder.get("normalize"),
        query_prefix=encoder.get("query_prefix"),
        threads=threads,
    )
    info = install_jpq(index_dir, result, base_model)
    if not explicit:
        shutil.rmtree(ckdir, ignore_errors=True)
    return {
        "queries": len(data.query_ids),
        "pairs": data.n_pairs,
        "skipped_queries": data.skipped,
        "steps": len(result.history),
        "resumed_at_step": result.resumed_at_step,
        "seconds": round(result.seconds, 1),
        "epoch_losses": result.epoch_losses,
        "dense": info,
    }
