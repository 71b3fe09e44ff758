"""MiniLM dense retrieval with approximate FAISS indexes (HNSW, IVF-PQ) against flat, on BEIR folders.

    python scripts/bench_dense_ann.py ../shared/data/{scifact,cranfield,cacm,cisi,medline,adi} \
        --index-root /work/bench/indexes --work /work/bench/ann --out docs/benchmarks/results/dense-ann.json

For each collection: the document vectors are read back from the flat index already in
``--index-root/NAME`` (no re-encoding), a copy of that index directory gets an HNSW and an IVF-PQ dense
component instead (Braid's defaults: HNSW M=32, efConstruction 200, efSearch max(16, k) at query time;
IVF-PQ nlist = 4 sqrt(n) capped at n/39, m = 48 sub-quantizers of 8 bits, searched with nprobe 16), each evaluated
on the test split through ``braid eval``'s code (nDCG@10, Recall@100, BEIR conventions). Recall
against flat = overlap of each query's top 10 with flat's top 10, averaged over the judged queries.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from braid.data.errors import OptionError
from braid.retrieval.build.builder import BuildOptions, add_components
from braid.retrieval.eval.experiment import evaluate_datasets

KINDS = {"hnsw": ({"kind": "hnsw"}, {}), "ivfpq": ({"kind": "ivfpq", "m": 48}, {"nprobe": 16})}
METRICS = ["ndcg@10", "recall@100"]


def top10(run: Path) -> dict[str, list[str]]:
    """Each query's first 10 documents by the run's ranks (not ``braid.data.runs.read_run``, which keeps
    scores only: scores printed with 6 decimals can tie where the ranks do not)."""
    hits: dict[str, list[tuple[int, str]]] = {}
    with open(run, encoding="utf-8") as fh:
        for line in fh:
            q, _, doc, rank, _, _ = line.split()
            hits.setdefault(q, []).append((int(rank), doc))
    return {q: [d for _, d in sorted(v)[:10]] for q, v in hits.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--index-root", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import faiss

    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    for ds in args.datasets:
        name = ds.resolve().name
        flat_dir = args.index_root / name
        flat = faiss.read_index(str(flat_dir / "dense" / "dense.faiss"))
        vectors = flat.reconstruct_n(0, flat.ntotal)
        vec_path = args.work / f"{name}-minilm.npy"
        args.work.mkdir(parents=True, exist_ok=True)
        np.save(vec_path, vectors)
        runs = args.work / "runs"
        row = {"flat": evaluate_datasets([ds], index_root=args.index_root, build=BuildOptions(progress=False),
                                         metrics=METRICS, runs_dir=runs / "flat", retriever="dense", log=lambda m: None)[name]}  # fmt: skip
        ref = top10(runs / "flat" / name / "dense.test.trec")
        for kind, (cfg, knobs) in KINDS.items():
            root = args.work / kind
            target = root / name
            if target.exists():
                shutil.rmtree(target)
            root.mkdir(parents=True, exist_ok=True)
            shutil.copytree(flat_dir, target)
            t0 = time.perf_counter()
            try:
                add_components(ds, target, BuildOptions(retrievers=("dense",), dense_vectors=vec_path, dense_index=cfg,
                                                        overwrite=True, progress=False, allow_empty=True), log=lambda m: None)  # fmt: skip
            except OptionError as exc:  # e.g. PQ on a collection smaller than 256 documents
                row[kind] = {"not_built": str(exc)}
                continue
            build_s = time.perf_counter() - t0
            res = evaluate_datasets([ds], index_root=root, build=BuildOptions(progress=False), metrics=METRICS,
                                    runs_dir=runs / kind, retriever="dense", knobs=knobs, log=lambda m: None)[name]  # fmt: skip
            got = top10(runs / kind / name / "dense.test.trec")
            overlap = [len(set(got.get(q, [])) & set(d)) / max(len(d), 1) for q, d in ref.items()]
            manifest = json.loads((target / "manifest.json").read_text())["components"]["dense"]["index"]
            row[kind] = {**res, "recall@10_vs_flat": round(float(np.mean(overlap)), 4), "build_s": round(build_s, 2),
                         "config": manifest["config"], "search": knobs, "bytes_per_vector": manifest.get("bytes_per_vector"),
                         "notes": manifest.get("notes", [])}  # fmt: skip
        result[name] = row
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(name, {k: (round(v["ndcg@10"], 4), v.get("recall@10_vs_flat")) if "ndcg@10" in v else v for k, v in row.items()}, flush=True)


if __name__ == "__main__":
    main()
