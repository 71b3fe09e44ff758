"""The retriever specification: everything the rest of Braid needs to know about one retriever.

A :class:`RetrieverSpec` is the single definition the searcher, pipelines, tuning, the HTTP service,
sharded search and the CLI read: its name, the index component it searches, how it opens, its
query-time knobs (types and ranges, validated here once), its PRF methods, its default fusion weight,
whether several threads may call it at once. A :class:`Knob` validates one query-time argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from braid.data.errors import OptionError


@dataclass(frozen=True)
class Knob:
    """One query-time argument of a retriever (``k`` is common to all and not a knob).

    ``kind``: ``int``, ``float`` or ``bool``. Range: ``low``/``high`` inclusive bounds (``low_open``:
    ``low < value``). ``applies``: given the component's manifest entry, ``None`` when the knob can
    act on it, else the reason it cannot (e.g. ``nprobe`` on a flat FAISS index): a knob that would be
    silently ignored is refused instead.
    """

    name: str
    kind: type
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    applies: Callable[[dict], str | None] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        if self.kind is bool:
            return "true or false"
        noun = "an integer" if self.kind is int else "a number"
        lo = None if self.low is None else (f"> {self.low:g}" if self.low_open else f">= {self.low:g}")
        if lo and self.high is not None:
            op = "<" if self.low_open else "<="
            return f"{noun} with {self.low:g} {op} {self.name} <= {self.high:g}"
        if lo:
            return f"{noun} {lo}"
        if self.high is not None:
            return f"{noun} <= {self.high:g}"
        return noun

    def check(self, value: Any, where: str | None = None):
        """``value`` converted to the knob's type; OptionError naming ``where`` (default: the knob) otherwise."""
        where = where or self.name
        if self.kind is bool:
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise OptionError(where, value, self.describe())
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise OptionError(where, value, self.describe())
        if not math.isfinite(float(value)):
            raise OptionError(where, value, self.describe())
        if self.kind is int:
            if not float(value).is_integer():
                raise OptionError(where, value, self.describe())
            value = int(value)
        else:
            value = float(value)
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise OptionError(where, value, self.describe())
        if self.high is not None and value > self.high:
            raise OptionError(where, value, self.describe())
        return value


@dataclass(frozen=True)
class RetrieverSpec:
    """One retriever.

    ``component``: the index component it searches (a key of the manifest's ``components``).
    ``open``: ``(IndexContext) -> retriever`` (an object with ``name`` and
    ``search(queries, k, threads=1, exclude=None, **knobs) -> Hits``).
    ``serves``: ``(component entry) -> None`` when the component can serve this retriever, else why not.
    ``prf``: PRF method name (as a pipeline names it) -> key of :data:`braid.retrieval.pipeline.prf.PRF_STAGES`.
    ``weight``: its weight in the built-in interpolation pipelines.
    ``hybrid``: a member of the built-in pipelines (and of "several retrievers -> hybrid by default").
    ``stands_in_for``: used in the built-in pipelines in place of that retriever when it is absent.
    ``thread_safe``: several threads may search it at once (else the service serialises it).
    ``rescore``: can score given candidates (``score_candidates``) as a pipeline rescoring stage.
    """

    name: str
    component: str
    open: Callable[[Any], Any]
    summary: str
    knobs: tuple[Knob, ...] = ()
    serves: Callable[[dict], str | None] | None = None
    prf: Mapping[str, str] = field(default_factory=dict)
    weight: float = 1.0
    hybrid: bool = False
    stands_in_for: str | None = None
    thread_safe: bool = False
    rescore: bool = False

    def knob(self, name: str) -> Knob | None:
        for knob in self.knobs:
            if knob.name == name:
                return knob
        return None

    @property
    def knob_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.knobs)

    def why_not(self, info: dict | None) -> str | None:
        """None when a component entry ``info`` can serve this retriever, else the reason."""
        if info is None:
            return f"no {self.component!r} component"
        return self.serves(info) if self.serves is not None else None

    def check_knobs(self, knobs: Mapping[str, Any], info: dict | None = None, where: str = "") -> dict:
        """Validated, converted knobs. Unknown names, bad values, and knobs the component cannot use
        (``Knob.applies``, when ``info`` is given) raise OptionError naming the knob."""
        out = {}
        for name, value in knobs.items():
            knob = self.knob(name)
            label = f"{where}{name}" if where else name
            if knob is None:
                allowed = ", ".join(self.knob_names) or "none"
                raise OptionError(label, value, f"not an option of the {self.name} retriever (it takes: {allowed})")
            out[name] = knob.check(value, label)
            if info is not None and knob.applies is not None:
                reason = knob.applies(info)
                if reason is not None:
                    raise OptionError(label, value, f"{self.name}: {reason}")
        return out
