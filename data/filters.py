"""Metadata filters: the JSON form, the command-line string form, and their one canonical form.

A document's ``metadata`` (BEIR's corpus field) maps names to scalar values: strings (keywords, or
dates when written as ISO 8601 ``YYYY-MM-DD[THH:MM[:SS]]``), integers, floats, booleans. A filter
selects documents by those values; every retriever applies it before its top-k
(:mod:`braid.index.metadata` turns it into a bitmap over docnos).

JSON form (Python dicts, HTTP)::

    {"field": "year", "gte": 2000, "lt": 2010}        # several operators on one field: all must hold
    {"field": "lang", "eq": "en"}   {"field": "lang", "ne": "en"}   {"field": "lang", "in": ["en", "de"]}
    {"and": [F, ...]}   {"or": [F, ...]}   {"not": F}

String form (``braid search --filter``)::

    year >= 2000 and year < 2010 and (lang = en or lang in (de, fr)) and not kind = "draft"

Values: numbers are numbers, anything else a string (quote it with ``"`` to keep spaces, operators
or a leading digit). Canonical form: ``{"field", "op", "value"}`` leaves (``op`` one of :data:`OPS`;
``value`` a list for ``in``) under ``{"and": [...]}``, ``{"or": [...]}``, ``{"not": ...}``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from braid.data.errors import OptionError

OPS = ("eq", "ne", "in", "lt", "lte", "gt", "gte")
_SYMBOLS = {"=": "eq", "==": "eq", "!=": "ne", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
MAX_DEPTH = 32


def _literal(value: Any, where: str) -> Any:
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise OptionError(where, value, "a finite number, a string or a boolean")
        return value
    raise OptionError(where, value, "a number, a string or a boolean")


def parse_filter(spec: Any, where: str = "filter") -> dict:
    """The canonical form of a filter given as a dict (JSON form), a JSON string, or the string form.

    Raises OptionError naming ``where`` and what is wrong.
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise OptionError(where, spec, f"malformed JSON filter ({exc.msg} at column {exc.colno})") from None
        else:
            return _StringParser(text, where).parse()
    return _canonical(spec, where, 0)


def _canonical(spec: Any, where: str, depth: int) -> dict:
    if depth > MAX_DEPTH:
        raise OptionError(where, "...", f"a filter nested at most {MAX_DEPTH} deep")
    if not isinstance(spec, dict) or not spec:
        raise OptionError(where, spec, 'a filter object: {"field": NAME, OP: VALUE}, {"and": [...]}, {"or": [...]} or {"not": ...}')
    for key in ("and", "or"):
        if key in spec:
            if len(spec) != 1:
                raise OptionError(where, spec, f'"{key}" stands alone in its object')
            parts = spec[key]
            if not isinstance(parts, list) or not parts:
                raise OptionError(f"{where}.{key}", parts, "a non-empty list of filters")
            return {key: [_canonical(p, f"{where}.{key}[{i}]", depth + 1) for i, p in enumerate(parts)]}
    if "not" in spec:
        if len(spec) != 1:
            raise OptionError(where, spec, '"not" stands alone in its object')
        return {"not": _canonical(spec["not"], f"{where}.not", depth + 1)}
    field = spec.get("field")
    if not isinstance(field, str) or not field:
        raise OptionError(f"{where}.field", field, "a metadata field name")
    ops = [k for k in spec if k != "field"]
    if not ops:
        raise OptionError(where, spec, f"at least one operator ({', '.join(OPS)})")
    leaves = []
    for op in ops:
        if op not in OPS:
            raise OptionError(f"{where}.{op}", spec[op], f"an operator: {', '.join(OPS)}")
        value = spec[op]
        if op == "in":
            if not isinstance(value, list) or not value:
                raise OptionError(f"{where}.in", value, "a non-empty list of values")
            value = [_literal(v, f"{where}.in") for v in value]
        else:
            value = _literal(value, f"{where}.{op}")
        leaves.append({"field": field, "op": op, "value": value})
    return leaves[0] if len(leaves) == 1 else {"and": leaves}


_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op><=|>=|==|!=|=|<|>)|(?P<punct>[(),])|(?P<word>[^\s(),=<>!"]+))')
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class _StringParser:
    """``or`` of ``and`` of (``not``) comparisons; parentheses group."""

    def __init__(self, text: str, where: str):
        self.text = text
        self.where = where
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise self.error(f"cannot read {text[pos:pos + 12]!r}")
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.at = 0

    def error(self, why: str) -> OptionError:
        return OptionError(self.where, self.text, f"{why}; e.g. 'year >= 2000 and lang in (en, de) and not kind = draft'")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise self.error("unexpected end of the filter")
        self.at += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "word" and tok[1].lower() == word:
            self.at += 1
            return True
        return False

    def parse(self) -> dict:
        if not self.tokens:
            raise self.error("an empty filter")
        node = self.parse_or(0)
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek()[1]!r}")
        return node

    def parse_or(self, depth: int) -> dict:
        parts = [self.parse_and(depth)]
        while self.keyword("or"):
            parts.append(self.parse_and(depth))
        return parts[0] if len(parts) == 1 else {"or": parts}

    def parse_and(self, depth: int) -> dict:
        parts = [self.parse_unary(depth)]
        while self.keyword("and"):
            parts.append(self.parse_unary(depth))
        return parts[0] if len(parts) == 1 else {"and": parts}

    def parse_unary(self, depth: int) -> dict:
        if depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} deep")
        if self.keyword("not"):
            return {"not": self.parse_unary(depth + 1)}
        tok = self.peek()
        if tok == ("punct", "("):
            self.take()
            node = self.parse_or(depth + 1)
            if self.take() != ("punct", ")"):
                raise self.error("a ')' is missing")
            return node
        kind, field = self.take()
        if kind not in ("word", "str"):
            raise self.error(f"a field name, not {field!r}")
        field = self.value(kind, field, as_name=True)
        if self.keyword("in"):
            if self.take() != ("punct", "("):
                raise self.error("'in' takes a list in parentheses: lang in (en, de)")
            values = [self.scalar()]
            while True:
                tok = self.take()
                if tok == ("punct", ")"):
                    break
                if tok != ("punct", ","):
                    raise self.error(f"',' or ')' expected, got {tok[1]!r}")
                values.append(self.scalar())
            return {"field": field, "op": "in", "value": values}
        kind, op = self.take()
        if kind != "op":
            raise self.error(f"an operator (=, !=, <, <=, >, >=, in) after {field!r}, got {op!r}")
        return {"field": field, "op": _SYMBOLS[op], "value": self.scalar()}

    def scalar(self):
        kind, text = self.take()
        if kind not in ("word", "str"):
            raise self.error(f"a value, not {text!r}")
        return self.value(kind, text)

    @staticmethod
    def value(kind: str, text: str, as_name: bool = False):
        if kind == "str":
            return json.loads(text)
        if as_name:
            return text
        if _NUMBER.match(text):
            number = float(text)
            return int(number) if re.fullmatch(r"[+-]?\d+", text) else number
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        return text


def describe_filter(node: dict) -> str:
    """The string form of a canonical filter (for logs and run headers)."""
    if "and" in node:
        return " and ".join(f"({describe_filter(p)})" if "or" in p else describe_filter(p) for p in node["and"])
    if "or" in node:
        return " or ".join(describe_filter(p) for p in node["or"])
    if "not" in node:
        inner = describe_filter(node["not"])
        return f"not ({inner})" if ("and" in node["not"] or "or" in node["not"]) else f"not {inner}"
    symbol = {v: k for k, v in _SYMBOLS.items() if k != "=="}[node["op"]] if node["op"] != "in" else "in"
    value = node["value"]
    show = json.dumps
    if node["op"] == "in":
        return f"{node['field']} in ({', '.join(show(v) for v in value)})"
    return f"{node['field']} {symbol} {show(value)}"
