"""One query at a time through the ONNX query encoders at ONNX Runtime's default intra-op threads and at one thread.

Median process-CPU and wall ms per query (batch of one) for all-MiniLM-L6-v2 (dense) and splade-tiny (sparse),
after 10 warm-up queries; hold the machine exclusively:

    flock -x /work/bench.lock python scripts/bench_query_threads.py --queries ../shared/data/scifact/queries.jsonl \\
        --dense-model ../shared/models/all-MiniLM-L6-v2 --sparse-model ../shared/models/splade-tiny

Process CPU counts every thread's time, so the two columns together show what a second intra-op thread buys in
latency and costs in CPU (the budget a server shares between requests).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from machine import machine  # scripts/machine.py (the scripts run as files)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def measure(encoder, warm: list[str], timed: list[str]) -> dict:
    for q in warm:
        encoder.encode_queries([q])
    cpu, wall = [], []
    for q in timed:
        c0, w0 = time.process_time(), time.perf_counter()
        encoder.encode_queries([q])
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {"median_cpu_ms": round(1000 * statistics.median(cpu), 2), "median_wall_ms": round(1000 * statistics.median(wall), 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--dense-model", required=True)
    parser.add_argument("--sparse-model", required=True)
    parser.add_argument("--n", type=int, default=290)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from braid.data.queries import read_queries
    from braid.encoders.dense import DenseEncoder
    from braid.encoders.sparse import SparseEncoder

    texts = list(dict.fromkeys(read_queries(args.queries).values()))
    warm, timed = texts[:10], texts[10 : 10 + args.n]
    rows = []
    for threads in (None, 1):
        for name, make in (
            ("all-MiniLM-L6-v2", lambda: DenseEncoder(args.dense_model, runtime="onnx", threads=threads)),
            ("splade-tiny", lambda: SparseEncoder(args.sparse_model, runtime="onnx", threads=threads)),
        ):
            row = {"model": name, "threads": threads or "default", **measure(make(), warm, timed)}
            rows.append(row)
            print(f"{name:18s} threads {str(row['threads']):8s} CPU {row['median_cpu_ms']:6.2f} ms  wall {row['median_wall_ms']:6.2f} ms", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "queries": len(timed), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
