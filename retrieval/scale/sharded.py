"""Sharded search: an index made of N ordinary Braid index directories, searched in parallel, merged exactly.

A sharded index directory (built by :func:`braid.retrieval.scale.distributed.build_sharded`)::

    SHARDED_DIR/
      sharded.json        format "braid-sharded-index", format_version, num_docs, the shards with their
                          docno offsets, the BM25 collection statistics, the components
      shard-00000/        an ordinary Braid index (manifest.json, docids.txt, bm25/, sparse/, dense/, vectors/)
      shard-00001/
      ...
      sparse/idf.npy      (only with sparse-if) the IDF table of the whole collection, shared by every shard

Shards are contiguous ranges of the corpus order, so the global docno of a document is
``offset(shard) + local docno`` and equals its docno in the unsharded index: ties, which every Braid
retriever breaks by docno, break the same way.

**Exactness.** Each retriever asks every shard for its local top-k, then :func:`merge_topk` keeps
the global top-k by (-score, docno). For learned sparse (``exact=True``) and dense (flat index) the
score of a document does not depend on the other documents, so the merge equals the unsharded
search. BM25 does depend on collection statistics (document frequencies, number of documents,
average length); tantivy's Python bindings cannot be given outside statistics, so shards get them by
two means: (1) **average length**: each shard's tantivy index holds a few *padding documents* made
of one reserved token (never a query term) whose count and length are chosen at build time so that
tantivy's float32 average ``total_tokens / total_docs`` of every shard equals the collection's;
(2) **IDF**: the global document frequency of each query term is gathered from the shards at query
time and each term is boosted by ``idf_global / idf_shard``. BM25 scores then equal the unsharded
ones up to float32 rounding (relative difference measured below 3e-7); two documents in different
shards whose unsharded scores are bitwise equal can come out a rounding error apart, so their order
may differ from the unsharded docno order (docs/scale-out.md measures how often on scifact).

Fused pipelines fuse after the merge: every retriever's list is merged to the global top ``depth``
first, then the unchanged :class:`braid.retrieval.pipeline.spec.PipelineRunner` fuses them, so a
pipeline of exact retrievers returns what the unsharded pipeline returns.

**Execution.** The driver encodes queries once (models never load in shard workers) and sends
vectors or analysed term maps to the shards. Shard workers are, in this order of preference, Ray
actors (``ray_address``: a cluster address, ``"auto"``, or ``"local"`` to start Ray here), local
processes (``processes``: None = one per shard up to the CPU count), or the driver itself
(``processes=0``). Messages between processes are plain tuples of numpy arrays, strings and
numbers (Ray's and multiprocessing's own serialisation; nothing is pickled to disk).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from braid import __version__
from braid.data.errors import BraidError, IndexFormatError, OptionError, check_nonneg_int, check_positive_int
from braid.index.hits import PAD_DOCNO, Hits
from braid.retrieval.context import IndexContext
from braid.retrieval.searcher import Searcher

SHARDED_FORMAT = "braid-sharded-index"
SHARDED_FORMAT_VERSION = 1
SHARDED_MANIFEST = "sharded.json"
PAD_TOKEN = "zqxbraidpad"  # the analyzer keeps it as is (checked at build time); it pads BM25 shards

__all__ = [
    "SHARDED_MANIFEST",
    "ShardedSearcher",
    "ShardWorker",
    "is_sharded_index",
    "open_searcher",
    "read_sharded_manifest",
    "verify_index_dir",
    "merge_topk",
    "tantivy_idf",
]


# --------------------------------------------------------------------------------------------------
# The sharded manifest
# --------------------------------------------------------------------------------------------------
def is_sharded_index(path: str | Path) -> bool:
    """True when ``path`` is a sharded index directory (holds ``sharded.json``)."""
    return (Path(path) / SHARDED_MANIFEST).is_file()


def open_searcher(path: str | Path, **kwargs) -> "Searcher":
    """A :class:`ShardedSearcher` for a sharded directory, else a plain :class:`Searcher`.

    ``kwargs``: ``retriever``, ``pipeline``, ``runtime`` (both kinds) and ``ray_address``, ``processes`` (sharded only).
    """
    if is_sharded_index(path):
        return ShardedSearcher(path, **kwargs)
    kwargs.pop("ray_address", None)
    kwargs.pop("processes", None)
    return Searcher(path, **kwargs)


def verify_index_dir(path: str | Path) -> tuple[list, int]:
    """``braid verify``: ``(problems, files checked)`` of a plain index (every file against the
    manifest's checksums, :func:`braid.index.manifest.verify_index`) or of every shard of a sharded
    one (problem paths then start with the shard's directory)."""
    from dataclasses import replace

    from braid.index.manifest import load_manifest, verify_index

    path = Path(path)
    if not is_sharded_index(path):
        return verify_index(path), len(load_manifest(path).get("checksums", {}))
    problems, files = [], 0
    for s in read_sharded_manifest(path)["shards"]:
        problems.extend(replace(p, path=f"{s['path']}/{p.path}") for p in verify_index(path / s["path"]))
        files += len(load_manifest(path / s["path"]).get("checksums", {}))
    return problems, files


def read_sharded_manifest(path: str | Path) -> dict:
    """Read and validate ``sharded.json``; raise IndexFormatError naming what is wrong."""
    path = Path(path)
    file = path / SHARDED_MANIFEST
    if not path.is_dir():
        raise IndexFormatError(f"{path}: no such index directory")
    if not file.is_file():
        raise IndexFormatError(f"{path}: not a sharded Braid index (no {SHARDED_MANIFEST})")
    from braid.data.corpus import JSONProblem, parse_json

    try:
        m = parse_json(file.read_bytes().decode("utf-8"))
    except (JSONProblem, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{file}: corrupted ({exc})") from None
    if not isinstance(m, dict) or m.get("format") != SHARDED_FORMAT:
        raise IndexFormatError(f"{file}: not a sharded Braid index manifest (format {m.get('format') if isinstance(m, dict) else None!r})")
    version = m.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SHARDED_FORMAT_VERSION:
        raise IndexFormatError(
            f"{file}: sharded index format version {version!r} is not supported by braid {__version__} "
            f"(supports 1..{SHARDED_FORMAT_VERSION}); rebuild it or upgrade braid"
        )
    shards = m.get("shards")
    if not isinstance(shards, list) or not shards:
        raise IndexFormatError(f"{file}: lists no shards")
    at = 0
    for i, s in enumerate(shards):
        if not isinstance(s, dict) or not isinstance(s.get("path"), str) or s.get("offset") != at or not isinstance(s.get("num_docs"), int) or s["num_docs"] < 1:
            raise IndexFormatError(f"{file}: shard {i} entry {s!r} is malformed (offsets must be contiguous from 0)")
        if not (path / s["path"]).is_dir():
            raise IndexFormatError(f"{path}: shard {i} directory {s['path']!r} is missing")
        at += s["num_docs"]
    if m.get("num_docs") != at:
        raise IndexFormatError(f"{file}: num_docs {m.get('num_docs')!r} differs from the shards' sum {at}")
    if not isinstance(m.get("components"), dict) or not m["components"]:
        raise IndexFormatError(f"{file}: lists no components")
    return m


# --------------------------------------------------------------------------------------------------
# The exact merge
# --------------------------------------------------------------------------------------------------
def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], offsets: Sequence[int], k: int) -> Hits:
    """Merge per-shard top-k lists into the global top-``k``, rows ordered by (-score, global docno).

    Args:
        parts: per shard, ``(docnos int64 (n_queries, k_s), scores float32 (n_queries, k_s))`` in
            shard-local docnos, ``-1`` / ``-inf`` on padding (a :class:`Hits`' two arrays).
        offsets: per shard, the global docno of its local docno 0.
        k: results kept per query.

    Returns:
        Hits (n_queries, k) in global docnos. When every shard returned its exact local top-``k``,
        this is exactly the top-``k`` of the union (a document in the global top-k is in its own
        shard's top-k).
    """
    check_positive_int("k", k)
    if len(parts) != len(offsets) or not parts:
        raise OptionError("parts", len(parts), f"one (docnos, scores) pair per offset ({len(offsets)})")
    n = parts[0][0].shape[0]
    docs, scores = [], []
    for (d, s), off in zip(parts, offsets):
        d = np.asarray(d, dtype=np.int64)
        s = np.asarray(s, dtype=np.float32)
        if d.shape != s.shape or d.ndim != 2 or d.shape[0] != n:
            raise OptionError("parts", f"{d.shape} / {s.shape}", f"2-d docnos and scores of equal shape with {n} rows")
        valid = d >= 0
        docs.append(np.where(valid, d + int(off), PAD_DOCNO))
        scores.append(np.where(valid, s, -np.inf).astype(np.float32))
    all_docs = np.concatenate(docs, axis=1)
    all_scores = np.concatenate(scores, axis=1)
    out = Hits.empty(n, int(k))
    if all_docs.shape[1] == 0 or n == 0:
        return out
    # Padding sorts last: its key -score is +inf; among real hits (-score, docno) is the Braid order.
    order = np.lexsort((all_docs, -all_scores.astype(np.float64)), axis=-1)[:, :k]
    top_docs = np.take_along_axis(all_docs, order, axis=1)
    top_scores = np.take_along_axis(all_scores, order, axis=1)
    width = top_docs.shape[1]
    out.docnos[:, :width] = top_docs
    out.scores[:, :width] = np.where(top_docs >= 0, top_scores, -np.inf)
    return out


def tantivy_idf(doc_freq: np.ndarray, num_docs: np.ndarray | int) -> np.ndarray:
    """tantivy's BM25 IDF in float32, as it computes it: ``ln(1 + (N - n + 0.5) / (n + 0.5))``.

    ``doc_freq``: int (any shape); ``num_docs``: the index's document count (int or same shape).
    Returns float32 of ``doc_freq``'s shape.
    """
    n = np.asarray(doc_freq).astype(np.float32)
    big_n = np.asarray(num_docs).astype(np.float32)
    x = (big_n - n + np.float32(0.5)) / (n + np.float32(0.5))
    return np.log(np.float32(1.0) + x.astype(np.float32)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Shard workers (run in the driver, in a local process, or as a Ray actor)
# --------------------------------------------------------------------------------------------------
class ShardWorker:
    """One shard's index components, answering plain-array requests; holds no model.

    Every method takes and returns numpy arrays, lists, strings and numbers, so the same object
    serves in-process, behind a pipe, or as a Ray actor. Docnos are shard-local.
    """

    def __init__(self, index_dir: str, num_docs: int | None = None):
        self.searcher = Searcher(index_dir)
        if num_docs is not None and self.searcher.num_docs != num_docs:
            raise IndexFormatError(f"{index_dir}: holds {self.searcher.num_docs} documents, sharded.json says {num_docs}")

    def ping(self) -> int:
        return self.searcher.num_docs

    # BM25 ----------------------------------------------------------------------------------------
    def doc_freqs(self, terms: list[str]) -> np.ndarray:
        """int64 (len(terms),): documents of this shard holding each analysed term."""
        lexical = self.searcher.component("bm25")
        return np.array([lexical.doc_freq(t) for t in terms], dtype=np.int64)

    def bm25_search(self, term_queries: list[dict[str, float]], k: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        hits = self.searcher.component("bm25").search_weighted(term_queries, k=k, threads=threads)
        return _local_only(hits, self.searcher.num_docs)

    def term_frequencies(self, docnos: np.ndarray) -> list[dict[str, int]]:
        return self.searcher.component("bm25").term_frequencies([int(d) for d in docnos])

    def documents(self, docnos: np.ndarray) -> list[dict]:
        return self.searcher.documents([int(d) for d in docnos])

    # learned sparse ------------------------------------------------------------------------------
    def sparse_search(self, indptr, indices, data, vocab_size: int, k: int, query_cut, heap_factor, exact: bool, threads) -> tuple[np.ndarray, np.ndarray]:
        from braid.data.vectors import SparseVectors

        queries = SparseVectors(np.asarray(indptr), np.asarray(indices), np.asarray(data), int(vocab_size))
        hits = self.searcher.component("sparse").search(queries, k=k, query_cut=query_cut, heap_factor=heap_factor, exact=exact, threads=threads)
        return hits.docnos, hits.scores

    def sparse_forward(self, docnos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        v = self.searcher.component("sparse").forward_vectors(np.asarray(docnos, dtype=np.int64))
        return v.indptr, v.indices, v.data

    # dense ---------------------------------------------------------------------------------------
    def dense_search(self, vectors: np.ndarray, k: int, nprobe, ef_search, threads) -> tuple[np.ndarray, np.ndarray]:
        hits = self.searcher.component("dense").search(np.asarray(vectors, dtype=np.float32), k=k, nprobe=nprobe, ef_search=ef_search, threads=threads)
        return hits.docnos, hits.scores

    def dense_reconstruct(self, docnos: np.ndarray) -> np.ndarray:
        path = self.searcher.index_dir / "vectors" / "dense" / "vectors.npy"
        docnos = np.asarray(docnos, dtype=np.int64)
        if path.exists():
            return np.asarray(np.load(path, mmap_mode="r", allow_pickle=False)[docnos], dtype=np.float32)
        return np.asarray(self.searcher.component("dense").reconstruct(docnos), dtype=np.float32)


def _local_only(hits: Hits, num_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop padding documents (docno >= num_docs) a BM25 shard could return."""
    docnos, scores = hits.docnos.copy(), hits.scores.copy()
    bad = docnos >= num_docs
    if bad.any():
        rows = [(d[d >= 0][(d[d >= 0] < num_docs)], s[d >= 0][(d[d >= 0] < num_docs)]) for d, s in zip(docnos, scores)]
        out = Hits.from_lists(rows, hits.k)
        return out.docnos, out.scores
    return docnos, scores


# --------------------------------------------------------------------------------------------------
# Executors: run one method on every shard
# --------------------------------------------------------------------------------------------------
class _InProcessPool:
    """Shard workers in the driver, called one after the other (no parallelism across shards)."""

    kind = "in-process"

    def __init__(self, paths: list[str], sizes: list[int]):
        self.workers = [ShardWorker(p, n) for p, n in zip(paths, sizes)]

    def call(self, method: str, args: Sequence[tuple], shards: Sequence[int] | None = None) -> list:
        shards = range(len(self.workers)) if shards is None else shards
        return [getattr(self.workers[s], method)(*a) for s, a in zip(shards, args)]

    def close(self) -> None:
        self.workers = []


def _host_main(conn, specs: list[tuple[int, str, int]]) -> None:
    """A local worker process: open its shards, then answer ``[(shard, method, args), ...]`` until None."""
    try:
        workers = {sid: ShardWorker(path, n) for sid, path, n in specs}
    except Exception as exc:  # reported to the driver, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        try:
            conn.send(("ok", [getattr(workers[sid], method)(*args) for sid, method, args in msg]))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class _ProcessPool:
    """Shards spread over ``n`` spawned local processes; each process answers for its shards in turn."""

    kind = "processes"

    def __init__(self, paths: list[str], sizes: list[int], n_processes: int):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # fork is unsafe after numba/tantivy/torch threads started
        n_processes = max(1, min(n_processes, len(paths)))
        self.owner = [s % n_processes for s in range(len(paths))]
        self.conns, self.procs = [], []
        try:
            for p in range(n_processes):
                specs = [(s, paths[s], sizes[s]) for s in range(len(paths)) if self.owner[s] == p]
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_host_main, args=(child, specs), daemon=True, name=f"braid-shard-host-{p}")
                proc.start()
                child.close()
                self.conns.append(parent)
                self.procs.append(proc)
            for conn in self.conns:
                self._receive(conn)
        except BaseException:
            self.close()
            raise

    def _receive(self, conn):
        try:
            status, payload = conn.recv()
        except EOFError:
            raise BraidError("a shard worker process died (see its stderr)") from None
        if status != "ok":
            raise BraidError(f"shard worker failed: {payload}")
        return payload

    def call(self, method: str, args: Sequence[tuple], shards: Sequence[int] | None = None) -> list:
        shards = list(range(len(self.owner))) if shards is None else list(shards)
        batches: dict[int, list] = {}
        for s, a in zip(shards, args):
            batches.setdefault(self.owner[s], []).append((s, method, a))
        for p, msg in batches.items():  # send everything first: the processes work in parallel
            self.conns[p].send(msg)
        results: dict[int, Any] = {}
        error = None
        for p, msg in batches.items():  # read every answer, even after an error, so no pipe keeps a stale one
            try:
                for (s, _, _), r in zip(msg, self._receive(self.conns[p])):
                    results[s] = r
            except BraidError as exc:
                error = error or exc
        if error is not None:
            raise error
        return [results[s] for s in shards]

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
                conn.close()
            except (OSError, BrokenPipeError):
                pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self.conns, self.procs = [], []


def require_ray():
    """Import ray, or raise a BraidError naming the extra to install."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise BraidError("Ray is not installed: pip install 'braid[distributed]' (ray[data])") from None
    return ray


def connect_ray(ray_address: str | None, num_cpus: int | None = None):
    """Initialise Ray once: ``"local"`` (or None) starts a local instance, anything else connects to it."""
    ray = require_ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if ray_address in (None, "local"):
            if num_cpus is not None:
                kwargs["num_cpus"] = num_cpus
            ray.init(**kwargs)
        else:
            ray.init(address=ray_address, **kwargs)
    return ray


class _RayPool:
    """One Ray actor per shard (shard directories must be readable at the same path on every node)."""

    kind = "ray"

    def __init__(self, paths: list[str], sizes: list[int], ray_address: str, cpus_per_shard: float | None = None):
        ray = connect_ray(ray_address)
        self.ray = ray
        if cpus_per_shard is None:
            total = float(ray.cluster_resources().get("CPU", 1.0))
            cpus_per_shard = min(1.0, total / max(len(paths), 1))
        actor = ray.remote(ShardWorker).options(num_cpus=cpus_per_shard)
        self.actors = [actor.remote(p, n) for p, n in zip(paths, sizes)]
        try:
            ray.get([a.ping.remote() for a in self.actors])
        except Exception as exc:
            self.close()
            raise BraidError(f"a shard actor failed to open its shard: {exc}") from None

    def call(self, method: str, args: Sequence[tuple], shards: Sequence[int] | None = None) -> list:
        shards = range(len(self.actors)) if shards is None else shards
        return self.ray.get([getattr(self.actors[s], method).remote(*a) for s, a in zip(shards, args)])

    def close(self) -> None:
        for a in getattr(self, "actors", []):
            try:
                self.ray.kill(a)
            except Exception:
                pass
        self.actors = []


# --------------------------------------------------------------------------------------------------
# Sharded views with the interfaces of the index components (so the retrievers run unchanged)
# --------------------------------------------------------------------------------------------------
def _split_by_shard(docnos: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global docnos -> (shard int64, local docno int64), each of docnos' shape."""
    docnos = np.asarray(docnos, dtype=np.int64)
    shard = np.searchsorted(offsets, docnos, side="right") - 1
    return shard, docnos - offsets[shard]


class _View:
    def __init__(self, pool, offsets: np.ndarray, num_docs: int):
        self.pool = pool
        self.offsets = offsets
        self.num_docs = int(num_docs)

    @property
    def n_shards(self) -> int:
        return len(self.offsets)

    def _check_docnos(self, docnos: np.ndarray) -> np.ndarray:
        docnos = np.asarray(docnos, dtype=np.int64).reshape(-1)
        if docnos.size and (docnos.min() < 0 or docnos.max() >= self.num_docs):
            raise OptionError("docnos", docnos.tolist()[:5], f"document numbers in [0, {self.num_docs})")
        return docnos

    def _gather(self, method: str, docnos: np.ndarray) -> tuple[list, np.ndarray, list[np.ndarray]]:
        """Call ``method(local docnos)`` on each shard holding some of ``docnos``; return per-shard answers."""
        shard, local = _split_by_shard(docnos, self.offsets)
        used = sorted(set(shard.tolist()))
        positions = [np.flatnonzero(shard == s) for s in used]
        answers = self.pool.call(method, [(local[pos],) for pos in positions], shards=used) if used else []
        return answers, shard, positions


class ShardedLexicalIndex(_View):
    """BM25 over all shards with the collection's statistics (the interface of LexicalIndex that retrievers use)."""

    def __init__(self, pool, offsets, num_docs, bm25_stats: dict, analyzer_index):
        super().__init__(pool, offsets, num_docs)
        self.stats = bm25_stats
        self._analyzer_index = analyzer_index  # a LexicalIndex of shard 0, used for analysis only
        self.shard_total_docs = np.array([s["tantivy_docs"] for s in bm25_stats["shards"]], dtype=np.int64)

    def analyze(self, text: str) -> list[str]:
        return self._analyzer_index.analyze(text)

    def query_terms(self, query: str) -> dict[str, float]:
        return self._analyzer_index.query_terms(query)

    def doc_freq(self, term: str) -> int:
        return int(sum(int(x[0]) for x in self.pool.call("doc_freqs", [([term],)] * self.n_shards)))

    def search(self, queries: Sequence[str], k: int = 10, threads: int = 1) -> Hits:
        return self.search_weighted([self.query_terms(q) for q in queries], k=k, threads=threads)

    def search_weighted(self, queries: Sequence[dict[str, float]], k: int = 10, threads: int = 1) -> Hits:
        """Global BM25 top-k of analysed ``term -> weight`` queries (e.g. RM3 expansions)."""
        queries = [{t: float(w) for t, w in q.items() if t != PAD_TOKEN} for q in queries]
        vocab = sorted({t for q in queries for t in q})
        if not vocab:
            return Hits.empty(len(queries), k)
        df = np.stack(self.pool.call("doc_freqs", [(vocab,)] * self.n_shards))  # (n_shards, n_terms)
        idf_global = tantivy_idf(df.sum(axis=0), self.stats["num_docs"]).astype(np.float64)
        idf_shard = tantivy_idf(df, self.shard_total_docs[:, None]).astype(np.float64)
        column = {t: j for j, t in enumerate(vocab)}
        args = []
        for s in range(self.n_shards):
            boosted = []
            for q in queries:
                row = {}
                for t, w in q.items():
                    j = column[t]
                    if df[s, j] > 0:  # a term absent from the shard matches nothing there
                        row[t] = w * idf_global[j] / idf_shard[s, j]
                boosted.append(row)
            args.append((boosted, int(k), int(threads)))
        return merge_topk(self.pool.call("bm25_search", args), self.offsets, k)

    def documents(self, docnos: Sequence[int]) -> list[dict]:
        docnos = self._check_docnos(np.asarray(docnos))
        answers, _, positions = self._gather("documents", docnos)
        out: list[dict | None] = [None] * len(docnos)
        for ans, pos in zip(answers, positions):
            for p, doc in zip(pos, ans):
                out[p] = doc
        return out  # type: ignore[return-value]

    def term_frequencies(self, docnos: Sequence[int]) -> list[dict[str, int]]:
        docnos = self._check_docnos(np.asarray(docnos))
        answers, _, positions = self._gather("term_frequencies", docnos)
        out: list[dict | None] = [None] * len(docnos)
        for ans, pos in zip(answers, positions):
            for p, tf in zip(pos, ans):
                out[p] = tf
        return out  # type: ignore[return-value]


class ShardedSparseIndex(_View):
    """The learned sparse index of all shards (the BlockedSparseIndex interface that retrievers use)."""

    def __init__(self, pool, offsets, num_docs, vocab_size: int):
        super().__init__(pool, offsets, num_docs)
        self.vocab_size = int(vocab_size)

    def search(self, queries, k: int = 10, query_cut: int = 10, heap_factor: float = 0.7, exact: bool = False, threads: int | None = None) -> Hits:
        """Global top-k by inner product (``exact=True``: equal to the unsharded exact search)."""
        args = (queries.indptr, queries.indices, queries.data, queries.vocab_size, int(k), query_cut, heap_factor, bool(exact), threads)
        return merge_topk(self.pool.call("sparse_search", [args] * self.n_shards), self.offsets, k)

    def forward_vectors(self, docnos: np.ndarray):
        """Forward-index rows of global ``docnos`` (SparseVectors, float32 weights), in the given order."""
        from braid.data.vectors import SparseVectors

        docnos = self._check_docnos(docnos)
        answers, _, positions = self._gather("sparse_forward", docnos)
        rows: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0, np.int32), np.empty(0, np.float32))] * len(docnos)
        for (indptr, indices, data), pos in zip(answers, positions):
            for j, p in enumerate(pos):
                rows[p] = (indices[indptr[j] : indptr[j + 1]], data[indptr[j] : indptr[j + 1]])
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r[0]) for r in rows], out=indptr[1:])
        indices = np.concatenate([r[0] for r in rows]).astype(np.int32) if rows else np.empty(0, np.int32)
        data = np.concatenate([r[1] for r in rows]).astype(np.float32) if rows else np.empty(0, np.float32)
        return SparseVectors(indptr, indices, data, self.vocab_size)


class ShardedDenseIndex(_View):
    """The dense index of all shards (the DenseIndex interface that retrievers use)."""

    def search(self, vectors: np.ndarray, k: int = 10, nprobe=None, ef_search=None, threads: int | None = None) -> Hits:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        args = (vectors, int(k), nprobe, ef_search, threads)
        return merge_topk(self.pool.call("dense_search", [args] * self.n_shards), self.offsets, k)

    def reconstruct(self, docnos: np.ndarray) -> np.ndarray:
        docnos = self._check_docnos(docnos)
        answers, _, positions = self._gather("dense_reconstruct", docnos)
        dim = answers[0].shape[1] if answers else 0
        out = np.zeros((len(docnos), dim), dtype=np.float32)
        for vecs, pos in zip(answers, positions):
            out[pos] = vecs
        return out


# --------------------------------------------------------------------------------------------------
# The searcher
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Shard:
    path: Path
    offset: int
    num_docs: int


class ShardedContext(IndexContext):
    """The index context of a sharded index: its components are sharded views over the shard workers
    (with the interface of the unsharded components), so every retriever runs unchanged over them."""

    def __init__(
        self, index_dir: Path, manifest: dict, doc_ids: list[str], device: str, sharded: dict, pool, offsets: np.ndarray, first_shard: Path, runtime: str = "auto"
    ):
        super().__init__(index_dir, manifest, doc_ids, device, runtime)
        self.sharded = sharded
        self.pool = pool
        self.offsets = offsets
        self.first_shard = first_shard

    def filter_mask(self, spec):
        raise OptionError("filter", spec, "sharded indexes do not take metadata filters (search the shards' own indexes, or an unsharded index)")

    def _open_component(self, name: str, info: dict):
        if self.pool is None:
            raise BraidError("this ShardedSearcher is closed")
        n = self.num_docs
        if name == "bm25":
            from braid.index.lexical import LexicalIndex

            stats = self.sharded.get("bm25")
            if not stats:
                raise IndexFormatError(f"{self.index_dir}: {SHARDED_MANIFEST} lacks the BM25 statistics")
            analyzer = LexicalIndex.open(self.first_shard / "bm25", info)
            return ShardedLexicalIndex(self.pool, self.offsets, n, stats, analyzer)
        if name == "sparse":
            return ShardedSparseIndex(self.pool, self.offsets, n, int(info["index"]["vocab_size"]))
        if name == "dense":
            return ShardedDenseIndex(self.pool, self.offsets, n)
        raise OptionError("--retriever", name, "sharded indexes serve the bm25, sparse and dense components")


class ShardedSearcher(Searcher):
    """Searches a sharded index directory with the interface of :class:`Searcher`.

    ``ray_address``: search with one Ray actor per shard (a cluster address, ``"auto"``, or
    ``"local"`` to start Ray in this process); else ``processes`` local worker processes (None: one
    per shard, at most the CPU count; 0: the shards are searched in this process, one after the
    other). ``retriever`` / ``pipeline`` pick the default as in :class:`Searcher`.

    Every retriever over the bm25, sparse and dense components (``bm25``, ``sparse``, ``sparse-if``,
    ``dense``) and pipeline (built-in or TOML) works; results are in global docnos and equal the
    unsharded index's (see the module docstring for BM25's float32 tolerance). Call :meth:`close` (or
    use ``with``) to stop workers.
    """

    def __init__(
        self,
        path: str | Path,
        ray_address: str | None = None,
        processes: int | None = None,
        retriever: str | None = None,
        pipeline: str | Path | None = None,
        device: str = "auto",
        runtime: str = "auto",
    ):
        from braid.index.manifest import read_docids, read_manifest

        self.pool = None
        check_nonneg_int("processes", processes, allow_none=True, hint="None: one per shard; 0: in this process")
        if retriever is not None and pipeline is not None:
            raise OptionError("--retriever/--pipeline", f"{retriever} / {pipeline}", "give one of them, not both")
        index_dir = Path(path)
        sharded = read_sharded_manifest(index_dir)
        self.shards = [_Shard(index_dir / s["path"], s["offset"], s["num_docs"]) for s in sharded["shards"]]
        offsets = np.array([s.offset for s in self.shards], dtype=np.int64)
        first = read_manifest(self.shards[0].path)
        doc_ids: list[str] = []
        for s in self.shards:
            m = first if s is self.shards[0] else read_manifest(s.path)
            if m["num_docs"] != s.num_docs:
                raise IndexFormatError(f"{s.path}: holds {m['num_docs']} documents, {SHARDED_MANIFEST} says {s.num_docs}")
            if set(m["components"]) != set(first["components"]):
                raise IndexFormatError(f"{s.path}: components {sorted(m['components'])} differ from shard 0's {sorted(first['components'])}")
            doc_ids.extend(read_docids(s.path, manifest=m))
        # The manifest the retrievers read: shard 0's component configs (encoders are the same in every shard).
        manifest = {**first, "num_docs": int(sharded["num_docs"]), "components": first["components"]}
        paths = [str(s.path.resolve()) for s in self.shards]
        sizes = [s.num_docs for s in self.shards]
        if ray_address is not None:
            pool = _RayPool(paths, sizes, ray_address)
        elif processes == 0:
            pool = _InProcessPool(paths, sizes)
        else:
            n = processes if processes is not None else min(len(paths), os.cpu_count() or 1)
            pool = _ProcessPool(paths, sizes, n)
        self.pool = pool
        self.sharded = sharded
        self.offsets = offsets
        context = ShardedContext(index_dir, manifest, doc_ids, device, sharded, pool, offsets, self.shards[0].path, runtime)
        super().__init__(retriever=retriever, pipeline=pipeline, device=device, context=context)

    # lifecycle -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the shard workers (processes or Ray actors)."""
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()
            self.pool = None
            if getattr(self, "context", None) is not None:
                self.context.pool = None

    def __enter__(self) -> "ShardedSearcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def executor(self) -> str:
        """``"ray"``, ``"processes"`` or ``"in-process"``."""
        return self.pool.kind

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    def component(self, name: str):
        """The sharded view of component ``name``, with the interface of the unsharded component."""
        if self.pool is None:
            raise BraidError("this ShardedSearcher is closed")
        return self.context.component(name)

    def retriever(self, name: str):
        if self.pool is None:
            raise BraidError("this ShardedSearcher is closed")
        return super().retriever(name)


def bm25_padding(shard_docs: int, shard_tokens: int, num_docs: int, total_tokens: int, max_pad_docs: int = 1_000_000) -> tuple[int, int]:
    """Padding ``(pad_docs, pad_tokens)`` giving a shard tantivy's float32 average length of the collection.

    tantivy averages a field's length as ``float32(total_tokens) / float32(total_docs)``; the shard's
    value must equal ``float32(total_tokens) / float32(num_docs)`` bit for bit. Searches the smallest
    number of padding documents ``m >= 0`` for which some token count ``P >= 0`` gives that value.
    Raises BraidError when no ``m <= max_pad_docs`` does (never seen: each ``m`` succeeds with
    probability about ``(shard_docs + m) x 2^-23 x average``).
    """
    target = np.float32(total_tokens) / np.float32(num_docs)
    if np.float32(shard_tokens) / np.float32(shard_docs) == target:
        return 0, 0
    avg = float(total_tokens) / float(num_docs)
    # m must leave P >= 0: (T_s + P) / (n_s + m) = avg needs m >= T_s / avg - n_s.
    start = max(1, math.ceil(shard_tokens / avg - shard_docs) - 1)
    for m in range(start, start + max_pad_docs):
        d = shard_docs + m
        base = int(round(avg * d)) - shard_tokens
        for p in (base, base - 1, base + 1, base - 2, base + 2):
            if p >= 0 and np.float32(shard_tokens + p) / np.float32(d) == target:
                return m, p
    raise BraidError(f"no BM25 padding found for a shard of {shard_docs} documents (average {avg})")
