"""Compressed dense indexes on a BEIR collection: PQ, OPQ+PQ and JPQ at several compression ratios against flat.

Uses pre-encoded document and query vectors (``minilm-docs.npy``, ``minilm-queries.npy``,
``ids.json`` as in ``../shared/vectors/scifact``) for flat / PQ / OPQ; JPQ trains the query
encoder (``--model``) and the centroids on the train qrels (``qrels/<train-split>.tsv``) and
encodes the test queries with the trained encoder. Evaluation: nDCG@10 and Recall@100 on the
test qrels with BEIR conventions (a hit whose id is the query id is dropped; pytrec_eval through
``braid.retrieval.eval.evaluate``). Latency: FAISS search of one query at a time on ``--threads``
threads (the best of ``--repeat`` passes of the median per query), query encoding excluded.

    nice -n 10 .venv/bin/python scripts/bench_compression.py --out /tmp/compression.json

Prints a Markdown table; ``--out`` also writes every number (and the JPQ loss curves) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vectors", type=Path, default=SHARED / "vectors" / "scifact")
    p.add_argument("--dataset", type=Path, default=SHARED / "data" / "scifact")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--ratios", default="16,32,48", help="Compression ratios against float32 (m = 4*dim/ratio bytes).")
    p.add_argument("--kinds", default="pq,opq,jpq", help="Rows to run among pq, opq, jpq.")
    p.add_argument("--jpq-base", default="pq", choices=("pq", "opq"), help="Index JPQ starts from.")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--epochs", type=int, default=None, help="JPQ epochs (default: JPQConfig's).")
    p.add_argument("--jpq", default="{}", help="Other JPQConfig fields as JSON, e.g. '{\"lr\": 3e-5}'.")
    p.add_argument(
        "--jpq-variants",
        default="full,centroids",
        help="full: encoder + centroids (JPQ); centroids: centroids only, encoder frozen (lr=0): the same query encoder as flat.",
    )
    p.add_argument(
        "--holdout",
        type=int,
        default=0,
        help="Tuning mode: evaluate on this many train queries (seeded choice) and train on the others; the test split is not read.",
    )
    p.add_argument("--threads", type=int, default=1, help="FAISS and torch threads.")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args()


def _evaluate(hits, query_ids, doc_ids, qrels, seen: set | None = None) -> dict:
    """nDCG@10 and Recall@100; with ``seen``, nDCG@10 also over the queries in / not in it."""
    from braid.retrieval.eval.evaluate import evaluate

    run = {}
    for i, qid in enumerate(query_ids):
        docnos, scores = hits.row(i)
        run[qid] = {doc_ids[d]: float(s) for d, s in zip(docnos, scores)}
    mean, per_query = evaluate(run, qrels, ["ndcg@10", "recall@100"])
    if seen is not None:
        judged = [q for q in qrels if qrels[q]]
        mean["ndcg@10_seen"] = float(np.mean([per_query[q]["ndcg@10"] for q in judged if q in seen]))
        mean["ndcg@10_unseen"] = float(np.mean([per_query[q]["ndcg@10"] for q in judged if q not in seen]))
    return mean


def _latency_ms(index, queries: np.ndarray, threads: int, repeat: int) -> float:
    """Median ms per query searching one query at a time (k=100); the best of ``repeat`` passes."""
    best = float("inf")
    for _ in range(repeat):
        times = []
        for i in range(len(queries)):
            t = time.perf_counter()
            index.search(queries[i : i + 1], k=100, threads=threads)
            times.append(time.perf_counter() - t)
        best = min(best, float(np.median(times)) * 1e3)
    return best


def _env(threads: int) -> dict:
    import faiss
    import torch

    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "load_avg": os.getloadavg(),
        "threads": threads,
        "faiss_gpus": faiss.get_num_gpus(),
        "torch_cuda": torch.cuda.is_available(),
    }


def main() -> None:
    args = _parse()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "BRAID_MODEL_PATH" not in os.environ and (SHARED / "models").is_dir():
        os.environ["BRAID_MODEL_PATH"] = str(SHARED / "models")
    import faiss
    import torch

    from braid.data.beir import BeirDataset
    from braid.index import pq as pqmod
    from braid.index.dense import DenseIndex, DenseIndexConfig
    from braid.retrieval.train import jpq

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    docs = np.load(args.vectors / "minilm-docs.npy")
    queries = np.load(args.vectors / "minilm-queries.npy")
    ids = json.loads((args.vectors / "ids.json").read_text())
    doc_ids, qpos = ids["doc_ids"], {q: i for i, q in enumerate(ids["query_ids"])}
    ds = BeirDataset(args.dataset)
    all_queries = ds.queries(None)
    if args.holdout:
        train_qrels = ds.qrels(args.train_split)
        held = set(np.random.default_rng(0).choice(sorted(train_qrels), args.holdout, replace=False).tolist())
        test_qrels = {q: j for q, j in train_qrels.items() if q in held}
        train_qrels = {q: j for q, j in train_qrels.items() if q not in held}
    else:
        test_qrels = ds.qrels(args.test_split)
        train_qrels = ds.qrels(args.train_split)
    test_ids = sorted(q for q in test_qrels if q in qpos)
    test_vecs = np.ascontiguousarray(queries[[qpos[q] for q in test_ids]])
    dim = docs.shape[1]
    # test queries with a relevant document that is also relevant to some training query: JPQ can
    # learn those documents (SciFact claims often cite the same abstracts), so report them apart
    train_docs = {d for judged in train_qrels.values() for d, r in judged.items() if r > 0}
    seen = {q for q, judged in test_qrels.items() if any(r > 0 and d in train_docs for d, r in judged.items())}
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    ratios = [float(r) for r in args.ratios.split(",")]
    cfg = {"device": "auto", **json.loads(args.jpq)}
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    jpq_config = jpq.JPQConfig(**cfg)
    rows: list[dict] = []

    def record(name, ratio, index, hits, extra=None):
        row = {"method": name, "ratio": ratio, "bytes_per_vector": index.bytes_per_vector(), **_evaluate(hits, test_ids, doc_ids, test_qrels, seen)}
        row["latency_ms"] = _latency_ms(index, test_vecs, args.threads, args.repeat)
        row.update(extra or {})
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
        if args.out:  # after every row, so an interrupted run keeps what it measured
            args.out.write_text(json.dumps({"rows": rows, "env": _env(args.threads)}, indent=1) + "\n")

    flat = DenseIndex.build(docs, DenseIndexConfig(kind="flat"), threads=args.threads)
    record("flat", 1.0, flat, flat.search(test_vecs, k=101))
    data = jpq.make_training_set(all_queries, train_qrels, doc_ids) if "jpq" in kinds else None
    for ratio in ratios:
        m = pqmod.m_for_ratio(dim, ratio)
        built = {}
        for kind in ("pq", "opq"):
            if kind not in kinds and not ("jpq" in kinds and kind == args.jpq_base):
                continue
            t = time.perf_counter()
            index = DenseIndex.build(docs, DenseIndexConfig(kind=kind, m=m), threads=args.threads)
            built[kind] = index
            if kind in kinds:
                record(kind, ratio, index, index.search(test_vecs, k=101), {"m": m, "build_s": round(time.perf_counter() - t, 1)})
        for variant in [v.strip() for v in args.jpq_variants.split(",") if v.strip()] if "jpq" in kinds else []:
            if variant not in ("full", "centroids"):
                raise SystemExit(f"--jpq-variants: unknown {variant!r} (full, centroids)")
            base = built[args.jpq_base]
            config = jpq_config if variant == "full" else jpq.JPQConfig(**{**jpq_config.to_dict(), "lr": 0.0})
            result = jpq.train_jpq(args.model, base.index, data, config)
            trained = DenseIndex(faiss.clone_index(base.index), base.config, base.num_docs, base.dim, base.info)
            pqmod.set_codebooks(trained.index, result.centroids)
            qv = result.encode_queries([all_queries[q] for q in test_ids])
            extra = {
                "m": m,
                "base": args.jpq_base,
                "train_s": round(result.seconds, 1),
                "steps": len(result.history),
                "epoch_losses": [round(x, 4) for x in result.epoch_losses],
                "curve": jpq.loss_curve(result.history, points=30),
                "config": config.to_dict(),
                # the trained encoder against the base (untrained) centroids: how much the centroids add
                "encoder_only": _evaluate(base.search(qv, k=101), test_ids, doc_ids, test_qrels, seen),
                "encoder_flat": _evaluate(flat.search(qv, k=101), test_ids, doc_ids, test_qrels, seen),
            }
            name = "jpq" if variant == "full" else "jpq-centroids"
            record(name, ratio, trained, trained.search(qv, k=101), extra)
    if args.out:
        args.out.write_text(
            json.dumps({"rows": rows, "env": _env(args.threads), "train_pairs": data.n_pairs if data else None,
                        "test_queries": len(test_ids), "test_queries_seen": len(seen)}, indent=1) + "\n"
        )
    ref = rows[0]
    print(f"\n{len(seen)} of {len(test_ids)} test queries have a relevant document that is relevant to a training query (seen)")
    print("| method | ratio | bytes/vector | nDCG@10 | Δ vs flat | nDCG@10 seen | nDCG@10 unseen | Recall@100 | latency ms/query | vs flat |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['method']} | {r['ratio']:g}x | {r['bytes_per_vector']:g} | {r['ndcg@10']:.4f} | {r['ndcg@10'] - ref['ndcg@10']:+.4f} | "
            f"{r['ndcg@10_seen']:.4f} | {r['ndcg@10_unseen']:.4f} | {r['recall@100']:.4f} | {r['latency_ms']:.3f} | {r['latency_ms'] / ref['latency_ms']:.2f}x |"
        )


if __name__ == "__main__":
    main()
