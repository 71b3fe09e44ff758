"""Document metadata of an index as typed columns over docnos, and filters evaluated to docno bitmaps.

Each segment keeps its documents' metadata as ``metadata.jsonl`` (one JSON object per row, ``{}`` for
none; written once with the segment). :class:`MetadataStore` reads a generation's files into one
column per field, typed by its values: ``number`` (every value an integer or float), ``date`` (every
value an ISO 8601 date or date-time string), ``keyword`` (anything else: strings, booleans as
``true``/``false``, numbers mixed with strings as their JSON text). :func:`filter_mask` evaluates a
canonical filter (:mod:`braid.data.filters`) to a bool array over docnos: True where the document
matches. A comparison with a field a document lacks is False (so ``not`` selects it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from braid.data.errors import IndexFormatError, OptionError
from braid.data.filters import parse_filter

METADATA_FILE = "metadata.jsonl"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?Z?$")


def scalar_metadata(raw: object) -> dict:
    """The filterable part of a document's ``metadata``: its scalar values (nested lists and objects
    are not filterable and are left out; null is a missing value)."""
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, (str, int, float, bool)) and str(k)}


def write_metadata(path: Path, rows: Iterable[dict]) -> int:
    """Write one JSON object per row; returns the number of rows."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row or {}, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def read_metadata(path: Path, num_rows: int) -> list[dict]:
    if not path.is_file():
        return [{} for _ in range(num_rows)]
    out = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise IndexFormatError(f"{path}, line {line_no}: corrupted metadata ({exc.msg})") from None
    if len(out) != num_rows:
        raise IndexFormatError(f"{path}: {len(out)} metadata rows for a segment of {num_rows} documents")
    return out


def _to_date(text: str) -> np.datetime64:
    return np.datetime64(text.rstrip("Z").replace(" ", "T"), "us")


def typed_literal(kind: str, name: str, value: object, where: str):
    """A filter value converted to the type of field ``name`` of ``kind`` (number: float, date:
    datetime64[us], keyword: str, other values as their JSON text), or OptionError saying why it cannot be."""
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(where, value, f"metadata field {name!r} holds numbers; compare it with a number")
        return float(value)
    if kind == "date":
        if not isinstance(value, str) or not _DATE.match(value):
            raise OptionError(where, value, f"metadata field {name!r} holds dates; compare it with an ISO date such as 2020-01-31")
        return _to_date(value)
    return Column._keyword(value) if not isinstance(value, str) else value


def check_range_literal(kind: str, name: str, op: str, value: object, where: str, example: object = None) -> None:
    """OptionError for a range (lt / lte / gt / gte) on a keyword field with a value that is not a string."""
    if op in ("lt", "lte", "gt", "gte") and kind == "keyword" and not isinstance(value, str):
        eg = f" (e.g. {example!r})" if example is not None else ""
        raise OptionError(where, value, f"metadata field {name!r} holds keywords{eg}, not numbers; a numeric range needs a number field")


class Column:
    """One field: ``kind`` (number / date / keyword), ``values`` over docnos, ``present`` mask."""

    def __init__(self, name: str, values: dict[int, object], num_docnos: int):
        self.name = name
        present = np.zeros(num_docnos, bool)
        docnos = np.fromiter(values.keys(), np.int64, count=len(values))
        present[docnos] = True
        self.present = present
        items = list(values.values())
        if items and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            self.kind = "number"
            col = np.full(num_docnos, np.nan)
            col[docnos] = np.asarray(items, dtype=np.float64)
        elif items and all(isinstance(v, str) and _DATE.match(v) for v in items):
            self.kind = "date"
            col = np.full(num_docnos, np.datetime64("NaT"), dtype="datetime64[us]")
            col[docnos] = np.array([_to_date(v) for v in items], dtype="datetime64[us]")
        else:
            self.kind = "keyword"
            col = np.full(num_docnos, None, dtype=object)
            col[docnos] = [self._keyword(v) for v in items]
            self._example = next((v for v in items if not isinstance(v, (int, float)) or isinstance(v, bool)), None)
        self.values = col

    @staticmethod
    def _keyword(v: object) -> str:
        if isinstance(v, str):
            return v
        return json.dumps(v)

    def literal(self, value: object, where: str):
        """A filter value converted to this column's type, or OptionError saying why it cannot be."""
        return typed_literal(self.kind, self.name, value, where)

    def compare(self, op: str, value: object, where: str) -> np.ndarray:
        if op == "in":
            wanted = [self.literal(v, where) for v in value]
            if self.kind == "keyword":
                return self.present & np.isin(self.values, np.array(wanted, dtype=object))
            return self.present & np.isin(self.values, np.array(wanted, dtype=self.values.dtype))
        v = self.literal(value, where)
        check_range_literal(self.kind, self.name, op, value, where, getattr(self, "_example", None))
        vals = self.values
        if self.kind == "keyword":
            out = np.zeros(vals.shape[0], bool)
            idx = np.flatnonzero(self.present)
            sub = vals[idx]
            res = {"eq": lambda: sub == v, "ne": lambda: sub != v, "lt": lambda: sub < v, "lte": lambda: sub <= v,
                   "gt": lambda: sub > v, "gte": lambda: sub >= v}[op]()  # fmt: skip
            out[idx] = np.asarray(res, dtype=bool)
            return out
        with np.errstate(invalid="ignore"):
            res = {"eq": vals == v, "ne": vals != v, "lt": vals < v, "lte": vals <= v, "gt": vals > v, "gte": vals >= v}[op]
        return self.present & res


class MetadataStore:
    """The metadata of a generation's documents, by field (columns built on first use)."""

    def __init__(self, rows_by_docno: dict[int, dict], num_docnos: int):
        self.num_docnos = int(num_docnos)
        self._rows = rows_by_docno
        self._fields: dict[str, dict[int, object]] = {}
        for docno, row in rows_by_docno.items():
            for key, value in row.items():
                self._fields.setdefault(key, {})[docno] = value
        self._columns: dict[str, Column] = {}

    @classmethod
    def open(cls, index_dir: Path, segments: list[tuple[Path | None, np.ndarray]], num_docnos: int) -> "MetadataStore":
        """Read each segment's ``metadata.jsonl`` (``path`` None: the segment has none) at its docnos."""
        rows: dict[int, dict] = {}
        for path, docnos in segments:
            if path is None:
                continue
            for docno, row in zip(docnos.tolist(), read_metadata(Path(path), docnos.shape[0])):
                if row:
                    rows[docno] = row
        return cls(rows, num_docnos)

    def rows(self, docnos) -> list[dict]:
        """The stored metadata objects of ``docnos`` (``{}`` for none), in order."""
        return [self._rows.get(int(d), {}) for d in docnos]

    @property
    def fields(self) -> list[str]:
        return sorted(self._fields)

    def column(self, name: str, where: str) -> Column | None:
        if name not in self._fields:
            return None
        col = self._columns.get(name)
        if col is None:
            col = self._columns[name] = Column(name, self._fields[name], self.num_docnos)
        return col

    def kinds(self) -> dict[str, str]:
        return {name: self.column(name, name).kind for name in self.fields}

    def mask(self, spec, where: str = "filter") -> np.ndarray:
        """bool (num_docnos,): the documents matching the filter ``spec`` (any form :func:`parse_filter` takes)."""
        node = parse_filter(spec, where) if not _is_canonical(spec) else spec
        return self._eval(node, where)

    def _eval(self, node: dict, where: str) -> np.ndarray:
        if "and" in node:
            out = np.ones(self.num_docnos, bool)
            for part in node["and"]:
                out &= self._eval(part, where)
            return out
        if "or" in node:
            out = np.zeros(self.num_docnos, bool)
            for part in node["or"]:
                out |= self._eval(part, where)
            return out
        if "not" in node:
            return ~self._eval(node["not"], where)
        col = self.column(node["field"], where)
        if col is None:
            return np.zeros(self.num_docnos, bool)  # no document has the field
        return col.compare(node["op"], node["value"], f"{where} ({node['field']})")


def _is_canonical(spec) -> bool:
    if not isinstance(spec, dict):
        return False
    if "and" in spec or "or" in spec:
        return all(_is_canonical(p) for p in spec.get("and", spec.get("or", [])))
    if "not" in spec:
        return _is_canonical(spec["not"])
    return set(spec) == {"field", "op", "value"}
