"""``braid train sparse``: inference-free learned sparse document encoders trained on the index's own collection.

After Geng et al. 2024 ("Towards Competitive Search Relevance for Inference-Free Learned Sparse
Retrievers"): the document encoder (a SPLADE MLM) is trained for queries that are only
tokenizer + IDF, with an IDF-aware FLOPS penalty and distillation from a heterogeneous ensemble
(here the index's BM25 + SPLADE + dense retrievers, min-max normalised per query and combined).

- :mod:`~braid.retrieval.train.sparse.config`: :class:`SparseTrainConfig`;
- :mod:`~braid.retrieval.train.sparse.teacher`: candidates from the hybrid ranking, teacher scores, their normalisation;
- :mod:`~braid.retrieval.train.sparse.queries`: corpus-only pseudo-queries (titles, inverse cloze sentences);
- :mod:`~braid.retrieval.train.sparse.loss`: the IDF-aware FLOPS penalty (torch);
- :mod:`~braid.retrieval.train.sparse.loop`: :func:`train_sparse` on sentence-transformers' SparseEncoderTrainer;
- :mod:`~braid.retrieval.train.sparse.install`: :func:`train_sparse_index` (the command) and :func:`install_sparse`.

The model folder is sentence-transformers' own; :class:`braid.encoders.sparse.SparseEncoder` reads it.
"""

from braid.data.lazy import lazy_exports

_EXPORTS = {
    "SparseTrainConfig": "braid.retrieval.train.sparse.config",
    "minmax_per_query": "braid.retrieval.train.sparse.teacher",
    "combine_teachers": "braid.retrieval.train.sparse.teacher",
    "pseudo_queries": "braid.retrieval.train.sparse.queries",
    "IdfAwareFlopsLoss": "braid.retrieval.train.sparse.loss",
    "idf_penalty_weights": "braid.retrieval.train.sparse.loss",
    "TrainingExamples": "braid.retrieval.train.sparse.loop",
    "train_sparse": "braid.retrieval.train.sparse.loop",
    "build_student": "braid.retrieval.train.sparse.loop",
    "train_sparse_index": "braid.retrieval.train.sparse.install",
    "install_sparse": "braid.retrieval.train.sparse.install",
    "mine_examples": "braid.retrieval.train.sparse.install",
    "default_checkpoint_dir": "braid.retrieval.train.sparse.install",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "IdfAwareFlopsLoss",
    "SparseTrainConfig",
    "TrainingExamples",
    "build_student",
    "combine_teachers",
    "default_checkpoint_dir",
    "idf_penalty_weights",
    "install_sparse",
    "mine_examples",
    "minmax_per_query",
    "pseudo_queries",
    "train_sparse",
    "train_sparse_index",
]
