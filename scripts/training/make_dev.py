"""Make the scifact dev split of issue 16's tuning runs (docs/benchmarks/training.md, rounds 3-5).

    python scripts/training/make_dev.py /work/shared/data/scifact /work/scratch/train5/scifact-dev

OUT gets corpus.jsonl, queries.jsonl and qrels/test.tsv symlinked from SRC, and SRC's qrels/train.tsv split by
query id: qrels/dev.tsv = 162 queries (20 %) chosen with numpy.random.default_rng(0).choice over the query ids in
file order, qrels/train-fit.tsv = the other 647 (header line kept in both). Expected: 189 dev pairs, 730 train-fit
pairs; untrained sparse-if on dev nDCG@10 0.6517 / Recall@100 0.8940.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(src: Path, out: Path, dev_size: int = 162, seed: int = 0) -> None:
    lines = (src / "qrels" / "train.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], [line for line in lines[1:] if line.strip()]
    qids = list(dict.fromkeys(line.split("\t")[0] for line in rows))  # file order, first appearance
    rng = np.random.default_rng(seed)
    dev = {qids[i] for i in rng.choice(len(qids), dev_size, replace=False)}
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        link = out / name
        if not link.exists():
            link.symlink_to((src / name).resolve())
    parts = {"dev": [r for r in rows if r.split("\t")[0] in dev], "train-fit": [r for r in rows if r.split("\t")[0] not in dev]}
    for name, part in parts.items():
        (out / "qrels" / f"{name}.tsv").write_text("\n".join([header, *part]) + "\n", encoding="utf-8")
        print(f"{name}: {len({r.split(chr(9))[0] for r in part})} queries, {len(part)} pairs")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
