"""Accuracy-latency plot of the sparse and dense indexes over their query-time knobs, from benchmark JSON.

    python scripts/plot_tradeoff.py --sparse docs/benchmarks/results/sparse-scifact.json \
        --dense docs/benchmarks/results/dense-sweep-scifact.json --out docs/benchmarks/tradeoff-scifact.png

``--sparse``: a ``scripts/bench_sparse.py`` result; ``--dense``: a ``scripts/bench_dense_sweep.py``
result (either may be left out). Nothing is measured here: the figures are those of the JSON files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from braid.retrieval.eval.plots import plot_tradeoff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sparse", type=Path, default=None)
    ap.add_argument("--dense", type=Path, default=None)
    ap.add_argument("--title", default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    read = lambda p: json.loads(p.read_text()) if p is not None else None  # noqa: E731
    print(plot_tradeoff(read(args.sparse), read(args.dense), args.out, title=args.title))


if __name__ == "__main__":
    main()
