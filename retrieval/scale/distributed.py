"""Distributed encoding and sharded index builds on Ray.

:func:`build_sharded` turns one corpus into a sharded index directory (layout in
:mod:`braid.retrieval.scale.sharded`): the corpus is cut into N contiguous shards (so global docnos equal
corpus order), encoded by Ray Data (``map_batches`` over an actor pool; one GPU per actor when the
cluster has GPUs), and every shard is built as an ordinary Braid index by
:func:`braid.retrieval.build.builder.build_index`, run as one Ray task per shard. The encodings reach
``build_index`` through its own resumable vector cache (:mod:`braid.retrieval.build.vectorcache`), filled
with vectors computed elsewhere, so each shard's manifest, ``vectors/`` and components are those of
a normal build. Two collection-wide statistics are computed before the shards are built:

- BM25: token counts per shard give the collection's average length; each shard's BM25 component
  gets padding documents that give it that average (see :func:`braid.retrieval.scale.sharded.bm25_padding`).
- Inference-free sparse queries (``sparse-if``) weigh query tokens by an IDF table; when the model
  has no ``idf.json`` the table is computed from document frequencies summed over all shards and
  written to every shard and to ``SHARDED_DIR/sparse/idf.npy``.

``executor="local"`` does the same without Ray, one shard after the other in this process
(encoding by ``build_index`` itself): the single-process reference.

Ray is imported only inside the functions that use it; without it they raise a BraidError naming
the extra (``pip install 'braid[distributed]'``). A Ray cluster needs braid installed on every node
and the output directory on a filesystem every node sees at the same path.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from braid import __version__
from braid.data.errors import BraidError, DataError, OptionError, check_finite, check_positive_int
from braid.index.manifest import building_index
from braid.retrieval.build.builder import BuildOptions, corpus_fingerprint, corpus_path
from braid.retrieval.scale.sharded import (
    PAD_TOKEN,
    SHARDED_FORMAT,
    SHARDED_FORMAT_VERSION,
    SHARDED_MANIFEST,
    bm25_padding,
    connect_ray,
    read_sharded_manifest,
)

EXECUTORS = ("ray", "local")
_READ_CPUS = 0.25  # CPU reserved by each Ray Data read / parse task
SHARD_COMPONENTS = ("bm25", "sparse", "dense")
_SRC = "shard-src"


@dataclass(frozen=True)
class ShardingConfig:
    """How to split and where to run (build-time; recorded in ``sharded.json``).

    ``shards``: number of shards (contiguous ranges of the corpus). ``executor``: ``"ray"`` or
    ``"local"``. ``ray_address``: None or ``"local"`` starts Ray in this process (``num_cpus``
    CPUs, None = all), otherwise the address of a running cluster (``"auto"``, ``"ray://host:10001"``).
    ``encode_actors``: size of the encoding actor pool (None: one per GPU when there are GPUs,
    else one per ``cpus_per_actor`` CPUs). ``encode_batch_size``: texts per Ray Data batch.
    ``gpus_per_actor``: None = 1 when the cluster has GPUs, else 0.
    """

    shards: int = 4
    executor: str = "ray"
    ray_address: str | None = None
    num_cpus: int | None = None
    encode_actors: int | None = None
    encode_batch_size: int = 256
    cpus_per_actor: float = 1.0
    gpus_per_actor: float | None = None

    def __post_init__(self) -> None:
        check_positive_int("--shards", self.shards)
        if self.executor not in EXECUTORS:
            raise OptionError("--executor", self.executor, "one of " + ", ".join(EXECUTORS))
        for name in ("num_cpus", "encode_actors"):
            check_positive_int("--" + name.replace("_", "-"), getattr(self, name), allow_none=True)
        check_positive_int("--encode-batch-size", self.encode_batch_size)
        check_finite("--cpus-per-actor", self.cpus_per_actor, low=0, low_open=True)
        check_finite("--gpus-per-actor", self.gpus_per_actor, low=0, allow_none=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ShardingConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise OptionError("sharding", ", ".join(sorted(unknown)), "unknown keys; known: " + ", ".join(sorted(known)))
        return cls(**d)


# --------------------------------------------------------------------------------------------------
# Atomic output directory
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _building_sharded(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling directory renamed to ``out_dir`` once it holds ``sharded.json`` (staging removed)."""
    with building_index(out_dir, overwrite=overwrite, marker=SHARDED_MANIFEST) as tmp:
        yield tmp
        shutil.rmtree(tmp / _SRC, ignore_errors=True)
        shutil.rmtree(tmp / ".encoded", ignore_errors=True)


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


# --------------------------------------------------------------------------------------------------
# Step 1: split the corpus
# --------------------------------------------------------------------------------------------------
def split_corpus(path: Path, out: Path, shards: int, skip_bad: bool, allow_empty: bool) -> tuple[list[Path], list[int], list[str], int]:
    """Write ``out/shard-NNNNN.jsonl`` (contiguous ranges; each line carries its global ``docno``).

    Returns (files, per-shard document counts, all doc ids in order, records skipped). Shard sizes
    differ by at most one document unless bad records were skipped (the last shards are then
    smaller); a shard left empty is dropped.
    """
    from braid.data.corpus import ReadStats, count_corpus, iter_corpus

    total = count_corpus(path)
    if total < shards:
        raise OptionError("--shards", shards, f"at most the number of documents ({total})")
    base, extra = divmod(total, shards)
    targets = [base + (1 if i < extra else 0) for i in range(shards)]
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{shard_name(i)}.jsonl" for i in range(shards)]
    counts = [0] * shards
    doc_ids: list[str] = []
    stats = ReadStats()
    s = 0
    fh = open(files[0], "w", encoding="utf-8")
    try:
        for doc in iter_corpus(path, skip_bad=skip_bad, allow_empty=allow_empty, stats=stats):
            while counts[s] >= targets[s] and s + 1 < shards:
                fh.close()
                s += 1
                fh = open(files[s], "w", encoding="utf-8")
            fh.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text, "docno": len(doc_ids)}, ensure_ascii=False) + "\n")
            counts[s] += 1
            doc_ids.append(doc.doc_id)
    finally:
        fh.close()
    if not doc_ids:
        raise DataError("the corpus holds no documents", path)
    keep = [i for i in range(shards) if counts[i] > 0]
    for i in range(shards):
        if counts[i] == 0:
            files[i].unlink(missing_ok=True)
    return [files[i] for i in keep], [counts[i] for i in keep], doc_ids, stats.skipped


# --------------------------------------------------------------------------------------------------
# Step 2: per-shard statistics (BM25 token counts; token document frequencies for an IDF table)
# --------------------------------------------------------------------------------------------------
def shard_statistics(shard_file: str, need_bm25: bool, idf_options: BuildOptions | None) -> dict:
    """Token count of the shard under the BM25 analyzer, and (``idf_options``) the document frequency
    of each tokenizer id as :func:`braid.encoders.sparse.compute_idf` counts it. Runs in a Ray task
    or in the driver."""
    from braid.data.corpus import iter_corpus

    out: dict[str, Any] = {"num_docs": 0, "tokens": 0, "df": None}
    analyzer = None
    if need_bm25:
        from braid.index.lexical import _analyzer  # the analyzer the BM25 component indexes with

        analyzer = _analyzer()
    encoder = df = None
    if idf_options is not None:
        from braid.retrieval.build.components import sparse_encoder_from_options

        encoder = sparse_encoder_from_options(idf_options)
        df = np.zeros(encoder.vocab_size, dtype=np.int64)
    batch: list[str] = []

    def flush() -> None:
        for ids in encoder._token_ids(batch, idf_options.max_length):  # compute_idf's own counting
            df[np.unique(ids)] += 1
        batch.clear()

    for doc in iter_corpus(Path(shard_file), allow_empty=True):
        out["num_docs"] += 1
        text = doc.contents
        if analyzer is not None:
            out["tokens"] += len(analyzer.analyze(text))
        if encoder is not None:
            batch.append(text)
            if len(batch) >= 1024:
                flush()
    if encoder is not None and batch:
        flush()
    out["df"] = df
    return out


def global_idf(dfs: list[np.ndarray], num_docs: int, options: BuildOptions):
    """The collection's IDF table from per-shard document frequencies (the formula of compute_idf)."""
    from braid.encoders.sparse import IdfTable
    from braid.retrieval.build.components import sparse_encoder_from_options

    encoder = sparse_encoder_from_options(options)
    df = np.sum(dfs, axis=0)
    idf = np.log1p((num_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    idf[encoder._special_ids] = 0.0
    return IdfTable(idf, int(num_docs), "corpus", encoder.config.model)


# --------------------------------------------------------------------------------------------------
# Step 3: encoding on Ray Data
# --------------------------------------------------------------------------------------------------
class _EncodeActor:
    """A Ray Data actor: loads the encoders once, then turns batches of texts into vector columns."""

    def __init__(self, kinds: list[str], options: BuildOptions, threads: int, device: str):
        import torch

        from braid.retrieval.build.components import dense_encoder_from_options, sparse_encoder_from_options

        torch.set_num_threads(max(1, threads))
        opts = replace(options, device=device)
        self.encoders = {k: (sparse_encoder_from_options(opts) if k == "sparse" else dense_encoder_from_options(opts)) for k in kinds}

    def __call__(self, batch):
        import pyarrow as pa

        texts = [str(t) for t in batch.column("contents").to_pylist()]
        for kind, encoder in self.encoders.items():
            if kind == "sparse":
                indptr, indices, data = encoder.encode_csr(texts, "document")
                offsets = pa.array(np.asarray(indptr, dtype=np.int32))
                batch = batch.append_column("sparse_indices", pa.ListArray.from_arrays(offsets, pa.array(indices, type=pa.int32())))
                batch = batch.append_column("sparse_weights", pa.ListArray.from_arrays(offsets, pa.array(data, type=pa.float32())))
            else:
                vectors = np.ascontiguousarray(encoder.encode(texts, "document"), dtype=np.float32)
                flat = pa.array(vectors.reshape(-1), type=pa.float32())
                batch = batch.append_column("dense", pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))
        return batch


def _parse_lines(batch):
    """Ray Data stage: JSON lines of a shard file -> (docno, contents) columns."""
    import pyarrow as pa

    from braid.data.corpus import Document

    docnos, contents = [], []
    for line in batch.column("text").to_pylist():
        if not line or not line.strip():
            continue
        obj = json.loads(line)
        docnos.append(int(obj["docno"]))
        contents.append(Document(obj["_id"], obj.get("title") or "", obj.get("text") or "").contents)
    return pa.table({"docno": pa.array(docnos, type=pa.int64()), "contents": pa.array(contents, type=pa.string())})


def ray_encode(shard_files: list[Path], kinds: list[str], options: BuildOptions, sharding: ShardingConfig, out_dir: Path, log=print) -> dict:
    """Encode the documents of ``shard_files`` with Ray Data into Parquet files under ``out_dir``.

    One ``map_batches`` stage over an actor pool (:class:`_EncodeActor`, holding the encoder of every
    kind in ``kinds``: one model load per actor, one pass over the texts). Columns written: ``docno``
    int64, ``sparse_indices`` list<int32>, ``sparse_weights`` list<float32>, ``dense``
    fixed_size_list<float32>[dim]. Returns ``{"seconds": wall time, "num_docs": rows written,
    "actors": pool size, "gpus_per_actor", "cpus_per_actor"}``.
    """
    ray = connect_ray(sharding.ray_address, sharding.num_cpus)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(options.progress)
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1.0)), float(resources.get("GPU", 0.0))
    gpus_per_actor = sharding.gpus_per_actor if sharding.gpus_per_actor is not None else (1.0 if gpus > 0 else 0.0)
    if sharding.encode_actors is not None:
        actors = sharding.encode_actors
    elif gpus_per_actor > 0:
        actors = max(1, int(gpus // gpus_per_actor))
    else:  # leave room for the read tasks
        actors = max(1, int((cpus - _READ_CPUS) // sharding.cpus_per_actor))
    if sharding.ray_address in (None, "local"):
        # A pool larger than this machine is never scheduled and the job waits forever: refuse it.
        if actors * sharding.cpus_per_actor > cpus - _READ_CPUS + 1e-9 or actors * gpus_per_actor > gpus + 1e-9:
            raise OptionError(
                "--encode-actors",
                actors,
                f"{actors} actors x {sharding.cpus_per_actor} CPU / {gpus_per_actor} GPU do not fit this Ray "
                f"({cpus:g} CPUs, {gpus:g} GPUs, {_READ_CPUS} CPU kept for reading)",
            )
    device = "cuda" if gpus_per_actor > 0 else options.device
    threads = max(1, int(sharding.cpus_per_actor))
    t0 = time.perf_counter()
    ds = ray.data.read_text([str(f) for f in shard_files], num_cpus=_READ_CPUS)
    ds = ds.map_batches(_parse_lines, batch_format="pyarrow", num_cpus=_READ_CPUS)
    ds = ds.map_batches(
        _EncodeActor,
        fn_constructor_kwargs={"kinds": list(kinds), "options": options, "threads": threads, "device": device},
        batch_size=sharding.encode_batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=sharding.cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    ds = ds.drop_columns(["contents"])
    ds.write_parquet(str(out_dir))
    seconds = time.perf_counter() - t0
    import pyarrow.parquet as pq

    n = pq.read_table(str(out_dir), columns=["docno"]).num_rows
    log(f"encoded {n} documents ({', '.join(kinds)}) with {actors} Ray actors in {seconds:.1f} s")
    return {"seconds": seconds, "num_docs": n, "actors": actors, "gpus_per_actor": gpus_per_actor, "cpus_per_actor": sharding.cpus_per_actor}


def read_encoded(parquet_dir: Path, kind: str, lo: int, hi: int):
    """Vectors of docnos ``lo..hi-1`` from :func:`ray_encode`'s output, in docno order.

    Returns ``(indptr int64, indices int32, data float32)`` for ``"sparse"``, float32 (n, dim) for ``"dense"``.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    columns = ["docno"] + (["sparse_indices", "sparse_weights"] if kind == "sparse" else ["dense"])
    table = pq.read_table(str(parquet_dir), columns=columns, filters=[("docno", ">=", lo), ("docno", "<", hi)])
    table = table.take(pc.sort_indices(table, sort_keys=[("docno", "ascending")]))
    docnos = table.column("docno").to_numpy()
    if len(docnos) != hi - lo or not np.array_equal(docnos, np.arange(lo, hi)):
        raise BraidError(f"encoded vectors for docnos {lo}..{hi - 1} are incomplete ({len(docnos)} rows)")
    if kind == "sparse":
        idx = table.column("sparse_indices").combine_chunks()
        wts = table.column("sparse_weights").combine_chunks()
        indptr = np.asarray(idx.offsets.to_numpy(), dtype=np.int64)
        indptr = indptr - indptr[0]
        indices = np.asarray(idx.flatten().to_numpy(), dtype=np.int32)
        data = np.asarray(wts.flatten().to_numpy(), dtype=np.float32)
        return indptr, indices, data
    col = table.column("dense").combine_chunks()
    dim = col.type.list_size
    return np.asarray(col.flatten().to_numpy(), dtype=np.float32).reshape(-1, dim)


# --------------------------------------------------------------------------------------------------
# Step 4: build one shard (an ordinary Braid index) from vectors computed elsewhere
# --------------------------------------------------------------------------------------------------
class _ReplaySparse:
    """Hands :func:`encode_corpus` sparse vectors computed elsewhere, chunk by chunk, in order."""

    def __init__(self, encoder, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray):
        self.encoder, self.indptr, self.indices, self.data = encoder, indptr, indices, data
        self.row = 0

    def describe(self, kind: str = "document") -> dict:
        return self.encoder.describe(kind)

    def encode_csr(self, texts, kind: str = "document", on_batch=None):
        lo, hi = self.row, self.row + len(texts)
        if hi > len(self.indptr) - 1:
            raise BraidError(f"more texts than pre-computed vectors ({len(self.indptr) - 1})")
        a, b = int(self.indptr[lo]), int(self.indptr[hi])
        self.row = hi
        return self.indptr[lo : hi + 1] - a, self.indices[a:b], self.data[a:b]


class _ReplayDense:
    """Hands :func:`encode_corpus` dense vectors computed elsewhere, chunk by chunk, in order."""

    def __init__(self, encoder, vectors: np.ndarray):
        self.encoder, self.vectors = encoder, vectors
        self.row = 0

    def describe(self, kind: str = "document") -> dict:
        return self.encoder.describe(kind)

    def encode(self, texts, kind: str = "document", on_batch=None):
        lo, hi = self.row, self.row + len(texts)
        if hi > len(self.vectors):
            raise BraidError(f"more texts than pre-computed vectors ({len(self.vectors)})")
        self.row = hi
        return np.asarray(self.vectors[lo:hi], dtype=np.float32)


def fill_vector_cache(index_dir: Path, corpus_file: Path, kind: str, options: BuildOptions, vectors) -> None:
    """Write the finished encoding cache that ``build_index(corpus_file, index_dir, options)`` finds and reuses.

    ``vectors``: ``(indptr, indices, data)`` for sparse, float32 (n, dim) for dense, in the corpus's
    document order. The cache is the one :mod:`braid.retrieval.build.vectorcache` writes (same encoder
    description, chunk hashes of the texts), so the build treats it as its own and encodes nothing.
    """
    shard_dir, shard_file = Path(index_dir), corpus_path(corpus_file)
    from braid.data.corpus import iter_corpus
    from braid.retrieval.build.components import _encode_dir, dense_encoder_from_options, sparse_encoder_from_options
    from braid.retrieval.build.vectorcache import encode_corpus

    if kind == "sparse":
        replay: Any = _ReplaySparse(sparse_encoder_from_options(options), *vectors)
        n = len(vectors[0]) - 1
    else:
        replay = _ReplayDense(dense_encoder_from_options(options), vectors)
        n = len(vectors)
    docs = iter_corpus(shard_file, skip_bad=options.skip_bad, allow_empty=options.allow_empty)
    pairs = ((d.doc_id, d.contents) for d in docs)
    encode_corpus(pairs, replay, _encode_dir(shard_dir, kind), kind, chunk_size=options.chunk_size, total=n, progress=False, mode="document")
    if replay.row != n:
        raise BraidError(f"{shard_file}: {replay.row} documents for {n} pre-computed {kind} vectors")


def build_shard(spec: dict) -> dict:
    """Build one shard index (runs as a Ray task or in the driver); returns its manifest.

    ``spec``: ``shard_file``, ``shard_dir``, ``options`` (BuildOptions for this shard), ``lo``/``hi``
    (global docno range), ``encoded`` (Parquet dir of :func:`ray_encode` or None), ``arrays``
    (``{kind: path of a .npy/.npz slice}`` of pre-encoded vectors), ``pad`` (BM25 ``(docs, tokens)``
    or None), ``idf`` (path of the global IDF table or None).
    """
    from itertools import chain

    from braid.data.corpus import Document, iter_corpus
    from braid.index.manifest import adding_component, load_manifest, write_manifest
    from braid.retrieval.build.builder import build_index

    shard_file, shard_dir = Path(spec["shard_file"]), Path(spec["shard_dir"])
    options: BuildOptions = spec["options"]
    t0 = time.perf_counter()
    for kind in ("sparse", "dense"):
        if kind not in options.retrievers:
            continue
        if spec.get("encoded"):
            vectors = read_encoded(Path(spec["encoded"]), kind, spec["lo"], spec["hi"])
        elif spec.get("arrays", {}).get(kind):
            vectors = _load_slice(Path(spec["arrays"][kind]), kind)
        else:
            continue  # build_index encodes it in this process
        fill_vector_cache(shard_dir, shard_file, kind, options, vectors)
    others = tuple(r for r in options.retrievers if r != "bm25")
    build_index(shard_file, shard_dir, replace(options, retrievers=others or ("bm25",), overwrite=False), log=lambda m: None)
    if "bm25" in options.retrievers and (others or spec.get("pad")):
        from braid.index.lexical import LexicalIndex

        pad_docs, pad_tokens = spec.get("pad") or (0, 0)
        n = spec["hi"] - spec["lo"]
        per = [pad_tokens // pad_docs + (1 if j < pad_tokens % pad_docs else 0) for j in range(pad_docs)] if pad_docs else []
        pads = ((n + j, Document(f"__braid_pad_{j}", "", " ".join([PAD_TOKEN] * c))) for j, c in enumerate(per))
        docs = chain(enumerate(iter_corpus(shard_file, allow_empty=True)), pads)
        info: dict = {}
        with adding_component(shard_dir, "bm25", info, overwrite=True) as tmp:
            info.update(LexicalIndex.build(tmp, docs, progress=False, threads=options.threads))
            info["shard_padding"] = {"docs": int(pad_docs), "tokens": int(pad_tokens), "token": PAD_TOKEN}
    if spec.get("idf") and "sparse" in options.retrievers:
        shutil.copyfile(spec["idf"], shard_dir / "sparse" / "idf.npy")
        shutil.copyfile(Path(spec["idf"]).with_suffix(".json"), shard_dir / "sparse" / "idf.json")
    manifest = load_manifest(shard_dir)  # idf.npy was just replaced: its checksum is rewritten now
    manifest["shard"] = {"lo": spec["lo"], "hi": spec["hi"], "seconds": time.perf_counter() - t0}
    write_manifest(shard_dir, manifest)
    return manifest


def _load_slice(path: Path, kind: str):
    if kind == "sparse":
        with np.load(path, allow_pickle=False) as z:
            return z["indptr"], z["indices"], z["data"]
    return np.load(path, allow_pickle=False)


def _read_pre_encoded(kind: str, path: Path, doc_ids: list[str], options: BuildOptions):
    """Pre-encoded vectors of the whole corpus, in corpus order (sparse: a SparseVectors; dense: float32 (n, dim))."""
    if kind == "sparse":
        from braid.retrieval.build.components import _vectors_from_file, sparse_encoder_from_options

        encoder = sparse_encoder_from_options(options)
        vocab = encoder.backbone.tokenizer.get_vocab() if Path(path).suffix != ".npz" else None
        return _vectors_from_file(Path(path), doc_ids, vocab, encoder.vocab_size)
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"not a .npy array of dense vectors ({exc})", path) from None
    if vectors.ndim != 2 or vectors.shape[0] != len(doc_ids):
        raise DataError(f"dense vectors of shape {vectors.shape} for {len(doc_ids)} documents (rows must follow corpus order)", path)
    return vectors


# --------------------------------------------------------------------------------------------------
# The whole build
# --------------------------------------------------------------------------------------------------
def build_sharded(
    source: str | Path,
    out_dir: str | Path,
    options: BuildOptions | None = None,
    sharding: ShardingConfig | None = None,
    dense_vectors: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Build the sharded index ``out_dir`` from ``source`` (a BEIR folder or a corpus JSONL[.gz]).

    ``options``: what to build, as for :func:`build_index` (retrievers among bm25, sparse, dense;
    ``options.sparse_vectors`` pre-encoded sparse vectors, .npz in corpus order or JSONL with ids).
    ``dense_vectors`` (default ``options.dense_vectors``): pre-encoded dense vectors, float32 ``.npy``
    (n_docs, dim) in corpus order.
    Kinds given pre-encoded are not encoded again. Returns the ``sharded.json`` manifest.
    """
    options = options or BuildOptions()
    sharding = sharding or ShardingConfig()
    dense_vectors = options.dense_vectors if dense_vectors is None else dense_vectors
    bad = [r for r in options.retrievers if r not in SHARD_COMPONENTS]
    if bad:
        raise OptionError("--retrievers", ",".join(bad), "a sharded index holds " + ", ".join(SHARD_COMPONENTS))
    if dense_vectors is not None and "dense" not in options.retrievers:
        options = replace(options, retrievers=tuple(options.retrievers) + ("dense",))
    path = corpus_path(source)
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    with _building_sharded(out_dir, options.overwrite) as tmp:
        t0 = time.perf_counter()
        files, counts, doc_ids, skipped = split_corpus(path, tmp / _SRC, sharding.shards, options.skip_bad, options.allow_empty)
        offsets = [int(x) for x in np.concatenate([[0], np.cumsum(counts)[:-1]])]
        num_docs = len(doc_ids)
        timings["split"] = time.perf_counter() - t0
        if skipped:
            log(f"skipped {skipped} bad records")
        log(f"split {num_docs} documents into {len(files)} shards")

        # Pre-encoded vectors: sliced per shard into the staging area.
        arrays: dict[int, dict[str, str]] = {i: {} for i in range(len(files))}
        given = {}
        if options.sparse_vectors is not None:
            given["sparse"] = Path(options.sparse_vectors)
        if dense_vectors is not None:
            given["dense"] = Path(dense_vectors)
        for kind, vpath in given.items():
            vectors = _read_pre_encoded(kind, vpath, doc_ids, options)
            for i, (lo, n) in enumerate(zip(offsets, counts)):
                if kind == "sparse":
                    part = vectors.take(np.arange(lo, lo + n, dtype=np.int64))
                    target = tmp / _SRC / f"{shard_name(i)}.sparse.npz"
                    np.savez(target, indptr=np.asarray(part.indptr, np.int64), indices=np.asarray(part.indices, np.int32), data=np.asarray(part.data, np.float32))
                else:
                    target = tmp / _SRC / f"{shard_name(i)}.dense.npy"
                    np.save(target, np.ascontiguousarray(vectors[lo : lo + n], dtype=np.float32), allow_pickle=False)
                arrays[i][kind] = str(target)
        shard_options = replace(options, sparse_vectors=None, dense_vectors=None, overwrite=False, progress=False)

        # Statistics: BM25 average length, IDF for inference-free sparse queries.
        t0 = time.perf_counter()
        need_idf = "sparse" in options.retrievers and _needs_corpus_idf(options)
        stats = _run_all(
            sharding,
            shard_statistics,
            [(str(f), "bm25" in options.retrievers, shard_options if need_idf else None) for f in files],
        )
        total_tokens = int(sum(s["tokens"] for s in stats))
        pads = [None] * len(files)
        bm25_info = None
        if "bm25" in options.retrievers:
            _check_pad_token()
            pads = [bm25_padding(n, s["tokens"], num_docs, total_tokens) if len(files) > 1 else (0, 0) for n, s in zip(counts, stats)]
            bm25_info = {
                "num_docs": num_docs,
                "total_tokens": total_tokens,
                "avgdl_float32": float(np.float32(total_tokens) / np.float32(num_docs)),
                "pad_token": PAD_TOKEN,
                "shards": [
                    {"tokens": int(s["tokens"]), "pad_docs": int(p[0]), "pad_tokens": int(p[1]), "tantivy_docs": int(n + p[0])}
                    for n, s, p in zip(counts, stats, pads)
                ],
            }
        idf_path = None
        if need_idf:
            table = global_idf([s["df"] for s in stats], num_docs, shard_options)
            idf_path = tmp / "sparse" / "idf.npy"
            table.save(idf_path)
        timings["statistics"] = time.perf_counter() - t0

        # Encoding on Ray Data (kinds not given pre-encoded).
        to_encode = [k for k in ("sparse", "dense") if k in options.retrievers and k not in given]
        encoded = None
        encode_info = None
        if to_encode and sharding.executor == "ray":
            encoded = tmp / ".encoded"
            encode_info = ray_encode(files, to_encode, shard_options, sharding, encoded, log=log)
            timings["encode"] = encode_info["seconds"]

        # Shard builds.
        t0 = time.perf_counter()
        specs = [
            {
                "shard_file": str(f),
                "shard_dir": str(tmp / shard_name(i)),
                "options": shard_options,
                "lo": offsets[i],
                "hi": offsets[i] + counts[i],
                "encoded": str(encoded) if encoded else None,
                "arrays": arrays[i],
                "pad": pads[i],
                "idf": str(idf_path) if idf_path else None,
            }
            for i, f in enumerate(files)
        ]
        manifests = _run_all(sharding, build_shard, [(s,) for s in specs])
        timings["build_shards"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        components = manifests[0]["components"]
        sharded = {
            "format": SHARDED_FORMAT,
            "format_version": SHARDED_FORMAT_VERSION,
            "library": "braid",
            "library_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "num_docs": num_docs,
            "source": str(source),
            "corpus": corpus_fingerprint(path),
            "skipped_records": skipped,
            "partition": "contiguous",
            "shards": [{"path": shard_name(i), "offset": offsets[i], "num_docs": counts[i]} for i in range(len(files))],
            "components": {name: _component_summary(info) for name, info in components.items()},
            "bm25": bm25_info,
            "sparse_idf": "sparse/idf.npy" if idf_path else None,
            "sharding": sharding.to_dict(),
            "encode": encode_info,
            "seconds": timings,
        }
        with open(tmp / SHARDED_MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(sharded, fh, indent=2, sort_keys=True)
            fh.write("\n")
    log(f"built {len(files)} shards of {num_docs} documents into {out_dir} in {timings['total']:.1f} s")
    return read_sharded_manifest(out_dir)


def _component_summary(info: dict) -> dict:
    """What sharded.json records of a component (its encoder; the shards hold the full configs)."""
    return {k: v for k, v in info.items() if k in ("encoder", "backend", "k1", "b", "analyzer")}


def _needs_corpus_idf(options: BuildOptions) -> bool:
    from braid.retrieval.build.components import sparse_encoder_from_options

    return sparse_encoder_from_options(options).model_idf_file() is None


def _check_pad_token() -> None:
    from braid.index.lexical import _analyzer

    if _analyzer().analyze(PAD_TOKEN) != [PAD_TOKEN]:
        raise BraidError(f"the BM25 analyzer changes the padding token {PAD_TOKEN!r}; sharded BM25 needs one it keeps")


def _run_all(sharding: ShardingConfig, fn: Callable, args: list[tuple]) -> list:
    """Run ``fn(*a)`` for every ``a``: Ray tasks (one CPU each) with the ray executor, else in order here."""
    if sharding.executor == "local":
        return [fn(*a) for a in args]
    ray = connect_ray(sharding.ray_address, sharding.num_cpus)
    task = ray.remote(fn).options(num_cpus=1)
    return ray.get([task.remote(*a) for a in args])
