"""Time braid.retrieval.pipeline.fusion.fuse on synthetic runs: n lists of depth d over a batch of queries.

    nice -n 10 .venv/bin/python scripts/bench_fusion.py --queries 1000 --lists 3 --depth 1000 --threads 1

Each list draws its ``depth`` candidates from a per-query pool of ``1.5 * depth`` documents, so the
lists overlap the way first-stage retrievers do. Reports the best and median of ``--repeat`` timed
calls (after one warm-up call that compiles the kernel) as milliseconds per query, for the batch call
and for one-query calls (online use); also the process CPU time per query (all threads), which a
loaded machine inflates less than wall time. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from machine import cpu_model  # scripts/machine.py (the scripts run as files)


def synthetic_runs(n_queries: int, n_lists: int, depth: int, num_docs: int, seed: int):
    from braid.index.hits import Hits

    rng = np.random.default_rng(seed)
    pool = int(1.5 * depth)
    runs = []
    pools = np.stack([rng.choice(num_docs, size=pool, replace=False) for _ in range(n_queries)])
    for _ in range(n_lists):
        pick = np.argsort(rng.random((n_queries, pool)), axis=1)[:, :depth]
        docnos = np.take_along_axis(pools, pick, axis=1).astype(np.int64)
        scores = -np.sort(-rng.gamma(2.0, 3.0, size=(n_queries, depth)), axis=1).astype(np.float32)
        runs.append(Hits(docnos, scores))
    return runs


def timed(fn, repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds (all threads) of ``repeat`` calls after one warm-up call."""
    fn()  # warm-up: numba compiles (or loads its cache) here
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def numpy_linear(runs, k: int):
    """Reference point: min-max linear fusion written as plain numpy per query (no kernel)."""
    out = []
    for q in range(runs[0].n_queries):
        docnos, scores = [], []
        for h in runs:
            d, s = h.row(q)
            s = s.astype(np.float64)
            docnos.append(d)
            scores.append((s - s.min()) / max(s.max() - s.min(), 1e-9))
        uniq, inv = np.unique(np.concatenate(docnos), return_inverse=True)
        fused = np.bincount(inv, weights=np.concatenate(scores))
        order = np.lexsort((uniq, -fused))[:k]
        out.append((uniq[order], fused[order]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--lists", type=int, default=3)
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--num-docs", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--single", type=int, default=200, help="one-query calls timed per method")
    ap.add_argument("--threads", type=int, default=0, help="numba threads (0: numba's default)")
    ap.add_argument("--methods", default="linear,combmnz,rrf")
    ap.add_argument("--numpy-reference", action="store_true", help="also time a plain-numpy per-query linear fusion")
    args = ap.parse_args()

    import numba

    from braid.index.hits import Hits
    from braid.retrieval.pipeline.fusion import fuse

    if args.threads:
        numba.set_num_threads(args.threads)
    runs = synthetic_runs(args.queries, args.lists, args.depth, args.num_docs, seed=0)
    print(
        f"{args.lists} lists x depth {args.depth}, {args.queries} queries, k={args.k}, "
        f"numba threads={numba.get_num_threads()}, {cpu_model()}"
    )
    print()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print(
        "| method | batch wall: best ms/query | batch wall: median ms/query | batch CPU: median ms/query "
        "| one query per call: median wall ms |"
    )
    print("|---|---|---|---|---|")
    for method in args.methods.split(","):
        batch, cpu = timed(lambda: fuse(runs, method, args.k), args.repeat)
        singles = []
        n = min(args.single, args.queries)
        rows = [[Hits(h.docnos[i : i + 1], h.scores[i : i + 1]) for h in runs] for i in range(n)]
        fuse(rows[0], method, args.k)
        for one in rows:
            t = time.perf_counter()
            fuse(one, method, args.k)
            singles.append(time.perf_counter() - t)
        q = args.queries
        print(
            f"| {method} | {1e3 * min(batch) / q:.3f} | {1e3 * statistics.median(batch) / q:.3f} | "
            f"{1e3 * statistics.median(cpu) / q:.3f} | {1e3 * statistics.median(singles):.3f} |"
        )
    if args.numpy_reference:
        wall, cpu = timed(lambda: numpy_linear(runs, args.k), max(1, args.repeat // 2))
        q = args.queries
        print(
            f"| numpy per query (linear, reference) | {1e3 * min(wall) / q:.3f} | {1e3 * statistics.median(wall) / q:.3f} "
            f"| {1e3 * statistics.median(cpu) / q:.3f} | - |"
        )


if __name__ == "__main__":
    main()
