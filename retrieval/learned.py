"""Learned retrievers (sparse and dense): building their components and searching them.

Orchestration between ``encoders/`` (text -> vectors) and ``index/`` (vectors -> hits). Building
encodes the corpus through the resumable cache of :mod:`braid.retrieval.vectorcache` in a sibling
``.NAME.encode-KIND`` directory, then moves the finished vectors into ``INDEX/vectors/KIND`` so that
a rebuild with other index parameters (``--overwrite``) reuses them instead of re-encoding.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from braid.data.errors import DataError, OptionError
from braid.index.hits import Hits
from braid.retrieval.retrievers import drop_excluded

# Query-time defaults of the blocked index, chosen on scifact/dictionary (docs/BENCHMARKS.md):
# accuracy@10 0.997 against exact search on scifact (scripts/bench_sparse.py; docs/BENCHMARKS.md).
SPARSE_QUERY_CUT = 20
SPARSE_HEAP_FACTOR = 0.9
_QUERY_CACHE_SIZE = 100_000


def _encode_dir(out_dir: Path, kind: str) -> Path:
    return out_dir.parent / f".{out_dir.name}.encode-{kind}"


def _same_corpus(previous_vectors: Path | None, kind: str, fingerprint: dict) -> Path | None:
    """A finished cache of ``kind`` from the index being replaced, if it was made from this very corpus."""
    if previous_vectors is None:
        return None
    cache = previous_vectors / kind
    try:
        manifest = json.loads((previous_vectors.parent / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("corpus") != fingerprint or not (cache / "complete.json").exists():
        return None
    return cache


def _encode_cached(kind, encoder, reader, doc_ids, tmp: Path, out_dir: Path, options, previous_vectors, log):
    """Encode the corpus (resuming or reusing a cache) and install the vectors in ``tmp/vectors/KIND``."""
    from braid.retrieval.build import corpus_fingerprint
    from braid.retrieval.vectorcache import encode_corpus, load_cached

    work = _encode_dir(out_dir, kind)
    reuse = _same_corpus(previous_vectors, kind, corpus_fingerprint(reader.path))
    if reuse is not None and not work.exists():
        log(f"{kind}: reusing the encoded vectors of the existing index")
        shutil.copytree(reuse, work)
    elif work.exists():
        log(f"{kind}: resuming the encoding cache in {work}")
    pairs = ((doc.doc_id, doc.contents) for _, doc in reader)
    encode_corpus(
        pairs,
        encoder,
        work,
        kind,
        chunk_size=options.chunk_size,
        total=len(doc_ids),
        progress=options.progress,
        mode="document",
    )
    vectors = load_cached(work)
    n = vectors.n_rows if kind == "sparse" else vectors.shape[0]
    if n != len(doc_ids):
        raise DataError(f"{kind} cache holds {n} vectors for {len(doc_ids)} documents; delete {work} and rebuild", work)
    return vectors


def _install_vectors(tmp: Path, out_dir: Path, kind: str) -> None:
    """Move the finished encoding cache into the index being built (last step, so a failed build keeps it)."""
    work = _encode_dir(out_dir, kind)
    if not work.exists():
        return
    target = tmp / "vectors" / kind
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(work, target)  # open memory maps stay valid: same inodes


def _vectors_from_file(path: Path, doc_ids: list[str], vocab: dict[str, int] | None, vocab_size: int):
    """Pre-encoded document vectors (JSONL or .npz), put in docno order and checked against the corpus ids."""
    from braid.index.sparse.vectors import read_vectors_jsonl, read_vectors_npz

    path = Path(path)
    if path.suffix == ".npz":
        vectors = read_vectors_npz(path, vocab_size=vocab_size)
        if vectors.n_rows != len(doc_ids):
            raise DataError(f"{vectors.n_rows} rows for {len(doc_ids)} corpus documents (an .npz must follow corpus order)", path)
        return vectors
    ids, vectors = read_vectors_jsonl(path, vocab=vocab, vocab_size=vocab_size)
    position = {d: i for i, d in enumerate(ids)}
    missing = [d for d in doc_ids if d not in position]
    if missing:
        raise DataError(f"no vector for {len(missing)} corpus documents (first: {missing[0]!r})", path)
    extra = len(ids) - len(doc_ids)
    if extra:
        raise DataError(f"{extra} vectors have ids that are not in the corpus", path)
    return vectors.take(np.array([position[d] for d in doc_ids], dtype=np.int64))


def sparse_encoder_from_options(options, query_mode: str = "model"):
    from braid.encoders.resolve import DEFAULT_SPARSE_MODEL
    from braid.encoders.sparse import SparseEncoder

    kwargs = {k: v for k, v in options.sparse_encoder.items() if k in ("top_k", "query_top_k", "quantization_step", "precision")}
    return SparseEncoder(
        options.sparse_model or DEFAULT_SPARSE_MODEL,
        max_length=options.max_length,
        batch_size=options.batch_size,
        device=options.device,
        query_mode=query_mode,
        **kwargs,
    )


def build_sparse_component(tmp: Path, out_dir: Path, reader, doc_ids, options, previous_vectors, log=print) -> dict:
    """Encode (or read) document vectors, build the blocked index in ``tmp/sparse``; return its manifest entry."""
    from braid.encoders.sparse import compute_idf
    from braid.index.sparse.blocked import BlockedIndexConfig, BlockedSparseIndex

    encoder = sparse_encoder_from_options(options)
    if options.sparse_vectors is not None:
        vocab = encoder.backbone.tokenizer.get_vocab()
        vectors = _vectors_from_file(options.sparse_vectors, doc_ids, vocab, encoder.vocab_size)
        source = {"vectors": str(options.sparse_vectors)}
    else:
        vectors = _encode_cached("sparse", encoder, reader, doc_ids, tmp, out_dir, options, previous_vectors, log)
        source = {"vectors": "vectors/sparse"}
    (tmp / "sparse").mkdir(exist_ok=True)
    config = BlockedIndexConfig.from_dict(options.sparse_index) if options.sparse_index else None
    index = BlockedSparseIndex.build(vectors, config, progress=options.progress)
    info = {"index": index.save(tmp / "sparse")}
    # Inference-free queries: the model's idf.json, else IDF over this corpus with its tokenizer.
    if encoder.backbone.ref.file("idf.json") is None:
        table = compute_idf((doc.contents for _, doc in reader), encoder, max_length=options.max_length)
        table.save(tmp / "sparse" / "idf.npy")
        idf_source = "corpus"
    else:
        idf_source = "idf.json"
    info["encoder"] = {
        **encoder.describe("document"),
        "model": encoder.name,
        "model_dir": _local_dir(encoder),
        "idf": True,
        "idf_source": idf_source,
        **source,
    }
    _install_vectors(tmp, out_dir, "sparse")
    return info


def build_dense_component(tmp: Path, out_dir: Path, reader, doc_ids, options, previous_vectors, log=print) -> dict:
    """Encode document embeddings and build the FAISS index in ``tmp/dense``; return its manifest entry."""
    from braid.index.dense import DenseIndex, DenseIndexConfig

    encoder = dense_encoder_from_options(options)
    if options.dense_vectors is not None:
        vectors = _dense_vectors_from_file(options.dense_vectors, len(doc_ids), encoder)
        target = tmp / "vectors" / "dense"
        target.mkdir(parents=True, exist_ok=True)
        np.save(target / "vectors.npy", vectors, allow_pickle=False)
    else:
        vectors = _encode_cached("dense", encoder, reader, doc_ids, tmp, out_dir, options, previous_vectors, log)
    (tmp / "dense").mkdir(exist_ok=True)
    config = DenseIndexConfig.from_dict(options.dense_index) if options.dense_index else DenseIndexConfig()
    index = DenseIndex.build(np.asarray(vectors, dtype=np.float32), config)
    info = {
        "index": index.save(tmp / "dense"),
        "encoder": {**encoder.describe("document"), "model": encoder.name, "model_dir": _local_dir(encoder)},
    }
    _install_vectors(tmp, out_dir, "dense")
    return info


def _dense_vectors_from_file(path: Path, num_docs: int, encoder) -> np.ndarray:
    """Pre-encoded document embeddings: a float32 ``.npy`` of shape (num_docs, dim) in corpus order."""
    path = Path(path)
    if path.suffix != ".npy":
        raise DataError("--dense-vectors takes a .npy array (num_docs, dim) in corpus order", path)
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the array ({exc})", path) from None
    if vectors.ndim != 2 or vectors.shape[0] != num_docs:
        raise DataError(f"shape {vectors.shape}; expected ({num_docs}, dim) for the {num_docs} corpus documents", path)
    if vectors.shape[1] != encoder.dim:
        raise DataError(f"dimension {vectors.shape[1]} does not match the query encoder's {encoder.dim}", path)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise DataError("non-finite values in the vectors", path)
    return vectors


def dense_encoder_from_options(options):
    from braid.encoders.dense import DenseEncoder
    from braid.encoders.resolve import DEFAULT_DENSE_MODEL

    kwargs = {k: v for k, v in options.dense_encoder.items() if k in ("query_prefix", "document_prefix", "precision")}
    return DenseEncoder(
        options.dense_model or DEFAULT_DENSE_MODEL,
        max_length=options.max_length,
        batch_size=options.batch_size,
        device=options.device,
        **kwargs,
    )


def _local_dir(encoder) -> str | None:
    local = encoder.backbone.ref.local_dir
    return str(Path(local).resolve()) if local is not None else None


def model_for_queries(enc: dict) -> str:
    """The model to encode queries with: the folder the index was built with when it is still there
    (same weights, no hub round trip), else the recorded name (resolved as usual)."""
    local = enc.get("model_dir")
    if local and Path(local).is_dir():
        return local
    return enc["model"]


# ---------------------------------------------------------------------- retrievers
@dataclass
class SparseRetriever:
    """Learned sparse retrieval over the blocked index; queries by SPLADE (``model``) or tokenizer + IDF (``idf``)."""

    index: object
    encoder: object
    exact_encoder: object | None
    name: str = "sparse"

    @classmethod
    def open(cls, searcher, query_mode: str | None = None) -> "SparseRetriever":
        from braid.encoders.sparse import SparseEncoder

        info = searcher.components["sparse"]
        enc = info["encoder"]
        index = searcher.component("sparse")
        mode = query_mode or "model"
        idf_path = searcher.index_dir / "sparse" / "idf.npy"
        kwargs = dict(max_length=int(enc.get("max_length", 256)), query_top_k=enc.get("query_top_k"))
        encoder = SparseEncoder(
            model_for_queries(enc),
            query_mode=mode,
            idf=idf_path if (mode == "idf" and idf_path.exists()) else None,
            **kwargs,
        )
        name = "sparse-if" if mode == "idf" else "sparse"
        return cls(index=index, encoder=encoder, exact_encoder=None, name=name)

    def encode_queries(self, queries: Sequence[str]):
        """Query vectors (SparseVectors), memoised per text: PRF, rescoring and tuning encode the same queries again."""
        from braid.index.sparse.vectors import SparseVectors

        cache = self.__dict__.setdefault("_query_cache", {})
        todo = list(dict.fromkeys(q for q in queries if q not in cache))
        if todo:
            fresh = self.encoder.encode_queries(todo)
            if len(cache) + len(todo) > _QUERY_CACHE_SIZE:
                cache.clear()
            for i, q in enumerate(todo):
                idx, w = fresh.row(i)
                cache[q] = (np.array(idx, dtype=np.int32), np.array(w, dtype=np.float32))
            vocab_size = fresh.vocab_size
        else:
            vocab_size = self.encoder.vocab_size
        rows = [cache[q] for q in queries]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(r[0]) for r in rows])
        indices = np.concatenate([r[0] for r in rows]) if rows else np.empty(0, np.int32)
        data = np.concatenate([r[1] for r in rows]) if rows else np.empty(0, np.float32)
        return SparseVectors(indptr, indices.astype(np.int32), data.astype(np.float32), vocab_size)

    def search(self, queries: Sequence[str], k: int, threads: int = 1, exclude=None, **knobs) -> Hits:
        return self.search_vectors(self.encode_queries(queries), k=k, threads=threads, exclude=exclude, **knobs)

    def search_vectors(self, vectors, k: int, threads: int = 1, exclude=None, query_cut=None, heap_factor=None, exact: bool = False) -> Hits:
        extra = 1 if exclude is not None else 0
        hits = self.index.search(
            vectors,
            k=k + extra,
            query_cut=int(query_cut) if query_cut is not None else SPARSE_QUERY_CUT,
            heap_factor=float(heap_factor) if heap_factor is not None else SPARSE_HEAP_FACTOR,
            exact=exact,
            threads=threads,
        )
        return drop_excluded(hits, exclude, k)

    def score_candidates(self, queries: Sequence[str], docnos: np.ndarray) -> np.ndarray:
        """Exact full-SPLADE scores of candidate docnos (n_queries, n) with model-encoded queries (-inf on padding)."""
        if self.exact_encoder is None:
            from braid.encoders.sparse import SparseEncoder

            cfg = self.encoder.config
            self.exact_encoder = SparseEncoder(cfg.model, max_length=cfg.max_length, query_mode="model")
        if self.encoder.config.query_mode == "model":
            qvecs = self.encode_queries(queries)
        else:
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


@dataclass
class DenseRetriever:
    """Dense retrieval over the FAISS index with the bi-encoder recorded in the manifest."""

    index: object
    encoder: object
    vectors: np.ndarray | None
    name: str = "dense"

    @classmethod
    def open(cls, searcher) -> "DenseRetriever":
        from braid.encoders.dense import DenseEncoder

        info = searcher.components["dense"]
        enc = info["encoder"]
        if isinstance(info.get("jpq"), dict):
            # A JPQ index searches with its own jointly trained query encoder (issue 6).
            from braid.retrieval.jpq import open_jpq_query_encoder

            encoder = open_jpq_query_encoder(searcher.index_dir, info, device=searcher.device)
        else:
            kwargs = {k: enc[k] for k in ("query_prefix", "document_prefix") if enc.get(k) is not None}
            encoder = DenseEncoder(model_for_queries(enc), max_length=int(enc.get("max_length", 256)), **kwargs)
        path = searcher.index_dir / "vectors" / "dense" / "vectors.npy"
        # A JPQ query encoder was trained against PQ-decoded documents: rescore/PRF with those, not the raw vectors.
        use_raw = path.exists() and not isinstance(info.get("jpq"), dict)
        vectors = np.load(path, mmap_mode="r", allow_pickle=False) if use_raw else None
        return cls(index=searcher.component("dense"), encoder=encoder, vectors=vectors)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Query embeddings float32 (n, dim), memoised per text (PRF, rescoring and tuning re-encode the same queries)."""
        cache = self.__dict__.setdefault("_query_cache", {})
        todo = list(dict.fromkeys(q for q in queries if q not in cache))
        if todo:
            fresh = np.asarray(self.encoder.encode_queries(todo), dtype=np.float32)
            if len(cache) + len(todo) > _QUERY_CACHE_SIZE:
                cache.clear()
            for q, v in zip(todo, fresh):
                cache[q] = v
        if not queries:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return np.ascontiguousarray(np.stack([cache[q] for q in queries]), dtype=np.float32)

    def search(self, queries: Sequence[str], k: int, threads: int = 1, exclude=None, **knobs) -> Hits:
        return self.search_vectors(self.encode_queries(queries), k=k, threads=threads, exclude=exclude, **knobs)

    def search_vectors(self, vectors: np.ndarray, k: int, threads: int = 1, exclude=None, nprobe=None, ef_search=None) -> Hits:
        extra = 1 if exclude is not None else 0
        hits = self.index.search(vectors, k=k + extra, nprobe=nprobe, ef_search=ef_search, threads=threads)
        return drop_excluded(hits, exclude, k)

    def doc_vectors(self, docnos: np.ndarray) -> np.ndarray:
        docnos = np.asarray(docnos, dtype=np.int64)
        if self.vectors is not None:
            return np.asarray(self.vectors[docnos], dtype=np.float32)
        return np.asarray(self.index.reconstruct(docnos), dtype=np.float32)

    def score_candidates(self, queries: Sequence[str], docnos: np.ndarray) -> np.ndarray:
        qvecs = self.encode_queries(queries)
        out = np.full(docnos.shape, -np.inf, dtype=np.float32)
        for i in range(docnos.shape[0]):
            valid = docnos[i] >= 0
            if valid.any():
                out[i, valid] = self.doc_vectors(docnos[i][valid]) @ qvecs[i]
        return out
