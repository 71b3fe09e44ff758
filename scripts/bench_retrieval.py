"""Effectiveness table: every retriever, fusion method, PRF variant and rescoring stage on BEIR folders.

Usage:
  python scripts/bench_retrieval.py ../shared/data/{scifact,cranfield,cacm,cisi,medline,adi} \
      --index-root /work/bench/indexes --out docs/benchmarks/retrieval.json [--markdown docs/benchmarks/retrieval.md]

Indexes are built (bm25,sparse,dense) or reused under --index-root. Each system is evaluated on the
test split with BEIR conventions (self-hits dropped, judged queries only), 1000 hits, through
`braid.retrieval.eval.experiment.evaluate_datasets` (the code behind `braid eval`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from braid.retrieval.build.builder import BuildOptions
from braid.retrieval.eval.experiment import evaluate_datasets

PIPELINES = Path(__file__).resolve().parents[1] / "docs" / "pipelines"
SYSTEMS = [
    ("bm25", {"retriever": "bm25"}),
    ("sparse (splade-tiny)", {"retriever": "sparse"}),
    ("sparse-if (inference-free)", {"retriever": "sparse-if"}),
    ("dense (MiniLM, flat)", {"retriever": "dense"}),
    ("hybrid: linear min-max", {"pipeline": str(PIPELINES / "hybrid-minmax.toml")}),
    ("hybrid: linear z-score", {"pipeline": str(PIPELINES / "hybrid-zscore.toml")}),
    ("hybrid: RRF k=60", {"pipeline": "hybrid-rrf"}),
    ("hybrid: CombMNZ", {"pipeline": str(PIPELINES / "hybrid-combmnz.toml")}),
    ("hybrid (default): z-score, weights bm25 .75 / sparse .75 / dense 1 (from scifact train)", {"pipeline": "hybrid"}),
    ("hybrid + PRF (RM3, Rocchio, vector PRF)", {"pipeline": "hybrid-prf"}),
    ("hybrid + SPLADE & dense rescoring", {"pipeline": str(PIPELINES / "hybrid-rescore.toml")}),
    ("sparse-if -> full SPLADE rescoring", {"pipeline": str(PIPELINES / "if-rescore-splade.toml")}),
    ("bm25 -> dense rescoring", {"pipeline": str(PIPELINES / "bm25-rescore-dense.toml")}),
]
METRICS = ["ndcg@10", "recall@100"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--index-root", type=Path, default=Path("indexes"))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--systems", default=None, help="';'-separated prefixes of the system labels to run (default: all)")
    parser.add_argument("--table-only", action="store_true", help="write --markdown from --out without evaluating")
    args = parser.parse_args()
    wanted = [w.strip() for w in (args.systems or "").split(";") if w.strip()]
    systems = [s for s in SYSTEMS if not wanted or any(s[0].startswith(w) for w in wanted)]
    if args.table_only:
        systems = []
    build = BuildOptions(retrievers=("bm25", "sparse", "dense"), allow_empty=True, progress=False)
    table: dict[str, dict[str, dict[str, float]]] = json.loads(args.out.read_text()) if args.out.exists() else {}
    for label, spec in systems:
        t0 = time.perf_counter()
        res = evaluate_datasets(
            args.datasets, index_root=args.index_root, build=build, metrics=METRICS, runs_dir=args.runs_dir,
            log=lambda m: None, **spec,
        )
        table.setdefault(label, {}).update(res)  # other datasets' figures are kept
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(table, indent=1))
        print(f"{label}: " + "  ".join(f"{d} {v['ndcg@10']:.4f}" for d, v in res.items()) + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.markdown:
        names = [Path(d).resolve().name for d in args.datasets]
        lines = ["| system | " + " | ".join(f"{n} nDCG@10 / R@100" for n in names) + " |", "|---|" + "---:|" * len(names)]
        order = [label for label, _ in SYSTEMS if label in table]  # the table keeps SYSTEMS' order
        for label in order:
            res = table[label]
            cells = [f"{res[n]['ndcg@10']:.4f} / {res[n]['recall@100']:.4f}" if n in res else "" for n in names]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
