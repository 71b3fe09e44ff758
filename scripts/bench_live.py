"""Live-index figures: BM25 statistics staleness before compaction, and filtered BM25 search.

    flock -x /work/bench.lock python scripts/bench_live.py --dataset ../shared/data/scifact --out docs/benchmarks/results/live-scifact.json

What it measures (BM25 component only; the sparse/dense latency with 10 segments, the add
throughput and delete-to-invisible are scripts/bench_live_speed.py's):
- staleness: delete a random 10% of the documents; compare BM25 top-10 of the test queries before
  compaction (tantivy still counts the deleted documents in its statistics) with the compacted
  index: top-10 overlap, and the largest relative score difference;
- delete-to-invisible: the deletion commit's seconds; the next search does not return the documents;
- filtered search at 1%, 10%, 50% selectivity (a random keyword tag): mean latency per query, and
  exactness against the unfiltered full ranking restricted to the matching documents.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--delete-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from braid.data.beir import BeirDataset
    from braid.data.corpus import iter_corpus
    from braid.data.queries import read_queries
    from braid.retrieval.build.builder import BuildOptions, build_index
    from braid.retrieval.live import Index
    from braid.retrieval.searcher import Searcher

    ds = BeirDataset(args.dataset)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    docs = []
    for d in iter_corpus(ds.corpus_path):
        tag = rng.random()
        docs.append({"_id": d.doc_id, "title": d.title, "text": d.text,
                     "metadata": {"p1": tag < 0.01, "p10": tag < 0.10, "p50": tag < 0.50}})  # fmt: skip
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = list(read_queries(args.dataset / "queries.jsonl").values())[:300]
    out: dict = {"dataset": args.dataset.name, "num_docs": len(docs), "queries": len(queries)}
    try:
        live = work / "live"
        build_index(corpus, live, BuildOptions(progress=False), log=lambda m: None)
        index = Index(live, log=lambda m: None)
        victims = rng.sample([d["_id"] for d in docs], int(args.delete_fraction * len(docs)))
        t = time.perf_counter()
        index.delete(victims)
        out["delete_commit_seconds"] = round(time.perf_counter() - t, 3)
        s = Searcher(live)
        gone = set(victims)
        stale = s.batch_search(queries, k=10, retriever="bm25")
        out["deleted_returned_after_commit"] = sum(d in gone for row in stale.doc_ids for d in row)
        compacted = work / "compacted"
        shutil.copytree(live, compacted)
        Index(compacted, log=lambda m: None).compact()
        fresh = Searcher(compacted).batch_search(queries, k=10, retriever="bm25")
        overlap = [len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(stale.doc_ids, fresh.doc_ids)]
        rel = []
        for i in range(len(queries)):
            score_of = dict(zip(fresh.doc_ids[i], fresh.hits.scores[i]))
            for d, sc in zip(stale.doc_ids[i], stale.hits.scores[i]):
                if d in score_of and score_of[d] > 0:
                    rel.append(abs(float(sc) - float(score_of[d])) / float(score_of[d]))
        out["staleness"] = {"deleted_fraction": args.delete_fraction, "top10_overlap_mean": round(float(np.mean(overlap)), 4),
                            "top10_overlap_min": round(float(np.min(overlap)), 4),
                            "rel_score_diff_mean": round(float(np.mean(rel)), 5), "rel_score_diff_max": round(float(np.max(rel)), 5)}  # fmt: skip
        s = Searcher(compacted)
        full = s.batch_search(queries, k=s.num_docs, retriever="bm25")
        out["filtered"] = {}
        for field in ("p1", "p10", "p50"):
            flt = {"field": field, "eq": True}
            mask = s.context.filter_mask(flt)
            t = time.perf_counter()
            got = s.batch_search(queries, k=10, retriever="bm25", filter=flt)
            took = (time.perf_counter() - t) / len(queries)
            allowed = {s.doc_ids[d] for d in np.flatnonzero(mask)}
            exact = np.mean([g == [d for d in f if d in allowed][:10] for g, f in zip(got.doc_ids, full.doc_ids)])
            t = time.perf_counter()
            s.batch_search(queries, k=10, retriever="bm25")
            unfiltered = (time.perf_counter() - t) / len(queries)
            out["filtered"][field] = {"selectivity": round(float(mask.mean()), 4), "ms_per_query": round(took * 1000, 3),
                                      "unfiltered_ms_per_query": round(unfiltered * 1000, 3), "exact_fraction": float(exact)}  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
