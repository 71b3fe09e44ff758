"""``braid train``: train query-side models of an existing index. Each command parses options, calls one library function, prints.

Registered in :mod:`braid.cli.main`. torch loads inside the training function.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from braid.cli.common import POSITIVE_INT, group, json_option, logger, option_group, progress_enabled, quiet_option
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
    """Train query-side models of an existing index (JPQ)."""


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
