"""``braid train``: train query-side models of an existing index. Each command parses options, calls one library function, prints.

Registered in :mod:`braid.cli.main` with ``main.add_command(train)``.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from braid.data.errors import BraidError
from braid.retrieval.train.jpq import JPQConfig

_D = JPQConfig()


def _fail_cleanly(fn):
    """User-facing library errors -> one line and exit status 1, no traceback (as the other commands do)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (BraidError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group("train")
def train() -> None:
    """Train query-side models of an existing index (JPQ)."""


@train.command("jpq")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="BEIR folder with queries.jsonl and qrels/<split>.tsv, or beir/NAME, irds:ID.")
@click.option("--split", default="train", show_default=True, help="Qrels split to train on (never the test split).")
@click.option("--epochs", type=int, default=_D.epochs, show_default=True)
@click.option("--lr", type=float, default=_D.lr, show_default=True, help="Query encoder learning rate.")
@click.option("--centroid-lr", type=float, default=_D.centroid_lr, show_default=True, help="PQ centroid learning rate.")
@click.option("--batch-size", type=int, default=_D.batch_size, show_default=True, help="Training pairs per step.")
@click.option("--negatives", type=int, default=_D.negatives, show_default=True, help="Hard negatives per query, sampled from its PQ hits.")
@click.option("--negative-depth", type=int, default=_D.negative_depth, show_default=True, help="PQ hits the negatives are sampled from.")
@click.option("--temperature", type=float, default=_D.temperature, show_default=True)
@click.option("--max-length", type=int, default=_D.max_length, show_default=True, help="Query tokens (training and search).")
@click.option("--seed", type=int, default=_D.seed, show_default=True)
@click.option("--device", default=_D.device, show_default=True, help="auto (CUDA when present), cpu or cuda.")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path), default=None, help="Where to checkpoint and resume (default: .INDEX.jpq-train next to the index, removed when done).")
@click.option("--checkpoint-every", type=int, default=_D.checkpoint_every, show_default=True, help="Steps between checkpoints (0: each epoch).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 is fastest on a busy machine).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or log lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_fail_cleanly
def jpq_cmd(index_dir, dataset, split, epochs, lr, centroid_lr, batch_size, negatives, negative_depth, temperature, max_length, seed, device, checkpoint_dir, checkpoint_every, threads, quiet, as_json):
    """Train JPQ on INDEX_DIR's PQ/OPQ dense index: the query encoder and the PQ centroids jointly, document codes frozen.

    Re-running after an interruption resumes from the checkpoint. The trained encoder and
    centroids are saved into the index; searching it then uses them.
    """
    from braid.data.datasets import resolve_dataset
    from braid.retrieval.train.jpq import train_jpq_index

    dataset = resolve_dataset(dataset, progress=not quiet and sys.stderr.isatty())
    config = JPQConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        centroid_lr=centroid_lr,
        negatives=negatives,
        negative_depth=negative_depth,
        temperature=temperature,
        max_length=max_length,
        seed=seed,
        checkpoint_every=checkpoint_every,
        device=device,
    )
    log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    summary = train_jpq_index(
        index_dir, dataset, split, config, checkpoint_dir=checkpoint_dir, progress=not quiet and sys.stderr.isatty(), log=log, threads=threads
    )
    if as_json:
        click.echo(json.dumps({k: v for k, v in summary.items() if k != "dense"}))
        return
    losses = ", ".join(f"{x:.4f}" for x in summary["epoch_losses"])
    click.echo(
        f"jpq: trained {summary['steps']} steps on {summary['pairs']} pairs ({summary['queries']} queries) in {summary['seconds']:.0f}s; "
        f"loss per epoch: {losses}; saved into {index_dir}/dense/jpq"
    )
