"""The exceptions every layer raises for bad input, so callers (the CLI) can show them plainly, and the
checks of plain values (positive integers, finite numbers) that raise them."""

from __future__ import annotations

import math
import numbers


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
        self.allowed = allowed


# ------------------------------------------------------------------------------------- checks
# One check per kind of value, so that every layer refuses a bad value with the same words.
# ``bool`` is an int to Python but never a count here; numpy integers and floats are accepted
# (they register as ``numbers.Integral`` / ``numbers.Real``), so no numpy import is needed.


def check_int(name: str, value: object, *, low: int = 1, allow_none: bool = False, hint: str | None = None) -> int | None:
    """``value`` as an ``int`` when it is an integer ``>= low`` (or None with ``allow_none``).

    Raises OptionError naming ``name`` and what is allowed: "a positive integer" for ``low=1``,
    "an integer >= LOW" otherwise, prefixed with "None or " when None is allowed; ``hint`` (what
    the value means) follows after a semicolon.
    """
    if type(value) is int and value >= low:  # the common case, before the ABC check (per query)
        return value
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        allowed = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise OptionError(name, value, _allowed(allowed, allow_none, hint))
    return int(value)


def check_positive_int(name: str, value: object, *, allow_none: bool = False, hint: str | None = None) -> int | None:
    """``value`` as an ``int`` when it is an integer >= 1; else OptionError(name, value, "a positive integer")."""
    return check_int(name, value, low=1, allow_none=allow_none, hint=hint)


def check_nonneg_int(name: str, value: object, *, allow_none: bool = False, hint: str | None = None) -> int | None:
    """``value`` as an ``int`` when it is an integer >= 0; else OptionError(name, value, "an integer >= 0")."""
    return check_int(name, value, low=0, allow_none=allow_none, hint=hint)


def check_finite(
    name: str, value: object, *, low: float | None = None, low_open: bool = False, allow_none: bool = False, hint: str | None = None
) -> float | None:
    """``value`` as a ``float`` when it is a finite number (``>= low``, or ``> low`` with ``low_open``).

    Raises OptionError naming ``name`` and what is allowed: "a finite number", "a finite number >= 0",
    "a finite number > 0"; ``hint`` as for :func:`check_int`.
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if not ok:
        allowed = "a finite number" + ("" if low is None else f" {'>' if low_open else '>='} {low:g}")
        raise OptionError(name, value, _allowed(allowed, allow_none, hint))
    return float(value)


def _allowed(allowed: str, allow_none: bool, hint: str | None) -> str:
    return ("None or " if allow_none else "") + allowed + (f"; {hint}" if hint else "")
