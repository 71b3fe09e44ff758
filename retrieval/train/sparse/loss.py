"""The IDF-aware FLOPS penalty: SPLADE's FLOPS regulariser with a per-term weight that falls with the term's IDF.

FLOPS (Paria et al. 2020) is ``sum_j (mean_i w_ij)^2`` over the documents ``i`` of a batch and the
vocabulary ``j``: every term is pushed towards 0 alike. An inference-free query weighs term ``j``
by its IDF, so a document weight on a frequent (low-IDF) term buys little relevance and costs a
long posting list, while a rare term's weight is what matching rests on. Geng et al. 2024
("Towards Competitive Search Relevance for Inference-Free Learned Sparse Retrievers") make the
sparsity pressure IDF-aware so that it spares high-IDF terms; here that is

    L = sum_j p_j * (mean_i w_ij)^2,   p_j = 1 / max(idf_j, floor)

(``floor`` bounds the weight of stop words, whose IDF is near 0). With ``p_j = 1`` it is
sentence-transformers' :class:`FlopsLoss`. The class is a SpladeLoss ``document_regularizer``:
``compute_loss_from_embeddings(embeddings (n_docs, vocab)) -> scalar``. torch loads with it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def idf_penalty_weights(idf: np.ndarray, floor: float) -> np.ndarray:
    """``p_j = 1 / max(idf_j, floor)`` float32 (vocab,); ``floor`` > 0 (terms of IDF 0, e.g. special tokens, get ``1 / floor``)."""
    if not floor > 0:
        raise ValueError(f"idf_floor must be > 0 for the IDF-aware penalty, got {floor}")
    return (1.0 / np.maximum(np.asarray(idf, dtype=np.float64), float(floor))).astype(np.float32)


class IdfAwareFlopsLoss(nn.Module):
    """``sum_j p_j (mean_i w_ij)^2`` with ``p`` from :func:`idf_penalty_weights` (see the module docstring)."""

    def __init__(self, model, idf: np.ndarray, floor: float) -> None:
        super().__init__()
        self.model = model
        self.floor = float(floor)
        self.register_buffer("penalty", torch.from_numpy(idf_penalty_weights(idf, floor)), persistent=False)

    def forward(self, sentence_features, labels):  # pragma: no cover - a regulariser, never a loss on its own
        raise NotImplementedError("IdfAwareFlopsLoss is a SpladeLoss document_regularizer")

    def compute_loss_from_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        mean = embeddings.float().mean(dim=0)
        return torch.sum(self.penalty.to(mean.device) * mean * mean)

    def get_config_dict(self) -> dict:
        return {"idf_floor": self.floor}
