"""TREC run files: the one writer and reader of the project.

Format: ``qid Q0 docid rank score tag``, ranks from 1, hits ordered by descending score with ties
broken by ascending doc id, so the same run always produces the same file.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from braid.data.corpus import iter_lines
from braid.data.errors import DataError

Run = dict[str, dict[str, float]]


def sorted_hits(hits: Mapping[str, float]) -> list[tuple[str, float]]:
    """Hits of one query ordered by (-score, doc_id): the project-wide deterministic tie-break."""
    return sorted(hits.items(), key=lambda item: (-item[1], item[0]))


def write_run(run: Mapping[str, Mapping[str, float]], path: str | Path, tag: str = "braid") -> None:
    """Write ``{query_id: {doc_id: score}}`` as a TREC run, atomically (temp file + rename)."""
    path = Path(path)
    if any(c.isspace() for c in tag) or not tag:
        raise DataError(f"run tag must be a non-empty word without spaces, got {tag!r}", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for qid in run:
                for rank, (docid, score) in enumerate(sorted_hits(run[qid]), start=1):
                    if not math.isfinite(score):
                        raise DataError(f"non-finite score {score} for query {qid!r}, doc {docid!r}", path)
                    fh.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_run(path: str | Path) -> Run:
    """Read a 6-column TREC run into ``{query_id: {doc_id: score}}``."""
    path = Path(path)
    run: Run = {}
    for line_no, line in iter_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise DataError(f"expected 6 columns (qid Q0 docid rank score tag), got {len(parts)}", path, line_no)
        qid, _, docid, rank, score, _ = parts
        try:
            int(rank)
            value = float(score)
        except ValueError:
            raise DataError(f"bad rank {rank!r} or score {score!r}", path, line_no) from None
        if not math.isfinite(value):
            raise DataError(f"score {score!r} is not finite", path, line_no)
        hits = run.setdefault(qid, {})
        if docid in hits:
            raise DataError(f"document {docid!r} appears twice for query {qid!r}", path, line_no)
        hits[docid] = value
    return run


def run_from_arrays(query_ids: Iterable[str], doc_ids, scores) -> Run:
    """Build a run dict from ``(n_queries, k)`` arrays of external doc ids and scores (padding: None / -inf)."""
    run: Run = {}
    for qid, row_ids, row_scores in zip(query_ids, doc_ids, scores):
        hits: dict[str, float] = {}
        for docid, score in zip(row_ids, row_scores):
            if docid is None or docid == "" or not math.isfinite(float(score)):
                continue
            hits[str(docid)] = float(score)
        run[qid] = hits
    return run
