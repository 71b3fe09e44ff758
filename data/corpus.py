"""Streaming corpus readers: BEIR ``corpus.jsonl`` / ``corpus.jsonl.gz``.

Corpora are read line by line and never held whole in memory. Every bad record raises a
:class:`DataError` naming the file and line, unless ``skip_bad=True``: then bad records are
skipped and counted in the returned :class:`ReadStats`.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from braid.data.errors import DataError
from braid.data.text import id_problem, normalize_text, text_problem


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str
    # BEIR's ``metadata`` object, scalar values only (see braid.index.metadata.scalar_metadata); not
    # part of equality, so a document read with metadata equals one built without it
    metadata: dict | None = field(default=None, compare=False)

    @property
    def contents(self) -> str:
        """Title and text in one string (BEIR "flat" convention)."""
        if self.title:
            return f"{self.title} {self.text}" if self.text else self.title
        return self.text


@dataclass
class ReadStats:
    """What a reader saw: records read, and records skipped (with the first few reasons)."""

    read: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < 10:
            self.reasons.append(reason)


def open_text(path: Path) -> io.TextIOBase:
    """Open a UTF-8 text file, transparently gunzipping ``*.gz``. Decoding errors are raised per line."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        raise DataError("expected a file, got a directory", path)
    if path.suffix == ".gz":
        import gzip  # here: reading an index's manifest (parse_json) never decompresses

        return gzip.open(path, "rb")
    raw = open(path, "rb")
    return raw


_UTF8_BOM = b"\xef\xbb\xbf"


def iter_raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_bytes)``; decoding is the caller's, so one bad line does not end the stream.

    A UTF-8 byte-order mark at the start of the file is dropped. A file that cannot be decompressed
    (``.gz`` that is truncated, corrupt or not gzip at all) raises a DataError naming the file and the
    line where reading stopped.
    """
    import gzip

    line_no = 0
    try:
        with open_text(path) as fh:
            for line_no, raw in enumerate(fh, start=1):
                if line_no == 1 and raw.startswith(_UTF8_BOM):
                    raw = raw[len(_UTF8_BOM) :]
                yield line_no, raw
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        what = "truncated compressed file" if isinstance(exc, EOFError) else f"cannot decompress ({exc})"
        raise DataError(f"{what}; reading stopped after line {line_no}", path, line_no + 1) from None


def decode_line(raw: bytes, path: Path, line_no: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"invalid UTF-8 ({exc.reason} at byte {exc.start})", path, line_no) from None


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, decoded_line)``; invalid UTF-8 raises a DataError naming the line."""
    for line_no, raw in iter_raw_lines(path):
        yield line_no, decode_line(raw, path, line_no)


class JSONProblem(ValueError):
    """Why a JSON text could not be parsed (the reader adds the file and line)."""


def parse_json(text: str | bytes):
    """``json.loads`` with every way it fails as one :class:`JSONProblem`: malformed JSON, nesting
    deeper than the interpreter's recursion limit, an integer of more digits than Python converts
    (``sys.get_int_max_str_digits``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONProblem(f"malformed JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise JSONProblem("malformed JSON (nested too deeply)") from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise JSONProblem(f"malformed JSON ({exc})") from None


def _parse_json_line(line: str, path: Path, line_no: int) -> dict:
    try:
        obj = parse_json(line)
    except JSONProblem as exc:
        raise DataError(str(exc), path, line_no) from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, line_no)
    return obj


def _as_id(value: object, key: str, path: Path, line_no: int) -> str:
    if value is None:
        raise DataError(f"missing field {key!r}", path, line_no)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"field {key!r} must be a string or integer, got {type(value).__name__}", path, line_no)
    text = str(value).strip()
    if not text:
        raise DataError(f"field {key!r} is empty", path, line_no)
    problem = id_problem(text)
    if problem is not None:
        raise DataError(f"field {key!r} ({text!r}) {problem}", path, line_no)
    return text


def _as_text(obj: dict, key: str, path: Path, line_no: int) -> str:
    """Field ``key`` as canonical text (see :mod:`braid.data.text`); missing or null is empty."""
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"field {key!r} must be a string, got {type(value).__name__}", path, line_no)
    problem = text_problem(value)
    if problem is not None:
        raise DataError(f"field {key!r}: {problem}", path, line_no)
    return normalize_text(value)


def parse_record(obj: dict, path: object, line_no: int | None, *, allow_empty: bool = False) -> Document:
    """One corpus record (a decoded JSON object) as a :class:`Document`; DataError naming ``path`` and
    ``line_no`` when it is bad (missing id, non-string fields, empty document, bad ``metadata``)."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, line_no)
    raw_id = obj.get("_id", obj.get("id", obj.get("docid")))
    doc_id = _as_id(raw_id, "_id", path, line_no)
    title = _as_text(obj, "title", path, line_no)
    text = _as_text(obj, "text", path, line_no)
    if "contents" in obj and not text:
        text = _as_text(obj, "contents", path, line_no)
    if not allow_empty and not (title.strip() or text.strip()):
        raise DataError(f"document {doc_id!r} has empty title and text", path, line_no)
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise DataError(f"field 'metadata' must be an object, got {type(metadata).__name__}", path, line_no)
    # scalar values only: nested lists and objects are not filterable and are left out
    metadata = {str(k): v for k, v in (metadata or {}).items() if isinstance(v, (str, int, float, bool)) and str(k)}
    for key, value in metadata.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise DataError(f"metadata {key!r} is {value}, not a finite number", path, line_no)
        if isinstance(value, str):
            problem = text_problem(value)
            if problem is not None:
                raise DataError(f"metadata {key!r}: {problem}", path, line_no)
    return Document(doc_id, title, text, metadata or None)


def iter_corpus(
    path: str | Path,
    *,
    skip_bad: bool = False,
    allow_empty: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Document]:
    """Stream documents from a BEIR corpus file (``.jsonl`` or ``.jsonl.gz``).

    Each line is ``{"_id", "title", "text"}`` (``id`` and ``docid`` are accepted for ``_id``), with an
    optional ``metadata`` object whose scalar values are kept (``Document.metadata``; for filters);
    other fields are ignored. Raises DataError on a malformed line, a missing or
    duplicate id, or a document whose title and text are both empty (unless ``allow_empty``).
    With ``skip_bad`` such records are skipped and counted in ``stats`` instead.
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    seen: set[str] = set()
    for line_no, raw in iter_raw_lines(path):
        try:
            line = decode_line(raw, path, line_no)
        except DataError as exc:
            if not skip_bad:
                raise
            stats.skip(str(exc))
            continue
        if not line.strip():
            continue
        try:
            obj = _parse_json_line(line, path, line_no)
            doc = parse_record(obj, path, line_no, allow_empty=allow_empty)
            if doc.doc_id in seen:
                raise DataError(f"duplicate document id {doc.doc_id!r}", path, line_no)
        except DataError as exc:
            if not skip_bad:
                raise
            stats.skip(str(exc))
            continue
        seen.add(doc.doc_id)
        stats.read += 1
        yield doc


def count_corpus(path: str | Path) -> int:
    """Number of non-blank lines (an upper bound on documents, for progress bars); cheap, no JSON parsing."""
    n = 0
    for _, raw in iter_raw_lines(Path(path)):  # a damaged .gz is a DataError here too
        if raw.strip():
            n += 1
    return n
