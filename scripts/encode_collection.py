"""Encode a BEIR collection (documents through the resumable vector cache, then all queries) with one model.

    nice -n 15 .venv/bin/python scripts/encode_collection.py DATASET_DIR MODEL OUT_DIR [--kind sparse|dense]

Documents (text = title + " " + text) go to OUT_DIR through braid.retrieval.build.vectorcache.encode_corpus
(re-running resumes after the last finished chunk). Queries (all of queries.jsonl, query mode) go
to OUT_DIR/queries.npz (scipy CSR, sparse) or OUT_DIR/queries.npy (dense), with their ids in
OUT_DIR/queries.ids.json. One torch thread by default, so a background job takes one core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--kind", choices=("sparse", "dense"), default="sparse")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk-size", type=int, default=4096)
    ap.add_argument("--skip-queries", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--precision", default="fp32", help="fp32, fp16 or bf16 (GPU)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from braid.data.beir import BeirDataset
    from braid.data.corpus import count_corpus, iter_corpus
    from braid.retrieval.build.vectorcache import encode_corpus

    torch.set_num_threads(args.threads)
    ds = BeirDataset(Path(args.dataset))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    opts = dict(max_length=args.max_length, batch_size=args.batch_size, device=args.device, precision=args.precision,
                threads=args.threads)
    if args.kind == "sparse":
        from braid.encoders.sparse import SparseEncoder

        encoder = SparseEncoder(args.model, **opts)
    else:
        from braid.encoders.dense import DenseEncoder

        encoder = DenseEncoder(args.model, **opts)

    if not args.skip_queries:
        queries = ds.queries(split=None)
        t0 = time.perf_counter()
        ids = list(queries)
        texts = [queries[q] for q in ids]
        if args.kind == "sparse":
            import scipy.sparse as sp

            indptr, indices, data = encoder.encode_csr(texts, "query")
            mat = sp.csr_matrix((data, indices, indptr), shape=(len(ids), encoder.vocab_size))
            sp.save_npz(out / "queries.npz", mat)
        else:
            np.save(out / "queries.npy", encoder.encode(texts, "query"))
        (out / "queries.ids.json").write_text(json.dumps({"query_ids": ids, "encoder": encoder.describe("query")}))
        print(f"queries: {len(ids)} in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)

    total = count_corpus(ds.corpus_path)
    t0 = time.perf_counter()
    last = [t0]

    def on_chunk(i: int, done: int) -> None:
        now = time.perf_counter()
        print(f"chunk {i} done: {done}/{total} docs, {now - last[0]:.0f}s for this chunk", file=sys.stderr, flush=True)
        last[0] = now

    docs = ((d.doc_id, d.contents) for d in iter_corpus(ds.corpus_path))
    result = encode_corpus(docs, encoder, out, args.kind, chunk_size=args.chunk_size, total=total, on_chunk=on_chunk)
    n = result.shape[0] if hasattr(result, "shape") else len(result.indptr) - 1
    print(f"documents: {n} encoded in {time.perf_counter() - t0:.0f}s -> {out}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
