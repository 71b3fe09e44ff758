"""Dense encoding speed on a GPU, fp32 and fp16 autocast, and the vectors for a CPU comparison.

    python scripts/bench_gpu_dense.py MODEL_DIR DATASET_DIR OUT_DIR

Writes OUT_DIR/minilm-fp32.npy, minilm-fp16.npy (documents, corpus order) and gpu_dense.json (docs/s,
queries/s, device). Compare the vectors with CPU-encoded ones (cosine per document) to check that the
GPU path encodes the same thing. Needs CUDA.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    model, dataset, out = (Path(a) for a in (argv or sys.argv[1:]))
    import torch

    from braid.data.beir import BeirDataset
    from braid.data.corpus import iter_corpus
    from braid.encoders.dense import DenseEncoder

    out.mkdir(parents=True, exist_ok=True)
    ds = BeirDataset(dataset)
    texts = [d.contents for d in iter_corpus(ds.corpus_path)]
    queries = ds.queries(split=None)
    qtexts = [queries[q] for q in queries]
    res: dict = {"device": torch.cuda.get_device_name(0)}
    for prec in ("fp32", "fp16"):
        enc = DenseEncoder(str(model), device="cuda", precision=prec, batch_size=256, max_length=256)
        enc.backbone.model.float()  # weights may be stored as float16: compute in float32 or autocast
        enc.encode(texts[:512], "document")  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        vectors = enc.encode(texts, "document")
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc.encode(qtexts, "query")
        torch.cuda.synchronize()
        res[prec] = {"docs": len(texts), "seconds": round(dt, 2), "docs_per_s": round(len(texts) / dt, 1),
                     "queries_per_s": round(len(qtexts) / (time.perf_counter() - t0), 1)}  # fmt: skip
        np.save(out / f"minilm-{prec}.npy", np.asarray(vectors, np.float32))
        print(prec, res[prec], flush=True)
    (out / "gpu_dense.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
