"""Pack a complete sparse vector cache into small compressed parts, and unpack them into a cache again.

    python scripts/sparse_transport.py pack CACHE_DIR OUT_DIR [--first-part 0 --last-part 4] [--part-docs 30000]
    python scripts/sparse_transport.py unpack PARTS_DIR [PARTS_DIR ...] CACHE_DIR

Used to bring vectors encoded on a GPU machine back over a link that takes only a few files of
limited size per transfer. Each part holds a range of rows: row lengths (uint32), term ids (uint16,
exact for vocabularies up to 65,536) and weights rounded to float16 (the precision of the blocked
index's forward index), compressed. ``unpack`` writes indptr/indices/data .npy and complete.json
(with ``"weights": "float16-rounded"`` recorded), plus the queries files when a part directory has them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

QUERY_FILES = ("queries.npz", "queries.ids.json", "cache.json", "timing.json")


def pack(cache: Path, out: Path, part_docs: int, first: int, last: int | None) -> None:
    info = json.loads((cache / "complete.json").read_text())
    if int(info["encoder"]["vocab_size"]) > 65536:
        raise SystemExit("vocabulary too large for uint16 term ids")
    indptr = np.load(cache / "indptr.npy", mmap_mode="r")
    indices = np.load(cache / "indices.npy", mmap_mode="r")
    data = np.load(cache / "data.npy", mmap_mode="r")
    n = len(indptr) - 1
    n_parts = -(-n // part_docs)
    out.mkdir(parents=True, exist_ok=True)
    for p in range(first, min(n_parts, (last if last is not None else n_parts - 1) + 1)):
        lo, hi = p * part_docs, min(n, (p + 1) * part_docs)
        a, b = int(indptr[lo]), int(indptr[hi])
        np.savez_compressed(
            out / f"part-{p:03d}.npz",
            lengths=np.diff(np.asarray(indptr[lo : hi + 1])).astype(np.uint32),
            indices=np.asarray(indices[a:b]).astype(np.uint16),
            data=np.asarray(data[a:b]).astype(np.float16),
            rows=np.array([lo, hi], np.int64),
        )
        print(f"part {p}: rows {lo}-{hi}, {(out / f'part-{p:03d}.npz').stat().st_size / 2**20:.1f} MiB", flush=True)
    if first == 0:
        (out / "complete.json").write_text(json.dumps({**info, "n_parts": n_parts, "part_docs": part_docs}))
        for name in QUERY_FILES:
            if (cache / name).exists():
                shutil.copy(cache / name, out / name)


def unpack(part_dirs: list[Path], cache: Path) -> None:
    parts = sorted((f for d in part_dirs for f in d.glob("part-*.npz")), key=lambda f: f.name)
    meta_dir = next(d for d in part_dirs if (d / "complete.json").exists())
    info = json.loads((meta_dir / "complete.json").read_text())
    names = [f.name for f in parts]
    want = [f"part-{p:03d}.npz" for p in range(info["n_parts"])]
    if names != want:
        raise SystemExit(f"parts missing or repeated: have {names}, want {want}")
    lengths, indices, data = [], [], []
    for f in parts:
        with np.load(f) as z:
            lengths.append(z["lengths"].astype(np.int64))
            indices.append(z["indices"].astype(np.int32))
            data.append(z["data"].astype(np.float32))
    indptr = np.zeros(sum(len(x) for x in lengths) + 1, np.int64)
    np.cumsum(np.concatenate(lengths), out=indptr[1:])
    if indptr[-1] != info["nnz"] or len(indptr) - 1 != info["num_docs"]:
        raise SystemExit("unpacked sizes disagree with complete.json")
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / "indptr.npy", indptr)
    np.save(cache / "indices.npy", np.concatenate(indices))
    np.save(cache / "data.npy", np.concatenate(data))
    for d in part_dirs:
        for name in QUERY_FILES:
            if (d / name).exists():
                shutil.copy(d / name, cache / name)
    info = {k: v for k, v in info.items() if k not in ("n_parts", "part_docs")}
    (cache / "complete.json").write_text(json.dumps({**info, "weights": "float16-rounded"}))
    print(f"unpacked {info['num_docs']} docs, {info['nnz']} nonzeros into {cache}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("cache", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--part-docs", type=int, default=30000)
    p.add_argument("--first-part", type=int, default=0)
    p.add_argument("--last-part", type=int)
    u = sub.add_parser("unpack")
    u.add_argument("dirs", type=Path, nargs="+")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(args.cache, args.out, args.part_docs, args.first_part, args.last_part)
    else:
        unpack(args.dirs[:-1], args.dirs[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
