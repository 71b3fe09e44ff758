"""``dense``: bi-encoder retrieval over the FAISS component (flat, HNSW, IVF, PQ/OPQ, JPQ-trained)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from braid.index.hits import Hits, drop_excluded
from braid.retrieval.retrievers.base import QueryCache, model_for_queries
from braid.retrieval.retrievers.spec import Knob, RetrieverSpec

_IVF = ("ivf", "ivfpq")


def _kind(info: dict) -> str:
    return str(info.get("index", {}).get("config", {}).get("kind", "flat"))


def _ivf_only(info: dict) -> str | None:
    kind = _kind(info)
    return None if kind in _IVF else f"nprobe applies to IVF indexes (ivf, ivfpq); this dense index is {kind}"


def _hnsw_only(info: dict) -> str | None:
    kind = _kind(info)
    return None if kind == "hnsw" else f"ef_search applies to HNSW indexes; this dense index is {kind}"


KNOBS = (
    Knob("nprobe", int, "Dense IVF: inverted lists probed.", low=1, applies=_ivf_only),
    Knob("ef_search", int, "Dense HNSW: search breadth.", low=1, applies=_hnsw_only),
)


@dataclass
class DenseRetriever:
    """Dense retrieval over the FAISS index with the bi-encoder recorded in the manifest."""

    index: object
    encoder: object
    vectors: np.ndarray | None
    name: str = "dense"
    _cache: QueryCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cache = QueryCache(lambda texts: list(np.asarray(self.encoder.encode_queries(texts), dtype=np.float32)))

    @classmethod
    def open(cls, ctx) -> "DenseRetriever":
        from braid.encoders.jpq import is_jpq, open_jpq_query_encoder

        info = ctx.require("dense")
        enc = info["encoder"]
        if is_jpq(info):
            # A JPQ index searches with its own jointly trained query encoder.
            encoder = open_jpq_query_encoder(ctx.index_dir, info, device=ctx.device, runtime=ctx.runtime, threads=ctx.query_threads)
        else:
            from braid.encoders.dense import DenseEncoder

            kwargs = {k: enc[k] for k in ("query_prefix", "document_prefix") if enc.get(k) is not None}
            encoder = DenseEncoder(model_for_queries(enc), max_length=int(enc.get("max_length", 256)), **kwargs, **ctx.encoder_kwargs())
        path = ctx.path("vectors", "dense", "vectors.npy")
        # A JPQ query encoder was trained against PQ-decoded documents: rescore/PRF with those, not the raw vectors.
        # A live index's segments keep their own vectors (SegmentedDenseIndex.doc_vectors).
        use_raw = path.exists() and not is_jpq(info) and not ctx.live
        vectors = np.load(path, mmap_mode="r", allow_pickle=False) if use_raw else None
        return cls(index=ctx.component("dense"), encoder=encoder, vectors=vectors)

    def query_runtime(self) -> str:
        """What encodes the queries: ``"torch"``, ``"onnx"`` or ``"onnx-int8"``."""
        return self.encoder.backbone.runtime_label("query")

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Query embeddings float32 (n, dim), memoised per text."""
        if not queries:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return np.ascontiguousarray(np.stack(self._cache.get(queries)), dtype=np.float32)

    def search(self, queries: Sequence[str], k: int, threads: int = 1, exclude=None, allow=None, **knobs) -> Hits:
        return self.search_vectors(self.encode_queries(queries), k=k, threads=threads, exclude=exclude, allow=allow, **knobs)

    def search_vectors(self, vectors: np.ndarray, k: int, threads: int = 1, exclude=None, nprobe=None, ef_search=None, allow=None) -> Hits:
        """``allow``: bool over docnos, the documents a filter lets through (None: all), applied inside
        FAISS (an ID selector) before the top-k."""
        extra = 1 if exclude is not None else 0
        kw = {}
        if allow is not None:
            from braid.index.dense import DenseIndex

            kw = {"allowed": allow} if isinstance(self.index, DenseIndex) else {"allow": allow}
        hits = self.index.search(vectors, k=k + extra, nprobe=nprobe, ef_search=ef_search, threads=threads, **kw)
        return drop_excluded(hits, exclude, k)

    def doc_vectors(self, docnos: np.ndarray) -> np.ndarray:
        docnos = np.asarray(docnos, dtype=np.int64)
        if self.vectors is not None:
            return np.asarray(self.vectors[docnos], dtype=np.float32)
        if hasattr(self.index, "doc_vectors"):
            return self.index.doc_vectors(docnos)
        return np.asarray(self.index.reconstruct(docnos), dtype=np.float32)

    feedback_vectors = doc_vectors

    def score_candidates(self, queries: Sequence[str], docnos: np.ndarray) -> np.ndarray:
        qvecs = self.encode_queries(queries)
        out = np.full(docnos.shape, -np.inf, dtype=np.float32)
        for i in range(docnos.shape[0]):
            valid = docnos[i] >= 0
            if valid.any():
                out[i, valid] = self.doc_vectors(docnos[i][valid]) @ qvecs[i]
        return out


SPEC = RetrieverSpec(
    name="dense",
    component="dense",
    open=DenseRetriever.open,
    summary="dense bi-encoder over FAISS",
    knobs=KNOBS,
    prf={"average": "dense-average", "rocchio": "dense-rocchio"},
    weight=1.0,
    hybrid=True,
    rescore=True,
    # the encoders allow concurrent calls (ONNX Runtime sessions; the torch model runs no state-changing code),
    # FAISS searches take per-call parameters, the query cache is locked (tests/test_service.py)
    thread_safe=True,
)
