"""Encoder throughput and query latency on scifact (CPU).

    nice -n 10 .venv/bin/python scripts/bench_encoders.py [--docs 200] [--queries 100] [--threads 2] [--json out.json]

Documents: the first ``--docs`` scifact documents (title + " " + text, max length 256) encoded with
splade-tiny (doc mode) and all-MiniLM-L6-v2 at each ``--batch-sizes``; throughput = docs / wall time
of one encode call (after a warm-up call on other documents). Queries: ``--queries`` scifact queries
encoded one at a time in each mode (SPLADE query through the model, inference-free with an IDF table
computed over the whole scifact corpus, dense MiniLM); latency per query = wall time of one
``encode([query], "query")`` call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "scifact"))
    ap.add_argument("--splade", default=str(SHARED / "models" / "splade-tiny"))
    ap.add_argument("--dense", default=str(SHARED / "models" / "all-MiniLM-L6-v2"))
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--batch-sizes", default="16,32")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--compare-heads", type=int, default=0, metavar="N",
                    help="only compare the packed and plain SPLADE heads: N interleaved rounds over the documents")
    args = ap.parse_args(argv)

    import itertools

    import numpy as np
    import torch

    from braid.data.beir import BeirDataset
    from braid.data.corpus import iter_corpus
    from braid.encoders.dense import DenseEncoder
    from braid.encoders.sparse import SparseEncoder, compute_idf

    torch.set_num_threads(args.threads)
    ds = BeirDataset(Path(args.data))
    docs = [d.title + " " + d.text for d in itertools.islice(iter_corpus(ds.corpus_path), args.docs + 32)]
    warm, docs = docs[: 32], docs[32:]
    queries = list(ds.queries(split=None).values())[: args.queries]
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch threads {args.threads}",
        "torch": torch.__version__,
        "docs": len(docs),
        "queries": len(queries),
        "max_length": args.max_length,
        "throughput": [],
        "latency": [],
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
    }

    if args.compare_heads:
        from braid.encoders.sparse import _plain_splade_head

        enc = SparseEncoder(args.splade, max_length=args.max_length, batch_size=32, device="cpu", threads=args.threads)
        enc.encode(warm)
        packed = enc._head
        times = {"packed": [], "plain": []}
        for _ in range(args.compare_heads):
            for name, head in (("packed", packed), ("plain", _plain_splade_head)):
                enc._head = head
                c0 = time.process_time()
                enc.encode(docs)
                times[name].append(time.process_time() - c0)
        results["heads_cpu_seconds"] = {
            k: {"docs_per_cpu_s_median": round(len(docs) / float(np.median(v)), 1), "cpu_seconds": [round(x, 2) for x in v]}
            for k, v in times.items()
        }
        results["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
        print(json.dumps(results, indent=2))
        return 0

    def encoders(batch_size: int):
        common = dict(max_length=args.max_length, batch_size=batch_size, device="cpu", threads=args.threads)
        return {"splade-tiny (doc)": SparseEncoder(args.splade, **common), "MiniLM-L6 (doc)": DenseEncoder(args.dense, **common)}

    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        for name, enc in encoders(bs).items():
            enc.encode(warm, "document")
            c0, t0 = time.process_time(), time.perf_counter()
            enc.encode(docs, "document")
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            row = {"encoder": name, "batch_size": bs, "seconds": round(dt, 2), "docs_per_s": round(len(docs) / dt, 1),
                   "cpu_seconds": round(cpu, 2), "docs_per_cpu_s": round(len(docs) / cpu, 1)}
            results["throughput"].append(row)
            print(row, file=sys.stderr, flush=True)

    common = dict(max_length=args.max_length, batch_size=1, device="cpu", threads=args.threads)
    splade = SparseEncoder(args.splade, **common)
    free = SparseEncoder(args.splade, query_mode="idf", **common)
    t0 = time.perf_counter()
    free.set_idf(compute_idf((d.title + " " + d.text for d in iter_corpus(ds.corpus_path)), free))
    idf_seconds = time.perf_counter() - t0
    dense = DenseEncoder(args.dense, **common)
    for name, enc in (("splade-tiny query (model)", splade), ("inference-free (tokenizer + IDF)", free), ("MiniLM-L6 query", dense)):
        for q in queries[:5]:
            enc.encode([q], "query")
        times = []
        c0 = time.process_time()
        for q in queries:
            t0 = time.perf_counter()
            enc.encode([q], "query")
            times.append(time.perf_counter() - t0)
        cpu_us = (time.process_time() - c0) / len(queries) * 1e6
        times_us = np.array(times) * 1e6
        row = {
            "mode": name,
            "mean_us": round(float(times_us.mean()), 1),
            "median_us": round(float(np.median(times_us)), 1),
            "p95_us": round(float(np.percentile(times_us, 95)), 1),
            "cpu_us_per_query": round(cpu_us, 1),
        }
        results["latency"].append(row)
        print(row, file=sys.stderr, flush=True)
    results["idf_table_seconds"] = round(idf_seconds, 1)
    results["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    results["mean_query_tokens"] = round(statistics.mean(len(splade.backbone.tokenizer(q)["input_ids"]) for q in queries), 1)
    results["mean_doc_tokens"] = round(
        statistics.mean(len(ids) for ids in splade.backbone.tokenize(docs)["input_ids"]), 1
    )
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
