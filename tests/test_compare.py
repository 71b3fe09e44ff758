"""Experiments (braid.retrieval.eval.compare): measures, W/T/L, paired tests and Holm, against ranx.

The cross-check builds a small seeded case without tied scores and asks ranx's own ``compare`` for
the same measures and tests: means, wins/ties/losses and p-values must agree (p to 1e-6).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from braid.data.errors import OptionError
from braid.data.runs import write_run
from braid.retrieval.eval.compare import ComparisonTable, compare_runs, parse_system
from braid.retrieval.eval.significance import fisher_randomization, holm, ranx_fisher_serial, student_t

METRICS = ["ndcg@10", "recall@100", "mrr@10", "map"]


def synthetic_case(n_queries: int = 40, n_docs: int = 300, seed: int = 0):
    """Graded qrels (1-2, a few 0s) and three runs of 120 hits with distinct scores: a baseline, a
    system whose relevant documents get a boost, and a noisier one."""
    rng = np.random.default_rng(seed)
    qrels, runs = {}, {"base": {}, "better": {}, "noisy": {}}
    docs = [f"d{i}" for i in range(n_docs)]
    for q in range(n_queries):
        qid = f"q{q}"
        rel = rng.choice(n_docs, size=int(rng.integers(1, 8)), replace=False)
        qrels[qid] = {docs[d]: int(rng.integers(0, 3)) for d in rel}
        if all(v == 0 for v in qrels[qid].values()):
            qrels[qid][docs[rel[0]]] = 1
        base = rng.random(n_docs)
        boost = np.zeros(n_docs)
        boost[rel] = 0.3
        for name, scores in (("base", base), ("better", base + boost * rng.random(n_docs)), ("noisy", base + 0.5 * rng.random(n_docs))):
            top = np.argsort(-scores)[:120]
            runs[name][qid] = {docs[d]: float(scores[d]) for d in top}
    return qrels, runs


def test_agrees_with_ranx_compare(monkeypatch):
    ranx = pytest.importorskip("ranx")
    import ranx.statistical_tests as ranx_tests

    qrels, runs = synthetic_case()
    table = compare_runs(runs, qrels, baseline="base", metrics=METRICS, permutations=2000, seed=7)
    ranx_qrels = ranx.Qrels.from_dict(qrels)
    ranx_runs = [ranx.Run.from_dict(runs[name], name=name) for name in runs]
    report = ranx.compare(ranx_qrels, ranx_runs, metrics=METRICS, stat_test="student", max_p=0.05)
    for name in runs:
        for m in METRICS:
            assert table.mean[name][m] == pytest.approx(report.results[name][m], abs=1e-9)
    for name in ("better", "noisy"):
        for m in METRICS:
            got = report.comparisons[frozenset((name, "base"))][m]["p_value"]
            assert table.pvalues[name][m]["t"] == pytest.approx(got, abs=1e-6)
            wtl = report.win_tie_loss[(name, "base")][m]
            assert table.wtl[name][m] == (wtl["W"], wtl["T"], wtl["L"])
    # Fisher: ranx's compare with its test compiled serially (its parallel build ignores the seed)
    monkeypatch.setattr(ranx_tests, "fisher_randomization_test", ranx_fisher_serial())
    report = ranx.compare(ranx_qrels, ranx_runs, metrics=METRICS, stat_test="fisher", n_permutations=2000, random_seed=7, max_p=0.05)
    for name in ("better", "noisy"):
        for m in METRICS:
            got = report.comparisons[frozenset((name, "base"))][m]["p_value"]
            assert table.pvalues[name][m]["fisher"] == pytest.approx(got, abs=1e-6)
    assert table.pvalues["better"]["ndcg@10"]["t"] < 0.05  # the boosted system does differ


def test_fisher_is_reproducible_and_equals_ranx_as_plain_python(monkeypatch):
    pytest.importorskip("ranx")
    import ranx.statistical_tests  # noqa: F401  (loads the submodule)

    rng = np.random.default_rng(1)
    a = rng.random(60)
    b = a + rng.normal(0.02, 0.1, 60)
    p = fisher_randomization(b, a, permutations=500, seed=3)
    assert fisher_randomization(b, a, permutations=500, seed=3) == p
    assert fisher_randomization(a, b, permutations=500, seed=3) == p  # |difference of means|: symmetric
    module = sys.modules["ranx.statistical_tests.fisher_randomization_test"]
    monkeypatch.setattr(module, "permute", module.permute.py_func)  # all of ranx's code as Python + NumPy
    plain, _ = module.fisher_randomization_test.py_func(a, b, 500, 0.05, 3)
    assert p == pytest.approx(plain, abs=1e-12)


def test_identical_systems_and_holm_by_hand():
    a = np.array([0.1, 0.5, 0.5, 1.0])
    assert student_t(a, a.copy()) == 1.0
    assert fisher_randomization(a, a.copy(), permutations=100, seed=0) == 1.0
    # Holm by hand: sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    qrels, runs = synthetic_case(n_queries=12)
    table = compare_runs({"base": runs["base"], "copy": dict(runs["base"])}, qrels, permutations=200)
    assert table.wtl["copy"]["ndcg@10"] == (0, 12, 0)
    assert table.pvalues_holm["copy"]["map"] == {"t": 1.0, "fisher": 1.0}
    assert table.significant("copy", "map") == []
    assert table.same_as() == {"copy": "base"} and "copy scores exactly as base on every query and measure." in table.to_markdown()


def test_randomisation_p_of_zero_is_shown_as_a_bound():
    qrels, runs = synthetic_case()
    table = compare_runs(runs, qrels, baseline="base", metrics=["ndcg@10"], permutations=1000)
    assert table.pvalues["better"]["ndcg@10"]["fisher"] == 0.0
    row = next(line for line in table.to_markdown().splitlines() if line.startswith("| better | nDCG@10 |"))
    assert row.endswith("| < 1e-03 | < 2e-03 |")  # Holm over two systems: at most twice the bound


def test_holm_is_applied_across_systems():
    qrels, runs = synthetic_case()
    table = compare_runs(runs, qrels, baseline="base", metrics=["ndcg@10"], permutations=500)
    for t in ("t", "fisher"):
        raw = [table.pvalues[s]["ndcg@10"][t] for s in ("better", "noisy")]
        assert [table.pvalues_holm[s]["ndcg@10"][t] for s in ("better", "noisy")] == pytest.approx(holm(raw))
        assert min(table.pvalues_holm[s]["ndcg@10"][t] for s in ("better", "noisy")) == pytest.approx(min(1.0, 2 * min(raw)))


def test_outputs(tmp_path):
    qrels, runs = synthetic_case()
    runs = {"base": runs["base"], "better_one": runs["better"]}
    table = compare_runs(runs, qrels, metrics=["ndcg@10", "map"], permutations=500, dataset="toy", split="test")
    assert isinstance(table, ComparisonTable) and table.baseline == "base"
    md = table.to_markdown()
    assert "| base (baseline) |" in md and "| system | nDCG@10 | MAP | W/T/L nDCG@10 |" in md
    w, t, l = table.wtl["better_one"]["ndcg@10"]
    row = next(line for line in md.splitlines() if line.startswith("| better_one | 0."))
    assert row.endswith(f"| {w}/{t}/{l} |") and "†" in row and "‡" in row
    tex = table.to_latex()
    assert "$p < 0.05$" in tex and r"\begin{tabular}{lrrr}" in tex and r"better\_one" in tex and r"$^{\dagger\ddagger}$" in tex and tex.count(r"\\") >= 3
    d = table.to_dict(per_query=True)
    json.dumps(d)
    other = d["systems"][1]
    assert other["label"] == "better_one" and set(other["vs_baseline"]) == {"ndcg@10", "map"}
    assert other["vs_baseline"]["ndcg@10"]["wins"] == w and other["vs_baseline"]["ndcg@10"]["significant"] == ["t", "fisher"]
    assert len(other["per_query"]["map"]) == len(qrels) and "vs_baseline" not in d["systems"][0]


def test_bad_arguments():
    qrels, runs = synthetic_case(n_queries=5)
    with pytest.raises(OptionError, match="--baseline"):
        compare_runs(runs, qrels, baseline="nope")
    with pytest.raises(OptionError, match="at least two systems"):
        compare_runs({"base": runs["base"]}, qrels)
    with pytest.raises(OptionError, match="--tests"):
        compare_runs(runs, qrels, tests=["wilcoxon"])
    with pytest.raises(OptionError, match="--metrics"):
        compare_runs(runs, qrels, metrics=["ndcg@x"])


def test_parse_system(tmp_path):
    assert parse_system("bm25").kind == "retriever"
    assert parse_system("hybrid-rrf").kind == "pipeline"
    toml = tmp_path / "mine.toml"
    toml.write_text('[[retriever]]\nname = "bm25"\n')
    assert (parse_system(str(toml)).kind, parse_system(str(toml)).label) == ("pipeline", "mine")
    run = tmp_path / "bm25-old.test.trec"
    run.write_text("q1 Q0 d1 1 1.0 x\n")
    assert (parse_system(str(run)).kind, parse_system(str(run)).label) == ("run", "bm25-old")
    assert parse_system(f"old={run}").label == "old"
    with pytest.raises(OptionError, match="SYSTEM"):
        parse_system("no-such-thing")


def test_cli_compare_on_toy_dataset(toy_dataset, tmp_path):
    from braid.cli.main import main

    run = tmp_path / "reversed.trec"
    write_run({"q1": {"d1": 3.0, "d4": 1.0}, "q2": {"d2": 1.0}, "q3": {"d5": 2.0, "d3": 1.0}}, run, tag="reversed")
    args = ["compare", str(toy_dataset), "bm25", str(run), "--index-root", str(tmp_path / "idx"), "--permutations", "100", "-q"]
    res = CliRunner().invoke(main, args + ["--json", "--save", str(tmp_path / "out" / "cmp")])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["baseline"] == "bm25" and [s["label"] for s in d["systems"]] == ["bm25", "reversed"] and d["queries"] == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cmp.json", "cmp.md", "cmp.tex"]
    res = CliRunner().invoke(main, args + ["--baseline", "reversed", "--format", "latex"])
    assert res.exit_code == 0 and "reversed (baseline)" in res.stdout and r"\toprule" in res.stdout
    res = CliRunner().invoke(main, ["compare", str(toy_dataset), "bm25", "--index-root", str(tmp_path / "idx")])
    assert res.exit_code != 0 and "at least two systems" in res.output


def test_compare_is_lazy_at_top_level():
    code = (
        "import sys, braid; f = braid.compare; import braid.cli.main; "
        "print(f.__module__, sorted(m for m in ('torch','faiss','ray','ranx','statsmodels','matplotlib','numba') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "braid.retrieval.eval.compare []"
