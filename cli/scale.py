"""Scale-out commands: ``braid shard`` (sharded build on Ray) and ``braid milvus load|search|eval``.

Registered on the main group by :mod:`braid.cli.main`. Each command parses options, calls one
library function, prints. Ray and pymilvus load inside the library functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from braid.cli.common import (
    POSITIVE_INT,
    build_options,
    command,
    evaluation_options,
    group,
    json_option,
    k_option,
    logger,
    option_group,
    parse_filter_option,
    progress_enabled,
    quiet_option,
    split_list,
)
from braid.data.errors import OptionError


# --------------------------------------------------------------------------------------------------
# braid shard
# --------------------------------------------------------------------------------------------------
def _make_sharding(values: dict, rest: dict):
    from braid.retrieval.scale.distributed import ShardingConfig

    return ShardingConfig(**values)


sharding_options = option_group(
    "sharding",
    click.option("--shards", type=POSITIVE_INT, default=4, show_default=True, help="Number of shards (contiguous ranges of the corpus)."),
    click.option("--executor", type=click.Choice(["ray", "local"]), default="ray", show_default=True, help="local: no Ray, shards built one after the other here."),
    click.option("--ray-address", default=None, help="Ray cluster address (auto, ray://host:10001, host:6379). Default: start Ray on this machine."),
    click.option("--num-cpus", type=POSITIVE_INT, default=None, help="CPUs of a Ray started here (default: all)."),
    click.option("--encode-actors", type=POSITIVE_INT, default=None, help="Encoding actors (default: one per GPU, else one per --cpus-per-actor CPUs)."),
    click.option("--encode-batch-size", type=POSITIVE_INT, default=256, show_default=True, help="Texts per Ray Data batch."),
    click.option("--cpus-per-actor", type=float, default=1.0, show_default=True, help="CPUs reserved per encoding actor."),
    click.option("--gpus-per-actor", type=float, default=None, help="Default: 1 when the cluster has GPUs, else 0."),
    make=_make_sharding,
)
sharding_options.__doc__ = """How to split and where to run (``sharding=ShardingConfig``)."""


@command("shard")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Sharded index directory to create.")
@sharding_options
@build_options
@json_option("Print sharded.json on stdout.")
@quiet_option
def shard_cmd(source, out, sharding, build, as_json, quiet):
    """Build a sharded index of SOURCE (a BEIR folder or corpus JSONL[.gz]) into --out, encoding on Ray.

    The build options are those of `braid index`; a sharded index holds bm25, sparse and dense.
    """
    from braid.retrieval.scale.distributed import build_sharded

    manifest = build_sharded(source, out, build, sharding, log=logger(quiet))
    if as_json:
        click.echo(json.dumps(manifest))


# --------------------------------------------------------------------------------------------------
# braid milvus
# --------------------------------------------------------------------------------------------------
def _milvus_options(fn):
    fn = click.option("--token", envvar="MILVUS_TOKEN", default=None, show_envvar=True, help="Milvus token (user:password or API key) for a server; read from $MILVUS_TOKEN.")(fn)
    fn = click.option("--collection", required=True, help="Milvus collection name.")(fn)
    fn = click.option("--milvus-uri", required=True, help="A local .db file (milvus-lite, embedded) or a server URL such as http://localhost:19530.")(fn)
    return fn


def _weights(text: str) -> list[float]:
    try:
        w = [float(x) for x in split_list(text)]
    except ValueError:
        raise OptionError("--weights", text, "two numbers: sparse,dense") from None
    if len(w) != 2:
        raise OptionError("--weights", text, "two numbers: sparse,dense")
    return w


def _make_ranking(values: dict, rest: dict) -> dict:
    return {**values, "weights": _weights(values["weights"])}


ranking_options = option_group(
    "ranking",
    click.option("--retriever", "-r", default="hybrid-rrf", show_default=True, type=click.Choice(["sparse", "dense", "hybrid-rrf", "hybrid-weighted"]), help="Field(s) searched; hybrid ones are fused by Milvus's RRFRanker or WeightedRanker."),
    click.option("--depth", type=POSITIVE_INT, default=1000, show_default=True, help="Candidates per field before a hybrid ranker."),
    click.option("--rrf-k", type=float, default=60, show_default=True, help="RRFRanker's k."),
    click.option("--weights", default="1,1", show_default=True, help="WeightedRanker weights: sparse,dense."),
    click.option("--norm-score/--no-norm-score", default=True, show_default=True, help="WeightedRanker's arctan score normalisation."),
    click.option("--filter", "filter", default=None, callback=parse_filter_option,
                 help="Metadata filter applied inside each Milvus field search before its top-k, as in braid search: 'year >= 2000 and lang in (en, de)' or JSON."),  # fmt: skip
    make=_make_ranking,
)
ranking_options.__doc__ = """Milvus's field search and hybrid ranker (``ranking={retriever, depth, rrf_k, weights, norm_score, filter}``)."""


@group("milvus")
def milvus_group() -> None:
    """Load a Braid index into Milvus (or milvus-lite) and search it with Milvus's hybrid rankers."""


@milvus_group.command("load")
@click.argument("index_dir", type=click.Path(path_type=Path))
@_milvus_options
@click.option("--dense-index", default="FLAT", show_default=True, type=click.Choice(["FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX"]), help="Milvus index of the dense field (FLAT is exact).")
@click.option("--batch-size", type=POSITIVE_INT, default=1000, show_default=True, help="Rows per insert.")
@click.option("--overwrite", is_flag=True, help="Drop and replace an existing collection.")
@quiet_option
def milvus_load_cmd(index_dir, milvus_uri, collection, token, dense_index, batch_size, overwrite, quiet):
    """Load INDEX_DIR (plain or sharded) into a Milvus collection: sparse and dense vectors and the text."""
    from braid.retrieval.scale.milvus import MilvusLoadConfig, load_index

    config = MilvusLoadConfig(collection=collection, dense_index=dense_index, batch_size=batch_size)
    info = load_index(index_dir, milvus_uri, config, overwrite=overwrite, token=token, log=logger(quiet))
    if not quiet:
        click.echo(json.dumps(info))


@milvus_group.command("search")
@click.argument("query")
@_milvus_options
@k_option(10, "Number of hits.")
@ranking_options
@json_option("Print the hits as one JSON object.")
def milvus_search_cmd(query, milvus_uri, collection, token, k, ranking, as_json):
    """Search a collection made by `braid milvus load` for QUERY."""
    from braid.retrieval.scale.milvus import MilvusSearcher

    res = MilvusSearcher(milvus_uri, collection, token=token).batch_search([query], k=k, **ranking)
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
@evaluation_options(runs_dir=None, metrics="ndcg@10,recall@100")
@ranking_options
@json_option("Print one JSON object {dataset: {metric: value}}.")
def milvus_eval_cmd(dataset, milvus_uri, collection, token, evaluation, ranking, as_json):
    """Evaluate Milvus search on a BEIR DATASET folder with Braid's evaluation (pytrec_eval)."""
    from braid.retrieval.eval.evaluate import format_table
    from braid.retrieval.scale.milvus import MilvusSearcher, evaluate_collection

    results = evaluate_collection(MilvusSearcher(milvus_uri, collection, token=token), dataset, **evaluation, **ranking)
    click.echo(json.dumps(results) if as_json else format_table(results, evaluation["metrics"]))


@milvus_group.command("add")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("corpus", type=click.Path(path_type=Path))
@_milvus_options
@click.option("--device", default="auto", show_default=True, help="Where to encode: auto, cpu, cuda, mps.")
@click.option("--batch-size", type=POSITIVE_INT, default=1000, show_default=True, help="Rows per upsert.")
@quiet_option
def milvus_add_cmd(index_dir, corpus, milvus_uri, collection, token, device, batch_size, quiet):
    """`braid add INDEX_DIR CORPUS` (upsert), then the same documents upserted into the collection loaded from it."""
    from braid.retrieval.live import Index
    from braid.retrieval.scale.milvus import sync_collection

    _check_collection(milvus_uri, collection, token)
    r = Index(index_dir, device=device, progress=progress_enabled(quiet), log=logger(quiet)).add(corpus)
    info = sync_collection(index_dir, milvus_uri, collection, token=token, batch_size=batch_size, log=logger(quiet))
    click.echo(json.dumps({"added": r.added, "updated": r.updated, **info}))


@milvus_group.command("delete")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("ids", nargs=-1)
@click.option("--ids", "ids_file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="File of document ids, one per line.")
@_milvus_options
@quiet_option
def milvus_delete_cmd(index_dir, ids, ids_file, milvus_uri, collection, token, quiet):
    """`braid delete INDEX_DIR IDS`, then the same documents deleted from the collection loaded from it."""
    from braid.retrieval.live import Index, read_ids_file
    from braid.retrieval.scale.milvus import sync_collection

    wanted = list(ids) + (read_ids_file(ids_file) if ids_file is not None else [])
    if not wanted:
        raise OptionError("IDS", "", "document ids as arguments or --ids FILE")
    _check_collection(milvus_uri, collection, token)
    r = Index(index_dir, log=logger(quiet)).delete(wanted)
    info = sync_collection(index_dir, milvus_uri, collection, token=token, log=logger(quiet))
    click.echo(json.dumps({"deleted_ids": r.deleted, "not_found": list(r.not_found), **info}))


@milvus_group.command("sync")
@click.argument("index_dir", type=click.Path(path_type=Path))
@_milvus_options
@click.option("--batch-size", type=POSITIVE_INT, default=1000, show_default=True, help="Rows per upsert.")
@quiet_option
def milvus_sync_cmd(index_dir, milvus_uri, collection, token, batch_size, quiet):
    """Bring the collection to INDEX_DIR's current generation (after braid add / delete / compact; repeats an interrupted sync)."""
    from braid.retrieval.scale.milvus import sync_collection

    click.echo(json.dumps(sync_collection(index_dir, milvus_uri, collection, token=token, batch_size=batch_size, log=logger(quiet))))


def _check_collection(uri: str, collection: str, token) -> None:
    """Refuse before the index changes when the collection is not there."""
    from braid.retrieval.scale.milvus import connect

    if not connect(uri, token).has_collection(collection):
        raise OptionError("--collection", collection, f"no such collection in {uri}; load one with `braid milvus load`")
