"""JPQ training settings (:class:`JPQConfig`), saved with the trained index and in checkpoints."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np

from braid.data.errors import OptionError, check_finite, check_int

# The dense index kinds JPQ trains (IVF-PQ codes are residuals of a coarse quantizer: not these).
JPQ_KINDS = ("pq", "opq")
# Settings that may change when a checkpoint is resumed (they do not change what a step computes).
RESUMABLE_CHANGES = ("epochs", "checkpoint_every", "device")


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
            check_int(name, getattr(self, name), low=low)
        for name in ("lr", "centroid_lr"):
            check_finite(name, getattr(self, name), low=0, hint="0 freezes that part")
        check_finite("temperature", self.temperature, low=0, low_open=True)
        if not _is_num(self.warmup) or not 0 <= self.warmup < 1:
            raise OptionError("warmup", self.warmup, "a fraction in [0, 1)")
        check_finite("weight_decay", self.weight_decay, low=0)
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
