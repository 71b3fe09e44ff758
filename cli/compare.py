"""Experiment commands: ``braid compare`` and ``braid eval --reproduce FILE``.

Registered by :mod:`braid.cli.main` (``main.add_command(compare)``; ``@reproduce_option`` on ``eval``).
Each parses options, calls one library function, prints. This module imports nothing from
``braid.cli.main`` at import time, so that either can be imported first.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import click

from braid.cli.common import command

from braid.data.errors import BraidError


def _log(quiet: bool):
    return (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))


@command("compare")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.argument("systems", nargs=-1, required=True)
@click.option("--baseline", "-b", default=None, help="The system the others are tested against (a label or spec; default the first SYSTEM).")
@click.option("--metrics", default="ndcg@10,recall@100,mrr@10,map", show_default=True, help="Comma-separated measures (as braid eval names them).")
@click.option("--split", default="test", show_default=True, help="Qrels split to evaluate.")
@click.option("-k", "k", type=int, default=1000, show_default=True, help="Hits per query for systems that search.")
@click.option("--index-root", type=click.Path(path_type=Path), default=Path("indexes"), show_default=True, help="Where the dataset's index is reused (or built with default settings: build it first with `braid index` for others).")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=None, help="Also write each system's TREC run to RUNS_DIR/NAME/LABEL.SPLIT.trec.")
@click.option("--tests", default="t,fisher", show_default=True, help="Paired tests: t (Student's), fisher (randomisation).")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Significance level, after Holm-Bonferroni correction.")
@click.option("--permutations", type=int, default=10_000, show_default=True, help="Random permutations of the randomisation test.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the randomisation test.")
@click.option("--keep-self-hits", is_flag=True, help="Do not drop hits whose doc id equals the query id (BEIR drops them).")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["markdown", "latex", "json"]), default="markdown", show_default=True, help="What to print.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--save", type=click.Path(path_type=Path), default=None, help="Also write PREFIX.md, PREFIX.tex and PREFIX.json.")
@click.option("--plot", "plot_dir", type=click.Path(path_type=Path), default=None, help="Write per-query difference and measure-at-depth plots (PNG) into this folder.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or log lines.")
def compare(dataset, systems, baseline, metrics, split, k, index_root, runs_dir, tests, alpha, permutations, seed, keep_self_hits, threads, fmt, as_json, save, plot_dir, quiet):
    """Compare SYSTEMS on DATASET against a baseline: measures, wins/ties/losses, paired tests.

    DATASET: a BEIR folder, beir/NAME or irds:ID. Each SYSTEM is a retriever (bm25, sparse, sparse-if,
    dense, ...), a pipeline (hybrid, hybrid-rrf, ... or a .toml file) or an existing TREC run file,
    optionally labelled LABEL=SPEC.
    """
    from braid.retrieval.eval.compare import compare as run_compare

    table = run_compare(
        dataset,
        list(systems),
        baseline=baseline,
        metrics=[m for m in metrics.split(",") if m.strip()],
        split=split,
        k=k,
        index_root=index_root,
        runs_dir=runs_dir,
        tests=[t for t in tests.split(",") if t.strip()],
        alpha=alpha,
        permutations=permutations,
        seed=seed,
        remove_self_hits=not keep_self_hits,
        threads=threads,
        progress=not quiet and sys.stderr.isatty(),
        log=_log(quiet),
    )
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        for suffix, text in ((".md", table.to_markdown()), (".tex", table.to_latex()), (".json", table.to_json() + "\n")):
            Path(f"{save}{suffix}").write_text(text, encoding="utf-8")
    if plot_dir is not None:
        from braid.retrieval.eval.plots import plot_comparison

        for path in plot_comparison(table, plot_dir):
            _log(quiet)(f"wrote {path}")
    fmt = "json" if as_json else fmt
    click.echo({"markdown": table.to_markdown, "latex": table.to_latex, "json": table.to_json}[fmt]().rstrip("\n"))


def run_braid(args: list[str]) -> str:
    """Run one ``braid`` command line in this process and return what it printed on stdout."""
    from braid.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main.main(args=list(args), prog_name="braid", standalone_mode=False)
        except click.ClickException as exc:
            raise BraidError(exc.format_message()) from None
    return out.getvalue()


def reproduce_option(fn):
    """``--reproduce FILE`` on ``braid eval``: run a golden file's commands (no DATASETS needed) and
    print each row with OK / differs; exit status 1 when a row differs or fails."""

    def callback(ctx: click.Context, param, value):
        if value is None or ctx.resilient_parsing:
            return
        from braid.retrieval.eval.golden import format_outcomes, reproduce

        def show(outcome):
            click.echo(f"{outcome.case.name} {outcome.case.dataset}: {outcome.status}", err=True)

        try:
            outcomes = reproduce(value, run_braid, log=lambda msg: click.echo(msg, err=True), on_outcome=show)
        except BraidError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(format_outcomes(outcomes))
        ctx.exit(0 if all(o.ok for o in outcomes) else 1)

    return click.option(
        "--reproduce",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        is_eager=True,
        expose_value=False,
        callback=callback,
        help="Run the commands of a golden file (2CR YAML or JSON: command + expected figures) and print each row with OK / differs.",
    )(fn)
