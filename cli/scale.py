"""Scale-out commands: ``braid shard`` (sharded build on Ray) and ``braid milvus load|search|eval``.

Registered on the main group by ``braid.cli.main`` (``main.add_command(shard_cmd)``,
``main.add_command(milvus_group)``). Each command parses options, calls one library function, prints.
This module imports nothing from ``braid.cli.main`` so that either can be imported first.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from braid.data.errors import BraidError


def _fail_cleanly(fn):
    """User-facing errors become a one-line message and exit status 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (BraidError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _log(quiet: bool):
    return (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))


def _milvus_options(fn):
    fn = click.option("--token", envvar="MILVUS_TOKEN", default=None, show_envvar=True, help="Milvus token (user:password or API key) for a server; read from $MILVUS_TOKEN.")(fn)
    fn = click.option("--collection", required=True, help="Milvus collection name.")(fn)
    fn = click.option("--milvus-uri", required=True, help="A local .db file (milvus-lite, embedded) or a server URL such as http://localhost:19530.")(fn)
    return fn


def _milvus_search_options(fn):
    fn = click.option("--retriever", "-r", default="hybrid-rrf", show_default=True, type=click.Choice(["sparse", "dense", "hybrid-rrf", "hybrid-weighted"]), help="Field(s) searched; hybrid ones are fused by Milvus's RRFRanker or WeightedRanker.")(fn)
    fn = click.option("--depth", type=int, default=1000, show_default=True, help="Candidates per field before a hybrid ranker.")(fn)
    fn = click.option("--rrf-k", type=float, default=60, show_default=True, help="RRFRanker's k.")(fn)
    fn = click.option("--weights", default="1,1", show_default=True, help="WeightedRanker weights: sparse,dense.")(fn)
    fn = click.option("--norm-score/--no-norm-score", default=True, show_default=True, help="WeightedRanker's arctan score normalisation.")(fn)
    return fn


def _weights(text: str) -> list[float]:
    from braid.data.errors import OptionError

    try:
        w = [float(x) for x in text.split(",")]
    except ValueError:
        raise OptionError("--weights", text, "two numbers: sparse,dense") from None
    if len(w) != 2:
        raise OptionError("--weights", text, "two numbers: sparse,dense")
    return w


# --------------------------------------------------------------------------------------------------
# braid shard
# --------------------------------------------------------------------------------------------------
@click.command("shard")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Sharded index directory to create.")
@click.option("--shards", type=int, default=4, show_default=True, help="Number of shards (contiguous ranges of the corpus).")
@click.option("--ray-address", default=None, help="Ray cluster address (auto, ray://host:10001, host:6379). Default: start Ray on this machine.")
@click.option("--executor", type=click.Choice(["ray", "local"]), default="ray", show_default=True, help="local: no Ray, shards built one after the other here.")
@click.option("--num-cpus", type=int, default=None, help="CPUs of a Ray started here (default: all).")
@click.option("--retrievers", default="bm25", show_default=True, help="Comma-separated components: bm25, sparse, dense.")
@click.option("--sparse-model", default=None, help="SPLADE model: folder or hub id.")
@click.option("--sparse-vectors", type=click.Path(path_type=Path), default=None, help="Pre-encoded sparse document vectors (.npz in corpus order, or JSONL with ids).")
@click.option("--dense-model", default=None, help="Bi-encoder: folder or hub id.")
@click.option("--dense-vectors", type=click.Path(path_type=Path), default=None, help="Pre-encoded dense document vectors (.npy float32, corpus order).")
@click.option("--dense-index", default="flat", show_default=True, help="FAISS index type per shard (flat is exact).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Encoder batch size inside each actor.")
@click.option("--encode-batch-size", type=int, default=256, show_default=True, help="Texts per Ray Data batch.")
@click.option("--encode-actors", type=int, default=None, help="Encoding actors (default: one per GPU, else one per --cpus-per-actor CPUs).")
@click.option("--cpus-per-actor", type=float, default=1.0, show_default=True)
@click.option("--gpus-per-actor", type=float, default=None, help="Default: 1 when the cluster has GPUs, else 0.")
@click.option("--device", default="auto", show_default=True, help="Encoding device without GPUs: auto, cpu.")
@click.option("--overwrite", is_flag=True, help="Replace an existing directory (atomically).")
@click.option("--skip-bad", is_flag=True, help="Skip malformed/duplicate/empty records.")
@click.option("--allow-empty", is_flag=True, help="Index documents whose title and text are empty.")
@click.option("--json", "as_json", is_flag=True, help="Print sharded.json on stdout.")
@click.option("--quiet", "-q", is_flag=True)
@_fail_cleanly
def shard_cmd(source, out, shards, ray_address, executor, num_cpus, retrievers, sparse_model, sparse_vectors, dense_model, dense_vectors, dense_index, batch_size, encode_batch_size, encode_actors, cpus_per_actor, gpus_per_actor, device, overwrite, skip_bad, allow_empty, as_json, quiet):
    """Build a sharded index of SOURCE (a BEIR folder or corpus JSONL[.gz]) into --out, encoding on Ray."""
    from braid.retrieval.build.builder import BuildOptions
    from braid.retrieval.scale.distributed import ShardingConfig, build_sharded

    options = BuildOptions(
        retrievers=tuple(r.strip() for r in retrievers.split(",") if r.strip()),
        overwrite=overwrite,
        skip_bad=skip_bad,
        allow_empty=allow_empty,
        progress=not quiet and sys.stderr.isatty(),
        sparse_model=sparse_model,
        sparse_vectors=sparse_vectors,
        dense_model=dense_model,
        dense_index={"kind": dense_index},
        batch_size=batch_size,
        device=device,
    )
    sharding = ShardingConfig(
        shards=shards,
        executor=executor,
        ray_address=ray_address,
        num_cpus=num_cpus,
        encode_actors=encode_actors,
        encode_batch_size=encode_batch_size,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
    )
    manifest = build_sharded(source, out, options, sharding, dense_vectors=dense_vectors, log=_log(quiet))
    if as_json:
        click.echo(json.dumps(manifest))


# --------------------------------------------------------------------------------------------------
# braid milvus
# --------------------------------------------------------------------------------------------------
@click.group("milvus")
def milvus_group() -> None:
    """Load a Braid index into Milvus (or milvus-lite) and search it with Milvus's hybrid rankers."""


@milvus_group.command("load")
@click.argument("index_dir", type=click.Path(path_type=Path))
@_milvus_options
@click.option("--dense-index", default="FLAT", show_default=True, type=click.Choice(["FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX"]), help="Milvus index of the dense field (FLAT is exact).")
@click.option("--batch-size", type=int, default=1000, show_default=True, help="Rows per insert.")
@click.option("--overwrite", is_flag=True, help="Drop and replace an existing collection.")
@click.option("--quiet", "-q", is_flag=True)
@_fail_cleanly
def milvus_load_cmd(index_dir, milvus_uri, collection, token, dense_index, batch_size, overwrite, quiet):
    """Load INDEX_DIR (plain or sharded) into a Milvus collection: sparse and dense vectors and the text."""
    from braid.retrieval.scale.milvus import MilvusLoadConfig, load_index

    config = MilvusLoadConfig(collection=collection, dense_index=dense_index, batch_size=batch_size)
    info = load_index(index_dir, milvus_uri, config, overwrite=overwrite, token=token, log=_log(quiet))
    if not quiet:
        click.echo(json.dumps(info))


@milvus_group.command("search")
@click.argument("query")
@_milvus_options
@click.option("-k", "k", type=int, default=10, show_default=True)
@_milvus_search_options
@click.option("--json", "as_json", is_flag=True, help="Print the hits as one JSON object.")
@_fail_cleanly
def milvus_search_cmd(query, milvus_uri, collection, token, k, retriever, depth, rrf_k, weights, norm_score, as_json):
    """Search a collection made by `braid milvus load` for QUERY."""
    from braid.retrieval.scale.milvus import MilvusSearcher

    searcher = MilvusSearcher(milvus_uri, collection, token=token)
    res = searcher.batch_search([query], k=k, retriever=retriever, depth=depth, rrf_k=rrf_k, weights=_weights(weights), norm_score=norm_score)
    docnos, scores = res.hits.row(0)
    hits = [{"rank": r + 1, "id": i, "docno": int(d), "score": float(s)} for r, (i, d, s) in enumerate(zip(res.doc_ids[0], docnos, scores))]
    if as_json:
        click.echo(json.dumps({"query": query, "retriever": res.retriever, "hits": hits}, ensure_ascii=False))
        return
    if not hits:
        click.echo("no hits")
    for hit in hits:
        click.echo(f"{hit['rank']:>3}  {hit['score']:10.4f}  {hit['id']}")


@milvus_group.command("eval")
@click.argument("dataset", type=click.Path(path_type=Path))
@_milvus_options
@click.option("--split", default="test", show_default=True)
@click.option("-k", "k", type=int, default=1000, show_default=True, help="Hits per query.")
@click.option("--metrics", default="ndcg@10,recall@100", show_default=True)
@_milvus_search_options
@click.option("--keep-self-hits", is_flag=True, help="Do not drop documents whose id equals the query id (BEIR drops them).")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=None, help="Write the TREC run and metrics here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {dataset: {metric: value}}.")
@_fail_cleanly
def milvus_eval_cmd(dataset, milvus_uri, collection, token, split, k, metrics, retriever, depth, rrf_k, weights, norm_score, keep_self_hits, runs_dir, as_json):
    """Evaluate Milvus search on a BEIR DATASET folder with Braid's evaluation (pytrec_eval)."""
    from braid.data.beir import BeirDataset
    from braid.data.runs import write_run
    from braid.retrieval.eval.evaluate import check_metrics, evaluate, format_table
    from braid.retrieval.scale.milvus import MilvusSearcher

    names = check_metrics(m for m in metrics.split(",") if m.strip())
    ds = BeirDataset(dataset)
    queries = ds.queries(split)
    qrels = ds.qrels(split)
    searcher = MilvusSearcher(milvus_uri, collection, token=token)
    res = searcher.batch_search(queries, k=k, retriever=retriever, exclude_self=not keep_self_hits, depth=depth, rrf_k=rrf_k, weights=_weights(weights), norm_score=norm_score)
    run = res.to_run()
    mean, per_query = evaluate(run, qrels, names, ignore_identical_ids=not keep_self_hits)
    if runs_dir is not None:
        out = Path(runs_dir) / ds.name
        write_run(run, out / f"{res.retriever}.{split}.trec", tag=res.retriever)
        (out / f"{res.retriever}.{split}.metrics.json").write_text(json.dumps({"dataset": ds.name, "split": split, "system": res.retriever, "mean": mean, "per_query": per_query}, indent=1))
    results = {ds.name: mean}
    click.echo(json.dumps(results) if as_json else format_table(results, names))
