"""Cold start of `braid search`: wall time from process start to printed result, and peak RSS, per retriever.

Usage:

    python scripts/bench_startup.py INDEX_DIR [--retrievers bm25,sparse-if,sparse,dense,hybrid,hybrid-if] [--runs 5]
                                    [--runtime auto|torch|onnx|onnx-int8] [--json out.json]

Each run is a fresh Python process running the CLI's ``search`` command on one query (``hybrid`` =
no ``-r``: the index's default fusion pipeline; ``hybrid-if`` = docs/pipelines/hybrid-if.toml, the same
fusion with inference-free sparse queries). One untimed run per retriever first, so that
exported ONNX graphs and numba's cache exist (a user's first query after installing pays those
once). Prints, per retriever: median / min / max wall time, median peak RSS (the child's own
``ru_maxrss``), and the heavy modules the process imported. ``--runtime`` is passed to the CLI's
``--runtime`` (what encodes the queries).
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

HEAVY = ("torch", "transformers", "onnxruntime", "tokenizers", "faiss", "numba", "tantivy")

# Runs the CLI in this interpreter and reports, at exit, which heavy modules were imported.
_CHILD = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("HEAVY " + ",".join(m for m in {heavy!r} if m in sys.modules) + "\\n"))
from braid.cli.main import main
sys.argv = ["braid"] + {argv!r}
main()
"""
# Pipelines measured besides the retrievers: name -> --pipeline value.
PIPELINES = {"hybrid": None, "hybrid-if": str(Path(__file__).resolve().parents[1] / "docs" / "pipelines" / "hybrid-if.toml")}


def run_once(argv: list[str]) -> tuple[float, float, list[str]]:
    """(wall seconds, peak RSS MB, heavy modules imported) of one cold ``braid`` process."""
    code = _CHILD.format(heavy=HEAVY, argv=argv)
    t0 = time.perf_counter()
    # as a user's shell runs it: bytecode caching on (a PYTHONDONTWRITEBYTECODE in the benchmark's own
    # environment would make every cold process recompile braid's modules, ~70 ms)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"braid {' '.join(argv)} failed ({proc.returncode}):\n{err}")
    heavy = next((line[6:].split(",") for line in err.splitlines() if line.startswith("HEAVY ")), [])
    return wall, usage.ru_maxrss / 1024, [m for m in heavy if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index_dir", type=Path)
    parser.add_argument("--retrievers", default="bm25,sparse-if,sparse,dense,hybrid,hybrid-if")
    parser.add_argument("--query", default="microglia activation in the brain")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx", "onnx-int8"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for name in args.retrievers.split(","):
        if name in PIPELINES:
            pick = [] if PIPELINES[name] is None else ["--pipeline", PIPELINES[name]]
        else:
            pick = ["-r", name]
        argv = ["search", str(args.index_dir), args.query, "-k", "10", "--runtime", args.runtime, *pick]
        run_once(argv)  # warm-up: ONNX export, numba cache, page cache
        runs = [run_once(argv) for _ in range(args.runs)]
        walls = [r[0] for r in runs]
        row = {
            "retriever": name,
            "runtime": args.runtime,
            "median_s": round(statistics.median(walls), 3),
            "min_s": round(min(walls), 3),
            "max_s": round(max(walls), 3),
            "peak_rss_mb": round(statistics.median(r[1] for r in runs)),
            "imports": runs[-1][2],
        }
        rows.append(row)
        print(f"{name:10s} {args.runtime:9s} median {row['median_s'] * 1000:6.0f} ms  min {row['min_s'] * 1000:6.0f}  "
              f"max {row['max_s'] * 1000:6.0f}  peak RSS {row['peak_rss_mb']:4d} MB  imports: {','.join(row['imports'])}", flush=True)
    result = {"index": str(args.index_dir), "runs": args.runs, "load_average": [round(x, 1) for x in os.getloadavg()], "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
