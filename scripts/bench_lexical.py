"""Lexical BM25 backends side by side: tantivy (braid.index.lexical) and Pyserini/Lucene (braid.index.pyserini_bm25).

    nice -n 10 .venv/bin/python scripts/bench_lexical.py --data /work/shared/data --json /tmp/bench_lexical.json

Three parts, each printed as a markdown table:

1. quality: scifact test (300 queries), 1000 hits, BEIR conventions (hits whose id equals the
   query id dropped), nDCG@10 and Recall@100 with pytrec_eval (braid.retrieval.eval.evaluate), as ratios
   to Pyserini's published BM25-flat figures (0.6789 / 0.9253).
2. query throughput on scifact's 300 test queries (and the scale corpus' queries): one batch call
   of all queries, k=10 and k=1000, 1 and 2 threads; after one warm-up call, the median and best of
   ``--repeat`` timed calls, as queries per second.
3. indexing on the scale corpus (dictionary, 243,895 docs): documents are read into memory first,
   then each backend's ``build`` is timed (for Pyserini this includes writing its temporary
   JsonCollection); docs/s and the size of the index directory on disk.

JVM start-up (once per process) is timed apart and excluded from every other figure. Built indexes
live under ``--work`` and are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ANCHOR = {"ndcg@10": 0.6789, "recall@100": 0.9253}  # Pyserini 2cr beir.yaml, scifact, BM25 flat


def backend(name: str):
    if name == "tantivy":
        from braid.index.lexical import LexicalIndex

        return LexicalIndex
    from braid.index.pyserini_bm25 import PyseriniBM25

    return PyseriniBM25


def build(name: str, directory: Path, docs: list, threads: int) -> tuple[object, float, float]:
    """Build into a fresh ``directory``; return (opened index, wall seconds, CPU seconds of the build)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    cls = backend(name)
    t, c = time.perf_counter(), time.process_time()
    info = cls.build(directory, enumerate(docs), threads=threads)
    seconds = time.perf_counter() - t
    cpu = time.process_time() - c
    if name == "tantivy":
        index = cls.open(directory, info)
    else:
        index = cls.open(directory, info, [d.doc_id for d in docs])
    return index, seconds, cpu


def dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def timed(fn, repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``repeat`` calls after one warm-up call (JIT, page cache, Lucene/tantivy caches).

    CPU time is the whole process (the JVM and tantivy threads run in it), summed over threads: on
    a shared, overloaded machine it is steadier than wall time.
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return wall, cpu


def quality(indexes: dict, docs: list, queries: dict, qrels: dict) -> list[dict]:
    from braid.retrieval.eval.evaluate import evaluate

    rows = []
    for name, index in indexes.items():
        hits = index.search(list(queries.values()), k=1000, threads=1)
        run = {}
        for i, qid in enumerate(queries):
            docnos, scores = hits.row(i)
            run[qid] = {docs[d].doc_id: float(s) for d, s in zip(docnos, scores)}
        mean, _ = evaluate(run, qrels, ["ndcg@10", "recall@100"], ignore_identical_ids=True)
        rows.append({"backend": name, **{m: mean[m] for m in ANCHOR}, **{f"{m} / anchor": mean[m] / ANCHOR[m] for m in ANCHOR}})
    return rows


def throughput(indexes: dict, queries: list[str], corpus: str, repeat: int, ks=(10, 1000), threads=(1, 2)) -> list[dict]:
    rows = []
    for name, index in indexes.items():
        for k in ks:
            for n_threads in threads:
                wall, cpu = timed(lambda: index.search(queries, k=k, threads=n_threads), repeat)
                rows.append({
                    "corpus": corpus, "backend": name, "k": k, "threads": n_threads, "queries": len(queries),
                    "qps_median": len(queries) / statistics.median(wall), "qps_best": len(queries) / min(wall),
                    "cpu_ms_per_query": 1000 * statistics.median(cpu) / len(queries),
                })
    return rows


def table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])

    def fmt(v, key: str) -> str:
        if isinstance(v, float):
            if "@" in key:  # metrics and their ratios to the anchor
                return f"{v:.4f}"
            return f"{v:.3f}" if abs(v) < 1 else f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k], k) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_lexical"))
    ap.add_argument("--backends", default="tantivy,pyserini")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", default="dictionary", help="scale corpus for indexing figures ('' to skip)")
    ap.add_argument("--scale-threads", default="1,2")
    ap.add_argument("--json", type=Path, help="also write all figures here")
    ap.add_argument("--keep", action="store_true", help="keep the built indexes under --work")
    args = ap.parse_args()

    from braid.data.beir import BeirDataset
    from braid.data.corpus import iter_corpus

    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    out: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}", "backends": names,
                 "load_avg_start": os.getloadavg()}
    if "pyserini" in names:
        from braid.index.pyserini_bm25 import pyserini_version, start_jvm

        t = time.perf_counter()
        start_jvm()
        out["jvm_start_s"] = time.perf_counter() - t
        out["pyserini_version"] = pyserini_version()
    import importlib.metadata

    out["tantivy_version"] = importlib.metadata.version("tantivy")
    print(f"# {out['machine']}; tantivy {out['tantivy_version']}; pyserini {out.get('pyserini_version')}; JVM start {out.get('jvm_start_s', 0):.2f} s")

    # --- scifact: quality and query throughput
    ds = BeirDataset(args.data / "scifact")
    docs = list(iter_corpus(ds.corpus_path))
    queries = ds.queries("test")
    qrels = ds.qrels("test")
    indexes = {}
    build_rows = []
    for name in names:
        index, seconds, cpu = build(name, args.work / f"scifact-{name}", docs, threads=1)
        indexes[name] = index
        build_rows.append({"corpus": "scifact", "backend": name, "threads": 1, "docs": len(docs), "build_s": seconds,
                           "docs_per_s": len(docs) / seconds, "cpu_s": cpu, "index_MB": dir_bytes(args.work / f"scifact-{name}") / 1e6})
    out["quality"] = quality(indexes, docs, queries, qrels)
    print("\n## scifact test: quality (1000 hits, BEIR conventions)\n\n" + table(out["quality"]))
    out["query_throughput"] = throughput(indexes, list(queries.values()), "scifact", args.repeat)
    print("\n## query throughput (queries/s)\n\n" + table(out["query_throughput"]))
    del indexes

    # --- scale corpus: indexing throughput and size (plus query throughput at k=10)
    if args.scale:
        sds = BeirDataset(args.data / args.scale)
        t = time.perf_counter()
        sdocs = list(iter_corpus(sds.corpus_path))
        out["scale_read_s"] = time.perf_counter() - t
        squeries = list(sds.queries(split=None).values())
        last = {}
        for name in names:
            for n_threads in [int(x) for x in args.scale_threads.split(",")]:
                directory = args.work / f"{args.scale}-{name}"
                index, seconds, cpu = build(name, directory, sdocs, threads=n_threads)
                build_rows.append({"corpus": args.scale, "backend": name, "threads": n_threads, "docs": len(sdocs), "build_s": seconds,
                                   "docs_per_s": len(sdocs) / seconds, "cpu_s": cpu, "index_MB": dir_bytes(directory) / 1e6})
                print("built:", table(build_rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
                last[name] = index
        out["scale_query_throughput"] = throughput(last, squeries, args.scale, args.repeat, ks=(10,))
        print(f"\n## {args.scale} query throughput (queries/s)\n\n" + table(out["scale_query_throughput"]))
    out["indexing"] = build_rows
    out["load_avg_end"] = os.getloadavg()
    print("\n## indexing\n\n" + table(build_rows))
    print(f"\nload average (1, 5, 15 min): start {out['load_avg_start']}, end {out['load_avg_end']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
