"""Bytes on disk of a dense index directory, file by file kind: flat and PQ, with the vectors kept and with ``--no-vectors``.

The document embeddings are pre-encoded (e.g. ``../shared/vectors/scifact/minilm-docs.npy``, corpus
order). They are put into the build's encoding cache with
:func:`braid.retrieval.scale.distributed.fill_vector_cache`, which writes the very cache an encoding
build writes (chunks of ``--chunk-size`` documents, then the concatenated array), so the directory is
the one ``braid index DATA --retrievers dense --dense-index KIND [--no-vectors]`` leaves, without the
encoding time. It runs with whatever ``braid`` is importable, so the same script measures an older
checkout (which has no ``--no-vectors``: those rows are skipped).

    python scripts/index_sizes.py ../shared/data/scifact ../shared/vectors/scifact/minilm-docs.npy \\
        --model ../shared/models/all-MiniLM-L6-v2 --out /tmp/index-sizes
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GROUPS = (
    ("dense/ (FAISS)", lambda rel: rel.startswith("dense/")),
    ("vectors/ chunk-*.npz", lambda rel: rel.startswith("vectors/") and "/chunk-" in rel),
    ("vectors/ vectors.npy", lambda rel: rel.startswith("vectors/") and rel.endswith("/vectors.npy")),
    ("other", lambda rel: True),
)


def sizes(index: Path) -> dict[str, int]:
    out = {name: 0 for name, _ in GROUPS}
    for path in index.rglob("*"):
        if path.is_file():
            rel = path.relative_to(index).as_posix()
            name = next(n for n, match in GROUPS if match(rel))
            out[name] += path.stat().st_size
    out["total"] = sum(out.values())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", type=Path, help="BEIR folder (corpus.jsonl)")
    ap.add_argument("vectors", type=Path, help=".npy float32 (num_docs, dim), corpus order")
    ap.add_argument("--model", required=True, help="the dense model the vectors come from (its description goes in the cache)")
    ap.add_argument("--out", type=Path, required=True, help="scratch directory for the indexes")
    ap.add_argument("--pq-m", type=int, default=48, help="PQ sub-quantizers (48 for 384-d = 32x compression)")
    ap.add_argument("--chunk-size", type=int, default=2048)
    args = ap.parse_args(argv)

    import numpy as np

    import braid
    from braid.retrieval.build.builder import BuildOptions, build_index
    from braid.retrieval.scale.distributed import fill_vector_cache

    vectors = np.load(args.vectors, mmap_mode="r", allow_pickle=False)
    can_drop = "keep_vectors" in {f.name for f in dataclasses.fields(BuildOptions)}
    configs = [("flat", {"kind": "flat"}), (f"pq:{args.pq_m}", {"kind": "pq", "m": args.pq_m})]
    print(f"braid at {Path(braid.__file__).parent}; {vectors.shape[0]} documents x {vectors.shape[1]} float32 = {vectors.nbytes:,} bytes")
    header = ["index", *[n for n, _ in GROUPS], "total"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    for label, dense_index in configs:
        for keep in ([True, False] if can_drop else [True]):
            extra = {} if not can_drop else {"keep_vectors": keep}
            options = BuildOptions(
                retrievers=("dense",), dense_model=args.model, dense_index=dense_index, progress=False, chunk_size=args.chunk_size, **extra
            )
            out = args.out / f"{label.replace(':', '-')}-{'kept' if keep else 'novec'}"
            fill_vector_cache(out, args.dataset, "dense", options, np.ascontiguousarray(vectors, dtype=np.float32))
            build_index(args.dataset, out, options, log=lambda m: None)
            row = sizes(out)
            name = f"{label}" + ("" if keep else " --no-vectors")
            print("| " + " | ".join([name, *[f"{row[n]:,}" for n, _ in GROUPS], f"{row['total']:,}"]) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
