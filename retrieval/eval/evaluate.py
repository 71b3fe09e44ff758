"""Evaluation with trec_eval's measures (through pytrec_eval), under BEIR conventions.

Pure functions over runs (``{query_id: {doc_id: score}}``) and qrels. Conventions, as in BEIR and
Pyserini's BEIR runs: a hit whose doc id equals the query id is dropped (``ignore_identical_ids``);
only judged queries are scored, and a judged query with no hits scores 0 (trec_eval ``-c``);
MRR@10 is trec_eval's ``recip_rank`` over the top 10.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from braid.data.errors import OptionError

# Our name -> (trec_eval measure, key pytrec_eval returns, cut of the run before evaluation)
MEASURES: dict[str, tuple[str, str, int | None]] = {}
for _k in (1, 3, 5, 10, 20, 100, 1000):
    MEASURES[f"ndcg@{_k}"] = (f"ndcg_cut.{_k}", f"ndcg_cut_{_k}", None)
    MEASURES[f"recall@{_k}"] = (f"recall.{_k}", f"recall_{_k}", None)
    MEASURES[f"p@{_k}"] = (f"P.{_k}", f"P_{_k}", None)
    MEASURES[f"mrr@{_k}"] = ("recip_rank", "recip_rank", _k)
MEASURES["map"] = ("map", "map", None)
MEASURES["mrr"] = ("recip_rank", "recip_rank", None)
MEASURES["ndcg"] = ("ndcg", "ndcg", None)

DEFAULT_METRICS = ("ndcg@10", "recall@100", "recall@1000", "mrr@10", "map")


def check_metrics(metrics: Iterable[str]) -> list[str]:
    out = []
    for m in metrics:
        name = m.strip().lower()
        if name not in MEASURES:
            raise OptionError("--metrics", m, "known: " + ", ".join(sorted(MEASURES)))
        out.append(name)
    return out


def drop_self_hits(run: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Remove, for each query, the hit whose doc id equals the query id (BEIR ``ignore_identical_ids``)."""
    return {qid: {d: s for d, s in hits.items() if d != qid} for qid, hits in run.items()}


def _cut(hits: Mapping[str, float], k: int) -> dict[str, float]:
    top = sorted(hits.items(), key=lambda item: (-item[1], item[0]))[:k]
    return dict(top)


def evaluate(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Iterable[str] = DEFAULT_METRICS,
    ignore_identical_ids: bool = True,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Evaluate ``run`` against ``qrels``.

    Returns ``(mean, per_query)``: ``mean[metric]`` over judged queries and
    ``per_query[query_id][metric]``. Queries in ``run`` without judgments are ignored; judged
    queries missing from ``run`` (or left without hits) count as 0.
    """
    import pytrec_eval

    metrics = check_metrics(metrics)
    if ignore_identical_ids:
        run = drop_self_hits(run)
    judged = {qid: {d: int(r) for d, r in docs.items()} for qid, docs in qrels.items() if docs}
    if not judged:
        raise OptionError("qrels", "empty", "no judged query to evaluate")
    per_query: dict[str, dict[str, float]] = {qid: {} for qid in judged}
    by_cut: dict[int | None, list[str]] = {}
    for m in metrics:
        by_cut.setdefault(MEASURES[m][2], []).append(m)
    for cut, names in by_cut.items():
        sub_run = {}
        for qid in judged:
            hits = run.get(qid, {})
            sub_run[qid] = _cut(hits, cut) if cut else dict(hits)
        # pytrec_eval skips queries with an empty run: they are scored 0 below (trec_eval -c).
        sub_run = {q: {d: float(s) for d, s in h.items()} for q, h in sub_run.items() if h}
        evaluator = pytrec_eval.RelevanceEvaluator(judged, {MEASURES[n][0] for n in names})
        results = evaluator.evaluate(sub_run)
        for qid in judged:
            for n in names:
                per_query[qid][n] = float(results.get(qid, {}).get(MEASURES[n][1], 0.0))
    mean = {m: sum(per_query[q][m] for q in judged) / len(judged) for m in metrics}
    return mean, per_query


def format_table(rows: Mapping[str, Mapping[str, float]], metrics: Iterable[str]) -> str:
    """A plain-text table: one row per name (dataset or system), one column per metric."""
    metrics = list(metrics)
    names = list(rows)
    width = max([len("name")] + [len(n) for n in names])
    header = "name".ljust(width) + "".join(f"  {m:>11}" for m in metrics)
    lines = [header, "-" * len(header)]
    for name in names:
        lines.append(name.ljust(width) + "".join(f"  {rows[name].get(m, float('nan')):>11.4f}" for m in metrics))
    return "\n".join(lines)
