"""``braid train``: train query-side models of an existing index. Each command parses options, calls one library function, prints.

Registered in :mod:`braid.cli.main`. torch loads inside the training function.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from braid.cli.common import (
    POSITIVE_INT,
    group,
    json_option,
    logger,
    option_group,
    progress_enabled,
    quiet_option,
)
from braid.retrieval.train.jpq.config import JPQConfig

_D = JPQConfig()


def _make_jpq_config(values: dict, rest: dict) -> JPQConfig:
    return JPQConfig(**values)


jpq_options = option_group(
    "config",
    click.option("--epochs", type=POSITIVE_INT, default=_D.epochs, show_default=True),
    click.option("--lr", type=float, default=_D.lr, show_default=True, help="Query encoder learning rate."),
    click.option("--centroid-lr", type=float, default=_D.centroid_lr, show_default=True, help="PQ centroid learning rate."),
    click.option("--batch-size", type=POSITIVE_INT, default=_D.batch_size, show_default=True, help="Training pairs per step."),
    click.option("--negatives", type=int, default=_D.negatives, show_default=True, help="Hard negatives per query, sampled from its PQ hits."),
    click.option("--negative-depth", type=POSITIVE_INT, default=_D.negative_depth, show_default=True, help="PQ hits the negatives are sampled from."),
    click.option("--temperature", type=float, default=_D.temperature, show_default=True),
    click.option("--max-length", type=int, default=_D.max_length, show_default=True, help="Query tokens (training and search)."),
    click.option("--seed", type=int, default=_D.seed, show_default=True),
    click.option("--device", default=_D.device, show_default=True, help="auto (CUDA when present), cpu or cuda."),
    click.option("--checkpoint-every", type=int, default=_D.checkpoint_every, show_default=True, help="Steps between checkpoints (0: each epoch)."),
    make=_make_jpq_config,
)
jpq_options.__doc__ = """The training settings (``config=JPQConfig``), defaults from JPQConfig."""


@group("train")
def train() -> None:
    """Train models of an existing index: JPQ (query side of a PQ index), sparse (an inference-free document encoder)."""


@train.command("jpq")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="BEIR folder with queries.jsonl and qrels/<split>.tsv, or beir/NAME, irds:ID.")
@click.option("--split", default="train", show_default=True, help="Qrels split to train on (never the test split).")
@jpq_options
@click.option("--checkpoint-dir", type=click.Path(path_type=Path), default=None, help="Where to checkpoint and resume (default: .INDEX.jpq-train next to the index, removed when done).")
@click.option("--threads", type=POSITIVE_INT, default=None, help="torch CPU threads (default: torch's; 1 is fastest on a busy machine).")
@quiet_option
@json_option("Print the summary as JSON.")
def jpq_cmd(index_dir, dataset, split, config, checkpoint_dir, threads, quiet, as_json):
    """Train JPQ on INDEX_DIR's PQ/OPQ dense index: the query encoder and the PQ centroids jointly, document codes frozen.

    Re-running after an interruption resumes from the checkpoint. The trained encoder and
    centroids are saved into the index; searching it then uses them.
    """
    from braid.data.datasets import resolve_dataset
    from braid.retrieval.train.jpq import train_jpq_index

    dataset = resolve_dataset(dataset, progress=progress_enabled(quiet))
    summary = train_jpq_index(
        index_dir, dataset, split, config, checkpoint_dir=checkpoint_dir, progress=progress_enabled(quiet), log=logger(quiet), threads=threads
    )
    if as_json:
        click.echo(json.dumps({k: v for k, v in summary.items() if k != "dense"}))
        return
    losses = ", ".join(f"{x:.4f}" for x in summary["epoch_losses"])
    click.echo(
        f"jpq: trained {summary['steps']} steps on {summary['pairs']} pairs ({summary['queries']} queries) in {summary['seconds']:.0f}s; "
        f"loss per epoch: {losses}; saved into {index_dir}/dense/jpq"
    )


def _make_sparse_config(values: dict, rest: dict):
    from braid.retrieval.train.sparse.config import SparseTrainConfig

    return SparseTrainConfig(**values)


# The defaults come from SparseTrainConfig alone (a dataclass module: no torch, no training code at import).
from braid.retrieval.train.sparse.config import SparseTrainConfig as _SparseDefaults

_S = _SparseDefaults()

sparse_options = option_group(
    "config",
    click.option("--source", type=click.Choice(["supervised", "corpus"]), default=_S.source, show_default=True, help="Training queries: the split's qrels, or pseudo-queries cut from the corpus (no labels)."),
    click.option("--loss", type=click.Choice(["kl", "margin-mse", "contrastive"]), default=_S.loss, show_default=True, help="Distillation from the teacher (kl, margin-mse) or plain contrastive (no teacher)."),
    click.option("--teachers", default=_S.teachers, show_default=True, help="'hybrid' (the index's hybrid members) or comma-separated retrievers, e.g. dense."),
    click.option("--candidates", type=POSITIVE_INT, default=_S.candidates, show_default=True, help="Documents per training query."),
    click.option("--candidate-depth", type=POSITIVE_INT, default=_S.candidate_depth, show_default=True, help="Hybrid hits the candidates are drawn from."),
    click.option("--teacher-depth", type=POSITIVE_INT, default=_S.teacher_depth, show_default=True, help="Hits per teacher looked up for the candidates' scores."),
    click.option("--teacher-scale", type=float, default=_S.teacher_scale, show_default=True, help="Normalised teacher scores (0..1) are multiplied by this."),
    click.option("--teacher-scale-from", type=click.Choice(["fixed", "student"]), default=_S.teacher_scale_from, show_default=True, help="fixed: x --teacher-scale; student: x the untrained student's (sparse-if) score spread over each example's candidates."),
    click.option("--positive-boost/--no-positive-boost", default=_S.positive_boost, show_default=True, help="Supervised: a judged positive gets the top teacher score."),
    click.option("--kl-temperature", type=float, default=_S.kl_temperature, show_default=True),
    click.option("--flops", type=click.Choice(["idf", "plain", "none"]), default=_S.flops, show_default=True, help="Document sparsity penalty: IDF-aware FLOPS, SPLADE's FLOPS, or none."),
    click.option("--flops-weight", type=float, default=_S.flops_weight, show_default=True),
    click.option("--idf-floor", type=float, default=_S.idf_floor, show_default=True, help="IDF-aware FLOPS: IDF below this counts as this."),
    click.option("--pseudo-kinds", default=_S.pseudo_kinds, show_default=True, help="Corpus-only pseudo-queries: title, sentence (comma-separated)."),
    click.option("--exclude-source/--keep-source", default=_S.exclude_source, show_default=True, help="Corpus-only distillation: never give a pseudo-query the document it was cut from as a candidate (with --lr 2e-5 --max-length 256 --train-query-weights: the corpus-only setting chosen on dev in docs/benchmarks/training.md, round 7)."),
    click.option("--max-queries", type=POSITIVE_INT, default=_S.max_queries, show_default=True, help="Corpus-only: at most this many pseudo-queries."),
    click.option("--epochs", type=POSITIVE_INT, default=_S.epochs, show_default=True),
    click.option("--max-steps", type=int, default=_S.max_steps, show_default=True, help="Total optimisation steps (0: --epochs decides)."),
    click.option("--batch-size", type=POSITIVE_INT, default=_S.batch_size, show_default=True, help="Training queries per step."),
    click.option("--lr", type=float, default=_S.lr, show_default=True),
    click.option("--warmup", type=float, default=_S.warmup, show_default=True, help="Fraction of the steps with a rising learning rate."),
    click.option("--max-length", type=POSITIVE_INT, default=_S.max_length, show_default=True, help="Document tokens in training."),
    click.option("--encode-max-length", type=POSITIVE_INT, default=_S.encode_max_length, show_default=True, help="Document tokens the saved model encodes."),
    click.option("--query-max-length", type=POSITIVE_INT, default=_S.query_max_length, show_default=True),
    click.option("--train-query-weights/--frozen-query-weights", default=_S.train_query_weights, show_default=True, help="Also train the query-side token weights (initialised from the IDF, kept >= 0, at --query-lr)."),
    click.option("--query-lr", type=float, default=_S.query_lr, show_default=True, help="Learning rate of the query-side weights (--train-query-weights; the default is what round 6 of docs/benchmarks/training.md measured)."),
    click.option("--seed", type=int, default=_S.seed, show_default=True),
    click.option("--checkpoint-every", type=POSITIVE_INT, default=_S.checkpoint_every, show_default=True, help="Steps between checkpoints."),
    click.option("--device", default=_S.device, show_default=True, help="auto (CUDA when present), cpu or cuda."),
    make=_make_sparse_config,
)
sparse_options.__doc__ = """The training settings (``config=SparseTrainConfig``), defaults from SparseTrainConfig."""


@train.command("sparse")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="BEIR folder the index was built from (corpus.jsonl; queries.jsonl and qrels/<split>.tsv for --source supervised), or beir/NAME.")
@click.option("--split", default="train", show_default=True, help="Qrels split of --source supervised (never the test split).")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Model folder to write (sentence-transformers layout; braid index --sparse-model reads it).")
@sparse_options
@click.option("--base-model", default=None, help="Model to start from (default: the index's sparse model).")
@click.option("--install", is_flag=True, help="Re-encode the index's documents with the trained model into a new sparse component (atomically).")
@click.option("--stop-after", type=POSITIVE_INT, default=None, help="Stop after this many steps of this call (a checkpoint is written; run again to resume).")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path), default=None, help="Where to checkpoint and resume (default: .INDEX.sparse-train next to the index, removed when done).")
@click.option("--threads", type=POSITIVE_INT, default=None, help="torch CPU threads.")
@quiet_option
@json_option("Print the summary as JSON.")
def sparse_cmd(index_dir, dataset, split, output, config, base_model, install, stop_after, checkpoint_dir, threads, quiet, as_json):
    """Train an inference-free sparse document encoder on INDEX_DIR's collection, distilled from the index's own hybrid.

    Queries at search time are tokenizer + IDF (sparse-if); the document encoder learns for them.
    Re-running after an interruption resumes from the checkpoint.
    """
    from braid.data.datasets import resolve_dataset
    from braid.retrieval.train.sparse.install import train_sparse_index

    dataset = resolve_dataset(dataset, progress=progress_enabled(quiet))
    # the trainer prints its log lines (losses) to stdout: with --json they go to stderr, so stdout is the JSON alone
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        summary = train_sparse_index(
            index_dir, dataset, output, config, split=split, checkpoint_dir=checkpoint_dir, install=install, base_model=base_model,
            progress=progress_enabled(quiet), log=logger(quiet), threads=threads, stop_after_steps=stop_after,
        )
    if as_json:
        click.echo(json.dumps(summary))
        return
    if not summary["finished"]:
        click.echo(f"sparse: stopped at step {summary['steps']} ({summary['seconds']:.0f}s so far); run the same command again to resume")
        return
    last = summary["losses"][-1] if summary["losses"] else float("nan")
    where = f"; installed into {index_dir}" if summary["installed"] else ""
    click.echo(f"sparse: trained {summary['steps']} steps on {summary['examples']} examples in {summary['seconds']:.0f}s (last loss {last:.4f}); model in {output}{where}")
