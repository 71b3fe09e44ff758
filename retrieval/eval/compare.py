"""Experiments: several systems on one collection, measured, tested against a baseline, tabulated.

A system is a retriever name (``bm25``, ``sparse``, ...), a pipeline (a built-in name such as
``hybrid`` or a TOML file) or an existing TREC run file, optionally labelled ``LABEL=SPEC``. Systems
that search run on the index ``braid eval`` builds and reuses (``INDEX_ROOT/NAME``). Measures come from
:func:`braid.retrieval.eval.evaluate.evaluate` (pytrec_eval, BEIR conventions); the paired tests and the
Holm-Bonferroni correction across the systems compared with the baseline from
:mod:`braid.retrieval.eval.significance`. :func:`compare_runs` is the pure part (runs in, table out);
:func:`compare` produces the runs first.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from braid.data.errors import OptionError
from braid.data.runs import Run
from braid.retrieval.eval.evaluate import check_metrics, evaluate
from braid.retrieval.eval.significance import TEST_NAMES, TESTS, check_tests, holm

DEFAULT_COMPARE_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map")
MARKS = {"t": "†", "fisher": "‡"}
LATEX_MARKS = {"t": r"\dagger", "fisher": r"\ddagger"}


@dataclass(frozen=True)
class System:
    """One system of a comparison: ``kind`` is ``retriever``, ``pipeline`` or ``run``."""

    label: str
    kind: str
    spec: str


def parse_system(text: str) -> System:
    """``[LABEL=]SPEC``: a retriever name, a built-in pipeline, a pipeline TOML file or a TREC run file."""
    from braid.retrieval import retrievers as registry
    from braid.retrieval.pipeline.spec import BUILTIN

    text = str(text)
    label, sep, spec = text.partition("=")
    if not sep or not label or "/" in label:
        label, spec = "", text
    if spec in registry.RETRIEVERS:
        return System(label or spec, "retriever", spec)
    if spec in BUILTIN:
        return System(label or spec, "pipeline", spec)
    path = Path(spec)
    if path.is_file():
        if path.suffix == ".toml":
            return System(label or path.stem, "pipeline", str(path))
        return System(label or path.name.split(".")[0], "run", str(path))
    raise OptionError(
        "SYSTEM",
        text,
        "a retriever (" + ", ".join(registry.RETRIEVERS) + "), a pipeline (" + ", ".join(BUILTIN) + " or a .toml file) or an existing TREC run file",
    )


def metric_label(metric: str) -> str:
    """Display name: ndcg@10 -> nDCG@10, recall@100 -> R@100, mrr@10 -> MRR@10, map -> MAP."""
    name, sep, cut = metric.partition("@")
    shown = {"ndcg": "nDCG", "recall": "R", "mrr": "MRR", "map": "MAP", "p": "P"}.get(name, name)
    return shown + sep + cut


@dataclass
class ComparisonTable:
    """Means, per-query outcomes and tests of every system against ``baseline``.

    ``per_query[label][metric]``: float64 array over ``query_ids`` (the judged queries, sorted).
    ``wtl[label][metric]``: (wins, ties, losses) against the baseline. ``pvalues`` / ``pvalues_holm``:
    ``[label][metric][test]``, raw and Holm-adjusted over the non-baseline systems (per metric and test).
    ``runs`` and ``qrels`` are kept for plots; they are not part of :meth:`to_dict`.
    """

    dataset: str
    split: str
    metrics: list[str]
    systems: list[System]
    baseline: str
    query_ids: list[str]
    mean: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, np.ndarray]]
    wtl: dict[str, dict[str, tuple[int, int, int]]]
    pvalues: dict[str, dict[str, dict[str, float]]]
    pvalues_holm: dict[str, dict[str, dict[str, float]]]
    tests: list[str]
    alpha: float = 0.05
    permutations: int = 10_000
    seed: int = 42
    ignore_identical_ids: bool = True
    runs: dict[str, Run] = field(default_factory=dict, repr=False)
    qrels: dict = field(default_factory=dict, repr=False)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.systems]

    @property
    def others(self) -> list[str]:
        return [s.label for s in self.systems if s.label != self.baseline]

    def significant(self, label: str, metric: str) -> list[str]:
        """Tests by which ``label`` differs from the baseline on ``metric`` (Holm-adjusted p < alpha)."""
        if label == self.baseline:
            return []
        return [t for t in self.tests if self.pvalues_holm[label][metric][t] < self.alpha]

    def same_as(self) -> dict[str, str]:
        """Systems whose per-query scores equal an earlier system's on every measure: ``{label: earlier}``."""
        out: dict[str, str] = {}
        labels = self.labels
        for i, label in enumerate(labels):
            for earlier in labels[:i]:
                if earlier not in out and all(np.array_equal(self.per_query[label][m], self.per_query[earlier][m]) for m in self.metrics):
                    out[label] = earlier
                    break
        return out

    def legend(self) -> str:
        tests = " / ".join(f"{MARKS[t]} {TEST_NAMES[t]}" for t in self.tests)
        extra = f" ({self.permutations:,} permutations, seed {self.seed})" if "fisher" in self.tests else ""
        n = len(self.others)
        return (
            f"Marks: differs from the baseline ({self.baseline}) by {tests}{extra}, p < {self.alpha:g} after Holm-Bonferroni "
            f"correction over the {n} system{'s' if n != 1 else ''} compared with it (per measure and test). "
            f"W/T/L: queries where the system scores above / equal to / below the baseline."
        )

    # ------------------------------------------------------------------ output
    def to_dict(self, per_query: bool = False) -> dict:
        systems = []
        for s in self.systems:
            entry: dict = {"label": s.label, "kind": s.kind, "spec": s.spec, "mean": dict(self.mean[s.label])}
            if s.label != self.baseline:
                entry["vs_baseline"] = {
                    m: {
                        "delta": self.mean[s.label][m] - self.mean[self.baseline][m],
                        "wins": self.wtl[s.label][m][0],
                        "ties": self.wtl[s.label][m][1],
                        "losses": self.wtl[s.label][m][2],
                        "p": dict(self.pvalues[s.label][m]),
                        "p_holm": dict(self.pvalues_holm[s.label][m]),
                        "significant": self.significant(s.label, m),
                    }
                    for m in self.metrics
                }
            if per_query:
                entry["per_query"] = {m: dict(zip(self.query_ids, map(float, self.per_query[s.label][m]))) for m in self.metrics}
            systems.append(entry)
        return {
            "dataset": self.dataset,
            "split": self.split,
            "queries": len(self.query_ids),
            "baseline": self.baseline,
            "metrics": list(self.metrics),
            "tests": {t: TEST_NAMES[t] for t in self.tests},
            "correction": "holm",
            "alpha": self.alpha,
            "permutations": self.permutations,
            "seed": self.seed,
            "systems": systems,
        }

    def to_json(self, per_query: bool = False) -> str:
        return json.dumps(self.to_dict(per_query=per_query), indent=1)

    def _cell(self, label: str, metric: str, marks: Mapping[str, str]) -> str:
        return f"{self.mean[label][metric]:.4f}" + "".join(marks[t] for t in self.significant(label, metric))

    def to_markdown(self, details: bool = True) -> str:
        """The table of measures (marks for significance, W/T/L on the first measure), then, with
        ``details``, each measure's difference, W/T/L and p-values against the baseline."""
        first = self.metrics[0]
        head = ["system"] + [metric_label(m) for m in self.metrics] + [f"W/T/L {metric_label(first)}"]
        lines = [
            f"**{self.dataset}**, split {self.split}, {len(self.query_ids)} judged queries; baseline **{self.baseline}**.",
            "",
            "| " + " | ".join(head) + " |",
            "|---|" + "---:|" * (len(head) - 1),
        ]
        for label in self.labels:
            name = f"{label} (baseline)" if label == self.baseline else label
            cells = [self._cell(label, m, MARKS) for m in self.metrics]
            w, t, l = self.wtl[label][first] if label != self.baseline else ("", "", "")
            lines.append("| " + " | ".join([name] + cells + ["—" if label == self.baseline else f"{w}/{t}/{l}"]) + " |")
        lines += ["", self.legend()]
        same = self.same_as()
        if same:
            lines += [""] + [f"{label} scores exactly as {earlier} on every query and measure." for label, earlier in same.items()]
        if details and self.others:
            head = ["system", "measure", "Δ", "W/T/L"]
            for t in self.tests:
                head += [f"p ({t})", f"p ({t}, Holm)"]
            lines += ["", "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
            for label in self.others:
                for m in self.metrics:
                    delta = self.mean[label][m] - self.mean[self.baseline][m]
                    w, t_, l = self.wtl[label][m]
                    cells = [label, metric_label(m), f"{delta:+.4f}", f"{w}/{t_}/{l}"]
                    for t in self.tests:
                        # a randomisation p of 0 is below 1/permutations; Holm multiplies it by at most len(others)
                        low = 1 / self.permutations if t == "fisher" else None
                        cells += [_p(self.pvalues[label][m][t], low), _p(self.pvalues_holm[label][m][t], low and low * len(self.others))]
                    lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_latex(self, caption: str | None = None, label: str = "tab:compare") -> str:
        """A booktabs table of the measures, marks as superscript daggers, W/T/L on the first measure."""
        first = self.metrics[0]
        cols = "l" + "r" * (len(self.metrics) + 1)
        head = ["System"] + [_tex(metric_label(m)) for m in self.metrics] + [f"W/T/L {_tex(metric_label(first))}"]
        legend = self.legend().replace("†", "$^\\dagger$").replace("‡", "$^\\ddagger$").replace(f"p < {self.alpha:g}", f"$p < {self.alpha:g}$")
        caption = caption or f"{_tex(self.dataset)} ({_tex(self.split)}, {len(self.query_ids)} queries). {_tex(legend, keep_math=True)}"
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{caption}}}",
            rf"\label{{{label}}}",
            rf"\begin{{tabular}}{{{cols}}}",
            r"\toprule",
            " & ".join(head) + r" \\",
            r"\midrule",
        ]
        for name in self.labels:
            shown = _tex(name) + (" (baseline)" if name == self.baseline else "")
            cells = []
            for m in self.metrics:
                sig = self.significant(name, m)
                mark = "$^{" + "".join(LATEX_MARKS[t] for t in sig) + "}$" if sig else ""
                cells.append(f"{self.mean[name][m]:.4f}{mark}")
            wtl = "--" if name == self.baseline else "/".join(map(str, self.wtl[name][first]))
            lines.append(" & ".join([shown] + cells + [wtl]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.to_markdown()


def _p(p: float, bound: float | None = None) -> str:
    """A p-value for a table; a randomisation p of 0 (no permutation reached the observed difference)
    shows as below ``bound``."""
    if math.isnan(p):
        return "nan"
    if p == 0 and bound:
        return f"< {bound:.0e}"
    return f"{p:.2e}" if 0 < p < 1e-3 else f"{p:.4f}"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str, keep_math: bool = False) -> str:
    """Escape LaTeX's special characters (``keep_math``: leave ``$...$``, ``\\``, ``^``, braces alone)."""
    keep = set("$\\^{}") if keep_math else set()
    return "".join(_TEX_SPECIAL[c] if c in _TEX_SPECIAL and c not in keep else c for c in text)


# ---------------------------------------------------------------------------------------------- library
DEPTH_MEASURES = {"recall": ("recall", "recall_{k}"), "ndcg": ("ndcg_cut", "ndcg_cut_{k}")}


def measure_at_depths(
    runs: Mapping[str, Run],
    qrels: Mapping[str, Mapping[str, int]],
    ks: Sequence[int],
    measures: Sequence[str] = ("recall", "ndcg"),
    ignore_identical_ids: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """``{label: {measure: means}}``, ``means`` float64 of shape ``(len(ks),)``: recall@k and nDCG@k
    (trec_eval's ``recall.k`` / ``ndcg_cut.k`` through pytrec_eval) averaged over the judged queries,
    a query a run misses counting 0, as :func:`~braid.retrieval.eval.evaluate.evaluate` does."""
    import pytrec_eval

    from braid.retrieval.eval.evaluate import drop_self_hits

    bad = [m for m in measures if m not in DEPTH_MEASURES]
    if bad:
        raise OptionError("measures", bad, "known: " + ", ".join(DEPTH_MEASURES))
    ks = [int(k) for k in ks]
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items() if docs}
    names = {DEPTH_MEASURES[m][0] + "." + ",".join(map(str, ks)) for m in measures}
    evaluator = pytrec_eval.RelevanceEvaluator(judged, names)
    out: dict[str, dict[str, np.ndarray]] = {}
    for label, run in runs.items():
        run = drop_self_hits(run) if ignore_identical_ids else run
        scored = evaluator.evaluate({q: {d: float(s) for d, s in run[q].items()} for q in judged if run.get(q)})
        out[label] = {
            m: np.array([sum(scored.get(q, {}).get(DEPTH_MEASURES[m][1].format(k=k), 0.0) for q in judged) / len(judged) for k in ks])
            for m in measures
        }
    return out


def compare_runs(
    runs: Mapping[str, Run],
    qrels: Mapping[str, Mapping[str, int]],
    baseline: str | None = None,
    metrics: Sequence[str] = DEFAULT_COMPARE_METRICS,
    tests: Sequence[str] = ("t", "fisher"),
    alpha: float = 0.05,
    permutations: int = 10_000,
    seed: int = 42,
    ignore_identical_ids: bool = True,
    dataset: str = "",
    split: str = "",
    systems: Sequence[System] | None = None,
) -> ComparisonTable:
    """Compare ``runs`` (``{label: run}``, in display order) against the run ``baseline`` (default: the first).

    Every judged query of ``qrels`` is scored for every run (a query a run misses scores 0), so the
    tests are paired over the same queries.
    """
    labels = list(runs)
    if len(labels) < 2:
        raise OptionError("SYSTEM", labels, "at least two systems to compare (a baseline and another)")
    baseline = labels[0] if baseline is None else baseline
    if baseline not in runs:
        raise OptionError("--baseline", baseline, "one of the systems compared: " + ", ".join(labels))
    metrics = check_metrics(metrics)
    tests = check_tests(tests)
    if not 0 < alpha < 1:
        raise OptionError("--alpha", alpha, "a significance level between 0 and 1")
    judged = sorted(q for q, docs in qrels.items() if docs)
    per_query: dict[str, dict[str, np.ndarray]] = {}
    mean: dict[str, dict[str, float]] = {}
    for label in labels:
        mean[label], scores = evaluate(runs[label], qrels, metrics, ignore_identical_ids=ignore_identical_ids)
        per_query[label] = {m: np.array([scores[q][m] for q in judged], dtype=np.float64) for m in metrics}
    others = [label for label in labels if label != baseline]
    wtl: dict[str, dict[str, tuple[int, int, int]]] = {}
    pvalues: dict[str, dict[str, dict[str, float]]] = {label: {m: {} for m in metrics} for label in others}
    adjusted: dict[str, dict[str, dict[str, float]]] = {label: {m: {} for m in metrics} for label in others}
    for label in others:
        wtl[label] = {}
        for m in metrics:
            a, b = per_query[label][m], per_query[baseline][m]
            wtl[label][m] = (int(np.sum(a > b)), int(np.sum(a == b)), int(np.sum(a < b)))
            for t in tests:
                pvalues[label][m][t] = TESTS[t](a, b, permutations=permutations, seed=seed)
    for m in metrics:
        for t in tests:
            for label, p in zip(others, holm([pvalues[label][m][t] for label in others])):
                adjusted[label][m][t] = p
    if systems is None:
        systems = [System(label, "run", label) for label in labels]
    return ComparisonTable(
        dataset=dataset,
        split=split,
        metrics=metrics,
        systems=list(systems),
        baseline=baseline,
        query_ids=judged,
        mean=mean,
        per_query=per_query,
        wtl=wtl,
        pvalues=pvalues,
        pvalues_holm=adjusted,
        tests=tests,
        alpha=alpha,
        permutations=permutations,
        seed=seed,
        ignore_identical_ids=ignore_identical_ids,
        runs=dict(runs),
        qrels=dict(qrels),
    )


def compare(
    dataset: str | Path,
    systems: Sequence[str | System],
    baseline: str | None = None,
    *,
    metrics: Sequence[str] = DEFAULT_COMPARE_METRICS,
    split: str = "test",
    k: int = 1000,
    index_root: str | Path = "indexes",
    runs_dir: str | Path | None = None,
    build=None,
    tests: Sequence[str] = ("t", "fisher"),
    alpha: float = 0.05,
    permutations: int = 10_000,
    seed: int = 42,
    remove_self_hits: bool = True,
    threads: int = 1,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> ComparisonTable:
    """Run every system on ``dataset`` (a folder, ``beir/NAME`` or ``irds:ID``) and compare them.

    ``systems``: specs as :func:`parse_system` reads them (or :class:`System`). ``baseline``: a label or
    spec among them, or another spec (then compared first); default the first system. Systems that
    search share the index ``INDEX_ROOT/NAME``, built with ``build`` (a
    :class:`~braid.retrieval.build.builder.BuildOptions`, default settings when None) if it is missing
    or lacks a component. ``runs_dir``: write each run as ``RUNS_DIR/NAME/LABEL.SPLIT.trec``.

    >>> table = compare("beir/scifact", ["bm25", "dense", "hybrid"], baseline="bm25")  # doctest: +SKIP
    >>> print(table.to_markdown())  # doctest: +SKIP
    """
    from braid.data.beir import BeirDataset
    from braid.data.datasets import resolve_dataset
    from braid.data.runs import read_run, write_run

    log = log or (lambda msg: None)
    parsed = [s if isinstance(s, System) else parse_system(s) for s in systems]
    if baseline is not None and baseline not in [s.label for s in parsed]:
        by_spec = [s for s in parsed if s.spec == str(baseline)]
        if by_spec:
            baseline = by_spec[0].label
        else:
            extra = parse_system(baseline)
            parsed.insert(0, extra)
            baseline = extra.label
    seen: set[str] = set()
    for s in parsed:
        if s.label in seen:
            raise OptionError("SYSTEM", s.label, "each system once (label a second one LABEL=SPEC)")
        seen.add(s.label)
    ds = BeirDataset(resolve_dataset(dataset, progress=progress))
    qrels = ds.qrels(split)
    queries = ds.queries(split)
    runs: dict[str, Run] = {}
    searching = [s for s in parsed if s.kind != "run"]
    searcher = _open_searcher(ds, searching, Path(index_root), build, log) if searching else None
    for s in parsed:
        if s.kind == "run":
            runs[s.label] = read_run(s.spec)
            log(f"{ds.name}: {s.label}: read {s.spec}")
            continue
        from braid.retrieval.eval.experiment import search_run

        runs[s.label], _ = search_run(
            searcher, queries, k=k, retriever=s.spec, threads=threads, exclude_self=remove_self_hits, progress=progress, desc=f"{ds.name} {s.label}"
        )
        if runs_dir is not None:
            write_run(runs[s.label], Path(runs_dir) / ds.name / f"{s.label}.{split}.trec", tag=s.label.replace(" ", "_"))
        log(f"{ds.name}: {s.label}: searched {len(queries)} queries")
    return compare_runs(
        runs,
        qrels,
        baseline=baseline,
        metrics=metrics,
        tests=tests,
        alpha=alpha,
        permutations=permutations,
        seed=seed,
        ignore_identical_ids=remove_self_hits,
        dataset=ds.name,
        split=split,
        systems=parsed,
    )


def _open_searcher(ds, systems: Sequence[System], index_root: Path, build, log):
    """The searcher of ``ds``'s index under ``index_root``, built or completed for ``systems`` first."""
    from braid.retrieval import retrievers as registry
    from braid.retrieval.build.builder import BuildOptions
    from braid.retrieval.eval.experiment import ensure_index
    from braid.retrieval.pipeline.spec import pipeline_components
    from braid.retrieval.scale.sharded import is_sharded_index, open_searcher
    from braid.retrieval.searcher import Searcher

    index_dir = index_root / ds.name
    build = build or BuildOptions(progress=False)
    if is_sharded_index(index_dir):
        return open_searcher(index_dir, processes=0, runtime=build.runtime)
    need: set[str] = set()
    for s in systems:
        # a built-in pipeline fuses whatever the index has: it needs no component of its own
        need |= {registry.get(s.spec).component} if s.kind == "retriever" else pipeline_components(s.spec)
    ensure_index(ds, index_dir, need or set(build.retrievers), build, False, log)
    return Searcher(index_dir, runtime=build.runtime)
