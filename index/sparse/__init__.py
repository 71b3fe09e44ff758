"""Learned-sparse retrieval: a Seismic-style blocked inverted index in Numba.

The CSR container and its readers live in :mod:`braid.data.vectors`; :mod:`.kernels` holds the Numba kernels,
:mod:`.blocked` the index (config, build, search, save/load) and the brute-force reference.
"""

from braid.index.sparse.blocked import BlockedIndexConfig, BlockedSparseIndex, SearchStats, exact_search
from braid.data.vectors import SparseVectors, load_vocab, read_vectors_jsonl, read_vectors_npz

__all__ = [
    "BlockedIndexConfig",
    "BlockedSparseIndex",
    "SearchStats",
    "SparseVectors",
    "exact_search",
    "load_vocab",
    "read_vectors_jsonl",
    "read_vectors_npz",
]
