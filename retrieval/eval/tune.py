"""Tuning a fusion pipeline on a training split, never on the split that will be reported.

The first-stage lists of every retriever are computed once on the training queries; fusion
settings are then searched on those cached lists (fusion is cheap), PRF and rescoring stages are
added greedily when they raise the training metric, and the winner is written as a pipeline TOML
that ``braid eval --pipeline`` evaluates on the held-out split.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from braid.data.beir import BeirDataset
from braid.data.errors import OptionError
from braid.index.hits import Hits
from braid.retrieval.eval.evaluate import check_metrics, evaluate
from braid.retrieval.pipeline.fusion import fuse
from braid.retrieval import retrievers as registry
from braid.retrieval.pipeline.rerank import interpolate_head
from braid.retrieval.pipeline.runner import PipelineRunner
from braid.retrieval.pipeline.spec import Pipeline, RetrieverStep, pipeline_from_dict
from braid.retrieval.train.leakage import check_training_split

WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
NORMS = ("minmax", "zscore")
RRF_KS = (10, 30, 60, 100)
# PRF settings tried per PRF stage (keys of braid.retrieval.pipeline.prf.PRF_STAGES), in this order.
PRF_CHOICES = {
    "rm3": [{"method": "rm3", "fb_docs": 10, "fb_terms": 10, "original_weight": 0.5},
            {"method": "rm3", "fb_docs": 5, "fb_terms": 20, "original_weight": 0.7}],
    "dense-rocchio": [{"method": "rocchio", "fb_docs": 5, "alpha": 0.4, "beta": 0.6},
                      {"method": "rocchio", "fb_docs": 3, "alpha": 0.7, "beta": 0.3}],
    "dense-average": [{"method": "average", "fb_docs": 3}],
    "sparse-rocchio": [{"method": "rocchio", "fb_docs": 5, "alpha": 1.0, "beta": 0.75},
                       {"method": "rocchio", "fb_docs": 3, "alpha": 1.0, "beta": 0.3}],
}


def prf_choices(retriever: str) -> list[dict]:
    """The PRF settings tuning tries for ``retriever`` (those of the stages its spec offers)."""
    stages = set(registry.get(retriever).prf.values())
    return [cfg for stage, cfgs in PRF_CHOICES.items() if stage in stages for cfg in cfgs]


RESCORE_WEIGHTS = (0.1, 0.2, 0.3, 0.5)


def _run_of(hits: Hits, qids: list[str], doc_ids: list[str], k: int = 100) -> dict:
    run = {}
    for i, qid in enumerate(qids):
        docnos, scores = hits.row(i)
        run[qid] = {doc_ids[d]: float(s) for d, s in zip(docnos[:k], scores[:k])}
    return run


def tune_pipeline(
    searcher,
    dataset: BeirDataset,
    split: str = "train",
    report_split: str = "test",
    metric: str = "ndcg@10",
    depth: int = 1000,
    retrievers: list[str] | None = None,
    try_prf: bool = True,
    try_rescore: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Pipeline, dict]:
    """Search fusion / PRF / rescoring settings on ``split``; return the best pipeline and a report."""
    check_training_split(split, report_split, what="tuning")
    (metric,) = check_metrics([metric])
    qrels = dataset.qrels(split)
    queries = dataset.queries(split)
    if not queries:
        raise OptionError("--split", split, "no judged queries in this split")
    qids = list(queries)
    texts = [queries[q] for q in qids]
    exclude = np.array([searcher.docno(q) for q in qids], dtype=np.int64)
    names = retrievers or registry.hybrid_members(searcher.available_retrievers())
    if not names:
        raise OptionError("--retrievers", "", "the index has no retriever")
    t0 = time.perf_counter()
    first: dict[str, Hits] = {}
    for name in names:
        first[name] = searcher.retriever(name).search(texts, k=depth, exclude=exclude)
        log(f"tune: first stage {name} done ({time.perf_counter() - t0:.0f} s)")

    def score(hits: Hits) -> float:
        mean, _ = evaluate(_run_of(hits, qids, searcher.doc_ids), qrels, [metric])
        return mean[metric]

    report: dict = {"split": split, "metric": metric, "queries": len(qids), "single": {}, "trials": 0}
    for name in names:
        report["single"][name] = score(first[name])
    log("tune: single retrievers " + ", ".join(f"{n} {v:.4f}" for n, v in report["single"].items()))
    lists = [first[n] for n in names]
    best = (-1.0, None)

    def consider(value: float, fusion: dict, weights: tuple) -> None:
        nonlocal best
        report["trials"] += 1
        if value > best[0] + 1e-9:
            best = (value, (fusion, weights))

    if len(names) == 1:
        consider(report["single"][names[0]], {"method": "linear", "norm": "minmax"}, (1.0,))
    else:
        for norm in NORMS:
            for weights in itertools.product(WEIGHT_GRID, repeat=len(names)):
                if max(weights) != 1.0:  # scale invariance: the largest weight is 1
                    continue
                fused = fuse(lists, "linear", k=100, weights=list(weights), norm=norm)
                consider(score(fused), {"method": "linear", "norm": norm}, weights)
        for rrf_k in RRF_KS:
            fused = fuse(lists, "rrf", k=100, rrf_k=rrf_k)
            consider(score(fused), {"method": "rrf", "rrf_k": rrf_k}, tuple(1.0 for _ in names))
    value, (fusion, weights) = best
    log(f"tune: best fusion {fusion} weights {weights}: {metric} {value:.4f} ({report['trials']} trials)")
    steps = [RetrieverStep(name=n, weight=float(w)) for n, w in zip(names, weights) if w > 0]
    kept = [n for n, w in zip(names, weights) if w > 0]
    pipeline = Pipeline(name="tuned", retrievers=tuple(steps), fusion=fusion, depth=depth)
    runner = PipelineRunner(pipeline, searcher)
    kept_lists = [first[n] for n in kept]
    fused_first = runner.fuse(kept_lists, depth)
    report["fusion"] = {"fusion": fusion, "weights": dict(zip(names, weights)), metric: value}

    if try_prf:
        current_lists = list(kept_lists)
        for i, step in enumerate(steps):
            for cfg in prf_choices(step.name):
                trial_step = replace(step, prf=cfg)
                prf_hits = runner.prf(trial_step, texts, fused_first, depth, 1, exclude)
                trial_lists = list(current_lists)
                trial_lists[i] = prf_hits
                trial = runner.fuse(trial_lists, 100)
                trial_value = score(trial)
                report["trials"] += 1
                log(f"tune: PRF {step.name} {cfg}: {metric} {trial_value:.4f}")
                if trial_value > value + 1e-4:
                    value, steps[i], current_lists = trial_value, trial_step, trial_lists
        pipeline = Pipeline(name="tuned", retrievers=tuple(steps), fusion=fusion, depth=depth)
        runner = PipelineRunner(pipeline, searcher)
        fused = runner.fuse(current_lists, depth)
    else:
        fused = fused_first
    report["prf"] = {s.name: s.prf for s in steps if s.prf}

    rescore: list[dict] = []
    if try_rescore:
        for stage in ("sparse", "dense"):
            if stage not in searcher.components:
                continue
            head_n = 100
            new_scores = searcher.retriever(stage).score_candidates(texts, fused.docnos[:, :head_n])

            best_w, best_v = None, value
            for w in RESCORE_WEIGHTS:
                trial_value = score(interpolate_head(fused, head_n, new_scores, w))
                report["trials"] += 1
                log(f"tune: rescore {stage} weight {w}: {metric} {trial_value:.4f}")
                if trial_value > best_v + 1e-4:
                    best_w, best_v = w, trial_value
            if best_w is not None:
                fused = interpolate_head(fused, head_n, new_scores, best_w)
                value = best_v
                rescore.append({"stage": stage, "top_n": head_n, "weight": best_w})
    report["rescore"] = rescore
    report["train_" + metric.replace("@", "_at_")] = value
    report["seconds"] = round(time.perf_counter() - t0, 1)
    pipeline = pipeline_from_dict(
        {
            "name": "tuned",
            "depth": depth,
            "retriever": [{"name": s.name, "weight": s.weight, **({"prf": s.prf} if s.prf else {})} for s in steps],
            "fusion": fusion,
            "rescore": rescore,
        }
    )
    return pipeline, report


def write_pipeline(pipeline: Pipeline, path: Path, report: dict, dataset: str) -> None:
    header = [
        f"# Tuned by `braid tune` on {dataset}, split {report['split']} ({report['queries']} queries, {report['trials']} trials).",
        f"# Training {report['metric']}: {report['train_' + report['metric'].replace('@', '_at_')]:.4f}; single retrievers: "
        + ", ".join(f"{n} {v:.4f}" for n, v in report["single"].items()),
        "",
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + pipeline.to_toml(), encoding="utf-8")


def tune_dataset(
    dataset: str | Path,
    output: str | Path,
    index_root: str | Path,
    build,
    split: str = "train",
    report_split: str = "test",
    metric: str = "ndcg@10",
    depth: int = 1000,
    try_prf: bool = True,
    try_rescore: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """``braid tune``: build or reuse ``index_root/NAME`` for the BEIR folder ``dataset`` (``build``:
    BuildOptions), tune a pipeline on ``split`` (:func:`tune_pipeline`), write it to ``output``
    (:func:`write_pipeline`); return the report. The splits are checked before anything is built."""
    from braid.retrieval.eval.experiment import ensure_index
    from braid.retrieval.searcher import Searcher

    check_training_split(split, report_split, what="tuning")
    ds = BeirDataset(dataset)
    index_dir = Path(index_root) / ds.name
    ensure_index(ds, index_dir, set(build.retrievers), build, False, log)
    pipeline, report = tune_pipeline(
        Searcher(index_dir, runtime=build.runtime), ds, split=split, report_split=report_split, metric=metric, depth=depth, try_prf=try_prf, try_rescore=try_rescore, log=log
    )
    write_pipeline(pipeline, output, report, ds.name)
    return report
