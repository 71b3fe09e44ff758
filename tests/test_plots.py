"""Plots of experiments (braid.retrieval.eval.plots) and the depth measures behind them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from braid.retrieval.eval.compare import compare_runs, measure_at_depths
from tests.test_compare import synthetic_case

pytest.importorskip("matplotlib", reason="matplotlib is not installed (extra braid[compare])")

from braid.retrieval.eval.plots import depth_grid, plot_comparison, plot_tradeoff  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "results"


def test_depth_measures_match_evaluate():
    qrels, runs = synthetic_case(n_queries=20)
    runs["short"] = {q: dict(list(hits.items())[:5]) for q, hits in list(runs["base"].items())[:15]}  # misses 5 queries
    table = compare_runs(runs, qrels, metrics=["ndcg@10", "recall@10", "recall@100"], permutations=100)
    curves = measure_at_depths(runs, qrels, [1, 10, 100, 1000])
    for label in runs:
        assert curves[label]["ndcg"][1] == pytest.approx(table.mean[label]["ndcg@10"], abs=1e-12)
        assert curves[label]["recall"][1] == pytest.approx(table.mean[label]["recall@10"], abs=1e-12)
        assert curves[label]["recall"][2] == pytest.approx(table.mean[label]["recall@100"], abs=1e-12)
        assert np.all(np.diff(curves[label]["recall"]) >= 0)
    assert depth_grid(1000)[0] == 1 and depth_grid(1000)[-1] == 1000 and len(set(depth_grid(1000))) == len(depth_grid(1000))


def test_comparison_plots_are_written(tmp_path):
    qrels, runs = synthetic_case()
    table = compare_runs(runs, qrels, metrics=["ndcg@10", "map"], permutations=100, dataset="synthetic", split="test")
    paths = plot_comparison(table, tmp_path / "plots")
    assert [p.name for p in paths] == ["synthetic-per-query-ndcg10.png", "synthetic-depth.png"]
    for p in paths:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 10_000


def test_tradeoff_plot_from_benchmark_json(tmp_path):
    sparse_file = RESULTS / "sparse-scifact.json"
    if not sparse_file.exists():
        pytest.skip(f"{sparse_file} not found")
    sparse = json.loads(sparse_file.read_text())
    dense = {
        "dataset": "scifact",
        "systems": {
            "flat": {"sweep": [{"setting": {}, "accuracy": 1.0, "median_us": 900.0}]},
            "hnsw": {"sweep": [{"setting": {"ef_search": e}, "accuracy": a, "median_us": u} for e, a, u in ((16, 0.95, 90.0), (64, 0.99, 160.0))]},
        },
    }
    path = plot_tradeoff(sparse, dense, tmp_path / "tradeoff.png")
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(Exception, match="a sparse or a dense benchmark result"):
        plot_tradeoff(None, None, tmp_path / "none.png")
