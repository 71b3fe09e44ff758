"""JPQ: train the query encoder and the PQ centroids jointly, document codes frozen (Zhan et al., CIKM 2021).

Starting from a trained PQ or OPQ+PQ dense index, the query encoder (the bi-encoder the documents
were encoded with) and the PQ centroids are optimised together on a listwise ranking loss; the
document encoder is never run and the document codes never change.

- :mod:`~braid.retrieval.train.jpq.config`: :class:`JPQConfig`, the saved training settings;
- :mod:`~braid.retrieval.train.jpq.loss`: the objective over PQ-reconstructed documents and its
  candidate lists (positives + hard negatives searched in the PQ index itself);
- :mod:`~braid.retrieval.train.jpq.loop`: :func:`train_jpq` (seeded, resumable) and :func:`ranking_loss`;
- :mod:`~braid.retrieval.train.jpq.install`: :func:`train_jpq_index` (``braid train jpq``) and
  :func:`install_jpq`, which write the result into the index.

The query tower trained here is :class:`braid.encoders.towers.DenseTower`, the encoders' own
tokenisation, pooling and normalisation; pairs, checkpoints and the leakage rule are the shared
ones of :mod:`braid.retrieval.train`. At query time a trained index is read by
:mod:`braid.encoders.jpq`, which imports nothing from here.
"""

from braid.encoders.jpq import JPQ_FORMAT_VERSION, is_jpq, open_jpq_query_encoder
from braid.retrieval.train.checkpoint import CHECKPOINT_LATEST
from braid.retrieval.train.jpq.config import JPQ_KINDS, JPQConfig
from braid.retrieval.train.jpq.install import JPQ_DIR, default_checkpoint_dir, install_jpq, train_jpq_index
from braid.retrieval.train.jpq.loop import JPQResult, loss_curve, ranking_loss, train_jpq
from braid.retrieval.train.jpq.loss import batch_candidates, batch_loss, search_negatives
from braid.retrieval.train.pairs import TrainingSet, make_training_set, training_set_from_dataset

__all__ = [
    "CHECKPOINT_LATEST",
    "JPQ_DIR",
    "JPQ_FORMAT_VERSION",
    "JPQ_KINDS",
    "JPQConfig",
    "JPQResult",
    "TrainingSet",
    "batch_candidates",
    "batch_loss",
    "default_checkpoint_dir",
    "install_jpq",
    "is_jpq",
    "loss_curve",
    "make_training_set",
    "open_jpq_query_encoder",
    "ranking_loss",
    "search_negatives",
    "train_jpq",
    "train_jpq_index",
    "training_set_from_dataset",
]
