"""The JPQ training loop (:func:`train_jpq`), its result and the deterministic evaluation of its objective.

One step, for a batch of (query, relevant document) pairs:

1. encode the queries with the current query tower (with gradients);
2. retrieve the top ``negative_depth`` documents of each query from the PQ index itself, with the
   current centroids (FAISS ADC search), and sample ``negatives`` of them that are not relevant;
3. score every query against the reconstructed vectors of all the batch's positives and
   negatives (the other queries' documents act as extra negatives; a query's other relevant
   documents are masked) and take the softmax cross-entropy of its positive, at ``temperature``
   (:mod:`~braid.retrieval.train.jpq.loss`);
4. one AdamW step on the encoder (``lr``) and the centroids (``centroid_lr``), with linear warm-up
   and decay.

Training is seeded (data order from ``(seed, epoch)``, dropout and negative sampling from
``(seed, step)``), so a run resumed from its checkpoint (:mod:`braid.retrieval.train.checkpoint`)
ends with the same weights as one that was never interrupted. torch and faiss load inside the
functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from braid.data.errors import BraidError, OptionError, check_positive_int
from braid.retrieval.train.checkpoint import read_checkpoint, write_checkpoint
from braid.retrieval.train.jpq.config import JPQ_KINDS, RESUMABLE_CHANGES, JPQConfig
from braid.retrieval.train.jpq.loss import batch_candidates, batch_loss, search_negatives
from braid.retrieval.train.pairs import TrainingSet

if TYPE_CHECKING:  # torch loads only when training runs
    from braid.encoders.towers import DenseTower


@dataclass
class JPQResult:
    """A finished training: the query tower, trained centroids float32 (m, ksub, dsub), and the record of the run."""

    tower: DenseTower
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
        """Eval-mode query vectors float32 (n, dim) of the trained tower."""
        return self.tower.encode(list(texts))


def loss_curve(history: list[dict], points: int = 50) -> list[list[float]]:
    """The loss curve, averaged over windows: ``[[last step of window, mean loss], ...]`` (at most ``points``)."""
    if not history:
        return []
    window = max(1, math.ceil(len(history) / points))
    out = []
    for start in range(0, len(history), window):
        part = history[start : start + window]
        out.append([int(part[-1]["step"]) + 1, round(float(np.mean([h["loss"] for h in part])), 6)])
    return out


def _fingerprint(model_name: str, layout, codes: np.ndarray, base: np.ndarray, data: TrainingSet, config: JPQConfig) -> dict:
    cfg = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
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
    model: str | DenseTower,
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
    """Train the query encoder ``model`` and the centroids of ``pq_index``.

    ``model``: a bi-encoder folder / hub id (its query side is loaded with
    :func:`braid.encoders.towers.query_tower`, ``pooling`` / ``normalize`` / ``query_prefix``
    overriding the folder's), or a loaded query tower (trained in place; its ``max_length`` must be
    ``config.max_length``). ``pq_index``: a FAISS PQ or OPQ+PQ index over the corpus (row = docno;
    e.g. ``DenseIndex.index``), not modified (negatives are searched in a private copy). ``data``:
    the training pairs. ``checkpoint_dir``: where to save and resume (None: no checkpoints).
    ``stop_after_steps``: stop early after this many steps of this call (for tests of
    resumption). ``threads``: torch intra-op threads (process-wide; None leaves torch's setting).
    Returns a :class:`JPQResult`; the document codes are those of ``pq_index``, untouched.
    """
    import faiss
    import torch

    from braid.encoders.towers import query_tower
    from braid.index import pq as pqmod

    config = config or JPQConfig()
    log = log or (lambda _msg: None)
    if check_positive_int("threads", threads, allow_none=True) is not None:
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
    if isinstance(model, str):
        tower = query_tower(model, config.max_length, config.device, pooling, normalize, query_prefix)
    else:
        tower = model
        if tower.max_length != config.max_length:
            raise OptionError("max_length", config.max_length, f"the query tower's own max_length ({tower.max_length}): build it with that length")
    dev = tower.device
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
    fingerprint = _fingerprint(tower.name, layout, codes_np, base, data, config)

    history: list[dict] = []
    start_step, elapsed, resumed = 0, 0.0, None
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckdir is not None:
        found = read_checkpoint(ckdir, fingerprint, modules={"encoder": tower.model}, arrays=("centroids",), optimizer=optimizer, device=dev)
        if found is not None:
            with torch.no_grad():
                centroids.copy_(torch.as_tensor(found.arrays["centroids"], device=dev))
            start_step, history, elapsed = int(found.state["step"]), list(found.state["history"]), float(found.state["seconds"])
            resumed = start_step
            log(f"jpq: resuming from {found.path} at step {start_step} of {total}")

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
                q = tower([data.texts[i] for i in data.pair_query[rows]])
            with torch.no_grad():
                pqmod.set_codebooks(search_index, centroids.detach().float().cpu().numpy())
                hits = search_negatives(search_index, q.detach().float().cpu().numpy(), config.negative_depth)
            candidates, targets, masked = batch_candidates(rows, data, hits, config.negatives, rng)
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
                write_checkpoint(
                    ckdir,
                    {"step": step + 1, "total": total, "history": history, "seconds": seconds, "fingerprint": fingerprint, "config": config.to_dict()},
                    modules={"encoder": tower.model},
                    arrays={"centroids": centroids.detach().float().cpu().numpy()},
                    optimizer=optimizer,
                )
    finally:
        if bar is not None:
            bar.close()
    tower.eval()
    for p in tower.parameters():
        p.requires_grad_(True)
    return JPQResult(
        tower=tower,
        centroids=centroids.detach().float().cpu().numpy(),
        base_centroids=base,
        config=config,
        history=history,
        seconds=elapsed + time.perf_counter() - t0,
        resumed_at_step=resumed,
    )


def ranking_loss(tower: DenseTower, centroids: np.ndarray, pq_index: Any, data: TrainingSet, config: JPQConfig | None = None) -> float:
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
    dev = tower.device
    c = torch.as_tensor(np.asarray(centroids, dtype=np.float32), device=dev)
    codes = torch.as_tensor(pqmod.get_codes(index), device=dev)
    rot = pqmod.get_rotation(index)
    rot = torch.as_tensor(rot, device=dev) if rot is not None else None
    total, n = 0.0, 0
    for start in range(0, data.n_pairs, config.batch_size):
        rows = np.arange(start, min(start + config.batch_size, data.n_pairs))
        q = torch.as_tensor(tower.encode([data.texts[i] for i in data.pair_query[rows]]), device=dev)
        hits = search_negatives(index, q.cpu().numpy(), config.negative_depth)
        cand, targets, masked = batch_candidates(rows, data, hits, config.negatives, None)
        with torch.no_grad():
            total += float(batch_loss(q, c, codes, rot, targets, cand, masked, config.temperature)) * len(rows)
        n += len(rows)
    return total / max(n, 1)
