"""Plots of experiments (PNG, matplotlib's Agg canvas; pyplot and its global state are never touched).

- :func:`plot_per_query_difference`: per system, the per-query difference against the baseline on one
  measure, sorted, as bars (wins above zero, losses below);
- :func:`plot_depth_curves`: recall@k and nDCG@k for k from 1 to the run depth, log axis, one line per system;
- :func:`plot_tradeoff`: accuracy@10 against median latency of the sparse and dense indexes over their
  query-time knobs, from benchmark JSON (``scripts/bench_sparse.py``, ``scripts/bench_dense_sweep.py``).

:func:`plot_comparison` writes the first two for a :class:`~braid.retrieval.eval.compare.ComparisonTable`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from braid.data.errors import OptionError
from braid.retrieval.eval.compare import ComparisonTable, measure_at_depths, metric_label

WIN, LOSS, TIE = "#2a7f3f", "#b8322a", "#888888"


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise OptionError("--plot", "matplotlib", "plots need matplotlib: pip install 'braid[compare]'") from None
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_per_query_difference(table: ComparisonTable, path: str | Path, metric: str | None = None) -> Path:
    """One panel per non-baseline system: its per-query ``metric`` minus the baseline's, sorted."""
    metric = metric or table.metrics[0]
    if metric not in table.metrics:
        raise OptionError("metric", metric, "one of the table's measures: " + ", ".join(table.metrics))
    others = table.others
    cols = min(3, len(others))
    rows = math.ceil(len(others) / cols)
    fig = _figure(4.2 * cols, 2.9 * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False)).ravel()
    base = table.per_query[table.baseline][metric]
    shown = metric_label(metric)
    for ax, label in zip(axes, others):
        diff = np.sort(table.per_query[label][metric] - base)[::-1]
        colors = np.where(diff > 0, WIN, np.where(diff < 0, LOSS, TIE))
        ax.bar(np.arange(diff.size), diff, width=1.0, color=colors, linewidth=0)
        ax.axhline(0, color="black", linewidth=0.6)
        w, t, l = table.wtl[label][metric]
        delta = table.mean[label][metric] - table.mean[table.baseline][metric]
        marks = "".join({"t": "†", "fisher": "‡"}[x] for x in table.significant(label, metric))
        ax.set_title(f"{label}: Δ {delta:+.4f}{marks}  (W/T/L {w}/{t}/{l})", fontsize=9)
        ax.set_xlabel("queries, sorted by difference")
        ax.set_xlim(-0.5, diff.size - 0.5)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(others) :]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel(f"{shown} − baseline")
    handles = [_patch(WIN, "system better"), _patch(LOSS, "baseline better")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.suptitle(f"{table.dataset} ({table.split}, {len(table.query_ids)} queries): per-query {shown} against {table.baseline}")
    return _save(fig, path)


def _patch(color: str, label: str):
    from matplotlib.patches import Patch

    return Patch(color=color, label=label)


def depth_grid(max_k: int = 1000, points: int = 100) -> list[int]:
    """Distinct integers from 1 to ``max_k``, evenly spaced on a log scale."""
    return sorted({int(round(x)) for x in np.logspace(0, math.log10(max_k), points)})


def plot_depth_curves(table: ComparisonTable, path: str | Path, ks: Sequence[int] | None = None) -> Path:
    """recall@k and nDCG@k against k (log axis) for every system of ``table``."""
    if not table.runs:
        raise OptionError("table", "no runs", "a comparison that kept its runs (braid.compare / compare_runs)")
    depth = max((len(hits) for run in table.runs.values() for hits in run.values()), default=1)
    ks = list(ks) if ks is not None else depth_grid(max(depth, 1))
    curves = measure_at_depths(table.runs, table.qrels, ks, ignore_identical_ids=table.ignore_identical_ids)
    # a system that scores exactly as an earlier one would hide it: drawn dotted on top, and said so
    same = {b: a for i, b in enumerate(table.labels) for a in table.labels[:i] if all(np.array_equal(curves[a][m], curves[b][m]) for m in curves[a])}
    fig = _figure(10.5, 4.2)
    axes = fig.subplots(1, 2)
    for ax, measure, name in zip(axes, ("recall", "ndcg"), ("Recall@k", "nDCG@k")):
        for i, label in enumerate(table.labels):
            shown = label + (" (baseline)" if label == table.baseline else "")
            style = {"linewidth": 1.4, "color": f"C{i}"}
            if label == table.baseline:
                style = {"color": "black", "linewidth": 2.0, "linestyle": "--"}
            elif label in same:
                style = {"linewidth": 2.2, "color": f"C{i}", "linestyle": (0, (1, 2))}
                shown += f" (= {same[label]})"
            ax.plot(ks, curves[label][measure], label=shown, **style)
        ax.set_xscale("log")
        ax.set_xlim(ks[0], ks[-1])
        ax.set_xlabel("depth k (log scale)")
        ax.set_ylabel(name)
        ax.set_title(f"{name} by depth")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{table.dataset} ({table.split}, {len(table.query_ids)} queries): measures at depth 1 to {ks[-1]}")
    return _save(fig, path)


def plot_comparison(table: ComparisonTable, out_dir: str | Path, metric: str | None = None) -> list[Path]:
    """``per-query-METRIC.png`` and ``depth.png`` in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    metric = metric or table.metrics[0]
    slug = metric.replace("@", "")
    return [
        plot_per_query_difference(table, out_dir / f"{table.dataset}-per-query-{slug}.png", metric),
        plot_depth_curves(table, out_dir / f"{table.dataset}-depth.png"),
    ]


def _frontier(points: list[dict]) -> list[dict]:
    """Points on the accuracy/latency frontier: by increasing latency, each more accurate than the last."""
    out, best = [], -1.0
    for p in sorted(points, key=lambda p: (p["median_us"], -p["accuracy"])):
        if p["accuracy"] > best:
            out.append(p)
            best = p["accuracy"]
    return out


def plot_tradeoff(sparse: dict | None, dense: dict | None, path: str | Path, title: str | None = None) -> Path:
    """Accuracy@10 (overlap with the exact top 10) against median single-query latency, log x axis.

    ``sparse``: a ``scripts/bench_sparse.py`` result (Braid's blocked index swept over
    ``(query_cut, heap_factor)``, its frontier drawn, the exact scipy product as reference);
    ``dense``: a ``scripts/bench_dense_sweep.py`` result (HNSW ``ef_search``, IVF and IVF-PQ ``nprobe``,
    flat as exact). Either may be None.
    """
    if sparse is None and dense is None:
        raise OptionError("results", None, "a sparse or a dense benchmark result")
    fig = _figure(8.2, 5.0)
    ax = fig.subplots()
    lows = []
    if sparse is not None:
        braid = sparse["systems"]["braid"]["sweep"]
        ax.scatter([p["median_us"] for p in braid], [p["accuracy"] for p in braid], s=10, color="C0", alpha=0.35, label="sparse blocked index: every (query_cut, heap_factor)")
        front = _frontier(braid)
        ax.plot([p["median_us"] for p in front], [p["accuracy"] for p in front], color="C0", marker="o", ms=4, label="sparse blocked index: frontier")
        for p in front[:: max(1, len(front) // 5)]:
            ax.annotate(f"{p['setting'][0]}, {p['setting'][1]}", (p["median_us"], p["accuracy"]), fontsize=7, color="C0", xytext=(4, -9), textcoords="offset points")
        exact = sparse["systems"].get("brute-force (scipy)", {}).get("sweep", [])
        if exact:
            ax.scatter([exact[0]["median_us"]], [1.0], marker="s", color="C0", s=40, label="sparse exact (scipy CSR product)")
        lows += [p["accuracy"] for p in braid]
    if dense is not None:
        styles = {"hnsw": ("C1", "o", "dense HNSW: ef_search"), "ivf": ("C2", "^", "dense IVF: nprobe"), "ivfpq": ("C3", "v", "dense IVF-PQ (48 B/vector): nprobe")}
        for name, (color, marker, label) in styles.items():
            points = dense["systems"].get(name, {}).get("sweep", [])
            if not points:
                continue
            knob = next(iter(points[0]["setting"]))
            ax.plot([p["median_us"] for p in points], [p["accuracy"] for p in points], color=color, marker=marker, ms=4, label=label)
            for p in points[:: max(1, len(points) // 4)]:
                ax.annotate(str(p["setting"][knob]), (p["median_us"], p["accuracy"]), fontsize=7, color=color, xytext=(3, 4), textcoords="offset points")
            lows += [p["accuracy"] for p in points]
        flat = dense["systems"].get("flat", {}).get("sweep", [])
        if flat:
            ax.scatter([flat[0]["median_us"]], [1.0], marker="s", color="C1", s=40, label="dense exact (flat)")
    ax.set_xscale("log")
    ax.set_xlabel("median latency per query, µs (1 thread, k = 10, log scale)")
    ax.set_ylabel("accuracy@10 (overlap with the exact top 10)")
    ax.set_ylim(max(0.0, min(lows, default=0.5) - 0.03), 1.01)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7.5, loc="lower right")
    names = {d["dataset"] for d in (sparse, dense) if d is not None}
    ax.set_title(title or f"{', '.join(sorted(names))}: accuracy against latency over the indexes' query-time knobs")
    return _save(fig, path)
