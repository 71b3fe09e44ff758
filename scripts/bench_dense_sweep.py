"""Dense index knobs against accuracy and latency: HNSW ef_search, IVF / IVF-PQ nprobe, flat as exact.

    python scripts/bench_dense_sweep.py --vectors ../shared/vectors/scifact --qrels ../shared/data/scifact/qrels/test.tsv \
        --out docs/benchmarks/results/dense-sweep-scifact.json

The MiniLM document and query vectors of ``--vectors`` (``minilm-docs.npy``, ``minilm-queries.npy``,
``ids.json``; no encoding) go into Braid's :class:`~braid.index.dense.DenseIndex` (flat, HNSW M=32
efConstruction 200, IVF and IVF-PQ m=48 with Braid's default nlist). Each setting searches the judged
queries one at a time on one thread (k=10); accuracy@10 is the overlap with the flat index's top 10, as
``scripts/bench_sparse.py`` defines it for the sparse index, so ``scripts/plot_tradeoff.py`` can draw
both on one plot. Latency: median wall time over ``--rounds`` passes (the machine's load is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from braid.data.qrels import read_qrels
from braid.index.dense import DenseIndex, DenseIndexConfig
from machine import cpu_model  # scripts/machine.py (the scripts run as files)

SWEEPS = {
    "hnsw": ("ef_search", (10, 16, 24, 32, 48, 64, 96, 128, 256)),
    "ivf": ("nprobe", (1, 2, 3, 4, 6, 8, 12, 16, 32)),
    "ivfpq": ("nprobe", (1, 2, 3, 4, 6, 8, 12, 16, 32)),
}
CONFIGS = {"flat": {"kind": "flat"}, "hnsw": {"kind": "hnsw"}, "ivf": {"kind": "ivf"}, "ivfpq": {"kind": "ivfpq", "m": 48}}


def accuracy(found: list[np.ndarray], truth: np.ndarray, k: int = 10) -> float:
    """Mean overlap of each query's top ``k`` with the exact top ``k`` (bench_sparse.py's definition)."""
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def timed_point(index: DenseIndex, queries: np.ndarray, knob: str | None, value: int | None, truth: np.ndarray, rounds: int) -> dict:
    kwargs = {knob: value} if knob else {}
    wall, cpu, found = [], [], []
    for r in range(rounds):
        for i in range(queries.shape[0]):
            c0, w0 = time.thread_time(), time.perf_counter()
            hits = index.search(queries[i : i + 1], k=10, threads=1, **kwargs)
            wall.append(time.perf_counter() - w0)
            cpu.append(time.thread_time() - c0)
            if r == 0:
                found.append(hits.docnos[0])
    w, c = np.asarray(wall) * 1e6, np.asarray(cpu) * 1e6
    return {
        "setting": {knob: value} if knob else {},
        "accuracy": round(accuracy(found, truth), 4),
        "median_us": round(float(np.median(w)), 1),
        "p99_us": round(float(np.percentile(w, 99)), 1),
        "cpu_median_us": round(float(np.median(c)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vectors", type=Path, required=True, help="folder with minilm-docs.npy, minilm-queries.npy, ids.json")
    ap.add_argument("--qrels", type=Path, required=True, help="the judged queries to search (their rows of minilm-queries.npy)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    docs = np.load(args.vectors / "minilm-docs.npy")
    ids = json.loads((args.vectors / "ids.json").read_text())
    judged = read_qrels(args.qrels)
    rows = [i for i, q in enumerate(ids["query_ids"]) if q in judged]
    queries = np.ascontiguousarray(np.load(args.vectors / "minilm-queries.npy")[rows], dtype=np.float32)
    load_start = os.getloadavg()
    indexes = {}
    result: dict = {
        "dataset": args.vectors.name,
        "num_docs": int(docs.shape[0]),
        "num_queries": len(rows),
        "k": 10,
        "command": "scripts/bench_dense_sweep.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "systems": {},
    }
    for name, cfg in CONFIGS.items():
        t0 = time.perf_counter()
        indexes[name] = DenseIndex.build(docs, DenseIndexConfig(**cfg), threads=1)
        result["systems"][name] = {"build_s": round(time.perf_counter() - t0, 2), "config": indexes[name].config.to_dict(), "bytes_per_vector": indexes[name].bytes_per_vector(), "sweep": []}
    truth = indexes["flat"].search(queries, k=10, threads=1).docnos
    result["systems"]["flat"]["sweep"].append(timed_point(indexes["flat"], queries, None, None, truth, args.rounds))
    for name, (knob, values) in SWEEPS.items():
        for value in values:
            point = timed_point(indexes[name], queries, knob, value, truth, args.rounds)
            result["systems"][name]["sweep"].append(point)
            print(f"{name} {knob}={value}: accuracy {point['accuracy']:.4f} median {point['median_us']:.0f} us", flush=True)
    result["machine"] = {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_start": load_start, "load_avg_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
