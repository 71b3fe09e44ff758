"""The retriever registry: one :class:`~braid.retrieval.retrievers.spec.RetrieverSpec` per retriever.

Adding a retriever is one file (its retriever class and ``SPEC``) plus one entry in :data:`RETRIEVERS`
below. Everything else reads the registry: the :class:`~braid.retrieval.searcher.Searcher` (which
retrievers an index serves, the default), pipelines (names, PRF methods, knobs, default weights),
tuning, the HTTP service (knobs, thread safety), sharded search and the CLI (knob options).

Importing this package loads no model library: each retriever imports its encoder when it opens.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from braid.data.errors import OptionError
from braid.retrieval.retrievers import bm25, dense, dense_bin, pyserini, sparse
from braid.retrieval.retrievers.spec import Knob, RetrieverSpec

RETRIEVERS: dict[str, RetrieverSpec] = {
    spec.name: spec
    for spec in (
        bm25.SPEC,
        sparse.SPEC,
        sparse.SPEC_IF,
        dense_bin.SPEC,  # before dense: the default of a dense-only index built with --dense-index bin
        dense.SPEC,
        pyserini.SPEC,
    )
}


def _all_knobs() -> dict[str, Knob]:
    """Every knob by name; two retrievers naming the same knob must define it the same way."""
    out: dict[str, Knob] = {}
    for spec in RETRIEVERS.values():
        for knob in spec.knobs:
            seen = out.setdefault(knob.name, knob)
            if (seen.kind, seen.low, seen.high, seen.low_open) != (knob.kind, knob.low, knob.high, knob.low_open):
                raise TypeError(f"knob {knob.name!r} is defined differently by two retrievers")
    return out


KNOBS: dict[str, Knob] = _all_knobs()


def get(name: str, where: str = "--retriever") -> RetrieverSpec:
    """The spec of retriever ``name``; OptionError listing the known ones otherwise."""
    spec = RETRIEVERS.get(str(name))
    if spec is None:
        raise OptionError(where, name, "known retrievers: " + ", ".join(RETRIEVERS) + " (or a pipeline)")
    return spec


def available(manifest: Mapping[str, Any]) -> list[str]:
    """The retrievers an index with this manifest can serve, in registry order."""
    have = manifest["components"]
    return [name for name, spec in RETRIEVERS.items() if spec.component in have and spec.why_not(have[spec.component]) is None]


def hybrid_members(names: Iterable[str]) -> list[str]:
    """The retrievers of the built-in pipelines among ``names`` (registry order): every ``hybrid`` one,
    and a stand-in (``stands_in_for``) where the retriever it stands in for is absent."""
    names = set(names)
    out = []
    for name, spec in RETRIEVERS.items():
        if name not in names:
            continue
        if spec.hybrid or (spec.stands_in_for is not None and spec.stands_in_for not in names):
            out.append(name)
    return out


def default_name(manifest: Mapping[str, Any]) -> str:
    """What a search runs when asked for nothing: the ``hybrid`` pipeline when the index serves
    several hybrid retrievers, else its first retriever."""
    have = available(manifest)
    if not have:
        raise OptionError("--retriever", None, "the index serves no retriever")
    real = [n for n in have if RETRIEVERS[n].hybrid]
    return "hybrid" if len(real) > 1 else have[0]


def open_retriever(ctx, name: str):
    """Open retriever ``name`` over the index context ``ctx`` (OptionError when the index lacks what it needs)."""
    spec = get(name)
    info = ctx.require(spec.component, "--retriever")
    reason = spec.why_not(info)
    if reason is not None:
        raise OptionError("--retriever", name, f"{ctx.index_dir}: {reason}")
    return spec.open(ctx)


def check_knobs(name: str, knobs: Mapping[str, Any], info: dict | None = None, where: str = "") -> dict:
    """Knobs validated for retriever ``name`` (see :meth:`RetrieverSpec.check_knobs`)."""
    return get(name).check_knobs(knobs, info, where)


def split_knobs(names: Sequence[str], knobs: Mapping[str, Any], components: Mapping[str, dict] | None = None) -> dict[str, dict]:
    """Per retriever of a pipeline, the knobs that apply to it. Every knob is validated once, and one
    that no retriever of ``names`` takes is an error (it would be silently ignored)."""
    out: dict[str, dict] = {n: {} for n in names}
    for key, value in knobs.items():
        knob = KNOBS.get(key)
        if knob is None:
            raise OptionError(key, value, "not a search option; known: " + ", ".join(KNOBS))
        value = knob.check(value)
        takers = [n for n in names if RETRIEVERS[n].knob(key) is not None]
        if not takers:
            raise OptionError(knob.flag, value, "none of the retrievers searched takes it (" + ", ".join(names) + ")")
        for n in takers:
            info = components.get(RETRIEVERS[n].component) if components is not None else None
            reason = knob.applies(info) if (knob.applies is not None and info is not None) else None
            if reason is not None:
                raise OptionError(knob.flag, value, f"{n}: {reason}")
            out[n][key] = value
    return out


__all__ = [
    "Knob",
    "RetrieverSpec",
    "RETRIEVERS",
    "KNOBS",
    "get",
    "available",
    "hybrid_members",
    "default_name",
    "open_retriever",
    "check_knobs",
    "split_knobs",
]
