"""Relevance judgments: BEIR ``qrels/<split>.tsv`` (header, 3 columns) and TREC qrels (4 columns)."""

from __future__ import annotations

from pathlib import Path

from braid.data.corpus import iter_lines
from braid.data.errors import DataError

Qrels = dict[str, dict[str, int]]


def read_qrels(path: str | Path) -> Qrels:
    """Read ``{query_id: {doc_id: relevance}}``.

    Accepts BEIR TSV (``query-id  corpus-id  score``, with or without header) and TREC qrels
    (``qid  iter  docid  rel``, whitespace separated). A query may have many judgments; a pair
    judged twice with different grades is an error.
    """
    path = Path(path)
    qrels: Qrels = {}
    for line_no, line in iter_lines(path):
        stripped = line.strip()
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
        try:
            grade = int(float(rel))
        except ValueError:
            raise DataError(f"relevance {rel!r} is not a number", path, line_no) from None
        judged = qrels.setdefault(qid.strip(), {})
        docid = docid.strip()
        if docid in judged and judged[docid] != grade:
            raise DataError(
                f"query {qid!r} judges document {docid!r} twice with different grades "
                f"({judged[docid]} and {grade})",
                path,
                line_no,
            )
        judged[docid] = grade
    return qrels
