"""Query readers: BEIR ``queries.jsonl`` and plain TSV topics (``qid<TAB>text``)."""

from __future__ import annotations

from pathlib import Path

from braid.data.corpus import ReadStats, _as_id, _parse_json_line, decode_line, iter_raw_lines
from braid.data.errors import DataError
from braid.data.text import is_blank, normalize_text, text_problem


def read_queries(path: str | Path, *, skip_bad: bool = False, stats: ReadStats | None = None) -> dict[str, str]:
    """Read queries into ``{query_id: text}`` (file order preserved), text in canonical form.

    ``.jsonl`` files hold ``{"_id", "text"}`` objects; anything else is read as TSV ``qid<TAB>text``.
    Duplicate ids, blank text (no letter or digit), invalid UTF-8 or Unicode and malformed lines raise
    DataError naming file and line; with ``skip_bad`` they are skipped and counted in ``stats``.
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    queries: dict[str, str] = {}
    is_jsonl = path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")
    for line_no, raw in iter_raw_lines(path):
        try:
            line = decode_line(raw, path, line_no)
            if not line.strip():
                continue
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
            problem = text_problem(text)
            if problem is not None:
                raise DataError(f"query {qid!r}: {problem}", path, line_no)
            text = normalize_text(text).strip()
            if is_blank(text):
                raise DataError(f"query {qid!r} has empty text (no letter or digit)", path, line_no)
            if qid in queries:
                raise DataError(f"duplicate query id {qid!r}", path, line_no)
        except DataError as exc:
            if skip_bad:
                stats.skip(str(exc))
                continue
            raise
        stats.read += 1
        queries[qid] = text
    return queries
