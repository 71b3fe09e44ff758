"""The blocked index's arrays as the search kernels take them: plain named tuples, no numba.

Kept apart from :mod:`braid.index.sparse.kernels` so that opening an index and searching it on the
numpy tier (:mod:`braid.index.sparse.numpy_search`) import no numba.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class BlockedArrays(NamedTuple):
    """The arrays of a blocked index (dtypes, shapes and meaning: :mod:`braid.index.sparse.blocked`),
    as Seismic's ``PostingList`` struct holds them. The search kernels read them by name."""

    list_ptr: np.ndarray
    block_ptr: np.ndarray
    post_docs: np.ndarray
    block_min: np.ndarray
    block_step: np.ndarray
    sum_list_ptr: np.ndarray
    sum_comp_ids: np.ndarray
    sum_comp_ptr: np.ndarray
    sum_blocks: np.ndarray
    sum_codes: np.ndarray
    fwd_ptr: np.ndarray
    fwd_terms: np.ndarray
    fwd_weights: np.ndarray


class SearchScratch(NamedTuple):
    """Per-thread search scratch (:func:`new_scratch`); every search leaves ``dense_q`` and ``visited`` all-zero.

    ``dense_q`` float32 (V,): the query as a dense vector; ``visited`` uint64 ((N >> 6) + 1,): bitset of
    the docs scored; ``touched`` int32 (N,): those docs, to clear the bitset; ``est``, ``est_q`` float32
    (max blocks per list,): one list's block estimates.
    """

    dense_q: np.ndarray
    visited: np.ndarray
    touched: np.ndarray
    est: np.ndarray
    est_q: np.ndarray


__all__ = ["BlockedArrays", "SearchScratch"]
