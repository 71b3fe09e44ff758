"""Scale-out figures for docs/benchmarks/scale.md: equality on scifact, Ray encoding throughput, sizing.

    nice -n 10 .venv/bin/python scripts/bench_scale.py equality   --work /tmp/braid-scale --out docs/benchmarks/scale-equality.json
    nice -n 10 .venv/bin/python scripts/bench_scale.py throughput --work /tmp/braid-scale --docs 500 --out ...
    nice -n 10 .venv/bin/python scripts/bench_scale.py sizing     --work /tmp/braid-scale --out ...

equality: builds (once, in --work) the scifact index (bm25, sparse, dense) from the pre-encoded
vectors of ../shared/vectors/scifact, the 4-shard index on Ray (local Ray, the same vectors), and a
milvus-lite collection loaded from the local index; queries are encoded by Braid's encoders (the
same query vectors in all three paths); compares top-10 per query and nDCG@10 on the 300 test
queries (self-hits dropped, as BEIR does).

throughput: encodes the first --docs scifact documents with splade-tiny and MiniLM, single process
(torch with all cores) against Ray Data (ray_encode: an actor pool, one torch thread per actor).

sizing: bytes per document of every component (scifact indexes), and search cost against shard
size: BM25 on the dictionary corpus (244k docs), learned sparse and flat dense on synthetic vectors.

fanout: one query per call on the 4-shard scifact index (query vectors cached): the cost of the
fan-out in-process, through local processes and through Ray actors, against the unsharded index.

ann: flat, HNSW and IVF-PQ at one shard size (--ann-docs) on vectors made near real MiniLM scifact
vectors: build time, bytes per document, ms per query (one thread), recall@10 against flat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from machine import cpu_model  # noqa: E402 - scripts/machine.py (the scripts run as files)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BRAID_SHARED", REPO.parent / "shared"))
SCIFACT = SHARED / "data" / "scifact"
VECTORS = SHARED / "vectors" / "scifact"
MODELS = SHARED / "models"


def _options(**kw):
    from braid.retrieval.build.builder import BuildOptions

    base = dict(
        retrievers=("bm25", "sparse", "dense"),
        progress=False,
        sparse_model=str(MODELS / "splade-tiny"),
        dense_model=str(MODELS / "all-MiniLM-L6-v2"),
        sparse_vectors=VECTORS / "splade-tiny-docs.npz",
    )
    base.update(kw)
    return BuildOptions(**base)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _machine() -> dict:
    return {"cpu": cpu_model(), "python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}


# --------------------------------------------------------------------------------------------------
# equality
# --------------------------------------------------------------------------------------------------
class ExactSparse:
    """Exact sparse search inside pipelines (pipeline files have no `exact` key)."""

    def __init__(self, inner):
        self.inner, self.name, self.index = inner, inner.name, inner.index

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def search(self, queries, k, threads=1, exclude=None, **knobs):
        return self.search_vectors(self.inner.encode_queries(queries), k, threads=threads, exclude=exclude)

    def search_vectors(self, vectors, k, threads=1, exclude=None, **knobs):
        return self.inner.search_vectors(vectors, k=k, threads=threads, exclude=exclude, exact=True)


class CachedQueries:
    """Encodes each query text once per process, so every path searches with the same query vectors."""

    def __init__(self, inner, cache: dict):
        self.inner, self.name, self.index, self.cache = inner, inner.name, inner.index, cache

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def encode_queries(self, queries):
        key = (self.name, tuple(queries))
        if key not in self.cache:
            self.cache[key] = self.inner.encode_queries(queries)
        return self.cache[key]

    def search(self, queries, k, threads=1, exclude=None, **knobs):
        return self.inner.search_vectors(self.encode_queries(queries), k=k, threads=threads, exclude=exclude, **knobs)


def _prepare(searcher, cache: dict, exact: bool = True):
    for name in ("sparse", "sparse-if", "dense"):
        if name in searcher.available_retrievers():
            r = CachedQueries(searcher.retriever(name), cache)
            searcher._retrievers[name] = ExactSparse(r) if exact and name.startswith("sparse") else r
    return searcher


def _compare(a, b, k: int = 10) -> dict:
    """Top-k agreement of two SearchResults (a = reference).

    ``identical_top10``: same docnos in the same order. ``same_scores_top10``: the two top-k score
    sequences agree within float32 rounding (rtol 1e-5), i.e. any docno difference is a swap among
    documents whose scores are equal up to rounding (ties). ``overlap_top10``: shared docnos / k.
    """
    same = same_scores = overlap = 0
    max_rel = 0.0
    for i in range(a.hits.n_queries):
        da, db = a.hits.docnos[i, :k], b.hits.docnos[i, :k]
        same += int(np.array_equal(da, db))
        pos = (da == db) & (da >= 0)
        if pos.any():
            sa, sb = a.hits.scores[i, :k][pos].astype(np.float64), b.hits.scores[i, :k][pos].astype(np.float64)
            max_rel = max(max_rel, float(np.max(np.abs(sa - sb) / np.maximum(np.abs(sa), 1e-30))))
        same_scores += int(np.allclose(a.hits.scores[i, :k], b.hits.scores[i, :k], rtol=1e-5, atol=1e-7))
        overlap += len(set(da.tolist()) & set(db.tolist()))
    n = a.hits.n_queries
    return {"identical_top10": same / n, "same_scores_top10": same_scores / n, "overlap_top10": overlap / (n * k), "max_rel_score_diff": max_rel, "queries": n}


def cmd_equality(args) -> dict:
    from braid.data.beir import BeirDataset
    from braid.retrieval.build.builder import build_index
    from braid.retrieval.scale.distributed import ShardingConfig, build_sharded, fill_vector_cache
    from braid.retrieval.eval.evaluate import evaluate
    from braid.retrieval.scale.milvus import MilvusLoadConfig, MilvusSearcher, load_index
    from braid.retrieval.searcher import Searcher
    from braid.retrieval.scale.sharded import ShardedSearcher, connect_ray

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"machine": _machine(), "timings_s": {}}
    options = _options()
    local_dir, sharded_dir, db = work / "scifact-local", work / "scifact-sharded4", work / "milvus" / "scifact.db"
    if not local_dir.exists():
        t0 = time.perf_counter()
        fill_vector_cache(local_dir, SCIFACT, "dense", options, np.load(VECTORS / "minilm-docs.npy"))
        build_index(SCIFACT, local_dir, options)
        out["timings_s"]["build_local"] = time.perf_counter() - t0
    ray = connect_ray("local", args.ray_cpus)
    if not sharded_dir.exists():
        t0 = time.perf_counter()
        build_sharded(SCIFACT, sharded_dir, options, ShardingConfig(shards=4, executor="ray"), dense_vectors=VECTORS / "minilm-docs.npy", log=print)
        out["timings_s"]["build_sharded_ray"] = time.perf_counter() - t0
    if not db.exists():
        t0 = time.perf_counter()
        load_index(local_dir, str(db), MilvusLoadConfig(collection="scifact"), log=print)
        out["timings_s"]["milvus_load"] = time.perf_counter() - t0

    ds = BeirDataset(SCIFACT)
    queries, qrels = ds.queries("test"), ds.qrels("test")
    cache: dict = {}
    local = _prepare(Searcher(local_dir), cache)
    sharded = _prepare(ShardedSearcher(sharded_dir, ray_address="local"), cache)
    milvus = MilvusSearcher(str(db), "scifact")
    # the Milvus path encodes with its own encoder objects: give it the same query vectors
    qtexts = list(queries.values())
    mvec = {"sparse": local.retriever("sparse").encode_queries(qtexts), "dense": local.retriever("dense").encode_queries(qtexts)}
    rows = {}

    def record(name, res, seconds):
        mean, _ = evaluate(res.to_run(), qrels, ["ndcg@10", "recall@100"])
        rows[name] = {"ndcg@10": mean["ndcg@10"], "recall@100": mean["recall@100"], "search_s": seconds}
        return res

    def timed(fn):
        t0 = time.perf_counter()
        r = fn()
        return r, time.perf_counter() - t0

    comparisons = {}
    for r in ("bm25", "sparse", "sparse-if", "dense", "hybrid", "hybrid-rrf"):
        a, ta = timed(lambda: local.batch_search(queries, k=100, retriever=r, exclude_self=True))
        b, tb = timed(lambda: sharded.batch_search(queries, k=100, retriever=r, exclude_self=True))
        record(f"local/{r}", a, ta)
        record(f"ray-sharded-4/{r}", b, tb)
        comparisons[f"{r}: local vs ray-sharded-4"] = _compare(a, b)
    from braid.retrieval.searcher import SearchResults

    qids = list(queries)
    for r, braid_ref in (("sparse", "sparse"), ("dense", "dense")):
        (hits, ids), t = timed(lambda: milvus.search_vectors(mvec, k=100, retriever=r, exclude_ids=qids))
        m = record(f"milvus/{r}", SearchResults(qids, hits, ids, r), t)
        a = local.batch_search(queries, k=100, retriever=braid_ref, exclude_self=True)
        comparisons[f"{r}: local vs milvus"] = _compare(a, m)
    # hybrid: Braid RRF / raw weighted sum over (sparse exact, dense), depth 1000, against Milvus's rankers
    for name, toml, knobs in (
        ("hybrid-rrf", 'name = "sd-rrf"\ndepth = 1000\n[[retriever]]\nname = "sparse"\n[[retriever]]\nname = "dense"\n[fusion]\nmethod = "rrf"\nrrf_k = 60\n', {"rrf_k": 60}),
        ("hybrid-weighted", 'name = "sd-sum"\ndepth = 1000\n[[retriever]]\nname = "sparse"\n[[retriever]]\nname = "dense"\n[fusion]\nmethod = "linear"\nnorm = "none"\nmissing = "zero"\n', {"weights": [1.0, 1.0], "norm_score": False}),
    ):
        path = work / f"{name}.toml"
        path.write_text(toml)
        a, ta = timed(lambda: local.batch_search(queries, k=100, retriever=path, exclude_self=True))
        record(f"local/{name}(sparse+dense)", a, ta)
        (hits, ids), t = timed(lambda: milvus.search_vectors(mvec, k=100, retriever=name, depth=1000, exclude_ids=qids, **knobs))
        m = record(f"milvus/{name}", SearchResults(qids, hits, ids, name), t)
        comparisons[f"{name} (sparse+dense): local vs milvus"] = _compare(a, m)
    (hits, ids), t = timed(lambda: milvus.search_vectors(mvec, k=100, retriever="hybrid-weighted", depth=1000, exclude_ids=qids, weights=[1.0, 1.0], norm_score=True))
    record("milvus/hybrid-weighted(arctan-normalised)", SearchResults(qids, hits, ids, "w"), t)
    sharded.close()
    out.update({"metrics": rows, "comparisons": comparisons, "ray": {"cpus": ray.cluster_resources().get("CPU")}})
    out["machine"]["load_avg_end"] = os.getloadavg()
    return out


# --------------------------------------------------------------------------------------------------
# throughput
# --------------------------------------------------------------------------------------------------
def cmd_throughput(args) -> dict:
    import torch

    from braid.data.corpus import iter_corpus
    from braid.retrieval.scale.distributed import ShardingConfig, ray_encode, split_corpus
    from braid.retrieval.build.components import dense_encoder_from_options, sparse_encoder_from_options
    from braid.retrieval.scale.sharded import connect_ray

    work = Path(args.work) / "throughput"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    corpus = work / "corpus.jsonl"
    texts = []
    with open(corpus, "w") as fh:
        for i, d in enumerate(iter_corpus(SCIFACT / "corpus.jsonl")):
            if i >= args.docs:
                break
            fh.write(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n")
            texts.append(d.contents)
    options = _options(sparse_vectors=None, batch_size=32)
    out: dict = {"machine": _machine(), "docs": len(texts), "rows": []}
    torch.set_num_threads(os.cpu_count() or 1)
    for kind in ("sparse", "dense"):
        enc = sparse_encoder_from_options(options) if kind == "sparse" else dense_encoder_from_options(options)
        enc.encode(texts[:8], "document")  # load the model before timing
        t0 = time.perf_counter()
        enc.encode(texts, "document")
        s = time.perf_counter() - t0
        out["rows"].append({"path": f"single process, torch {torch.get_num_threads()} threads", "kind": kind, "seconds": s, "docs_per_s": len(texts) / s})
    t0 = time.perf_counter()
    ray = connect_ray("local", args.ray_cpus)
    out["ray_init_s"] = time.perf_counter() - t0
    files, *_ = split_corpus(corpus, work / "src", 2, False, False)
    for kind in ("sparse", "dense"):
        for actors, cpus in ((2, 0.75), (1, 1.0)):
            enc_dir = work / f"enc-{kind}-{actors}"
            info = ray_encode(files, [kind], options, ShardingConfig(encode_actors=actors, cpus_per_actor=cpus, encode_batch_size=64), enc_dir, log=print)
            out["rows"].append({
                "path": f"Ray Data, {actors} actor(s) x {cpus} CPU, 1 torch thread each (includes actor start and model load)",
                "kind": kind, "seconds": info["seconds"], "docs_per_s": info["num_docs"] / info["seconds"],
            })  # fmt: skip
    out["machine"]["load_avg_end"] = os.getloadavg()
    return out


# --------------------------------------------------------------------------------------------------
# sizing
# --------------------------------------------------------------------------------------------------
def _synthetic_sparse(n: int, seed: int, nnz: int, vocab: int = 30522):
    """SPLADE-like vectors: about ``nnz`` distinct Zipf(1.1)-distributed terms per row, Gamma weights."""
    from braid.data.vectors import SparseVectors

    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    perm = rng.permutation(vocab).astype(np.int32)
    lengths = np.clip(rng.poisson(nnz, n), 1, None)
    rows = np.repeat(np.arange(n), lengths)
    terms = perm[rng.choice(vocab, size=int(lengths.sum()), p=p)]
    order = np.lexsort((terms, rows))
    rows, terms = rows[order], terms[order]
    keep = np.ones(len(terms), bool)
    keep[1:] = (rows[1:] != rows[:-1]) | (terms[1:] != terms[:-1])
    rows, terms = rows[keep], terms[keep]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    data = rng.gamma(2.0, 0.5, size=len(terms)).astype(np.float32)
    return SparseVectors(indptr, terms.astype(np.int32), data, vocab)


def _per_query_ms(fn, n_queries: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / n_queries


def cmd_sizing(args) -> dict:
    from braid.data.beir import BeirDataset
    from braid.index.dense import DenseIndex, DenseIndexConfig
    from braid.index.sparse.blocked import BlockedSparseIndex
    from braid.retrieval.build.builder import BuildOptions, build_index
    from braid.retrieval.searcher import Searcher
    from braid.retrieval.scale.sharded import merge_topk

    work = Path(args.work)
    out: dict = {"machine": _machine(), "bytes_per_doc": {}, "latency": []}
    local = work / "scifact-local"
    if local.exists():
        n = Searcher(local).num_docs
        for part in ("bm25", "sparse", "dense", "vectors/sparse", "vectors/dense"):
            out["bytes_per_doc"][f"scifact {part}"] = _du(local / part) / n
        out["bytes_per_doc"]["scifact docids.txt"] = (local / "docids.txt").stat().st_size / n
    # BM25 on real text of several sizes (dictionary corpus prefixes)
    dictionary = SHARED / "data" / "dictionary"
    if dictionary.exists():
        ds = BeirDataset(dictionary)
        queries = list(ds.queries(None).values())[:300]
        for n_docs in args.bm25_sizes:
            d = work / f"dict-{n_docs}"
            if not d.exists():
                src = work / f"dict-{n_docs}.jsonl"
                import gzip

                with gzip.open(ds.corpus_path, "rt") as fh, open(src, "w") as dst:
                    for i, line in enumerate(fh):
                        if i >= n_docs:
                            break
                        dst.write(line)
                t0 = time.perf_counter()
                build_index(src, d, BuildOptions(progress=False, allow_empty=True, skip_bad=True))
                out.setdefault("bm25_build_s", {})[n_docs] = time.perf_counter() - t0
            s = Searcher(d)
            s.batch_search(queries[:20], k=10, retriever="bm25")
            ms = _per_query_ms(lambda: s.batch_search(queries, k=10, retriever="bm25"), len(queries))
            ms100 = _per_query_ms(lambda: s.batch_search(queries, k=1000, retriever="bm25"), len(queries), 1)
            out["latency"].append({"retriever": "bm25 (tantivy)", "docs": s.num_docs, "ms_per_query_k10": ms, "ms_per_query_k1000": ms100, "bytes_per_doc": _du(d / "bm25") / s.num_docs})
    # learned sparse on synthetic SPLADE-like vectors (Zipf terms, ~120 nonzeros per doc, 40 per query)
    queries_sv = _synthetic_sparse(300, 99, 55)  # about 40 distinct terms per query
    for n_docs in args.sparse_sizes:
        docs = _synthetic_sparse(n_docs, 1, 220)  # about 128 distinct terms per document
        t0 = time.perf_counter()
        index = BlockedSparseIndex.build(docs)
        build_s = time.perf_counter() - t0
        index.search(queries_sv, k=10, query_cut=40, heap_factor=0.9, threads=1)
        ms = _per_query_ms(lambda: index.search(queries_sv, k=10, query_cut=40, heap_factor=0.9, threads=1), queries_sv.n_rows)
        ms_exact = _per_query_ms(lambda: index.search(queries_sv, k=10, exact=True, threads=1), queries_sv.n_rows, 1)
        out["latency"].append({"retriever": "sparse (blocked, query_cut 40, heap_factor 0.9)", "docs": n_docs, "ms_per_query_k10": ms, "ms_per_query_exact": ms_exact, "bytes_per_doc": index.nbytes() / n_docs, "build_s": build_s, "nnz_per_doc": docs.nnz / n_docs, "nnz_per_query": queries_sv.nnz / queries_sv.n_rows})
    # dense flat (exact) on random unit vectors, 384-d
    rng = np.random.default_rng(0)
    q = rng.standard_normal((300, 384)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for n_docs in args.dense_sizes:
        x = rng.standard_normal((n_docs, 384)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        index = DenseIndex.build(x, DenseIndexConfig())
        index.search(q[:10], k=10, threads=1)
        ms = _per_query_ms(lambda: index.search(q, k=10, threads=1), len(q))
        out["latency"].append({"retriever": "dense (FAISS flat, 384-d)", "docs": n_docs, "ms_per_query_k10": ms, "bytes_per_doc": index.bytes_per_vector()})
    # the merge itself: 32 shards x k=1000, 300 queries
    parts = [(np.sort(rng.integers(0, 10**6, (300, 1000)), axis=1), np.sort(rng.random((300, 1000)).astype(np.float32), axis=1)[:, ::-1].copy()) for _ in range(32)]
    ms = _per_query_ms(lambda: merge_topk(parts, list(range(0, 32 * 10**6, 10**6)), 1000), 300)
    out["merge_ms_per_query_32x1000"] = ms
    out["machine"]["load_avg_end"] = os.getloadavg()
    return out


def cmd_ann(args) -> dict:
    """Dense ANN against flat at one shard size: vectors near real MiniLM scifact vectors (a proxy)."""
    from braid.index.dense import DenseIndex, DenseIndexConfig

    rng = np.random.default_rng(0)
    base = np.load(VECTORS / "minilm-docs.npy")
    q = np.ascontiguousarray(np.load(VECTORS / "minilm-queries.npy")[:300])
    n = args.ann_docs
    x = base[rng.integers(0, len(base), n)] + rng.normal(0, 0.03, (n, base.shape[1])).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out: dict = {"machine": _machine(), "docs": n, "queries": len(q), "vectors": "scifact MiniLM document vectors + N(0, 0.03^2) noise, renormalised", "rows": []}
    flat = DenseIndex.build(x, DenseIndexConfig())
    truth = flat.search(q, k=10, threads=1).docnos
    for cfg, knobs in (
        (DenseIndexConfig(), [{}]),
        (DenseIndexConfig(kind="hnsw"), [{"ef_search": 32}, {"ef_search": 128}]),
        (DenseIndexConfig(kind="ivfpq"), [{"nprobe": 16}, {"nprobe": 64}]),
    ):
        t0 = time.perf_counter()
        index = flat if cfg.kind == "flat" else DenseIndex.build(x, cfg)
        build_s = time.perf_counter() - t0
        for kn in knobs:
            index.search(q[:10], k=10, threads=1, **kn)
            ms = _per_query_ms(lambda: index.search(q, k=10, threads=1, **kn), len(q))
            got = index.search(q, k=10, threads=1, **kn).docnos
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got)]))
            out["rows"].append({"kind": cfg.kind, **kn, "build_s": build_s, "bytes_per_doc": index.bytes_per_vector(), "ms_per_query_k10": ms, "recall@10_vs_flat": recall})
    out["machine"]["load_avg_end"] = os.getloadavg()
    return out


def cmd_fanout(args) -> dict:
    """One query per call on the 4-shard scifact index: the cost of the fan-out per executor."""
    from braid.data.beir import BeirDataset
    from braid.retrieval.searcher import Searcher
    from braid.retrieval.scale.sharded import ShardedSearcher, connect_ray

    work = Path(args.work)
    queries = list(BeirDataset(SCIFACT).queries("test").values())[:50]
    out: dict = {"machine": _machine(), "queries": len(queries), "rows": []}
    connect_ray("local", args.ray_cpus)
    cache: dict = {}
    searchers = [("unsharded", _prepare(Searcher(work / "scifact-local"), cache))]
    for name, kw in (("4 shards, in-process", {"processes": 0}), ("4 shards, 2 local processes", {"processes": 2}), ("4 shards, 4 Ray actors", {"ray_address": "local"})):
        searchers.append((name, _prepare(ShardedSearcher(work / "scifact-sharded4", **kw), cache)))
    for retriever in ("bm25", "dense", "sparse-if"):
        for q in queries:  # encode every query once (cached), so no row times the encoder
            searchers[0][1].batch_search([q], k=10, retriever=retriever)
        for name, s in searchers:
            s.batch_search(queries[:5], k=10, retriever=retriever)  # warm: loads, compiles
            times = []
            for q in queries:
                t0 = time.perf_counter()
                s.batch_search([q], k=10, retriever=retriever)
                times.append(time.perf_counter() - t0)
            out["rows"].append({"retriever": retriever, "searcher": name, "median_ms": 1000 * float(np.median(times)), "p90_ms": 1000 * float(np.percentile(times, 90))})
    for _, s in searchers:
        if hasattr(s, "close"):
            s.close()
    out["machine"]["load_avg_end"] = os.getloadavg()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("equality", "throughput", "sizing", "ann", "fanout"))
    ap.add_argument("--work", default="/tmp/braid-scale")
    ap.add_argument("--out", default=None, help="Write the JSON result here (also printed).")
    ap.add_argument("--docs", type=int, default=500, help="throughput: documents encoded.")
    ap.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray.")
    ap.add_argument("--bm25-sizes", type=int, nargs="*", default=[25_000, 100_000, 243_895])
    ap.add_argument("--sparse-sizes", type=int, nargs="*", default=[25_000, 100_000])
    ap.add_argument("--dense-sizes", type=int, nargs="*", default=[25_000, 100_000, 400_000])
    ap.add_argument("--ann-docs", type=int, default=200_000, help="ann: vectors in the shard.")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result = {"equality": cmd_equality, "throughput": cmd_throughput, "sizing": cmd_sizing, "ann": cmd_ann, "fanout": cmd_fanout}[args.what](args)
    result["command"] = "scripts/bench_scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result["wall_s"] = time.perf_counter() - t0
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
