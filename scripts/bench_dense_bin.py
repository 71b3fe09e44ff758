"""MiniLM dense retrieval: ``dense`` (flat, exact) against ``dense-bin`` (binary-quantized, rescored) on BEIR folders.

    python scripts/bench_dense_bin.py ../shared/data/{scifact,cranfield,cacm,cisi,medline,adi} \
        --vectors scifact=../shared/vectors/scifact/minilm-docs.npy --index-root /tmp/bench/dense-bin \
        --out docs/benchmarks/results/dense-bin.json [--scale 1000000]

For each collection an index ``--index-root/NAME`` is built with ``--retrievers dense --dense-index bin``
(document vectors from ``--vectors NAME=FILE.npy`` when given, else encoded with MiniLM; one index
serves both retrievers, so they see the same vectors), then its judged test queries are encoded
once and searched with each system:

* quality: nDCG@10 from a k=10 search, Recall@100 from a k=100 search (so dense-bin rescores
  ``multiplier x 10`` and ``multiplier x 100`` candidates, as a user searching for that many hits
  gets; BEIR conventions: self-hits dropped, judged queries only, pytrec_eval); ``hamming`` is
  the binary ranking alone (candidates = k, ordered by Hamming distance, no rescoring) and
  ``int8`` rescores the same candidates with int8 vectors instead of float32 (per-dimension
  min/max of the corpus, 256 levels, as sentence-transformers' ``quantize_embeddings``;
  dequantized before the dot product);
* latency: single query, one thread (FAISS and BLAS), k=10 and k=100, query vectors given (the
  query encoder is the same for both and is not timed), the two retrievers alternated query by
  query over ``--rounds`` passes, median; ``--scale N`` adds a synthetic set of N documents
  (scifact's vectors resampled with noise) where the search itself, not Python overhead, dominates;
* bytes per vector: the files of the dense component divided by the number of documents.

Prints the tables; ``--out`` writes everything as JSON.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread: single-query latency, and no spinning on shared cores

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from braid.data.beir import BeirDataset  # noqa: E402
from braid.index.dense import DenseIndex, DenseIndexConfig, pack_signs  # noqa: E402
from braid.index.hits import Hits  # noqa: E402
from braid.retrieval.build.builder import BuildOptions, build_index  # noqa: E402
from braid.retrieval.eval.evaluate import evaluate  # noqa: E402
from braid.retrieval.retrievers.dense import DenseRetriever  # noqa: E402
from braid.retrieval.retrievers.dense_bin import RESCORE_MULTIPLIER, DenseBinRetriever, hamming_candidates, rescore_candidates  # noqa: E402
from braid.retrieval.searcher import Searcher  # noqa: E402

MULTIPLIERS = (1, 2, 4, 10)
CUTS = {"ndcg@10": 10, "recall@100": 100}


def int8_vectors(x: np.ndarray) -> np.ndarray:
    """x quantized to 256 levels per dimension between the corpus's min and max, then dequantized (float32)."""
    lo, hi = x.min(axis=0), x.max(axis=0)
    step = np.where(hi > lo, (hi - lo) / 255.0, 1.0).astype(np.float32)
    codes = np.clip(np.round((x - lo) / step), 0, 255).astype(np.uint8)
    return (lo + codes.astype(np.float32) * step).astype(np.float32)


def to_run(hits: Hits, qids: list[str], doc_ids: list[str], k: int) -> dict:
    """Hits searched with k + 1 -> run of k per query after dropping the query's own id (BEIR)."""
    run = {}
    for qid, row, scores in zip(qids, hits.docnos, hits.scores):
        pairs = [(doc_ids[d], float(s)) for d, s in zip(row, scores) if d >= 0 and doc_ids[d] != qid][:k]
        run[qid] = dict(pairs)
    return run


def hamming_only(binary, q: np.ndarray, k: int) -> Hits:
    cands = hamming_candidates(binary, pack_signs(q), min(k, binary.ntotal), threads=1)
    return Hits(cands, -np.broadcast_to(np.arange(cands.shape[1], dtype=np.float32), cands.shape).copy())


def quality(systems: dict, q: np.ndarray, qids: list[str], doc_ids: list[str], qrels) -> dict:
    """``{system: {metric: mean}}``, each metric from a search of its own cut-off (+1 for the self-hit)."""
    out = {}
    for name, search in systems.items():
        out[name] = {}
        for metric, k in CUTS.items():
            mean, _ = evaluate(to_run(search(q, k + 1), qids, doc_ids, k), qrels, [metric])
            out[name][metric] = round(mean[metric], 4)
    return out


def latency(systems: dict, q: np.ndarray, k: int, rounds: int) -> dict:
    """Median single-query latency (µs) of each system, alternated query by query (order rotated)."""
    names = list(systems)
    times = {n: [] for n in names}
    for name in names:  # warm-up: page in the vectors, JIT nothing, fill caches alike
        systems[name](q[:1], k)
    for r in range(rounds):
        for i in range(q.shape[0]):
            one = q[i : i + 1]
            shift = (i + r) % len(names)
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter_ns()
                systems[name](one, k)
                times[name].append(time.perf_counter_ns() - t0)
    return {n: round(float(np.median(t)) / 1000, 1) for n, t in times.items()}


def file_bytes(index_dir: Path, num_docs: int) -> dict:
    sizes = {
        "flat float32 (dense.faiss)": index_dir / "dense" / "dense.faiss",
        "sign bits (dense.bin.faiss)": index_dir / "dense" / "dense.bin.faiss",
        "rescoring float32 (vectors.npy)": index_dir / "vectors" / "dense" / "vectors.npy",
    }
    return {name: round(p.stat().st_size / num_docs, 1) for name, p in sizes.items() if p.exists()}


def bench_collection(ds: Path, index_root: Path, vectors: Path | None, rounds: int) -> dict:
    dataset = BeirDataset(ds)
    target = index_root / dataset.name
    if not (target / "manifest.json").exists():
        build_index(ds, target, BuildOptions(retrievers=("dense",), dense_vectors=vectors, dense_index={"kind": "bin"}, allow_empty=True, progress=False), log=lambda m: None)
    searcher = Searcher(target)
    dense, dbin = searcher.retriever("dense"), searcher.retriever("dense-bin")
    queries = dataset.queries("test")
    qids = list(queries)
    q = dense.encode_queries([queries[i] for i in qids])
    x = np.load(target / "vectors" / "dense" / "vectors.npy", mmap_mode="r")
    x8 = int8_vectors(np.asarray(x))

    def bin_search(m):
        return lambda qv, k: dbin.search_vectors(qv, k=k, threads=1, rescore_multiplier=m)

    def int8_search(qv, k):
        cands = hamming_candidates(dbin.binary, pack_signs(qv), min(dbin.num_docs, RESCORE_MULTIPLIER * k), threads=1)
        return rescore_candidates(qv, cands, lambda d: x8[d], k)

    systems = {"dense (flat)": lambda qv, k: dense.search_vectors(qv, k=k, threads=1)}
    systems.update({f"dense-bin x{m}": bin_search(m) for m in MULTIPLIERS})
    systems["hamming only"] = lambda qv, k: hamming_only(dbin.binary, qv, k)
    systems[f"int8 rescoring x{RESCORE_MULTIPLIER}"] = int8_search
    qual = quality(systems, q, qids, searcher.doc_ids, dataset.qrels("test"))
    ref = systems["dense (flat)"](q, 10).docnos
    overlap = {n: round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(systems[n](q, 10).docnos, ref)])), 4) for n in systems if n != "dense (flat)"}
    timed = {"dense (flat)": systems["dense (flat)"], f"dense-bin x{RESCORE_MULTIPLIER}": systems[f"dense-bin x{RESCORE_MULTIPLIER}"]}
    lat = {f"k={k}": latency(timed, q, k, rounds) for k in (10, 100)}
    return {"num_docs": searcher.num_docs, "num_queries": len(qids), "quality": qual, "overlap@10_vs_flat": overlap, "latency_us": lat, "bytes_per_vector": file_bytes(target, searcher.num_docs)}


def bench_scale(n: int, base: Path, queries: Path, n_queries: int, rounds: int, seed: int = 0) -> dict:
    """Latency and top-10 overlap with flat on n synthetic documents: scifact's vectors resampled with noise."""
    rng = np.random.default_rng(seed)
    src = np.load(base, mmap_mode="r")
    dim = src.shape[1]
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        part = np.asarray(src[rng.integers(0, src.shape[0], min(100_000, n - start))]) + rng.standard_normal((min(100_000, n - start), dim)).astype(np.float32) * (0.6 / np.sqrt(dim))
        x[start : start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    q = np.ascontiguousarray(np.load(queries)[:n_queries], dtype=np.float32)
    index = DenseIndex.build(x, DenseIndexConfig(kind="bin"), threads=1)
    dense = DenseRetriever(index=index, encoder=None, vectors=x)
    dbin = DenseBinRetriever(dense=dense, binary=index.binary)
    ref = dense.search_vectors(q, k=10, threads=1).docnos
    overlap = {}
    for m in MULTIPLIERS:
        got = dbin.search_vectors(q, k=10, threads=1, rescore_multiplier=m).docnos
        overlap[f"dense-bin x{m}"] = round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref)])), 4)
    timed = {"dense (flat)": lambda qv, k: dense.search_vectors(qv, k=k, threads=1), f"dense-bin x{RESCORE_MULTIPLIER}": lambda qv, k: dbin.search_vectors(qv, k=k, threads=1)}
    timed["of which Hamming"] = lambda qv, k: hamming_candidates(index.binary, pack_signs(qv), RESCORE_MULTIPLIER * k, threads=1)
    lat = {f"k={k}": latency(timed, q, k, rounds) for k in (10, 100)}
    return {"num_docs": n, "num_queries": q.shape[0], "overlap@10_vs_flat": overlap, "latency_us": lat, "bytes_per_vector": {"flat float32": dim * 4, "sign bits": dim // 8}}


def print_tables(result: dict) -> None:
    cols = ["dense (flat)"] + [f"dense-bin x{m}" for m in MULTIPLIERS] + ["hamming only", f"int8 rescoring x{RESCORE_MULTIPLIER}"]
    d = f"dense-bin x{RESCORE_MULTIPLIER}"
    for metric in CUTS:
        print(f"\n{metric} (retention = dense-bin / dense)")
        print("| collection | docs | queries | " + " | ".join(cols) + f" | retention x{RESCORE_MULTIPLIER} |")
        print("|---|---:|---:|" + "---:|" * (len(cols) + 1))
        for name, row in result["collections"].items():
            qual = row["quality"]
            ret = qual[d][metric] / qual["dense (flat)"][metric] if qual["dense (flat)"][metric] else float("nan")
            print(f"| {name} | {row['num_docs']:,} | {row['num_queries']} | " + " | ".join(f"{qual[c][metric]:.4f}" for c in cols) + f" | {ret:.3f} |")
    print("\ntop-10 overlap with flat (k=10 searches)")
    print("| collection | " + " | ".join(cols[1:]) + " |")
    print("|---|" + "---:|" * (len(cols) - 1))
    for name, row in result["collections"].items():
        print(f"| {name} | " + " | ".join(f"{row['overlap@10_vs_flat'][c]:.3f}" for c in cols[1:]) + " |")
    print(f"\nsingle-query latency, µs (median; 1 thread; query vectors given), dense (flat) / {d}")
    print("| collection | docs | k=10 | k=100 | bytes/vector: flat / sign bits / rescoring float32 |")
    print("|---|---:|---:|---:|---|")
    rows = dict(result["collections"])
    if "scale" in result:
        rows[f"synthetic {result['scale']['num_docs']:,}"] = result["scale"]
    for name, row in rows.items():
        lat = row["latency_us"]
        cells = [f"{lat[k]['dense (flat)']:,.0f} / {lat[k][d]:,.0f}" + (f" (Hamming {lat[k]['of which Hamming']:,.0f})" if "of which Hamming" in lat[k] else "") for k in ("k=10", "k=100")]
        print(f"| {name} | {row['num_docs']:,} | {cells[0]} | {cells[1]} | " + " / ".join(f"{v:g}" for v in row["bytes_per_vector"].values()) + " |")
    if "scale" in result:
        print(f"\nsynthetic set, top-10 overlap with flat: {result['scale']['overlap@10_vs_flat']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", nargs="*", type=Path)
    ap.add_argument("--vectors", action="append", default=[], metavar="NAME=FILE.npy", help="Pre-encoded document vectors of a collection (corpus order).")
    ap.add_argument("--index-root", type=Path, required=True)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--rounds", type=int, default=3, help="Latency passes over the queries.")
    ap.add_argument("--scale", type=int, default=0, help="Also time a synthetic set of this many documents (0: no).")
    ap.add_argument("--scale-base", type=Path, default=Path("../shared/vectors/scifact/minilm-docs.npy"))
    ap.add_argument("--scale-queries", type=Path, default=Path("../shared/vectors/scifact/minilm-queries.npy"))
    ap.add_argument("--scale-n-queries", type=int, default=100)
    ap.add_argument("--scale-rounds", type=int, default=1, help="Latency passes on the synthetic set.")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    vectors = dict(v.split("=", 1) for v in args.vectors)
    result = {"rescore_multiplier_default": RESCORE_MULTIPLIER, "collections": {}}
    for ds in args.datasets:
        name = ds.resolve().name
        result["collections"][name] = bench_collection(ds, args.index_root, Path(vectors[name]) if name in vectors else None, args.rounds)
        print(name, "done", flush=True)
    if args.scale:
        result["scale"] = bench_scale(args.scale, args.scale_base, args.scale_queries, args.scale_n_queries, args.scale_rounds)
    result["load_average"] = os.getloadavg()
    print_tables(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
