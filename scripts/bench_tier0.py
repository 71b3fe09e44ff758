"""What a query costs on the numpy tiers against the numba kernels (one process, one thread, warm).

Usage:

    python scripts/bench_tier0.py INDEX_DIR [--queries ../shared/data/scifact/queries.jsonl] [--n 100] [--json out.json]

INDEX_DIR: an index with a ``sparse`` component (a blocked index). For ``--n`` queries encoded by the index's
sparse encoder, times one query at a time: the blocked search on the numpy tier
(:func:`braid.index.sparse.numpy_search.search_query`) and through the kernel (the path ``search`` takes once
the kernels are loaded), at k = 10 and k = 1000 with the default knobs; and fusing three depth-1000 lists
(z-score interpolation, the default pipeline's method) on the numpy tier and in the kernel. Median µs of
each, and the check that every result agreed bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def median_us(fn, reps: int = 3) -> float:
    best = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t0)
    return statistics.median(best) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index_dir", type=Path)
    parser.add_argument("--queries", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/scifact/queries.jsonl")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from braid.index.hits import Hits
    from braid.index.sparse import numpy_search
    from braid.index.sparse.blocked import _BLOCK_ORDERS
    from braid.retrieval.pipeline import fusion
    from braid.retrieval.pipeline import fusion_numpy
    from braid.retrieval.searcher import Searcher

    searcher = Searcher(args.index_dir)
    texts = [json.loads(line)["text"] for line in args.queries.open()][: args.n]
    retriever = searcher.retriever("sparse-if")
    index = retriever.index
    queries = [retriever.encode_queries([t]) for t in texts]
    import braid.index.sparse.kernels  # noqa: F401 - the kernel path from here on
    import braid.retrieval.pipeline.fusion_kernels as fk

    rows = {}
    agree = True
    for k in (10, 1000):
        t_np, t_k = [], []
        for q in queries:
            terms, weights = q.row(0)

            def tier():
                return numpy_search.search_query(terms, weights, k, 10, 0.7, True, _BLOCK_ORDERS["seismic"], index._a, index.vocab_size)

            def kernel():
                return index.search(q, k=k)

            a, b = tier(), kernel()
            agree &= bool(np.array_equal(a[0], b.docnos[0]) and a[1].tobytes() == b.scores[0].tobytes())
            t_np.append(median_us(tier))
            t_k.append(median_us(kernel))
        rows[f"sparse k={k}"] = {"numpy_tier_us": round(statistics.median(t_np), 1), "kernel_us": round(statistics.median(t_k), 1)}
    # fusion of three depth-1000 lists (sparse-if at three cuts stand in for the retrievers' lists)
    t_np, t_k = [], []
    for q in queries:
        runs = [index.search(q, k=1000, query_cut=c) for c in (5, 10, 20)]
        captured = {}
        real = fusion._combine

        def grab(parts, base, mode, k, real=real):
            captured["args"] = (parts, base, mode, k)
            return real(parts, base, mode, k)

        fusion._combine = grab
        fusion.fuse(runs, "linear", 10, norm="zscore")
        fusion._combine = real
        parts, base, mode, k = captured["args"]
        depth = max(d.shape[1] for d, _ in parts)
        docnos = np.full((len(parts), 1, depth), -1, np.int64)
        values = np.zeros((len(parts), 1, depth))
        for r, (d, v) in enumerate(parts):
            docnos[r, :, : d.shape[1]] = d
            values[r, :, : v.shape[1]] = v
        a = fusion_numpy.fuse_contributions(docnos, values, base, mode, k)
        b = fk.fuse_contributions_serial(docnos, values, base, mode, k)
        agree &= bool(np.array_equal(a[0], b[0]) and a[1].tobytes() == b[1].tobytes())
        t_np.append(median_us(lambda: fusion_numpy.fuse_contributions(docnos, values, base, mode, k)))
        t_k.append(median_us(lambda: fk.fuse_contributions_serial(docnos, values, base, mode, k)))
    rows["fusion 3 x 1000"] = {"numpy_tier_us": round(statistics.median(t_np), 1), "kernel_us": round(statistics.median(t_k), 1)}
    for name, r in rows.items():
        print(f"{name:18s} numpy tier {r['numpy_tier_us']:9.1f} us   kernel {r['kernel_us']:8.1f} us   ({r['numpy_tier_us'] / r['kernel_us']:.1f}x)")
    print("bit-for-bit agreement on every query:", agree)
    if args.json:
        args.json.write_text(json.dumps({"index": str(args.index_dir), "queries": len(queries), "agree": agree, "rows": rows,
                                         "load_average": [round(x, 1) for x in os.getloadavg()]}, indent=2) + "\n")
    sys.exit(0 if agree else 1)


if __name__ == "__main__":
    main()
