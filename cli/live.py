"""``braid add``, ``braid delete``, ``braid compact``: a live index's operations (:mod:`braid.retrieval.live`).

Each command takes the index's writer lock, commits one new generation and prints what it did (one
JSON object with ``--json``). Registered in :mod:`braid.cli.main`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from braid.cli.common import POSITIVE_INT, command, json_option, logger, progress_enabled, quiet_option


def _policy(value):
    if value is None:
        return None
    from braid.data.errors import OptionError

    try:
        policy = json.loads(value)
    except json.JSONDecodeError as exc:
        raise OptionError("--merge-policy", value, f"a JSON object of merge policy fields ({exc.msg})") from None
    if not isinstance(policy, dict):
        raise OptionError("--merge-policy", value, "a JSON object of merge policy fields")
    return policy


def _echo(result, as_json: bool, what: str) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo(what, err=True)


@command("add")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--skip-bad", is_flag=True, help="Skip bad records (counted) instead of failing on the first.")
@click.option("--device", default="auto", show_default=True, help="Where to encode: auto, cpu, cuda, mps.")
@click.option("--batch-size", default=32, show_default=True, type=POSITIVE_INT, help="Encoding batch size.")
@click.option("--merge-policy", default=None, help='Tiered merge policy as JSON, e.g. \'{"segments_per_tier": 4}\' (saved in the index).')
@json_option("Print what was committed as one JSON object.")
@quiet_option
def add_cmd(index_dir, corpus, skip_bad, device, batch_size, merge_policy, as_json, quiet):
    """Add the documents of CORPUS (BEIR JSONL[.gz] or a BEIR folder) to INDEX_DIR; an id already there is updated."""
    from braid.retrieval.live import Index

    index = Index(index_dir, device=device, batch_size=batch_size, progress=progress_enabled(quiet), log=logger(quiet), merge_policy=_policy(merge_policy))
    r = index.add(corpus, skip_bad=skip_bad)
    _echo(r, as_json, f"generation {r.generation}: {r.added} added, {r.updated} updated; {r.num_docs} documents in {r.segments} segment(s)"
                      f"{f', {r.merged} merged' if r.merged else ''} ({r.seconds:.2f}s, encoding {r.encode_seconds:.2f}s)")  # fmt: skip


@command("delete")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("ids", nargs=-1)
@click.option("--ids", "ids_file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="File of document ids, one per line.")
@json_option("Print what was committed as one JSON object.")
@quiet_option
def delete_cmd(index_dir, ids, ids_file, as_json, quiet):
    """Delete the documents IDS (or those listed in --ids FILE) from INDEX_DIR."""
    from braid.data.errors import OptionError
    from braid.retrieval.live import Index, read_ids_file

    wanted = list(ids) + (read_ids_file(ids_file) if ids_file is not None else [])
    if not wanted:
        raise OptionError("IDS", "", "document ids as arguments or --ids FILE")
    r = Index(index_dir, log=logger(quiet)).delete(wanted)
    missing = f"; not found: {', '.join(r.not_found[:5])}{' ...' if len(r.not_found) > 5 else ''}" if r.not_found else ""
    _echo(r, as_json, f"generation {r.generation}: {r.deleted} deleted; {r.num_docs} documents{missing}")


@command("compact")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--device", default="auto", show_default=True, help="Where to recompute the IDF table (tokenizer only).")
@json_option("Print what was committed as one JSON object.")
@quiet_option
def compact_cmd(index_dir, device, as_json, quiet):
    """Rewrite INDEX_DIR as one segment of its live documents (deleted ones dropped, statistics recomputed)."""
    from braid.retrieval.live import Index

    r = Index(index_dir, device=device, log=logger(quiet)).compact()
    _echo(r, as_json, f"generation {r.generation}: {r.merged} segment(s) compacted into {r.segments}; {r.num_docs} documents ({r.seconds:.2f}s)")
