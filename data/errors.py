"""The exceptions every layer raises for bad input, so callers (the CLI) can show them plainly."""

from __future__ import annotations


class BraidError(Exception):
    """Base class: an error the user can fix (bad input, bad option, bad index directory)."""


class DataError(BraidError, ValueError):
    """Bad input data. The message names the file and, where there is one, the line."""

    def __init__(self, message: str, path: object | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line


class IndexFormatError(BraidError):
    """An index directory that is missing, foreign, half-written, corrupted or of an unknown version."""


class OptionError(BraidError, ValueError):
    """A bad or contradictory option: the message names the argument, the value and what is allowed."""

    def __init__(self, name: str, value: object, allowed: str):
        super().__init__(f"invalid value for {name}: {value!r} ({allowed})")
        self.name = name
        self.value = value
