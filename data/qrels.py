"""Relevance judgments: BEIR ``qrels/<split>.tsv`` (header, 3 columns) and TREC qrels (4 columns)."""

from __future__ import annotations

from pathlib import Path

import math

from braid.data.corpus import ReadStats, decode_line, iter_raw_lines
from braid.data.errors import DataError
from braid.data.text import id_problem

Qrels = dict[str, dict[str, int]]


def _grade(rel: str, path: Path, line_no: int) -> int:
    """An integer relevance grade (``2``, ``2.0``, ``-1``); fractions, inf and NaN are refused."""
    try:
        value = float(rel)
    except ValueError:
        raise DataError(f"relevance {rel!r} is not a number", path, line_no) from None
    if not math.isfinite(value) or not value.is_integer() or abs(value) > 2**31:
        raise DataError(f"relevance {rel!r} is not an integer grade", path, line_no)
    return int(value)


def read_qrels(path: str | Path, *, skip_bad: bool = False, stats: ReadStats | None = None) -> Qrels:
    """Read ``{query_id: {doc_id: relevance}}``.

    Accepts BEIR TSV (``query-id  corpus-id  score``, with or without header) and TREC qrels
    (``qid  iter  docid  rel``, whitespace separated). A query may have many judgments; a pair
    judged twice with different grades is an error, and so is a grade that is not an integer
    (``0.5``, ``inf``). With ``skip_bad`` bad lines are skipped and counted in ``stats``.
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    qrels: Qrels = {}
    for line_no, raw in iter_raw_lines(path):
        try:
            stripped = decode_line(raw, path, line_no).strip()
            if not stripped:
                continue
            parts = stripped.split("\t") if "\t" in stripped else stripped.split()
            if line_no == 1 and parts[0].lower() in ("query-id", "query_id", "qid", "query-id:"):
                continue
            if len(parts) == 3:
                qid, docid, rel = parts
            elif len(parts) == 4:
                qid, _, docid, rel = parts
            else:
                raise DataError(f"expected 3 (BEIR) or 4 (TREC) columns, got {len(parts)}", path, line_no)
            grade = _grade(rel, path, line_no)
            qid, docid = qid.strip(), docid.strip()
            for what, value in (("query id", qid), ("document id", docid)):
                problem = id_problem(value)
                if problem is not None:
                    raise DataError(f"{what} {value!r} {problem}", path, line_no)
            judged = qrels.get(qid, {})
            if docid in judged and judged[docid] != grade:
                raise DataError(
                    f"query {qid!r} judges document {docid!r} twice with different grades "
                    f"({judged[docid]} and {grade})",
                    path,
                    line_no,
                )
        except DataError as exc:
            if skip_bad:
                stats.skip(str(exc))
                continue
            raise
        stats.read += 1
        qrels.setdefault(qid, {})[docid] = grade
    return qrels
