"""Two code trees of Braid side by side in one run: cold start of `braid search` and the query-time cost
of the searcher, each retriever and the fusion, on the same index.

    python scripts/bench_before_after.py INDEX_DIR --before /path/above/old/braid --after /path/above/new/braid

``--before`` / ``--after`` are directories that hold a ``braid`` package (they go first on PYTHONPATH),
so a checkout of an older commit (``git worktree add /tmp/old/braid COMMIT``) runs against the current
one. Runs alternate between the trees (ABAB...), so a change in machine load hits both alike.

* cold start: wall time of a fresh ``python -m braid.cli.main search INDEX QUERY -r R`` process, per retriever.
  Both trees are byte-compiled first (``compileall``), as an installed package is after its first run:
  with ``PYTHONDONTWRITEBYTECODE`` set (or a read-only tree) every process would otherwise recompile every
  module from source, which charges the tree with more modules for compilation, not for what it runs.
* warm query cost: in one process per tree, the index opened and every query encoded once (the encoders
  memoise per text), then CPU time per query of ``Searcher.batch_search([q], k=10)`` (median over
  ``--passes`` passes over the queries: a single pass right after opening is dominated by cold caches), the searches and,
  for pipelines, the fusion; and the CPU time of ``fuse`` alone over the three first-stage lists at
  depth 1000 (the fusion layer's own cost). Encoding is excluded on purpose: it is the same code in both.

Prints a markdown table with the after/before ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

WARM = r"""
import json, sys, time
import numpy as np
index, retrievers, n, passes = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[5])
from braid.retrieval.searcher import Searcher
try:
    from braid.retrieval.pipeline.fusion import fuse
except ImportError:
    from braid.retrieval.fusion import fuse
s = Searcher(index)
queries = [line for line in open(sys.argv[4], encoding="utf-8").read().splitlines() if line][:n]
out = {}
for r in retrievers:
    s.batch_search(queries, k=10, retriever=r)  # encode every query once (memoised), open components
    times = []
    for _ in range(passes):  # the first pass over an index also pays for its page cache and tantivy's caches
        for q in queries:
            t0 = time.process_time(); s.batch_search([q], k=10, retriever=r); times.append(time.process_time() - t0)
    out[r] = float(np.median(times))
lists = [s.retriever(r).search(queries, k=1000) for r in ("bm25", "sparse", "dense")]
fuse(lists, "linear", k=1000, weights=[0.75, 0.75, 1.0], norm="zscore")
times = []
for i in range(len(queries)):
    one = [type(h)(h.docnos[i : i + 1], h.scores[i : i + 1]) for h in lists]
    t0 = time.process_time(); fuse(one, "linear", k=1000, weights=[0.75, 0.75, 1.0], norm="zscore"); times.append(time.process_time() - t0)
out["fuse"] = float(np.median(times))
print(json.dumps(out))
"""


def _env(tree: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def cold(tree: Path, index: Path, retriever: str, query: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "braid.cli.main", "search", str(index), query, "-k", "10", "-r", retriever],
                   check=True, stdout=subprocess.DEVNULL, env=_env(tree))
    return time.perf_counter() - t0


def warm(tree: Path, index: Path, retrievers: list[str], n: int, queries: Path, passes: int) -> dict:
    out = subprocess.run([sys.executable, "-c", WARM, str(index), ",".join(retrievers), str(n), str(queries), str(passes)],
                         check=True, capture_output=True, text=True, env=_env(tree))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index_dir", type=Path)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True, help="a text file, one query per line")
    parser.add_argument("--retrievers", default="bm25,sparse-if,sparse,dense,hybrid")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--n-queries", type=int, default=300)
    parser.add_argument("--passes", type=int, default=3, help="passes over the queries per warm run (median over all)")
    args = parser.parse_args()
    trees = {"before": args.before, "after": args.after}
    retrievers = args.retrievers.split(",")
    query = Path(args.queries).read_text(encoding="utf-8").splitlines()[0]
    for tree in trees.values():
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-x", r"[/\\]\.venv[/\\]", str(tree / "braid")],
                       check=True, stdout=subprocess.DEVNULL)
    cold_t = {t: {r: [] for r in retrievers} for t in trees}
    warm_t = {t: [] for t in trees}
    for rep in range(max(args.cold_runs, args.warm_runs)):
        order = list(trees) if rep % 2 == 0 else list(trees)[::-1]
        for t in order:
            if rep < args.cold_runs:
                for r in retrievers:
                    cold_t[t][r].append(cold(trees[t], args.index_dir, r, query))
            if rep < args.warm_runs:
                warm_t[t].append(warm(trees[t], args.index_dir, retrievers, args.n_queries, args.queries, args.passes))
    print(f"index {args.index_dir}; before = {args.before}, after = {args.after}; load average {os.getloadavg()[0]:.1f}")
    print()
    print("| measure | before | after | after / before |")
    print("|---|---:|---:|---:|")
    for r in retrievers:
        b, a = statistics.median(cold_t["before"][r]), statistics.median(cold_t["after"][r])
        print(f"| cold `braid search -r {r}` (s, median of {args.cold_runs}) | {b:.2f} | {a:.2f} | {a / b:.2f} |")
    for key in retrievers + ["fuse"]:
        b = statistics.median(w[key] for w in warm_t["before"]) * 1e3
        a = statistics.median(w[key] for w in warm_t["after"]) * 1e3
        what = "fuse 3 lists at depth 1000" if key == "fuse" else f"warm `{key}` query, encoders memoised"
        print(f"| {what} (ms CPU per query, median) | {b:.3f} | {a:.3f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
