"""``braid``: index, search, evaluate. Each command parses options, calls one library function, prints."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from braid import __version__
from braid.cli.compare import compare, reproduce_option
from braid.data.errors import BraidError


def _fail_cleanly(fn):
    """Turn the library's user-facing errors into a one-line message and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BraidError as exc:
            raise click.ClickException(str(exc)) from None
        except FileNotFoundError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def quiet_option(fn):
    return click.option("--quiet", "-q", is_flag=True, help="No progress bars or log lines.")(fn)


def retriever_options(fn):
    """``--retriever``, ``--pipeline`` and every query knob of the retriever registry; the knobs given
    reach the command as one ``knobs`` dict (validated by the library against what is searched)."""
    from braid.retrieval import retrievers as registry

    names = list(registry.KNOBS)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        knobs = {name: kwargs.pop(name) for name in names}
        return fn(*args, knobs={k: v for k, v in knobs.items() if v is not None}, **kwargs)

    for name, knob in reversed(registry.KNOBS.items()):
        if knob.kind is bool:
            wrapper = click.option(knob.flag, name, is_flag=True, default=None, help=knob.help)(wrapper)
        else:
            wrapper = click.option(knob.flag, name, type=knob.kind, default=None, help=f"{knob.help} ({knob.describe()})")(wrapper)
    wrapper = click.option(
        "--pipeline",
        "pipeline",
        default=None,
        help="A fusion pipeline: a TOML file or a built-in name (hybrid, hybrid-rrf, ...).",
    )(wrapper)
    wrapper = click.option(
        "--retriever",
        "-r",
        default=None,
        help="One of: " + ", ".join(registry.RETRIEVERS) + ". Default: hybrid fusion when the index has several.",
    )(wrapper)
    return wrapper


def build_options(fn):
    fn = click.option(
        "--retrievers",
        default="bm25",
        show_default=True,
        help="Comma-separated components to build: bm25, sparse, dense, pyserini.",
    )(fn)
    fn = click.option("--overwrite", is_flag=True, help="Replace an existing index directory (atomically).")(fn)
    fn = click.option("--skip-bad", is_flag=True, help="Skip malformed/duplicate/empty records and report how many.")(fn)
    fn = click.option("--allow-empty", is_flag=True, help="Index documents whose title and text are empty.")(fn)
    fn = click.option("--sparse-model", default=None, help="SPLADE model: folder or hub id (default rasyosef/splade-tiny).")(fn)
    fn = click.option("--sparse-vectors", type=click.Path(path_type=Path), default=None, help="Pre-encoded document vectors (JSONL {id, vector} or .npz) instead of a model.")(fn)
    fn = click.option("--dense-model", default=None, help="Bi-encoder: folder or hub id (default sentence-transformers/all-MiniLM-L6-v2).")(fn)
    fn = click.option("--dense-vectors", type=click.Path(path_type=Path), default=None, help="Pre-encoded document embeddings (.npy, corpus order) instead of encoding.")(fn)
    fn = click.option("--dense-index", default="flat", show_default=True, help="FAISS index type: flat, hnsw, ivf, ivfpq, pq, opq; pq/opq/ivfpq take ':M' sub-quantizers (e.g. pq:96 = 96 bytes per vector).")(fn)
    fn = click.option("--batch-size", type=int, default=32, show_default=True, help="Encoding batch size.")(fn)
    fn = click.option("--device", default="auto", show_default=True, help="Encoding device: auto, cpu, cuda.")(fn)
    return fn


def _parse_dense_index(value: str) -> dict:
    """``KIND`` or ``KIND:M`` (product quantizers: M sub-quantizers of 8 bits = M bytes per vector)."""
    from braid.data.errors import OptionError

    kind, sep, m = value.partition(":")
    if not sep:
        return {"kind": kind}
    if kind not in ("pq", "opq", "ivfpq") or not m.isdigit() or int(m) < 1:
        raise OptionError("--dense-index", value, "KIND or pq:M / opq:M / ivfpq:M with M a positive integer")
    return {"kind": kind, "m": int(m)}


def _make_build_options(retrievers, overwrite, skip_bad, allow_empty, sparse_model, sparse_vectors, dense_model, dense_vectors, dense_index, batch_size, device, quiet):
    from braid.retrieval.build.builder import BuildOptions

    names = tuple(r.strip() for r in retrievers.split(",") if r.strip())
    return BuildOptions(
        retrievers=names,
        overwrite=overwrite,
        skip_bad=skip_bad,
        allow_empty=allow_empty,
        progress=_progress(quiet),
        sparse_model=sparse_model,
        sparse_vectors=sparse_vectors,
        dense_model=dense_model,
        dense_vectors=dense_vectors,
        dense_index=_parse_dense_index(dense_index),
        batch_size=batch_size,
        device=device,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="braid")
def main() -> None:
    """Braid: hybrid retrieval (BM25 + learned sparse + dense), fused."""


@main.command("index")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", "-o", "out", required=True, type=click.Path(path_type=Path), help="Index directory to create.")
@build_options
@quiet_option
@_fail_cleanly
def index_cmd(source, out, retrievers, overwrite, skip_bad, allow_empty, sparse_model, sparse_vectors, dense_model, dense_vectors, dense_index, batch_size, device, quiet):
    """Index SOURCE (a BEIR dataset folder, beir/NAME, irds:ID or a corpus JSONL[.gz] file) into --out."""
    from braid.data.datasets import resolve_dataset
    from braid.retrieval.build.builder import build_index

    source = resolve_dataset(source, progress=_progress(quiet))
    options = _make_build_options(retrievers, overwrite, skip_bad, allow_empty, sparse_model, sparse_vectors, dense_model, dense_vectors, dense_index, batch_size, device, quiet)
    log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    manifest = build_index(source, out, options, log=log)
    if not quiet:
        click.echo(f"indexed {manifest['num_docs']} documents into {out} ({', '.join(manifest['components'])})", err=True)


@main.command("search")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("query")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of hits.")
@retriever_options
@click.option("--fields/--no-fields", default=True, show_default=True, help="Show stored title and text.")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as one JSON object.")
@click.option("--ray-address", default=None, help="Sharded index: search its shards with Ray actors on this cluster.")
@_fail_cleanly
def search_cmd(index_dir, query, k, retriever, pipeline, knobs, fields, as_json, ray_address):
    """Search INDEX_DIR for QUERY."""
    from braid.retrieval.scale.sharded import open_searcher

    # A directory with sharded.json opens as a ShardedSearcher (local worker processes, or Ray actors).
    searcher = open_searcher(index_dir, retriever=retriever, pipeline=pipeline, ray_address=ray_address)
    hits = searcher.search(query, k=k, fields=fields, **knobs)
    if as_json:
        recipe = searcher.recipe(None, **knobs)
        click.echo(json.dumps({"query": query, "recipe": recipe, "hits": hits}, ensure_ascii=False))
        return
    if not hits:
        click.echo("no hits")
    for hit in hits:
        click.echo(f"{hit['rank']:>3}  {hit['score']:10.4f}  {hit['id']}  {hit.get('title', '')[:80]}")
        if fields and hit.get("text"):
            click.echo(f"     {hit['text'][:160]}")


@main.command("eval")
@click.argument("datasets", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--index-root", type=click.Path(path_type=Path), default=Path("indexes"), show_default=True, help="Where per-dataset indexes are built or reused.")
@click.option("--split", default="test", show_default=True, help="Qrels split to evaluate.")
@click.option("-k", "k", type=int, default=1000, show_default=True, help="Hits per query.")
@click.option("--metrics", default="ndcg@10,recall@100,recall@1000,mrr@10,map", show_default=True)
@click.option("--keep-self-hits", is_flag=True, help="Do not drop hits whose doc id equals the query id (BEIR drops them).")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True, help="Where TREC runs and metrics are written.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--rebuild", is_flag=True, help="Rebuild indexes even if they exist.")
@retriever_options
@build_options
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object {dataset: {metric: value}} on stdout.")
@quiet_option
@reproduce_option
@_fail_cleanly
def eval_cmd(datasets, index_root, split, k, metrics, keep_self_hits, runs_dir, threads, rebuild, retriever, pipeline, knobs, retrievers, overwrite, skip_bad, allow_empty, sparse_model, sparse_vectors, dense_model, dense_vectors, dense_index, batch_size, device, as_json, quiet):
    """Evaluate on one or more DATASETS: BEIR-layout folders, beir/NAME or irds:ID (building or reusing their indexes)."""
    from braid.data.datasets import resolve_dataset
    from braid.retrieval.eval.evaluate import check_metrics, format_table
    from braid.retrieval.eval.experiment import evaluate_datasets

    datasets = [resolve_dataset(d, progress=_progress(quiet)) for d in datasets]
    metric_names = check_metrics(m for m in metrics.split(",") if m.strip())
    options = _make_build_options(retrievers, overwrite or rebuild, skip_bad, allow_empty, sparse_model, sparse_vectors, dense_model, dense_vectors, dense_index, batch_size, device, quiet)
    log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    results = evaluate_datasets(
        datasets,
        index_root=index_root,
        build=options,
        rebuild=rebuild,
        split=split,
        k=k,
        metrics=metric_names,
        retriever=retriever,
        pipeline=pipeline,
        knobs=knobs,
        remove_self_hits=not keep_self_hits,
        runs_dir=runs_dir,
        threads=threads,
        progress=_progress(quiet),
        log=log,
    )
    if as_json:
        click.echo(json.dumps(results))
    else:
        click.echo(format_table(results, metric_names))


@main.command("tune")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Pipeline TOML to write.")
@click.option("--split", default="train", show_default=True, help="Split to tune on.")
@click.option("--report-split", default="test", show_default=True, help="Split that will be reported (tuning on it is refused).")
@click.option("--metric", default="ndcg@10", show_default=True)
@click.option("--depth", type=int, default=1000, show_default=True, help="Candidates per retriever.")
@click.option("--index-root", type=click.Path(path_type=Path), default=Path("indexes"), show_default=True)
@click.option("--no-prf", is_flag=True, help="Do not try pseudo-relevance feedback.")
@click.option("--no-rescore", is_flag=True, help="Do not try rescoring stages.")
@build_options
@quiet_option
@_fail_cleanly
def tune_cmd(dataset, output, split, report_split, metric, depth, index_root, no_prf, no_rescore, retrievers, overwrite, skip_bad, allow_empty, sparse_model, sparse_vectors, dense_model, dense_vectors, dense_index, batch_size, device, quiet):
    """Tune fusion / PRF / rescoring on DATASET's --split and write the pipeline to --output."""
    from braid.data.beir import BeirDataset
    from braid.data.datasets import resolve_dataset
    from braid.retrieval.eval.experiment import ensure_index
    from braid.retrieval.searcher import Searcher
    from braid.retrieval.eval.tune import tune_pipeline, write_pipeline

    if split == report_split:
        from braid.data.errors import OptionError

        raise OptionError("--split", split, f"it is the split to report (--report-split {report_split}); tune on train or dev")
    ds = BeirDataset(resolve_dataset(dataset, progress=_progress(quiet)))
    options = _make_build_options(retrievers, overwrite, skip_bad, allow_empty, sparse_model, sparse_vectors, dense_model, dense_vectors, dense_index, batch_size, device, quiet)
    log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    ensure_index(ds, Path(index_root) / ds.name, set(options.retrievers), options, False, log)
    searcher = Searcher(Path(index_root) / ds.name)
    pipeline, report = tune_pipeline(searcher, ds, split=split, report_split=report_split, metric=metric, depth=depth, try_prf=not no_prf, try_rescore=not no_rescore, log=log)
    write_pipeline(pipeline, output, report, ds.name)
    click.echo(json.dumps(report))


def _register_subcommands() -> None:
    """Commands that live in their own modules (each still a thin shell over the library)."""
    from braid.cli.serve import serve_cmd

    main.add_command(serve_cmd)
    main.add_command(compare)
    for module, names in (("braid.cli.train", ("train",)), ("braid.cli.scale", ("shard", "milvus"))):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        for name in names:
            cmd = getattr(mod, name, None) or getattr(mod, f"{name}_cmd", None) or getattr(mod, f"{name}_group", None)
            if isinstance(cmd, click.Command):
                main.add_command(cmd, name=name)


_register_subcommands()


if __name__ == "__main__":
    main()
