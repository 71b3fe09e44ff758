"""Check a ``braid compare`` table against ranx's own ``compare`` on the same TREC runs.

    python scripts/check_compare_ranx.py ../shared/data/scifact runs/scifact/{bm25,sparse,dense,hybrid}.test.trec \
        --baseline bm25 --permutations 10000 --seed 42 [--table compare-scifact.json]

The runs are read from their files and given to Braid's ``compare_runs`` and to ``ranx.compare``,
first as they are, then with each query's tied scores broken by Braid's order (-score, doc id): the
two evaluators order tied documents differently (trec_eval by doc id descending), which changes a few
per-query scores, so agreement (means 1e-9, wins/ties/losses, p-values of both tests 1e-6) is asked
of the tie-free runs; the exit status says whether they agree. ranx's Fisher test runs as ranx ships
it (jitted with ``parallel=True``, where the seed does not hold: the spread over ``--repeats`` calls is
printed) and compiled serially as Braid runs it.
``--table``: the JSON ``braid compare --save`` wrote from the same systems searched in memory; its
figures must equal those computed here from the files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--baseline", required=True, help="label (file name up to its first dot) of the baseline run")
    ap.add_argument("--split", default="test")
    ap.add_argument("--metrics", default="ndcg@10,recall@100,mrr@10,map")
    ap.add_argument("--permutations", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--table", type=Path, default=None)
    args = ap.parse_args()

    import ranx
    import ranx.statistical_tests as ranx_tests

    from braid.data.beir import BeirDataset
    from braid.data.datasets import resolve_dataset
    from braid.data.runs import read_run, sorted_hits
    from braid.retrieval.eval.compare import compare_runs
    from braid.retrieval.eval.evaluate import evaluate
    from braid.retrieval.eval.significance import ranx_fisher_serial

    metrics = [m for m in args.metrics.split(",") if m]
    qrels = BeirDataset(resolve_dataset(args.dataset)).qrels(args.split)
    runs = {p.name.split(".")[0]: read_run(p) for p in args.runs}
    runs = {args.baseline: runs.pop(args.baseline), **runs}
    others = [n for n in runs if n != args.baseline]
    r_qrels = ranx.Qrels.from_dict(qrels)

    def check(runs: dict, what: str, repeats: int) -> tuple[bool, object]:
        table = compare_runs(runs, qrels, baseline=args.baseline, metrics=metrics, permutations=args.permutations, seed=args.seed)
        r_runs = [ranx.Run.from_dict(run, name=name) for name, run in runs.items()]
        worst = {"mean": 0.0, "t": 0.0, "fisher": 0.0, "wtl": 0}
        student = ranx.compare(r_qrels, r_runs, metrics=metrics, stat_test="student", max_p=0.05)
        for name in runs:
            for m in metrics:
                worst["mean"] = max(worst["mean"], abs(table.mean[name][m] - student.results[name][m]))
        for name in others:
            for m in metrics:
                worst["t"] = max(worst["t"], abs(table.pvalues[name][m]["t"] - student.comparisons[frozenset((name, args.baseline))][m]["p_value"]))
                w = student.win_tie_loss[(name, args.baseline)][m]
                worst["wtl"] += table.wtl[name][m] != (w["W"], w["T"], w["L"])
        shipped = []
        for _ in range(repeats):
            rep = ranx.compare(r_qrels, r_runs, metrics=metrics, stat_test="fisher", n_permutations=args.permutations, random_seed=args.seed, max_p=0.05)
            shipped.append({(n, m): rep.comparisons[frozenset((n, args.baseline))][m]["p_value"] for n in others for m in metrics})
        original = ranx_tests.fisher_randomization_test
        ranx_tests.fisher_randomization_test = ranx_fisher_serial()
        try:
            serial = ranx.compare(r_qrels, r_runs, metrics=metrics, stat_test="fisher", n_permutations=args.permutations, random_seed=args.seed, max_p=0.05)
        finally:
            ranx_tests.fisher_randomization_test = original
        print(f"== {what}")
        if shipped:
            print(f"{'system':<14} {'measure':<11} {'braid fisher p':>14} {'ranx serial':>12} {'ranx as shipped, min-max of ' + str(repeats) + ' calls':>36}")
        for name in others:
            for m in metrics:
                ours = table.pvalues[name][m]["fisher"]
                theirs = serial.comparisons[frozenset((name, args.baseline))][m]["p_value"]
                worst["fisher"] = max(worst["fisher"], abs(ours - theirs))
                if shipped:
                    spread = [s[(name, m)] for s in shipped]
                    print(f"{name:<14} {m:<11} {ours:>14.4f} {theirs:>12.4f} {min(spread):>26.4f} - {max(spread):.4f}")
        print(f"max |braid - ranx|: means {worst['mean']:.2e}, t-test p {worst['t']:.2e}, Fisher p (ranx serial) {worst['fisher']:.2e}; W/T/L mismatches {worst['wtl']}")
        if shipped:
            spreads = [max(s[key] for s in shipped) - min(s[key] for s in shipped) for key in shipped[0]]
            print(f"ranx's Fisher as shipped, one seed, {repeats} calls: largest spread of a p-value {max(spreads):.4f}, mean spread {np.mean(spreads):.4f}")
        ok = worst["mean"] <= 1e-9 and worst["t"] <= 1e-6 and worst["fisher"] <= 1e-6 and worst["wtl"] == 0
        print("AGREE" if ok else "DISAGREE")
        return ok, table

    _, table = check(runs, "the run files as they are", args.repeats)
    queries_off = {}
    for name, run in runs.items():
        scores = evaluate(run, qrels, metrics)[1]
        theirs = ranx.evaluate(r_qrels, ranx.Run.from_dict(run), metrics, return_mean=False)
        for m in metrics:
            got = dict(zip(r_qrels.keys(), theirs[m]))
            off = sum(abs(scores[q][m] - got[q]) > 1e-9 for q in scores)
            if off:
                queries_off[f"{name} {m}"] = off
    print("per-query scores that differ (pytrec_eval vs ranx):", queries_off or "none")
    # Tied scores are ordered by doc id descending by trec_eval and otherwise by ranx: give both the
    # same runs with each query's hits rescored by their rank in Braid's order (-score, doc id).
    untied = {name: {q: {d: float(len(hits) - r) for r, (d, _) in enumerate(sorted_hits(hits))} for q, hits in run.items()} for name, run in runs.items()}
    ok, _ = check(untied, "the same runs, ties broken by Braid's order (-score, doc id)", 0)
    if args.table is not None:
        saved = json.loads(args.table.read_text())
        diff = 0.0
        for s in saved["systems"]:
            for m in metrics:
                diff = max(diff, abs(s["mean"][m] - table.mean[s["label"]][m]))
                if s["label"] != args.baseline:
                    for t in ("t", "fisher"):
                        diff = max(diff, abs(s["vs_baseline"][m]["p"][t] - table.pvalues[s["label"]][m][t]))
        print(f"{args.table} (searched in memory) vs the run files: largest difference of a mean or p-value {diff:.2e}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
