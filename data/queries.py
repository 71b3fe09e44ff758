"""Query readers: BEIR ``queries.jsonl`` and plain TSV topics (``qid<TAB>text``)."""

from __future__ import annotations

from pathlib import Path

from braid.data.corpus import _as_id, _parse_json_line, iter_lines
from braid.data.errors import DataError


def read_queries(path: str | Path, *, skip_bad: bool = False) -> dict[str, str]:
    """Read queries into ``{query_id: text}`` (file order preserved).

    ``.jsonl`` files hold ``{"_id", "text"}`` objects; anything else is read as TSV ``qid<TAB>text``.
    Duplicate ids, empty text and malformed lines raise DataError naming file and line.
    """
    path = Path(path)
    queries: dict[str, str] = {}
    is_jsonl = path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            if is_jsonl:
                obj = _parse_json_line(line, path, line_no)
                qid = _as_id(obj.get("_id", obj.get("id", obj.get("qid"))), "_id", path, line_no)
                text = obj.get("text", obj.get("query"))
                if not isinstance(text, str):
                    raise DataError("missing or non-string field 'text'", path, line_no)
            else:
                parts = line.rstrip("\r\n").split("\t")
                if len(parts) < 2:
                    raise DataError("expected 'query_id<TAB>text'", path, line_no)
                qid = _as_id(parts[0], "query id", path, line_no)
                text = "\t".join(parts[1:])
            if not text.strip():
                raise DataError(f"query {qid!r} has empty text", path, line_no)
            if qid in queries:
                raise DataError(f"duplicate query id {qid!r}", path, line_no)
        except DataError:
            if skip_bad:
                continue
            raise
        queries[qid] = text.strip()
    return queries
