"""The default hybrid with SPLADE queries against the same pipeline with inference-free queries (issue 14, item 3).

Quality (hold the machine shared; building the indexes encodes every collection on the CPU):

    flock -s /work/bench.lock python scripts/bench_fast_hybrid.py quality \\
        ../shared/data/{scifact,cranfield,cacm,cisi,medline,adi} --vectors ../shared/vectors \\
        --index-root /work/bench-onnx2/indexes --json docs/benchmarks/results/fast-hybrid.json

Latency (hold the machine exclusively; one index, warm, queries one at a time):

    flock -x /work/bench.lock python scripts/bench_fast_hybrid.py latency /work/bench-onnx2/indexes/scifact \\
        --queries ../shared/data/scifact/queries.jsonl --json docs/benchmarks/results/fast-hybrid-latency.json

``quality``: for each BEIR folder, builds (or reuses) ``INDEX_ROOT/NAME`` with bm25, sparse and dense (from
``VECTORS/NAME/{splade-tiny-docs.npz,minilm-docs.npy}`` when they exist, as tests/golden/2cr.yaml does for
scifact, else encoded by Braid's encoders with ``--runtime``), then evaluates on the test split with BEIR
conventions (self-hits dropped, 1000 hits, pytrec_eval) through the code behind ``braid eval``: sparse,
sparse-if, the built-in ``hybrid`` and ``docs/pipelines/hybrid-if.toml`` (the same fusion and weights with
sparse-if in place of sparse). Prints a markdown table (nDCG@10 / R@100 and the difference) and writes the JSON.

Query-encoder threads (hold the machine exclusively):

    flock -x /work/bench.lock python scripts/bench_fast_hybrid.py threads --queries ../shared/data/scifact/queries.jsonl \\
        --dense-model ../shared/models/all-MiniLM-L6-v2 --sparse-model ../shared/models/splade-tiny \\
        --json docs/benchmarks/results/query-threads-amd.json

``latency``: the two pipelines on one index, ``--n`` distinct queries searched one at a time
(``Searcher.search(q, k=10)``) after ``--warm`` warm-up queries, a fresh Searcher per pipeline (no query
encoding is served from another pipeline's cache); median process-CPU and wall ms per query (encoders +
three searches + fusion), per query-encoder runtime and ``--query-threads`` value.

``threads``: the ONNX query encoders alone (all-MiniLM-L6-v2 dense, splade-tiny sparse), one query per call, at
ONNX Runtime's default intra-op threads (one per core) and at one thread; process CPU counts every thread's time,
so the two rows show what a second thread buys in latency and costs in CPU (the budget a server shares between
requests).
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

HYBRID_IF = Path(__file__).resolve().parents[1] / "docs" / "pipelines" / "hybrid-if.toml"
SYSTEMS = {
    "sparse": {"retriever": "sparse"},
    "sparse-if": {"retriever": "sparse-if"},
    "hybrid": {"pipeline": "hybrid"},
    "hybrid-if": {"pipeline": str(HYBRID_IF)},
}
METRICS = ["ndcg@10", "recall@100"]


def build_options(dataset: Path, vectors: Path | None, runtime: str):
    from braid.retrieval.build.builder import BuildOptions

    extra = {}
    if vectors is not None and (vectors / dataset.name).is_dir():
        extra = {"sparse_vectors": vectors / dataset.name / "splade-tiny-docs.npz", "dense_vectors": vectors / dataset.name / "minilm-docs.npy"}
    return BuildOptions(retrievers=("bm25", "sparse", "dense"), allow_empty=True, progress=False, runtime=runtime, **extra), bool(extra)


def quality(args) -> dict:
    from braid.retrieval.eval.experiment import evaluate_datasets

    table: dict = {}
    for dataset in args.datasets:
        build, from_vectors = build_options(dataset, args.vectors, args.runtime)
        t0 = time.perf_counter()
        row = {"documents": "shared vectors" if from_vectors else f"encoded by Braid (--runtime {args.runtime})"}
        for name, spec in SYSTEMS.items():
            res = evaluate_datasets(
                [dataset], index_root=args.index_root, build=build, metrics=METRICS, runs_dir=None, log=print, **spec
            )
            row[name] = {m: round(v, 4) for m, v in res[dataset.name].items()}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        table[dataset.name] = row
        print(f"{dataset.name}: " + "  ".join(f"{n} {row[n]['ndcg@10']:.4f}" for n in SYSTEMS) + f"  ({row['seconds']} s)", flush=True)
    return table


def markdown(table: dict) -> str:
    lines = [
        "| collection | sparse | sparse-if | hybrid (default, SPLADE queries) | hybrid-if (sparse-if queries) | Δ nDCG@10 | Δ R@100 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in table.items():
        cell = lambda s: f"{row[s]['ndcg@10']:.4f} / {row[s]['recall@100']:.4f}"  # noqa: E731
        d_ndcg = row["hybrid-if"]["ndcg@10"] - row["hybrid"]["ndcg@10"]
        d_rec = row["hybrid-if"]["recall@100"] - row["hybrid"]["recall@100"]
        lines.append(f"| {name} | {cell('sparse')} | {cell('sparse-if')} | {cell('hybrid')} | {cell('hybrid-if')} | {d_ndcg:+.4f} | {d_rec:+.4f} |")
    return "\n".join(lines)


def one_at_a_time(call, warm: list[str], timed: list[str]) -> dict:
    """``call(text)`` for each warm-up text, then for each timed text: median process-CPU and wall ms, p95 wall ms."""
    for q in warm:
        call(q)
    cpu, wall = [], []
    for q in timed:
        c0, w0 = time.process_time(), time.perf_counter()
        call(q)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {
        "median_cpu_ms": round(1000 * statistics.median(cpu), 2),
        "median_wall_ms": round(1000 * statistics.median(wall), 2),
        "p95_wall_ms": round(1000 * sorted(wall)[int(0.95 * (len(wall) - 1))], 2),
    }


def latency(args) -> dict:
    from braid.data.queries import read_queries
    from braid.retrieval.searcher import Searcher

    texts = list(dict.fromkeys(read_queries(args.queries).values()))
    warm, timed = texts[: args.warm], texts[args.warm : args.warm + args.n]
    rows = []
    for threads in [None if t == "default" else int(t) for t in args.query_threads.split(",")]:
        for runtime in args.runtimes.split(","):
            for pipeline in ("hybrid", str(HYBRID_IF)):
                searcher = Searcher(args.index_dir, runtime=runtime, query_threads=threads)  # its own: the query caches start empty
                timing = one_at_a_time(lambda q: searcher.search(q, k=10, retriever=pipeline), warm, timed)
                row = {
                    "pipeline": Path(pipeline).stem,
                    "runtime": runtime,
                    "query_threads": threads or "default",
                    "recipe_runtime": searcher.recipe(pipeline).get("runtime", {}),
                    **timing,
                }
                rows.append(row)
                print(f"{row['pipeline']:10s} {runtime:9s} threads {str(row['query_threads']):7s} CPU {row['median_cpu_ms']:7.2f} ms  "
                      f"wall {row['median_wall_ms']:7.2f} ms  p95 {row['p95_wall_ms']:7.2f}", flush=True)  # fmt: skip
    return {"index": str(args.index_dir), "queries": len(timed), "warm": len(warm), "rows": rows}


def threads(args) -> dict:
    from braid.data.queries import read_queries
    from braid.encoders.dense import DenseEncoder
    from braid.encoders.sparse import SparseEncoder

    texts = list(dict.fromkeys(read_queries(args.queries).values()))
    warm, timed = texts[: args.warm], texts[args.warm : args.warm + args.n]
    rows = []
    # None: ONNX Runtime's own default (one intra-op thread per core); then 1
    for n_threads in (None, 1):
        for name, encoder in (
            ("all-MiniLM-L6-v2", DenseEncoder(args.dense_model, runtime="onnx", threads=n_threads)),
            ("splade-tiny", SparseEncoder(args.sparse_model, runtime="onnx", threads=n_threads)),
        ):
            row = {"model": name, "threads": n_threads or "default", **one_at_a_time(lambda q: encoder.encode_queries([q]), warm, timed)}
            rows.append(row)
            print(f"{name:18s} threads {str(row['threads']):8s} CPU {row['median_cpu_ms']:6.2f} ms  wall {row['median_wall_ms']:6.2f} ms", flush=True)
    return {"queries": len(timed), "warm": len(warm), "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    q = sub.add_parser("quality")
    q.add_argument("datasets", nargs="+", type=Path)
    q.add_argument("--vectors", type=Path, default=None)
    q.add_argument("--index-root", type=Path, required=True)
    q.add_argument("--runtime", default="auto")
    q.add_argument("--json", type=Path, default=None)
    lat = sub.add_parser("latency")
    lat.add_argument("index_dir", type=Path)
    lat.add_argument("--queries", type=Path, required=True)
    lat.add_argument("--n", type=int, default=200)
    lat.add_argument("--warm", type=int, default=10)
    lat.add_argument("--runtimes", default="onnx,torch")
    lat.add_argument("--query-threads", default="default", help="comma-separated Searcher(query_threads=...) values; 'default': the runtime's own")
    lat.add_argument("--json", type=Path, default=None)
    thr = sub.add_parser("threads")
    thr.add_argument("--queries", type=Path, required=True)
    thr.add_argument("--dense-model", required=True)
    thr.add_argument("--sparse-model", required=True)
    thr.add_argument("--n", type=int, default=290)
    thr.add_argument("--warm", type=int, default=10)
    thr.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    result = {"quality": quality, "latency": latency, "threads": threads}[args.mode](args)
    if args.mode == "quality":
        print(markdown(result))
    meta = {**machine(), "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "result": result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
