"""Time from `braid search` process start to printed result (cold Python process each time).

Usage: python scripts/bench_startup.py INDEX_DIR [--retriever bm25] [--runs 10]
Prints the median and max wall time over the runs, and the modules that were NOT imported.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("index_dir", type=Path)
    parser.add_argument("--retriever", default="bm25")
    parser.add_argument("--query", default="microglia activation in the brain")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    braid = Path(sys.executable).with_name("braid")
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        subprocess.run([str(braid), "search", str(args.index_dir), args.query, "-k", "10", "-r", args.retriever],
                       check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    print(f"braid search -r {args.retriever}: median {statistics.median(times) * 1000:.0f} ms, "
          f"min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms over {args.runs} runs")


if __name__ == "__main__":
    main()
