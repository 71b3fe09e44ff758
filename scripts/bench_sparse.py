"""Benchmark the blocked sparse index against pyseismic-lsr, bmp and exact brute force, side by side.

    nice -n 10 .venv/bin/python scripts/bench_sparse.py --dataset scifact --out docs/benchmarks/results/sparse-scifact.json
    nice -n 10 .venv/bin/python scripts/bench_sparse.py --dataset synthetic --out docs/benchmarks/results/sparse-synthetic-1m.json
    .venv/bin/python scripts/bench_sparse.py --plot docs/benchmarks/sparse_pareto.png docs/benchmarks/results/sparse-*.json

One process, one dataset, same vectors for every system, k=10. Per system: build time (wall and CPU),
peak resident memory added by the build, index bytes per document; then a sweep of the query-time
knobs, each point measured on every query as single-query calls on one thread (median / p99 wall
latency, median CPU time) with accuracy@10 = overlap with the exact top 10 (scipy product). At the
cheapest point reaching accuracy 0.90 / 0.95 / 0.99, batch throughput on 1 and 2 threads. Braid and
pyseismic-lsr are swept interleaved (setting by setting) so that load on the shared machine hits both
alike. Datasets: ``scifact`` (real splade-tiny vectors, the 300 test queries), ``synthetic`` (the
seeded 1M corpus of scripts/synthetic_sparse.py, cached under .cache/synthetic-1m), ``dictionary``
(real splade-tiny vectors of /work/shared/data/dictionary, when the encoding cache is complete).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BRAID_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "scripts"))

from braid.index.sparse import BlockedIndexConfig, BlockedSparseIndex, SparseVectors, exact_search  # noqa: E402
from machine import cpu_model  # noqa: E402 - scripts/machine.py

TARGETS = (0.90, 0.95, 0.99)
SEISMIC_GRID = [(qc, hf) for qc in (3, 5, 8, 12, 20, 30) for hf in (0.6, 0.7, 0.8, 0.9, 1.0)]
BMP_GRID = [(alpha, beta) for beta in (1.0, 0.8) for alpha in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def load_dataset(name: str, args) -> tuple[SparseVectors, SparseVectors, list[str]]:
    if name == "scifact":
        base = SHARED / "vectors" / "scifact"
        docs = sp.load_npz(base / "splade-tiny-docs.npz")
        queries = sp.load_npz(base / "splade-tiny-queries.npz")
        ids = json.loads((base / "ids.json").read_text())["query_ids"]
        test = set()
        with open(SHARED / "data" / "scifact" / "qrels" / "test.tsv", encoding="utf-8") as fh:
            next(fh)
            test = {line.split("\t")[0] for line in fh}
        rows = [i for i, q in enumerate(ids) if q in test]
        return SparseVectors.from_scipy(docs), SparseVectors.from_scipy(queries[rows]), [ids[i] for i in rows]
    if name == "synthetic":
        base = args.synthetic_dir
        if not (base / "docs.npz").exists():
            raise SystemExit(f"{base}/docs.npz missing: run scripts/synthetic_sparse.py --out {base} first")
        docs = SparseVectors.from_scipy(sp.load_npz(base / "docs.npz"))
        queries = sp.load_npz(base / "queries.npz")[: args.queries]
        return docs, SparseVectors.from_scipy(queries), [str(i) for i in range(queries.shape[0])]
    if name == "dictionary":
        base = args.dictionary_dir
        if not (base / "complete.json").exists():
            raise SystemExit(f"SKIP: {base} is not a complete encoding (no complete.json)")
        info = json.loads((base / "complete.json").read_text())
        arrays = [np.load(base / f"{n}.npy", allow_pickle=False) for n in ("indptr", "indices", "data")]
        docs = SparseVectors(*arrays, int(info["encoder"]["vocab_size"]))
        queries = sp.load_npz(base / "queries.npz")
        qids = json.loads((base / "queries.ids.json").read_text())["query_ids"]
        rows = np.random.default_rng(0).permutation(queries.shape[0])[: args.queries]
        return docs, SparseVectors.from_scipy(queries[np.sort(rows)]), [qids[i] for i in np.sort(rows)]
    raise SystemExit(f"unknown dataset {name}")


# ----------------------------------------------------------------------------------------------
# measurement helpers
# ----------------------------------------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def peak_memory():
    """Yield a dict that holds, afterwards, the peak RSS growth (bytes) over the body (20 ms polling)."""
    gc.collect()
    base = _rss()
    out = {"peak_bytes": 0}
    stop = threading.Event()

    def poll():
        peak = base
        while not stop.is_set():
            peak = max(peak, _rss())
            stop.wait(0.02)
        out["peak_bytes"] = max(peak, _rss()) - base

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        yield out
    finally:
        stop.set()
        th.join()


@contextlib.contextmanager
def timed():
    out = {}
    w, c = time.perf_counter(), time.process_time()
    yield out
    out["wall_s"] = time.perf_counter() - w
    out["cpu_s"] = time.process_time() - c


def accuracy(found: list[np.ndarray], truth: np.ndarray, k: int = 10) -> float:
    vals = []
    for i, row in enumerate(found):
        ref = truth[i][truth[i] >= 0][:k]
        if ref.size == 0:
            continue
        vals.append(len(set(np.asarray(row[:k]).tolist()) & set(ref.tolist())) / ref.size)
    return float(np.mean(vals))


def latency_summary(wall: list[float], cpu: list[float]) -> dict:
    w = np.asarray(wall) * 1e6
    c = np.asarray(cpu) * 1e6
    return {
        "median_us": round(float(np.median(w)), 1),
        "p99_us": round(float(np.percentile(w, 99)), 1),
        "mean_us": round(float(w.mean()), 1),
        "cpu_median_us": round(float(np.median(c)), 1),
        "cpu_mean_us": round(float(c.mean()), 1),
    }


# ----------------------------------------------------------------------------------------------
# systems: each has build(docs), one(i, setting) -> docnos, batch(setting, threads) -> list of docnos
# ----------------------------------------------------------------------------------------------
class Braid:
    name = "braid"

    def __init__(self, config: BlockedIndexConfig, order: str = "seismic"):
        self.config = config
        self.order = order
        if order != "seismic":
            self.name = f"braid ({order})"

    def build(self, docs: SparseVectors, threads: int) -> dict:
        import numba

        numba.set_num_threads(threads)
        self.index = BlockedSparseIndex.build(docs, self.config)
        return {"bytes": self.index.nbytes(), "info": {k: v for k, v in self.index.info.items() if k != "config"},
                "config": self.index.config.to_dict()}  # fmt: skip

    def prepare(self, queries: SparseVectors, qids: list[str]) -> None:
        self.queries = queries
        self.singles = [queries.take([i]) for i in range(queries.n_rows)]

    def one(self, i: int, setting) -> np.ndarray:
        qc, hf = setting
        hits = self.index.search(self.singles[i], k=10, query_cut=qc, heap_factor=hf, threads=1, block_order=self.order)
        return hits.docnos[0]

    def batch(self, setting, threads: int) -> list[np.ndarray]:
        qc, hf = setting
        hits = self.index.search(self.queries, k=10, query_cut=qc, heap_factor=hf, threads=threads, block_order=self.order)
        return list(hits.docnos)

    def free(self) -> None:
        self.index = None


class Seismic:
    name = "pyseismic-lsr"

    def __init__(self, config: BlockedIndexConfig):
        self.config = config

    def build(self, docs: SparseVectors, threads: int) -> dict:
        import seismic

        c = self.config
        dataset = seismic.SeismicDataset(dim=docs.vocab_size)
        dataset.add_documents_by_id(
            [str(i) for i in range(docs.n_rows)], docs.indices.astype(np.int64), docs.data, docs.indptr
        )
        with _capture_fd1() as out:
            self.index = seismic.SeismicIndex.build_from_dataset(
                dataset, n_postings=c.n_postings, centroid_fraction=c.centroid_fraction,
                min_cluster_size=c.min_cluster_size, summary_energy=c.summary_energy,
                max_fraction=c.max_fraction, doc_cut=c.doc_cut, num_threads=threads,
            )  # fmt: skip
        del dataset
        with _capture_fd1() as out:
            self.index.print_space_usage_byte()
        total = [line for line in out["text"].splitlines() if "Total:" in line]
        nbytes = int(total[-1].split("Total:")[1].split()[0]) if total else None
        return {"bytes": nbytes, "space_usage": out["text"].strip().splitlines()}

    def prepare(self, queries: SparseVectors, qids: list[str]) -> None:
        import seismic

        st = seismic.get_seismic_string()
        self.qids = np.array([str(i) for i in range(queries.n_rows)], dtype=st)
        self.comps = [np.array([str(t) for t in queries.row(i)[0]], dtype=st) for i in range(queries.n_rows)]
        self.vals = [np.ascontiguousarray(queries.row(i)[1], dtype=np.float32) for i in range(queries.n_rows)]

    def one(self, i: int, setting) -> np.ndarray:
        qc, hf = setting
        res = self.index.search(self.qids[i], self.comps[i], self.vals[i], k=10, query_cut=qc, heap_factor=hf)
        return np.array([int(r[2]) for r in res], np.int64)

    def batch(self, setting, threads: int) -> list[np.ndarray]:
        qc, hf = setting
        res = self.index.batch_search(self.qids, self.comps, self.vals, k=10, query_cut=qc, heap_factor=hf,
                                      num_threads=threads)  # fmt: skip
        out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(self.qids)
        for hits in res:  # results come back out of input order: match by query id
            if hits:
                out[int(hits[0][0])] = np.array([int(r[2]) for r in hits], np.int64)
        return out

    def free(self) -> None:
        del self.index


class Bmp:
    name = "bmp"

    def __init__(self, bsize: int = 32):
        self.bsize = bsize

    def build(self, docs: SparseVectors, threads: int) -> dict:
        import bmp

        self.dir = Path(tempfile.mkdtemp(prefix="bench-bmp-"))
        path = self.dir / "index.bmp"
        scale = 255.0 / float(docs.data.max())  # bmp wants integer weights <= 255
        tokens = np.array([str(t) for t in range(docs.vocab_size)], dtype=object)
        indexer = bmp.Indexer(str(path), bsize=self.bsize, compress_range=False)
        for d in range(docs.n_rows):
            terms, weights = docs.row(d)
            q = np.maximum(1, np.rint(weights * scale)).astype(np.int64)
            indexer.add_document(str(d), dict(zip(tokens[terms].tolist(), q.tolist())))
        indexer.finish()
        self.searcher = bmp.Searcher(str(path))
        return {"bytes": path.stat().st_size, "weight_scale": scale, "bsize": self.bsize}

    def prepare(self, queries: SparseVectors, qids: list[str]) -> None:
        self.q = [{str(int(t)): float(w) for t, w in zip(*queries.row(i))} for i in range(queries.n_rows)]

    def one(self, i: int, setting) -> np.ndarray:
        alpha, beta = setting
        docnos, _ = self.searcher.search(self.q[i], k=10, alpha=alpha, beta=beta)
        return np.array([int(d) for d in docnos], np.int64)

    def batch(self, setting, threads: int) -> list[np.ndarray] | None:
        return None  # no batch API in the Python bindings

    def free(self) -> None:
        import shutil

        del self.searcher
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def _capture_fd1():
    """Capture what native code prints on file descriptor 1."""
    out = {"text": ""}
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield out
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            out["text"] = tmp.read().decode("utf-8", "replace")


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------
def sweep_point(systems: list, setting, n_queries: int, truth: np.ndarray) -> list[dict]:
    """One setting for every system, interleaved query by query (the order alternates), so that the
    shared machine's load changes hit all systems alike."""
    found = [[] for _ in systems]
    wall = [[] for _ in systems]
    cpu = [[] for _ in systems]
    for i in range(n_queries):
        order = range(len(systems)) if i % 2 == 0 else reversed(range(len(systems)))
        for j in order:
            c0, w0 = time.thread_time(), time.perf_counter()
            found[j].append(systems[j].one(i, setting))
            wall[j].append(time.perf_counter() - w0)
            cpu[j].append(time.thread_time() - c0)
    return [
        {"setting": list(setting), "accuracy": round(accuracy(found[j], truth), 4), **latency_summary(wall[j], cpu[j])}
        for j in range(len(systems))
    ]


def throughput(system, setting, truth, threads: int, repeat: int = 2) -> dict | None:
    """Batch queries/s with ``threads`` threads (best of ``repeat``); ``cores_used`` = process CPU time /
    wall time, which shows whether a library honoured the thread count."""
    best = None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        found = system.batch(setting, threads)
        if found is None:
            return None
        dt, cpu = time.perf_counter() - w0, time.process_time() - c0
        if best is None or dt < best[0]:
            best = (dt, cpu)
    return {"threads": threads, "qps": round(len(truth) / best[0], 1), "cores_used": round(best[1] / best[0], 2),
            "accuracy": round(accuracy(found, truth), 4)}  # fmt: skip


def profile_braid(system, setting) -> dict:
    """Where a query's time goes: documents scored (``search_with_stats``), and the time of the same
    traversal with every block skipped once the heap is full (heap_factor 1e9: query setup + summary
    estimates + the first blocks' docs), so (total - that) / (the difference in documents scored) = the
    cost of one exact score. One batch call on one thread, CPU time."""
    index, queries = system.index, system.queries
    nq, k = queries.n_rows, 10
    qc, hf = setting
    times, scored = {}, {}
    for name, factor in (("full", hf), ("summaries_only", 1e9)):
        c0 = time.thread_time()
        _, stats = index.search_with_stats(queries, k=k, query_cut=qc, heap_factor=factor, threads=1, block_order=system.order)
        times[name] = (time.thread_time() - c0) / nq * 1e6
        scored[name] = float(stats.docs_scored.mean())
    per_doc = (times["full"] - times["summaries_only"]) / max(scored["full"] - scored["summaries_only"], 1)
    return {
        "docs_scored_mean": round(scored["full"], 1),
        "docs_scored_frac": round(scored["full"] / index.num_docs, 5),
        "cpu_us_per_query": round(times["full"], 1),
        "cpu_us_summaries_and_setup": round(times["summaries_only"], 1),
        "docs_scored_summaries_and_setup": round(scored["summaries_only"], 1),
        "cpu_ns_per_scored_doc": round(per_doc * 1000, 1),
    }


def pick(points: list[dict], target: float) -> dict | None:
    ok = [p for p in points if p["accuracy"] >= target]
    return min(ok, key=lambda p: p["median_us"]) if ok else None


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(args) -> dict:
    import numba

    log(f"loading {args.dataset}")
    docs, queries, qids = load_dataset(args.dataset, args)
    nq = queries.n_rows
    log(f"{docs.n_rows} docs ({docs.nnz / docs.n_rows:.1f} nnz/doc), {nq} queries ({queries.nnz / max(nq, 1):.1f} nnz/query)")
    result = {
        "dataset": args.dataset,
        "num_docs": docs.n_rows,
        "num_queries": nq,
        "doc_nnz_mean": round(docs.nnz / docs.n_rows, 1),
        "query_nnz_mean": round(queries.nnz / max(nq, 1), 1),
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_start": os.getloadavg()},
        "command": " ".join(sys.argv),
        "systems": {},
    }

    cache = args.synthetic_dir / f"truth-k10-q{nq}.npy" if args.dataset == "synthetic" else None
    if cache is not None and cache.exists():
        truth = np.load(cache)
        log(f"ground truth from {cache}")
    else:
        with timed() as t:
            truth = exact_search(docs, queries, 10).docnos
        log(f"ground truth (scipy, {nq} queries): {t['wall_s']:.1f}s")
        result["ground_truth_s"] = round(t["wall_s"], 2)
        if cache is not None:
            np.save(cache, truth)

    config = BlockedIndexConfig(
        n_postings=args.n_postings, centroid_fraction=args.centroid_fraction, summary_energy=args.summary_energy,
        max_fraction=args.max_fraction, doc_cut=args.doc_cut, min_cluster_size=args.min_cluster_size,
        max_centroids=None,  # Seismic has no cap: same clustering for both
    ).resolve(docs.n_rows, docs.nnz, docs.vocab_size)  # fmt: skip
    result["build_config"] = config.to_dict()
    systems = []
    if "braid" in args.systems:
        for order in args.block_orders.split(","):
            systems.append(Braid(config, order))
    if "seismic" in args.systems:
        systems.append(Seismic(config))
    # builds (sequential, each with its own memory measurement); warm-up compile excluded for Braid
    if any(isinstance(s, Braid) for s in systems):
        BlockedSparseIndex.build(docs.take(np.arange(min(2000, docs.n_rows))), config).search(queries.take([0]))
    built_braid = None
    for system in systems:
        entry = result["systems"].setdefault(system.name, {})
        if isinstance(system, Braid) and built_braid is not None:  # another block order: same index
            system.index = built_braid.index
            entry["build"] = {"same_index_as": built_braid.name}
            system.prepare(queries, qids)
            continue
        log(f"building {system.name}")
        with peak_memory() as mem, timed() as t:
            info = system.build(docs, args.build_threads)
        if isinstance(system, Braid):
            built_braid = system
        entry["build"] = {"wall_s": round(t["wall_s"], 2), "cpu_s": round(t["cpu_s"], 2), "threads": args.build_threads,
                          "peak_rss_added_mb": round(mem["peak_bytes"] / 2**20, 1), **info}  # fmt: skip
        if info.get("bytes"):
            entry["build"]["bytes_per_doc"] = round(info["bytes"] / docs.n_rows, 1)
        log(f"{system.name}: build {t['wall_s']:.1f}s wall / {t['cpu_s']:.1f}s cpu, peak +{mem['peak_bytes'] / 2**20:.0f} MB, "
            f"{info.get('bytes', 0) / 2**20:.0f} MB")  # fmt: skip
        system.prepare(queries, qids)
        system.one(0, SEISMIC_GRID[0])  # warm up
    if systems and "bmp" not in args.systems and "brute" not in args.systems:
        del docs  # the sweep needs only the queries: give the memory back before it
        gc.collect()
    # interleaved sweep
    for setting in args.grid:
        for system, point in zip(systems, sweep_point(systems, setting, nq, truth)):
            result["systems"][system.name].setdefault("sweep", []).append(point)
            log(f"{system.name} {setting}: acc {point['accuracy']:.4f} median {point['median_us']:.0f}us "
                f"(cpu {point['cpu_median_us']:.0f}) p99 {point['p99_us']:.0f}us")  # fmt: skip
    for system in systems:
        finish(system, result["systems"][system.name], truth)
    for system in systems:
        system.free()
    gc.collect()

    if "bmp" in args.systems:
        system = Bmp(args.bmp_bsize)
        log("building bmp")
        with peak_memory() as mem, timed() as t:
            info = system.build(docs, args.build_threads)
        entry = result["systems"].setdefault(system.name, {})
        entry["build"] = {"wall_s": round(t["wall_s"], 2), "cpu_s": round(t["cpu_s"], 2), "threads": 1,
                          "peak_rss_added_mb": round(mem["peak_bytes"] / 2**20, 1), **info,
                          "bytes_per_doc": round(info["bytes"] / docs.n_rows, 1)}  # fmt: skip
        log(f"bmp: build {t['wall_s']:.1f}s, {info['bytes'] / 2**20:.0f} MB")
        system.prepare(queries, qids)
        for setting in args.bmp_grid:
            (point,) = sweep_point([system], setting, nq, truth)
            entry.setdefault("sweep", []).append(point)
            log(f"bmp {setting}: acc {point['accuracy']:.4f} median {point['median_us']:.0f}us p99 {point['p99_us']:.0f}us")
        finish(system, entry, truth)
        system.free()

    if "brute" in args.systems:
        n = min(args.brute_queries, nq)
        wall, cpu = [], []
        for i in range(n):
            q = queries.take([i])
            c0, w0 = time.thread_time(), time.perf_counter()
            exact_search(docs, q, 10)
            wall.append(time.perf_counter() - w0)
            cpu.append(time.thread_time() - c0)
        point = {"setting": ["exact"], "accuracy": 1.0, "n_queries_timed": n, **latency_summary(wall, cpu)}
        result["systems"]["brute-force (scipy)"] = {"sweep": [point], "at_target": {str(t): point for t in TARGETS}}
        log(f"brute force (sparse x sparse, exact_search): median {point['median_us']:.0f}us over {n} queries")
        # the faster scipy formulation: CSR matrix times a dense query vector, then top 10
        d = docs.to_scipy()
        wall, cpu, found = [], [], []
        for i in range(n):
            c0, w0 = time.thread_time(), time.perf_counter()
            dense = np.zeros(docs.vocab_size, np.float32)
            terms, weights = queries.row(i)
            dense[terms] = weights
            scores = d @ dense
            top = np.argpartition(-scores, 10)[:10]
            found.append(top[np.lexsort((top, -scores[top]))])
            wall.append(time.perf_counter() - w0)
            cpu.append(time.thread_time() - c0)
        point = {"setting": ["exact, dense query"], "accuracy": round(accuracy(found, truth[:n]), 4), "n_queries_timed": n,
                 **latency_summary(wall, cpu)}  # fmt: skip
        result["systems"]["brute-force (scipy, dense query)"] = {"sweep": [point], "at_target": {str(t): point for t in TARGETS}}
        log(f"brute force (CSR x dense vector): median {point['median_us']:.0f}us over {n} queries")
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["numba_threads"] = numba.get_num_threads()
    return result


def finish(system, entry: dict, truth: np.ndarray) -> None:
    entry["at_target"] = {}
    for target in TARGETS:
        point = pick(entry["sweep"], target)
        if point is None:
            entry["at_target"][str(target)] = None
            continue
        setting = tuple(point["setting"])
        point = dict(point)
        point["throughput"] = [tp for tp in (throughput(system, setting, truth, th) for th in (1, 2)) if tp]
        if isinstance(system, Braid):
            point["profile"] = profile_braid(system, setting)
        entry["at_target"][str(target)] = point
        log(f"{system.name} @ {target}: {setting} median {point['median_us']:.0f}us p99 {point['p99_us']:.0f}us "
            f"qps {[tp['qps'] for tp in point['throughput']]}")  # fmt: skip


# ----------------------------------------------------------------------------------------------
# plot
# ----------------------------------------------------------------------------------------------
def plot(out: Path, files: list[Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results: list[dict] = []
    for f in files:  # files of the same dataset (e.g. separate runs for bmp) are merged
        res = json.loads(Path(f).read_text())
        same = [r for r in results if r["dataset"] == res["dataset"] and r["num_docs"] == res["num_docs"]]
        if same:
            same[0]["systems"].update(res["systems"])
        else:
            results.append(res)
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.8), squeeze=False)
    for ax, res in zip(axes[0], results):
        for name, entry in res["systems"].items():
            pts = sorted((p["median_us"], p["accuracy"]) for p in entry.get("sweep", []))
            if not pts:
                continue
            if len(pts) == 1:
                ax.scatter([pts[0][0]], [pts[0][1]], marker="x", label=name)
                continue
            ax.scatter(*zip(*pts), s=8, alpha=0.35)
            ax.plot(*zip(*[(p["median_us"], p["accuracy"]) for p in frontier(entry["sweep"])]), marker="o", ms=3, label=name)
        for target in TARGETS:
            ax.axhline(target, color="grey", lw=0.5, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("median latency per query, 1 thread (µs, wall)")
        ax.set_ylabel("accuracy@10 (overlap with exact top 10)")
        ax.set_ylim(max(0.5, min(p["accuracy"] for e in res["systems"].values() for p in e.get("sweep", [])) - 0.02), 1.005)
        ax.set_title(f"{res['dataset']}: {res['num_docs']:,} docs, {res['num_queries']} queries")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def frontier(points: list[dict]) -> list[dict]:
    """Sweep points on the accuracy/latency frontier: by increasing median latency, each more accurate
    than every cheaper one."""
    out, best = [], -1.0
    for p in sorted(points, key=lambda p: (p["median_us"], p["accuracy"])):
        if p["accuracy"] > best:
            out.append(p)
            best = p["accuracy"]
    return out


def frontier_latency(points: list[dict], target: float) -> float | None:
    """Median latency at which a system's accuracy/latency frontier reaches ``target``: interpolated
    (log latency linear in accuracy) between the two frontier points around it, so that the grid's
    coarseness does not decide a ratio."""
    front = frontier(points)
    for i, p in enumerate(front):
        if p["accuracy"] >= target:
            if i == 0:
                return p["median_us"]
            lo = front[i - 1]
            f = (target - lo["accuracy"]) / (p["accuracy"] - lo["accuracy"])
            return float(lo["median_us"] * (p["median_us"] / lo["median_us"]) ** f)
    return None


def report(files: list[Path]) -> str:
    """Markdown tables of result files: each system at each accuracy target, and Braid's ratios."""
    lines: list[str] = []
    for f in files:
        res = json.loads(Path(f).read_text())
        systems = res["systems"]
        lines += [
            f"### {res['dataset']}: {res['num_docs']:,} documents ({res['doc_nnz_mean']} nonzeros/doc), "
            f"{res['num_queries']} queries ({res['query_nnz_mean']} nonzeros/query)",
            "",
            f"`{res['command']}` (load average {res['machine']['load_avg_start'][0]:.1f} at start, "
            f"{res['machine']['load_avg_end'][0]:.1f} at end)",
            "",
            "| system | build s (wall / cpu) | peak build MB | index bytes/doc |",
            "|---|---:|---:|---:|",
        ]
        for name, e in systems.items():
            b = e.get("build")
            if b and "wall_s" in b:
                lines.append(f"| {name} | {b['wall_s']:.1f} / {b['cpu_s']:.1f} | {b['peak_rss_added_mb']:.0f} | "
                             f"{b.get('bytes_per_doc', float('nan')):,.0f} |")  # fmt: skip
        lines += ["", "| target acc@10 | system | setting | acc@10 | median µs | p99 µs | q/s 1 thread (cores) | q/s 2 threads (cores) |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for t in TARGETS:
            for name, e in systems.items():
                p = (e.get("at_target") or {}).get(str(t))
                if p is None:
                    best = max((q["accuracy"] for q in e.get("sweep", [])), default=None)
                    lines.append(f"| {t} | {name} | not reached (best {best}) | | | | | |")
                    continue
                tp = {x["threads"]: x for x in p.get("throughput", [])}
                cell = lambda n: f"{tp[n]['qps']:,.0f} ({tp[n]['cores_used']})" if n in tp else "–"  # noqa: E731
                lines.append(f"| {t} | {name} | {p['setting']} | {p['accuracy']:.3f} | {p['median_us']:,.0f} | "
                             f"{p['p99_us']:,.0f} | {cell(1)} | {cell(2)} |")  # fmt: skip
        br, se = systems.get("braid"), systems.get("pyseismic-lsr")
        brute = systems.get("brute-force (scipy, dense query)")
        if br and se:
            lines += ["", "| target | braid / pyseismic-lsr median latency | braid / pyseismic-lsr p99 | "
                      "braid 2-thread q/s / pyseismic-lsr | brute force (CSR x dense query) / braid median |",
                      "|---|---:|---:|---:|---:|"]  # fmt: skip
            for t in TARGETS:
                a, b = br["at_target"].get(str(t)), se["at_target"].get(str(t))
                if not a:
                    continue
                lat = f"{a['median_us'] / b['median_us']:.2f}" if b else "–"
                p99 = f"{a['p99_us'] / b['p99_us']:.2f}" if b else "–"
                qa = {x["threads"]: x["qps"] for x in a.get("throughput", [])}
                qb = {x["threads"]: x["qps"] for x in (b or {}).get("throughput", [])}
                q2 = f"{qa[2] / qb[2]:.2f}" if 2 in qa and 2 in qb else "–"
                bf = f"{brute['sweep'][0]['median_us'] / a['median_us']:.1f}x" if brute else "–"
                lines.append(f"| {t} | {lat} | {p99} | {q2} | {bf} |")
            lines += ["", "Frontier-interpolated median latency (µs) at each target, and the ratio:", "",
                      "| target | braid | pyseismic-lsr | ratio |", "|---|---:|---:|---:|"]  # fmt: skip
            for t in TARGETS:
                a, b = frontier_latency(br["sweep"], t), frontier_latency(se["sweep"], t)
                ratio = f"{a / b:.2f}" if a and b else "–"
                lines.append(f"| {t} | {a or float('nan'):,.0f} | {b or float('nan'):,.0f} | {ratio} |")
            same = {tuple(p["setting"]): p for p in se["sweep"]}
            pairs = [(p, same[tuple(p["setting"])]) for p in br["sweep"] if tuple(p["setting"]) in same]
            if pairs:
                lat = np.exp(np.mean([np.log(a["median_us"] / b["median_us"]) for a, b in pairs]))
                acc = np.mean([a["accuracy"] - b["accuracy"] for a, b in pairs])
                faster = sum(a["median_us"] < b["median_us"] for a, b in pairs)
                lines += ["", f"Same settings, paired over {len(pairs)} (query_cut, heap_factor) points: braid / "
                          f"pyseismic-lsr median latency {lat:.2f} (geometric mean; braid faster at {faster}), "
                          f"accuracy difference {acc:+.4f} (mean)."]  # fmt: skip
            bb, sb = br["build"], se["build"]
            lines.append("")
            lines.append(f"Build time braid / pyseismic-lsr: {bb['wall_s'] / sb['wall_s']:.2f} (wall), "
                         f"{bb['cpu_s'] / sb['cpu_s']:.2f} (cpu); index size "
                         f"{bb['bytes_per_doc'] / sb['bytes_per_doc']:.2f}; peak build memory "
                         f"{bb['peak_rss_added_mb'] / max(sb['peak_rss_added_mb'], 1):.2f}.")  # fmt: skip
        for t in TARGETS:
            prof = ((br or {}).get("at_target") or {}).get(str(t), {}) or {}
            if prof.get("profile"):
                pr = prof["profile"]
                lines.append(f"Profile at {t} ({prof['setting']}): {pr['docs_scored_mean']:,.0f} docs scored per query "
                             f"({100 * pr['docs_scored_frac']:.2f}% of the collection), {pr['cpu_us_per_query']:,.0f} µs CPU per query "
                             f"of which {pr['cpu_us_summaries_and_setup']:,.0f} µs query setup + summary estimates, "
                             f"{pr['cpu_ns_per_scored_doc']:.0f} ns per exactly scored document.")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=("scifact", "synthetic", "dictionary"))
    ap.add_argument("--systems", default="braid,seismic,bmp,brute")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--brute-queries", type=int, default=50)
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--n-postings", type=int, default=None)
    ap.add_argument("--centroid-fraction", type=float, default=0.1)
    ap.add_argument("--summary-energy", type=float, default=0.4)
    ap.add_argument("--max-fraction", type=float, default=1.5)
    ap.add_argument("--doc-cut", type=int, default=15)
    ap.add_argument("--min-cluster-size", type=int, default=2)
    ap.add_argument("--bmp-bsize", type=int, default=32)
    ap.add_argument("--grid", type=json.loads, default=SEISMIC_GRID,
                    help="query-time settings [[query_cut, heap_factor], ...] for braid and pyseismic-lsr")
    ap.add_argument("--bmp-grid", type=json.loads, default=BMP_GRID, help="bmp settings [[alpha, beta], ...]")
    ap.add_argument("--block-orders", default="seismic",
                    help="braid's block orders to sweep, comma-separated: seismic, best_first")
    ap.add_argument("--synthetic-dir", type=Path, default=ROOT / ".cache" / "synthetic-1m")
    ap.add_argument("--dictionary-dir", type=Path, default=ROOT / ".cache" / "dictionary-splade")
    ap.add_argument("--plot", type=Path, help="write the Pareto plot from result files and exit")
    ap.add_argument("--report", action="store_true", help="print markdown tables of result files and exit")
    ap.add_argument("files", nargs="*", type=Path)
    args = ap.parse_args(argv)
    if args.plot:
        plot(args.plot, args.files)
        return 0
    if args.report:
        print(report(args.files))
        return 0
    if not args.dataset:
        ap.error("--dataset is required")
    result = run(args)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text if not args.out else f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
