"""Trainable towers: one side of a dense encoder as a ``torch.nn.Module`` that training optimises.

A :class:`DenseTower` is a :class:`~braid.encoders.dense.DenseEncoder` seen from training: texts
-> float32 tensor (B, dim) with gradients, through the encoder's own prefix
(:meth:`~braid.encoders.dense.DenseEncoder.prefixed`), tokenisation and padding
(:meth:`~braid.encoders.base.TransformerBackbone.collate`) and pooling + normalisation
(:meth:`~braid.encoders.dense.DenseEncoder.embed`); its parameters are the encoder's model, so what
training changes the encoder encodes, and :meth:`DenseEncoder.save` writes it as a folder that a
plain ``DenseEncoder`` reads back to the same vectors. Nothing here knows about losses or indexes.

This module imports torch when imported (a Module subclass needs it); only training imports it,
through :meth:`DenseEncoder.tower` or :func:`query_tower`, never query-time code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from braid.data.errors import OptionError
from braid.encoders.base import check_texts
from braid.encoders.dense import KINDS, DenseEncoder


class DenseTower(torch.nn.Module):
    """The ``kind`` side (``"query"`` or ``"document"``) of ``encoder``: texts -> float32 tensor (B, dim), differentiable.

    Registers the encoder's transformers model as ``self.model`` (its parameters are the tower's).
    ``forward`` runs the model in whatever mode the tower is in (``train()``: dropout on);
    :meth:`encode` is the eval-mode, gradient-free encoding of :meth:`DenseEncoder.encode`.
    """

    def __init__(self, encoder: DenseEncoder, kind: str = "query"):
        super().__init__()
        if kind not in KINDS:
            raise OptionError("kind", kind, f"one of {', '.join(KINDS)}")
        encoder.backbone.use_torch("a trainable tower")  # what training changes, the encoder encodes
        self.encoder = encoder
        self.kind = kind
        self.model = encoder.backbone.model  # loads it (on the encoder's device) and registers its parameters
        self.train(False)

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def device(self) -> Any:
        return self.encoder.backbone.device

    @property
    def max_length(self) -> int:
        return self.encoder.options.max_length

    @property
    def pooling(self) -> str:
        return self.encoder.config.pooling

    @property
    def normalize(self) -> bool:
        return self.encoder.config.normalize

    @property
    def prefix(self) -> str:
        cfg = self.encoder.config
        return cfg.query_prefix if self.kind == "query" else cfg.document_prefix

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """``texts`` (a non-empty sequence of str) -> float32 tensor (len(texts), dim), in input order, on the device."""
        batch = self.encoder.backbone.collate(self.encoder.prefixed(check_texts(texts), self.kind))
        return self.encoder.embed(batch, self.model)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Eval-mode vectors float32 (n, dim), no gradients: :meth:`DenseEncoder.encode` over the current weights."""
        was_training = self.training
        self.train(False)
        try:
            return self.encoder.encode(texts, self.kind)
        finally:
            self.train(was_training)

    def save(self, directory: str | Path) -> None:
        """Write the current weights as a model folder (:meth:`DenseEncoder.save`)."""
        self.encoder.save(directory)


def query_tower(
    model: str,
    max_length: int,
    device: str = "auto",
    pooling: str | None = None,
    normalize: bool | None = None,
    query_prefix: str | None = None,
) -> DenseTower:
    """The trainable query side of the bi-encoder ``model`` (folder or hub id), fp32, in eval mode until trained.

    ``pooling`` / ``normalize`` / ``query_prefix``: None reads them from the model folder, as
    :class:`DenseEncoder` does. The document prefix is left empty: only queries go through it.
    """
    encoder = DenseEncoder(
        str(model),
        max_length=max_length,
        device=device,
        precision="fp32",
        pooling=pooling,
        normalize=normalize,
        query_prefix=query_prefix,
        document_prefix="",
        runtime="torch",
    )
    return DenseTower(encoder, "query")
