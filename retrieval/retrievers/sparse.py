"""``sparse`` and ``sparse-if``: learned sparse retrieval over the blocked index.

One retriever in two query modes: ``sparse`` encodes queries with the SPLADE model recorded in the
manifest; ``sparse-if`` (inference-free) weights the query's tokens by the IDF table, with no model at
query time. Query-time defaults of the blocked index were chosen on scifact/dictionary: accuracy@10
0.997 against exact search on scifact (scripts/bench_sparse.py; docs/BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from braid.index.hits import Hits, drop_excluded
from braid.retrieval.retrievers.base import QueryCache, model_for_queries
from braid.retrieval.retrievers.spec import Knob, RetrieverSpec

QUERY_CUT = 20
HEAP_FACTOR = 0.9

# heap_factor: a block is skipped when its summary estimate is below heap_factor x the current k-th
# score. Values above 1 skip blocks that might still hold a better document (faster, less exact; the
# benchmark grid goes to 1.2); 2 is the documented ceiling.
KNOBS = (
    Knob("query_cut", int, "Sparse: query terms whose posting lists are traversed (largest weights).", low=1),
    Knob("heap_factor", float, "Sparse: block skip threshold, 0 < h <= 2 (smaller = more exact).", low=0, low_open=True, high=2),
    Knob("exact", bool, "Sparse: exact top-k (no pruning or skipping)."),
)


@dataclass
class SparseRetriever:
    """Learned sparse retrieval over the blocked index; queries by SPLADE (``model``) or tokenizer + IDF (``idf``)."""

    index: object
    encoder: object
    name: str = "sparse"
    exact_encoder: object | None = None
    _cache: QueryCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cache = QueryCache(self._encode_rows)

    @classmethod
    def open(cls, ctx, query_mode: str = "model") -> "SparseRetriever":
        from braid.encoders.sparse import SparseEncoder

        enc = ctx.require("sparse")["encoder"]
        idf_path = ctx.path(*str(ctx.require("sparse").get("idf_path", "sparse/idf.npy")).split("/"))
        encoder = SparseEncoder(
            model_for_queries(enc),
            query_mode=query_mode,
            idf=idf_path if (query_mode == "idf" and idf_path.exists()) else None,
            max_length=int(enc.get("max_length", 256)),
            query_top_k=enc.get("query_top_k"),
            **ctx.encoder_kwargs(),
        )
        return cls(index=ctx.component("sparse"), encoder=encoder, name="sparse-if" if query_mode == "idf" else "sparse")

    def query_runtime(self) -> str | None:
        """What encodes the queries (``"torch"``, ``"onnx"``, ``"onnx-int8"``), None when no model does (``sparse-if``)."""
        if self.encoder.config.query_mode != "model":
            return None
        return self.encoder.backbone.runtime_label("query")

    def _encode_rows(self, texts: list[str]) -> list:
        fresh = self.encoder.encode_queries(texts)
        return [tuple(np.array(a, dtype=dt) for a, dt in zip(fresh.row(i), (np.int32, np.float32))) for i in range(len(texts))]

    def encode_queries(self, queries: Sequence[str]):
        """Query vectors (SparseVectors), memoised per text."""
        from braid.data.vectors import SparseVectors

        return SparseVectors.from_rows(self._cache.get(queries), self.encoder.vocab_size)

    def search(self, queries: Sequence[str], k: int, threads: int = 1, exclude=None, allow=None, **knobs) -> Hits:
        return self.search_vectors(self.encode_queries(queries), k=k, threads=threads, exclude=exclude, allow=allow, **knobs)

    def search_vectors(self, vectors, k: int, threads: int = 1, exclude=None, query_cut=None, heap_factor=None, exact: bool = False,
                       allow=None) -> Hits:  # fmt: skip
        """``allow``: bool over docnos, the documents a filter lets through (None: all): applied inside
        the kernels (a docno exclusion bitset), so the top-k is that of the allowed documents."""
        extra = 1 if exclude is not None else 0
        kw = {}
        if allow is not None:
            from braid.index.sparse.blocked import BlockedSparseIndex, exclusion_bitset

            kw = {"excluded": exclusion_bitset(~allow)} if isinstance(self.index, BlockedSparseIndex) else {"allow": allow}
        hits = self.index.search(
            vectors,
            k=k + extra,
            query_cut=int(query_cut) if query_cut is not None else QUERY_CUT,
            heap_factor=float(heap_factor) if heap_factor is not None else HEAP_FACTOR,
            exact=exact,
            threads=threads,
            **kw,
        )
        return drop_excluded(hits, exclude, k)

    def feedback_vectors(self, docnos: np.ndarray):
        """Forward-index rows of feedback documents (SparseVectors), for Rocchio PRF."""
        return self.index.forward_vectors(np.asarray(docnos, dtype=np.int64))

    def score_candidates(self, queries: Sequence[str], docnos: np.ndarray) -> np.ndarray:
        """Exact full-SPLADE scores of candidate docnos (n_queries, n) with model-encoded queries (-inf on padding)."""
        if self.encoder.config.query_mode == "model":
            qvecs = self.encode_queries(queries)
        else:
            if self.exact_encoder is None:
                from braid.encoders.sparse import SparseEncoder

                cfg = self.encoder.config
                opts = self.encoder.options
                self.exact_encoder = SparseEncoder(cfg.model, max_length=cfg.max_length, query_mode="model", runtime=opts.runtime, precision=opts.precision)
            qvecs = self.exact_encoder.encode_queries(list(queries))
        out = np.full(docnos.shape, -np.inf, dtype=np.float32)
        for i in range(docnos.shape[0]):
            valid = docnos[i] >= 0
            if not valid.any():
                continue
            dense_q = np.zeros(qvecs.vocab_size, dtype=np.float32)
            q_idx, q_w = qvecs.row(i)
            dense_q[q_idx] = q_w
            fwd = self.index.forward_vectors(docnos[i][valid])
            scores = np.add.reduceat(dense_q[fwd.indices] * np.asarray(fwd.data, dtype=np.float32), fwd.indptr[:-1]) if fwd.indptr[-1] else np.zeros(fwd.n_rows)
            scores = np.where(np.diff(fwd.indptr) > 0, scores, 0.0)
            out[i, valid] = scores
        return out


def _has_model(info: dict) -> str | None:
    return None if info.get("encoder", {}).get("model") else "the sparse component was built from vectors without a query model"


def _has_idf(info: dict) -> str | None:
    return None if info.get("encoder", {}).get("idf", False) else "the sparse component has no IDF table"


SPEC = RetrieverSpec(
    name="sparse",
    component="sparse",
    open=lambda ctx: SparseRetriever.open(ctx, "model"),
    summary="learned sparse (SPLADE queries) over the blocked index",
    knobs=KNOBS,
    serves=_has_model,
    prf={"rocchio": "sparse-rocchio"},
    weight=0.75,
    hybrid=True,
    rescore=True,
    # encoders safe for concurrent calls (SPLADE's decoder is split off at load, not swapped per forward pass),
    # per-thread search scratch in the blocked index (tests/test_service.py)
    thread_safe=True,
)

SPEC_IF = RetrieverSpec(
    name="sparse-if",
    component="sparse",
    open=lambda ctx: SparseRetriever.open(ctx, "idf"),
    summary="inference-free learned sparse (tokenizer + IDF queries, no model at query time)",
    knobs=KNOBS,
    serves=_has_idf,
    prf={"rocchio": "sparse-rocchio"},
    weight=0.75,
    stands_in_for="sparse",
    thread_safe=True,  # tokenizer + IDF table: read-only
)
