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

from braid.data.lazy import lazy_exports

# Lazy re-exports (PEP 562): `braid train --help` and `from braid.retrieval.train.jpq.config import
# JPQConfig` (the CLI's defaults) must not import the training loop, the index writers and hashlib.
_EXPORTS = {
    "JPQ_FORMAT_VERSION": "braid.encoders.jpq",
    "is_jpq": "braid.encoders.jpq",
    "open_jpq_query_encoder": "braid.encoders.jpq",
    "CHECKPOINT_LATEST": "braid.retrieval.train.checkpoint",
    "JPQ_KINDS": "braid.retrieval.train.jpq.config",
    "JPQConfig": "braid.retrieval.train.jpq.config",
    "JPQ_DIR": "braid.retrieval.train.jpq.install",
    "default_checkpoint_dir": "braid.retrieval.train.jpq.install",
    "install_jpq": "braid.retrieval.train.jpq.install",
    "train_jpq_index": "braid.retrieval.train.jpq.install",
    "JPQResult": "braid.retrieval.train.jpq.loop",
    "loss_curve": "braid.retrieval.train.jpq.loop",
    "ranking_loss": "braid.retrieval.train.jpq.loop",
    "train_jpq": "braid.retrieval.train.jpq.loop",
    "batch_candidates": "braid.retrieval.train.jpq.loss",
    "batch_loss": "braid.retrieval.train.jpq.loss",
    "search_negatives": "braid.retrieval.train.jpq.loss",
    "TrainingSet": "braid.retrieval.train.pairs",
    "make_training_set": "braid.retrieval.train.pairs",
    "training_set_from_dataset": "braid.retrieval.train.pairs",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


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
