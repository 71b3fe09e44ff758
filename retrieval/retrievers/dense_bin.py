"""``dense-bin``: binary-quantized dense retrieval, Hamming candidates rescored with the float vectors.

The recipe of sentence-transformers' embedding-quantization guide (binary quantization with rescoring):

1. index: the sign bit of each embedding dimension, packed 8 per byte (``dim / 8`` bytes a document:
   48 for MiniLM's 384 dimensions, 32x less than float32) in a FAISS ``IndexBinaryFlat``, searched
   by Hamming distance (XOR + popcount);
2. candidates: the query's sign bits -> the ``rescore_multiplier x k`` documents nearest in Hamming
   distance (ties by docno);
3. rescoring: those candidates' float32 vectors against the float32 query (the score of ``dense``:
   inner product, or negated squared L2) -> top ``k`` by (-score, docno).

Rescoring reads the float32 vectors the dense component keeps (``vectors/dense/vectors.npy``,
memory-mapped, so only the candidates' rows are read; else the flat FAISS index). int8 rescoring,
the guide's other option, is measured in ``scripts/bench_dense_bin.py`` and not offered: the float
vectors are already stored and are exact (docs/benchmarks/dense-bin.md).

Built by ``braid index ... --retrievers dense --dense-index bin``: the dense component is then a flat
index (so ``dense`` over it searches the float vectors exactly) plus the packed sign bits
(``dense/dense.bin.faiss``). ``rescore_multiplier`` defaults to 4, as in sentence-transformers; with
``rescore_multiplier x k >= num_docs`` every document is rescored and the result is flat search.
Sharded indexes do not serve it (their dense component is a view over the shard workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from braid.data.errors import OptionError
from braid.index.hits import Hits, drop_excluded
from braid.retrieval.retrievers.dense import DenseRetriever
from braid.retrieval.retrievers.spec import Knob, RetrieverSpec

RESCORE_MULTIPLIER = 4


def _kind(info: dict) -> str:
    return str(info.get("index", {}).get("config", {}).get("kind", "flat"))


def _binary_only(info: dict) -> str | None:
    kind = _kind(info)
    return None if kind == "bin" else f"dense-bin searches the sign bits of a binary dense index; this one is {kind} (rebuild with --dense-index bin)"


KNOBS = (
    Knob("rescore_multiplier", int, "Dense-bin: Hamming candidates per result rescored with the float vectors (candidates = multiplier x k).", low=1),
)


# -- search over arrays -------------------------------------------------------------------------
def hamming_candidates(binary, query_codes: np.ndarray, n_candidates: int, threads: int | None = None) -> np.ndarray:
    """The ``n_candidates`` documents nearest each query in Hamming distance, ties by docno.

    ``binary``: a FAISS binary index whose row ids are docnos; ``query_codes``: uint8 (n_queries,
    dim / 8) from :func:`~braid.index.dense.pack_signs`; ``n_candidates`` <= ``binary.ntotal``.
    Returns int64 (n_queries, n_candidates), each row ordered by (distance, docno). (FAISS's heap
    keeps, among documents tied at the cut-off distance, the smallest ids; the tests check it
    against a brute-force Hamming top-k.)
    """
    import faiss

    old = faiss.omp_get_max_threads()
    if threads is not None:
        faiss.omp_set_num_threads(int(threads))
    try:
        dist, labels = binary.search(np.ascontiguousarray(query_codes, dtype=np.uint8), int(n_candidates))
    finally:
        if threads is not None:
            faiss.omp_set_num_threads(old)
    labels = labels.astype(np.int64, copy=False)
    order = np.lexsort((labels, dist), axis=-1)
    return np.take_along_axis(labels, order, axis=1)


def rescore_candidates(
    query_vectors: np.ndarray, candidates: np.ndarray, doc_vectors: Callable[[np.ndarray], np.ndarray], k: int, metric: str = "ip"
) -> Hits:
    """Top ``k`` of each query's ``candidates`` by exact score.

    ``query_vectors``: float32 (n_queries, dim); ``candidates``: int64 (n_queries, m) docnos (``-1``
    ignored); ``doc_vectors(docnos (m,)) -> float32 (m, dim)``. Scores: inner product (``ip``) or
    negated squared L2 distance (``l2``). Returns Hits (n_queries, k), rows by (-score, docno).
    """
    rows = []
    for q, cands in zip(np.asarray(query_vectors, dtype=np.float32), candidates):
        cands = cands[cands >= 0]
        vecs = np.asarray(doc_vectors(cands), dtype=np.float32)
        if metric == "ip":
            scores = vecs @ q
        else:
            diff = vecs - q
            scores = -np.einsum("md,md->m", diff, diff)
        rows.append((cands, scores))
    return Hits.from_lists(rows, k)


# -- the retriever --------------------------------------------------------------------------------
@dataclass
class DenseBinRetriever:
    """Binary-quantized search over the dense component's sign bits, rescored by ``dense``'s vectors.

    ``dense``: the :class:`DenseRetriever` of the same component (query encoder, float vectors);
    ``binary``: its FAISS ``IndexBinaryFlat``.
    """

    dense: DenseRetriever
    binary: object
    metric: str = "ip"
    name: str = "dense-bin"

    @classmethod
    def open(cls, ctx) -> "DenseBinRetriever":
        dense = DenseRetriever.open(ctx)
        binary = getattr(dense.index, "binary", None)
        if binary is None:
            raise OptionError("--retriever", "dense-bin", f"{ctx.index_dir}: this dense component has no binary index (sharded indexes do not serve dense-bin)")
        metric = str(ctx.require("dense")["index"]["config"].get("metric", "ip"))
        return cls(dense=dense, binary=binary, metric=metric)

    @property
    def num_docs(self) -> int:
        return int(self.binary.ntotal)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self.dense.encode_queries(queries)

    def query_runtime(self) -> str:
        return self.dense.query_runtime()

    def search(self, queries: Sequence[str], k: int, threads: int = 1, exclude=None, allow=None, **knobs) -> Hits:
        return self.search_vectors(self.encode_queries(queries), k=k, threads=threads, exclude=exclude, allow=allow, **knobs)

    def search_vectors(self, vectors: np.ndarray, k: int, threads: int = 1, exclude=None, rescore_multiplier: int = RESCORE_MULTIPLIER,
                       allow=None) -> Hits:  # fmt: skip
        """Top ``k`` for float32 query vectors (n_queries, dim): Hamming candidates, then exact rescoring."""
        if allow is not None:
            raise OptionError("filter", "...", "dense-bin does not take filters (bm25, sparse, sparse-if and dense do)")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise OptionError("k", k, "an integer >= 1")
        rescore_multiplier = SPEC.knob("rescore_multiplier").check(rescore_multiplier)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        fetch = int(k) + (1 if exclude is not None else 0)
        if vectors.shape[0] == 0:
            return Hits.empty(0, int(k))
        n_candidates = min(self.num_docs, rescore_multiplier * fetch)
        from braid.index.dense import pack_signs  # here: index.dense costs every command's start-up ~15 ms

        candidates = hamming_candidates(self.binary, pack_signs(vectors), n_candidates, threads)
        hits = rescore_candidates(vectors, candidates, self.dense.doc_vectors, fetch, self.metric)
        return drop_excluded(hits, exclude, int(k))

    def doc_vectors(self, docnos: np.ndarray) -> np.ndarray:
        return self.dense.doc_vectors(docnos)

    feedback_vectors = doc_vectors


SPEC = RetrieverSpec(
    name="dense-bin",
    component="dense",
    open=DenseBinRetriever.open,
    summary="dense bi-encoder, binary-quantized (Hamming candidates rescored with float32)",
    knobs=KNOBS,
    serves=_binary_only,
    prf={"average": "dense-average", "rocchio": "dense-rocchio"},
    weight=1.0,  # its scores are dense's scores
    hybrid=False,  # not measured to help over exact dense in the built-in pipelines (docs/benchmarks/dense-bin.md)
    thread_safe=True,  # as dense; FAISS binary searches are read-only
)
