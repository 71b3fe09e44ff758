"""Building an index's components: encode (when the component needs a model), then store.

The build half of each component (its query half is :mod:`braid.retrieval.retrievers.components`).
:data:`COMPONENT_BUILDERS` maps a component name to a builder
``build(tmp, out_dir, reader, doc_ids, options, previous_vectors, log, docs=None) -> manifest entry``
that writes the component into ``tmp/NAME`` (``docs``: the corpus stream to read instead of
``reader``, used by the first pass of a build, which collects the doc ids).
Learned components encode the corpus through the resumable cache of
:mod:`braid.retrieval.build.vectorcache` in a sibling ``.NAME.encode-KIND`` directory, then move the
finished vectors into ``INDEX/vectors/KIND`` so that a rebuild with other index parameters
(``--overwrite``) reuses them instead of re-encoding, and so that the dense retriever rescores and
does PRF with the exact float vectors (a PQ index only has their codes). With
``keep_vectors=False`` (``braid index --no-vectors``) they are deleted once the component is
built: the index is its compressed size on disk, and the price is docs/index-files.md's list.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from braid.data.errors import DataError


def corpus_fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


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
    from braid.retrieval.build.vectorcache import encode_corpus, load_cached

    work = _encode_dir(out_dir, kind)
    reuse = _same_corpus(previous_vectors, kind, corpus_fingerprint(reader.path))
    if reuse is not None and not work.exists():
        log(f"{kind}: reusing the encoded vectors of the existing index")
        # hard links, not copies: cache files are replaced by rename, never written in place
        shutil.copytree(reuse, work, copy_function=_link_or_copy)
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
        log=None if options.progress else log,  # no bar (not a terminal): progress lines in the log
    )
    vectors = load_cached(work)
    n = vectors.n_rows if kind == "sparse" else vectors.shape[0]
    if n != len(doc_ids):
        raise DataError(f"{kind} cache holds {n} vectors for {len(doc_ids)} documents; delete {work} and rebuild", work)
    return vectors


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _install_vectors(tmp: Path, out_dir: Path, kind: str, keep: bool = True) -> None:
    """Move the finished encoding cache into the index being built (last step, so a failed build
    keeps it), or delete it when the vectors are not kept (``--no-vectors``)."""
    work = _encode_dir(out_dir, kind)
    if not work.exists():
        return
    if not keep:
        shutil.rmtree(work)  # memory maps of its files stay valid until they are closed
        return
    target = tmp / "vectors" / kind
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(work, target)  # open memory maps stay valid: same inodes


def _vectors_from_file(path: Path, doc_ids: list[str], vocab: dict[str, int] | None, vocab_size: int):
    """Pre-encoded document vectors (JSONL or .npz), put in docno order and checked against the corpus ids."""
    from braid.data.vectors import read_vectors_jsonl, read_vectors_npz

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
    kwargs.update(_runtime_kwargs(options, options.sparse_encoder, kwargs))
    return SparseEncoder(
        options.sparse_model or DEFAULT_SPARSE_MODEL,
        max_length=options.max_length,
        batch_size=options.batch_size,
        device=options.device,
        query_mode=query_mode,
        **kwargs,
    )


def build_sparse_component(tmp: Path, out_dir: Path, reader, doc_ids, options, previous_vectors, log=print, docs=None) -> dict:
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
        source = {"vectors": "vectors/sparse", "runtime": encoder.runtime}
    (tmp / "sparse").mkdir(exist_ok=True)
    config = BlockedIndexConfig.from_dict(options.sparse_index) if options.sparse_index else None
    index = BlockedSparseIndex.build(vectors, config, progress=options.progress)
    info = {"index": index.save(tmp / "sparse")}
    info["requested_config"] = dict(options.sparse_index)  # before resolve(): what a compaction rebuilds with
    # Inference-free queries: the model's idf.json, else IDF over this corpus with its tokenizer.
    if encoder.model_idf_file() is None:
        table = compute_idf((doc.contents for _, doc in reader), encoder, max_length=options.max_length)
        table.save(tmp / "sparse" / "idf.npy")
        idf_source = "corpus"
    else:
        idf_source = encoder.idf.source
    info["encoder"] = {
        **encoder.describe("document"),
        "model": encoder.name,
        "model_dir": _local_dir(encoder),
        "idf": True,
        "idf_source": idf_source,
        **(source if options.keep_vectors or options.sparse_vectors is not None else {"vectors": None}),
    }
    _install_vectors(tmp, out_dir, "sparse", options.keep_vectors)
    return info


def build_dense_component(tmp: Path, out_dir: Path, reader, doc_ids, options, previous_vectors, log=print, docs=None) -> dict:
    """Encode document embeddings and build the FAISS index in ``tmp/dense``; return its manifest entry."""
    from braid.index.dense import DenseIndex, DenseIndexConfig

    encoder = dense_encoder_from_options(options)
    source = {}
    if options.dense_vectors is not None:
        vectors = _dense_vectors_from_file(options.dense_vectors, len(doc_ids), encoder)
        if options.keep_vectors:
            target = tmp / "vectors" / "dense"
            target.mkdir(parents=True, exist_ok=True)
            np.save(target / "vectors.npy", vectors, allow_pickle=False)
    else:
        vectors = _encode_cached("dense", encoder, reader, doc_ids, tmp, out_dir, options, previous_vectors, log)
        source = {"runtime": encoder.runtime}
    (tmp / "dense").mkdir(exist_ok=True)
    config = DenseIndexConfig.from_dict(options.dense_index) if options.dense_index else DenseIndexConfig()
    index = DenseIndex.build(np.asarray(vectors, dtype=np.float32), config)
    info = {
        "index": index.save(tmp / "dense"),
        "encoder": {**encoder.describe("document"), "model": encoder.name, "model_dir": _local_dir(encoder), **source},
    }
    _install_vectors(tmp, out_dir, "dense", options.keep_vectors)
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
    kwargs.update(_runtime_kwargs(options, options.dense_encoder, kwargs))
    return DenseEncoder(
        options.dense_model or DEFAULT_DENSE_MODEL,
        max_length=options.max_length,
        batch_size=options.batch_size,
        device=options.device,
        **kwargs,
    )


def _runtime_kwargs(options, encoder_options: dict, kwargs: dict) -> dict:
    """``runtime`` (and int8 ``precision``) of one encoder: its own ``runtime`` entry, else ``options.runtime``
    (``"auto"``, ``"torch"``, ``"onnx"`` or ``"onnx-int8"``)."""
    from braid.encoders.base import runtime_kwargs

    out = runtime_kwargs(encoder_options.get("runtime") or options.runtime, "--runtime")
    if "precision" in kwargs:  # an explicit precision of the encoder wins over the spec's
        out.pop("precision", None)
    return out


def _local_dir(encoder) -> str | None:
    router = getattr(encoder, "router", None)  # a sentence-transformers Router folder: the folder itself, not its document route
    local = router.root if router is not None else encoder.backbone.ref.local_dir
    return str(Path(local).resolve()) if local is not None else None


def build_bm25_component(tmp: Path, out_dir: Path, reader, doc_ids, options, previous_vectors, log=print, docs=None) -> dict:
    """The tantivy index (BM25 and the document store) in ``tmp/bm25``."""
    from braid.index.lexical import LexicalIndex

    (tmp / "bm25").mkdir(exist_ok=True)
    total = reader.total if options.progress else None
    stream = docs if docs is not None else iter(reader)
    return LexicalIndex.build(tmp / "bm25", stream, progress=options.progress, threads=options.threads, total=total)


def build_pyserini_component(tmp: Path, out_dir: Path, reader, doc_ids, options, previous_vectors, log=print, docs=None) -> dict:
    """The Lucene index of the Pyserini reference backend in ``tmp/pyserini``."""
    from braid.index.pyserini_bm25 import PyseriniBM25

    (tmp / "pyserini").mkdir(exist_ok=True)
    return PyseriniBM25.build(tmp / "pyserini", reader, threads=max(options.threads, 1), progress=options.progress)


# Component name -> builder, in the order a build runs them (and the manifest lists them).
COMPONENT_BUILDERS: dict[str, Callable] = {
    "bm25": build_bm25_component,
    "pyserini": build_pyserini_component,
    "sparse": build_sparse_component,
    "dense": build_dense_component,
}
