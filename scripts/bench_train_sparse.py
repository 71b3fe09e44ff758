"""Evaluate indexes before/after `braid train sparse` (docs/benchmarks/training.md).

For each INDEX (label=path): nDCG@10 / Recall@100 on the test split of --dataset for the retrievers
given (default sparse-if), with the seen/unseen split of test queries the JPQ report uses (a test
query is "seen" when one of its relevant documents is relevant to some query of --train-split),
the sparse component's nonzeros per document, and the median single-query latency of sparse-if
(blocked index, default knobs, one thread; the best of --repeat passes). Prints JSON lines and a
Markdown table. Never trains anything.

    python scripts/bench_train_sparse.py --dataset ../shared/data/scifact \
        untrained=/path/to/index trained=/path/to/trained-index --retrievers sparse-if,hybrid
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("indexes", nargs="+", help="LABEL=INDEX_DIR")
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--train-split", default="train", help="Qrels split defining seen test queries ('' : no seen/unseen split).")
    p.add_argument("--retrievers", default="sparse-if", help="Comma-separated retrievers or pipelines (e.g. sparse-if,hybrid).")
    p.add_argument("--latency-queries", type=int, default=300, help="0: no latency (quality only; latency figures need the machine to itself: flock -x).")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="Append the JSON lines here too.")
    args = p.parse_args()

    from braid.data.beir import BeirDataset
    from braid.retrieval.eval.evaluate import evaluate
    from braid.retrieval.searcher import Searcher

    ds = BeirDataset(args.dataset)
    queries = ds.queries(args.split)
    qrels = ds.qrels(args.split)
    seen = None
    if args.train_split and (ds.root / "qrels" / f"{args.train_split}.tsv").is_file():
        train_docs = {d for docs in ds.qrels(args.train_split).values() for d, r in docs.items() if int(r) > 0}
        seen = {q for q, docs in qrels.items() if any(int(r) > 0 and d in train_docs for d, r in docs.items())}
    qids = [q for q in qrels if q in queries]
    texts = [queries[q] for q in qids]
    rows = []
    for spec in args.indexes:
        label, _, path = spec.partition("=")
        searcher = Searcher(path)
        m = searcher.manifest["components"].get("sparse") or {}
        nnz = _nnz_per_doc(searcher)
        for retriever in [r.strip() for r in args.retrievers.split(",") if r.strip()]:
            res = searcher.batch_search(texts, k=1000, retriever=retriever, query_ids=qids, exclude_self=False)
            run = {q: dict(zip(docs, map(float, res.hits.scores[i][: len(docs)]))) for i, (q, docs) in enumerate(zip(qids, res.doc_ids))}
            mean, per_query = evaluate(run, qrels, ["ndcg@10", "recall@100"])
            row = {"index": label, "retriever": retriever, "ndcg@10": round(mean["ndcg@10"], 4), "recall@100": round(mean["recall@100"], 4), "queries": len(per_query)}
            if seen is not None:
                s = [per_query[q]["ndcg@10"] for q in per_query if q in seen]
                u = [per_query[q]["ndcg@10"] for q in per_query if q not in seen]
                row.update({"ndcg@10_seen": round(float(np.mean(s)), 4) if s else None, "seen": len(s),
                            "ndcg@10_unseen": round(float(np.mean(u)), 4) if u else None, "unseen": len(u)})
            row["nnz_per_doc"] = nnz
            if retriever == "sparse-if" and args.latency_queries > 0:
                row["latency_ms_median"] = _latency(searcher, texts[: args.latency_queries], args.repeat)
            row["trained_on"] = (m.get("training") or {}).get("source")
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({**row, "dataset": str(args.dataset), "path": path, "load_avg": os.getloadavg()}) + "\n")
    keys = ["index", "retriever", "ndcg@10", "recall@100", "ndcg@10_seen", "ndcg@10_unseen", "nnz_per_doc", "latency_ms_median"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join("" if r.get(k) is None else str(r.get(k)) for k in keys) + " |")


def _nnz_per_doc(searcher) -> float | None:
    """Mean nonzeros per document of the sparse component (its forward index)."""
    if "sparse" not in searcher.components:
        return None
    index = searcher.component("sparse")
    fwd = index.forward_vectors(np.arange(searcher.num_docs))
    return round(float(np.diff(fwd.indptr).mean()), 1)


def _latency(searcher, texts, repeat: int) -> float:
    """Median ms of one sparse-if query (k=10, one thread), the best of ``repeat`` passes, after one warm-up pass."""
    for t in texts[:20]:
        searcher.search(t, k=10, retriever="sparse-if")
    best = float("inf")
    for _ in range(repeat):
        times = []
        for t in texts:
            t0 = time.perf_counter()
            searcher.search(t, k=10, retriever="sparse-if")
            times.append(time.perf_counter() - t0)
        best = min(best, float(np.median(times)) * 1e3)
    return round(best, 3)


if __name__ == "__main__":
    main()
