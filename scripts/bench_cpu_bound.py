"""How close CPU document encoding is to the core's arithmetic: a model's FLOPs per document against the
single-thread fp32 matrix-multiply rate this machine reaches, next to the measured documents per CPU-second.

Usage:

    python scripts/bench_cpu_bound.py [--results docs/benchmarks/results/encoders-cpu-onnx.json]
                                      [--baseline OLD_RESULTS.json] [--models ../shared/models] [--json out.json]

* FLOPs per document, from the model's ``config.json`` and the mean document length of the encoder run in
  ``--results`` (what ``scripts/bench_encoders.py`` measured): per token and layer ``2 (4 H^2 + 2 H I)``
  for the projections and feed-forward, ``4 S H`` for attention scores and context (``S`` = the document's
  tokens); SPLADE adds its MLM head, ``2 H^2 + 2 H V`` per token (the vocabulary projection). Layer norms,
  GELU, softmax and SPLADE's max-pooling are left out (they only lower the bound further).
* The rate: ``torch.mm`` in float32 on one thread (MKL), best of several repetitions over the shapes these
  models multiply (tokens x hidden by hidden x 4·hidden and back, hidden x vocabulary) and a large square.
* Bound = rate / FLOPs per document: documents per CPU-second no fp32 runtime can exceed on this core.
* ``--baseline``: an earlier ``bench_encoders.py`` result whose torch rows are the figure to double (the
  issue's "2x today's"); by default the torch rows of ``--results``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]


def model_flops(config: dict, tokens: float, splade: bool) -> float:
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    per_token = layers * (2 * (4 * h * h + 2 * h * i) + 4 * tokens * h)
    if splade:
        per_token += 2 * h * h + 2 * h * config["vocab_size"]
    return per_token * tokens


def gemm_rate(shapes: list[tuple[int, int, int]], reps: int) -> dict[str, float]:
    """GFLOP/s of ``(m, k) @ (k, n)`` in float32 on one torch thread, best of ``reps``, per shape."""
    import torch

    torch.set_num_threads(1)
    out = {}
    for m, k, n in shapes:
        a = torch.randn(m, k)
        b = torch.randn(k, n)
        torch.mm(a, b)  # warm-up
        best = float("inf")
        for _ in range(reps):
            t0 = time.process_time()
            torch.mm(a, b)
            best = min(best, time.process_time() - t0)
        out[f"{m}x{k}x{n}"] = round(2 * m * k * n / best / 1e9, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / "docs/benchmarks/results/encoders-cpu-onnx.json")
    parser.add_argument("--models", type=Path, default=HERE.parent / "shared" / "models")
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    run = json.loads(args.results.read_text())
    base = json.loads(args.baseline.read_text()) if args.baseline else run
    tokens = float(run["mean_doc_tokens"])
    batch_tokens = int(run["batch_size"]) * int(run["max_length"])
    models = {"all-MiniLM-L6-v2": False, "splade-tiny": True}
    shapes = [(2048, 2048, 2048)]
    configs = {}
    for name, splade in models.items():
        c = json.loads((args.models / name / "config.json").read_text())
        configs[name] = c
        h, i = c["hidden_size"], c["intermediate_size"]
        shapes += [(batch_tokens, h, i), (batch_tokens, i, h), (batch_tokens, h, h)]
        if splade:
            shapes.append((2048, h, c["vocab_size"]))
    rates = gemm_rate(sorted(set(shapes)), args.reps)
    peak = max(rates.values())
    rows = []
    for name, splade in models.items():
        flops = model_flops(configs[name], tokens, splade)
        bound = peak * 1e9 / flops
        measured = {r["path"]: r["docs_per_cpu_s"] for r in run["models"][name]}
        torch_rate = {r["path"]: r["docs_per_cpu_s"] for r in base["models"].get(name, [])}.get("braid torch fp32")
        rows.append({
            "model": name,
            "gflop_per_doc": round(flops / 1e9, 3),
            "bound_docs_per_cpu_s": round(bound, 1),
            "measured_docs_per_cpu_s": measured,
            "share_of_bound": {path: round(v / bound, 3) for path, v in measured.items()},
            "baseline_torch_docs_per_cpu_s": torch_rate,
            "two_x_baseline_share_of_bound": round(2 * torch_rate / bound, 3) if torch_rate else None,
        })
        print(f"{name}: {flops / 1e9:.2f} GFLOP per {tokens:.0f}-token document; fp32 bound {bound:.1f} docs/CPU-s "
              f"at {peak:.0f} GFLOP/s; 2x the baseline torch ({2 * torch_rate:.1f}) = {2 * torch_rate / bound:.0%} of the bound")
        for path, v in measured.items():
            print(f"    {path:32s} {v:6.1f} docs/CPU-s = {v / bound:5.0%} of the bound")
    result = {"machine_cpus": os.cpu_count(), "gemm_gflops_1_thread": rates, "peak_gflops": peak, "mean_doc_tokens": tokens,
              "results_file": str(args.results), "baseline_file": str(args.baseline or args.results), "load_average": [round(x, 1) for x in os.getloadavg()], "rows": rows}
    print("GEMM GFLOP/s (1 thread):", rates)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    np.random.seed(0)
    main()
