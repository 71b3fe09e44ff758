"""Document encoding on a GPU (issue 14): documents/s through Braid's device pipeline, where the time goes
(tokenisation, transfers, the model), and the arithmetic bound, for splade-tiny and all-MiniLM-L6-v2.

    python scripts/bench_gpu_encode.py --dataset ../shared/data/dictionary --n 65536 \
        --models ../shared/models --peak-tflops 989 --json gpu-encode.json       # on the lent machine
    python scripts/bench_gpu_encode.py --device cpu --n 256 --precisions fp32    # a check of the script itself

For each model and precision (``fp32``; ``bf16``: torch autocast), on the first ``--n`` documents of the
collection (title + " " + text, max length 256, batch ``--batch-size``):

* **pipeline docs/s**: ``encode()`` as ``braid index --device cuda`` runs it (torch, the device pipeline of
  ``braid.encoders.base``: tokenizing and padding in a worker thread ahead of the device, pinned memory,
  non-blocking copies, SPLADE outputs reduced to their nonzeros on the device), after a warm-up call;
  **serial docs/s**: the same with the pipeline off (tokenize everything, then batch by batch).
* **stages**, each timed alone over the same batches (``torch.cuda.synchronize`` around each): tokenisation of
  all texts; host-to-device copies of the padded batches; the model with its head on inputs already on the
  device; device-to-host of what comes back (SPLADE: the nonzeros, found on the device; dense: the vectors).
  Their shares are of their sum; the pipeline overlaps tokenisation and copies with the model, so its
  docs/s can exceed 1 / (sum per document).
* **bound**: ``--peak-tflops`` (the card's dense peak at that precision, from its data sheet) over the model's
  FLOPs per document at the measured mean length (``scripts/bench_cpu_bound.model_flops``).

Issue 14's target: >= 20,000 documents/s for each model on one H100/H200-class card.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from machine import machine  # scripts/machine.py (the scripts run as files)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu_bound import model_flops  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODELS = {"splade-tiny": "sparse", "all-MiniLM-L6-v2": "dense"}


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def stages(enc, kind: str, texts: list[str]) -> dict:
    """Seconds in tokenisation, host-to-device, model and device-to-host over ``texts``, each timed alone."""
    import numpy as np
    import torch

    from braid.encoders.base import length_sorted_batches

    b = enc.backbone
    device = b.device
    names = b.input_names("torch")
    t0 = time.perf_counter()
    encs = b.tokenize(texts)
    tokenize = time.perf_counter() - t0
    lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    batches = [b._pad(encs, pos, lengths, names) for pos in length_sorted_batches(lengths, b.options.batch_size)]
    pin = device.type == "cuda"
    host = [{k: (torch.from_numpy(v).pin_memory() if pin else torch.from_numpy(v)) for k, v in x.items()} for x in batches]
    sync(device)
    t0 = time.perf_counter()
    on_device = [{k: v.to(device, non_blocking=pin) for k, v in x.items()} for x in host]
    sync(device)
    h2d = time.perf_counter() - t0
    outs = []
    with torch.inference_mode(), b.autocast():
        sync(device)
        t0 = time.perf_counter()
        for x in on_device:
            outs.append(b._torch_forward(x).float())
        sync(device)
        model = time.perf_counter() - t0
        t0 = time.perf_counter()
        for out in outs:
            if kind == "sparse":
                where = torch.nonzero(out)
                where.cpu().numpy(), out[where[:, 0], where[:, 1]].cpu().numpy()
            else:
                out.cpu().numpy()
        sync(device)
        d2h = time.perf_counter() - t0
    return {"tokenize_s": tokenize, "host_to_device_s": h2d, "model_s": model, "device_to_host_s": d2h,
            "mean_tokens": float(lengths.mean())}  # fmt: skip


def run(model_dir: Path, kind: str, texts: list[str], device: str, precision: str, batch_size: int, peak_tflops: float | None) -> dict:
    from braid.encoders import base
    from braid.encoders.dense import DenseEncoder
    from braid.encoders.sparse import SparseEncoder

    cls = SparseEncoder if kind == "sparse" else DenseEncoder
    enc = cls(str(model_dir), device=device, precision=precision, batch_size=batch_size, max_length=256, runtime="torch")
    dev = enc.backbone.device
    row: dict = {"model": model_dir.name, "precision": precision, "device": str(dev), "docs": len(texts)}
    for mode in ("on", "off"):
        base.PIPELINE = mode
        enc.encode(texts[: min(len(texts), 4 * batch_size)], "document")  # warm-up (kernels, allocator)
        sync(dev)
        t0 = time.perf_counter()
        enc.encode(texts, "document")
        sync(dev)
        row[f"{'pipeline' if mode == 'on' else 'serial'}_docs_per_s"] = round(len(texts) / (time.perf_counter() - t0), 1)
    base.PIPELINE = "auto"
    st = stages(enc, kind, texts)
    total = sum(v for k, v in st.items() if k.endswith("_s"))
    row["stages_s"] = {k: round(v, 3) for k, v in st.items() if k.endswith("_s")}
    row["stage_shares"] = {k[:-2]: round(v / total, 3) for k, v in st.items() if k.endswith("_s")}
    row["mean_tokens"] = round(st["mean_tokens"], 1)
    config = json.loads((model_dir / "config.json").read_text())
    flops = model_flops(config, st["mean_tokens"], splade=kind == "sparse")
    row["gflop_per_doc"] = round(flops / 1e9, 3)
    row["model_only_docs_per_s"] = round(len(texts) / st["model_s"], 1)
    if peak_tflops:
        row["bound_docs_per_s"] = round(peak_tflops * 1e12 / flops, 1)
        row["pipeline_share_of_bound"] = round(row["pipeline_docs_per_s"] / row["bound_docs_per_s"], 4)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--dataset", type=Path, default=root.parent / "shared" / "data" / "dictionary")
    ap.add_argument("--models", type=Path, default=root.parent / "shared" / "models")
    ap.add_argument("--n", type=int, default=65536, help="documents encoded per row (the first N of the corpus)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's dense peak (TFLOP/s) at the precision, for the bound")
    ap.add_argument("--only", choices=tuple(MODELS), default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from braid.data.beir import BeirDataset
    from braid.data.corpus import iter_corpus

    ds = BeirDataset(args.dataset)
    texts = []
    for d in iter_corpus(ds.corpus_path):
        texts.append(d.contents)
        if len(texts) >= args.n:
            break
    rows = []
    for name, kind in MODELS.items():
        if args.only and name != args.only:
            continue
        for precision in args.precisions.split(","):
            row = run(args.models / name, kind, texts, args.device, precision, args.batch_size, args.peak_tflops)
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"dataset": str(args.dataset), "machine": machine(), "rows": rows, "command": "python scripts/bench_gpu_encode.py " + " ".join(argv or sys.argv[1:])}
    try:
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
