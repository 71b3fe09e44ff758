"""``braid``: index, search, evaluate, tune; and the commands of :mod:`braid.cli.serve`,
:mod:`braid.cli.train`, :mod:`braid.cli.scale` and :mod:`braid.cli.live` (add, delete, compact),
registered here explicitly.

Each command parses options, calls one library function, prints. Errors and exit statuses, and the
options several commands share, are in :mod:`braid.cli.common`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from braid import __version__
from braid.cli import live, scale, serve, train
from braid.cli.compare import compare, reproduce_option
from braid.cli.common import (
    EXIT_FAILURE,
    EXIT_STATUS_HELP,
    CommandError,
    POSITIVE_INT,
    build_options,
    evaluation_options,
    format_hits,
    group,
    index_root_option,
    json_option,
    k_option,
    logger,
    progress_enabled,
    quiet_option,
    retriever_options,
    runtime_option,
)


@group(epilog=EXIT_STATUS_HELP)
@click.version_option(__version__, prog_name="braid")
def main() -> None:
    """Braid: hybrid retrieval (BM25 + learned sparse + dense), fused."""


@main.command("index")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", "-o", "out", required=True, type=click.Path(path_type=Path), help="Index directory to create.")
@build_options
@quiet_option
def index_cmd(source, out, build, quiet):
    """Index SOURCE (a BEIR dataset folder, beir/NAME, irds:ID or a corpus JSONL[.gz] file) into --out."""
    from braid.data.datasets import resolve_dataset
    from braid.retrieval.build.builder import build_index

    source = resolve_dataset(source, progress=progress_enabled(quiet))
    manifest = build_index(source, out, build, log=logger(quiet))
    if not quiet:
        click.echo(f"indexed {manifest['num_docs']} documents into {out} ({', '.join(manifest['components'])})", err=True)


@main.command("search")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("query")
@k_option(10, "Number of hits.")
@retriever_options
@click.option("--fields/--no-fields", default=True, show_default=True, help="Show stored title and text.")
@click.option("--explain", is_flag=True, help="Per hit, each retriever's rank, normalised score and share of the fused score (contributions sum to it).")
@json_option("Print the hits as one JSON object.")
@click.option("--ray-address", default=None, help="Sharded index: search its shards with Ray actors on this cluster.")
@runtime_option
def search_cmd(index_dir, query, k, retriever, pipeline, knobs, fields, explain, as_json, ray_address, runtime):
    """Search INDEX_DIR for QUERY."""
    from braid.retrieval.scale.sharded import open_searcher

    # A directory with sharded.json opens as a ShardedSearcher (local worker processes, or Ray actors).
    searcher = open_searcher(index_dir, retriever=retriever, pipeline=pipeline, ray_address=ray_address, runtime=runtime)
    if explain:
        if not hasattr(searcher, "explain"):
            raise click.UsageError("--explain is not available for sharded indexes")
        got = searcher.explain(query, k=k, fields=fields, **knobs)
        hits = got["hits"]
    else:
        hits = searcher.search(query, k=k, fields=fields, **knobs)
    if as_json:
        recipe = searcher.recipe(None, **knobs)
        out = {"query": query, "recipe": recipe, "hits": hits}
        if explain:
            out.update(fusion=got["fusion"], lists=got["lists"])
        click.echo(json.dumps(out, ensure_ascii=False))
        return
    if not hits:
        click.echo("no hits")
    for line in format_hits(hits, fields):
        click.echo(line)
    if explain and hits:
        click.echo("")
        for hit in hits:
            click.echo(f"{hit['rank']:>3}  {explain_line(hit['explain'])}")


def explain_line(ex: dict) -> str:
    """One hit's explanation on one line: ``bm25 #3 norm=1.2040 +0.9030 (41.0%) | dense absent fill=... = fused``."""
    def num(x, spec):
        return "-" if x is None else format(x, spec)

    parts = []
    for p in ex["retrievers"]:
        where = f"#{p['rank']} norm={num(p['normalized'], '.4f')}" if p["rank"] is not None else f"absent fill={num(p['fill'], '.4f')}"
        parts.append(f"{p['name']} {where} {p['contribution']:+.4f} ({num(None if p['share'] is None else 100 * p['share'], '.1f')}%)")
    return " | ".join(parts) + f"  = {num(ex['fused_score'], '.4f')}"


@main.command("verify")
@click.argument("index_dir", type=click.Path(path_type=Path))
def verify_cmd(index_dir):
    """Re-read every file of INDEX_DIR (or of each shard) and check it against the manifest's checksums.

    Prints one line per missing, resized, changed or extra file; exit status 1 if there is any.
    """
    from braid.retrieval.scale.sharded import verify_index_dir

    problems, files = verify_index_dir(index_dir)
    for problem in problems:
        click.echo(f"{problem.kind}: {index_dir / problem.path}: {problem.detail}")
    if problems:
        raise CommandError(f"{index_dir}: {len(problems)} problem{'s' if len(problems) > 1 else ''} in {files} recorded files", EXIT_FAILURE)
    click.echo(f"{index_dir}: {files} files intact")


@main.command("eval")
@click.argument("datasets", nargs=-1, required=True, type=click.Path(path_type=Path))
@index_root_option
@evaluation_options()
@click.option("--threads", type=POSITIVE_INT, default=1, show_default=True, help="Search threads.")
@click.option("--rebuild", is_flag=True, help="Rebuild indexes even if they exist.")
@retriever_options
@build_options
@json_option("Print exactly one JSON object {dataset: {metric: value}} on stdout.")
@quiet_option
@reproduce_option
def eval_cmd(datasets, index_root, evaluation, threads, rebuild, retriever, pipeline, knobs, build, as_json, quiet):
    """Evaluate on one or more DATASETS: BEIR-layout folders, beir/NAME or irds:ID (building or reusing their indexes)."""
    from braid.data.datasets import resolve_dataset
    from braid.retrieval.eval.evaluate import format_table
    from braid.retrieval.eval.experiment import evaluate_datasets

    datasets = [resolve_dataset(d, progress=progress_enabled(quiet)) for d in datasets]
    results = evaluate_datasets(
        datasets,
        index_root=index_root,
        build=build,
        rebuild=rebuild,
        retriever=retriever,
        pipeline=pipeline,
        knobs=knobs,
        threads=threads,
        progress=progress_enabled(quiet),
        log=logger(quiet),
        **evaluation,
    )
    click.echo(json.dumps(results) if as_json else format_table(results, evaluation["metrics"]))


@main.command("tune")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Pipeline TOML to write.")
@click.option("--split", default="train", show_default=True, help="Split to tune on.")
@click.option("--report-split", default="test", show_default=True, help="Split that will be reported (tuning on it is refused).")
@click.option("--metric", default="ndcg@10", show_default=True, help="The measure to maximise.")
@click.option("--depth", type=POSITIVE_INT, default=1000, show_default=True, help="Candidates per retriever.")
@click.option("--no-prf", is_flag=True, help="Do not try pseudo-relevance feedback.")
@click.option("--no-rescore", is_flag=True, help="Do not try rescoring stages.")
@index_root_option
@build_options
@quiet_option
def tune_cmd(dataset, output, split, report_split, metric, depth, no_prf, no_rescore, index_root, build, quiet):
    """Tune fusion / PRF / rescoring on DATASET's --split and write the pipeline to --output."""
    from braid.data.datasets import resolve_dataset
    from braid.retrieval.eval.tune import tune_dataset

    report = tune_dataset(
        resolve_dataset(dataset, progress=progress_enabled(quiet)),
        output,
        index_root=index_root,
        build=build,
        split=split,
        report_split=report_split,
        metric=metric,
        depth=depth,
        try_prf=not no_prf,
        try_rescore=not no_rescore,
        log=logger(quiet),
    )
    click.echo(json.dumps(report))


# The commands in their own modules, registered explicitly: a module that fails to import fails
# `braid` itself, it never silently drops its command. Their heavy dependencies (torch, ray,
# fastapi, uvicorn) load inside the commands, so importing the modules is cheap.
main.add_command(compare)
main.add_command(live.add_cmd)
main.add_command(live.delete_cmd)
main.add_command(live.compact_cmd)
main.add_command(serve.serve_cmd)
main.add_command(serve.mcp_cmd)
main.add_command(train.train)
main.add_command(scale.shard_cmd)
main.add_command(scale.milvus_group)


if __name__ == "__main__":
    main()
