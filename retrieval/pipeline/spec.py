"""Pipeline declarations: retrievers -> fusion -> (PRF -> fusion again) -> rescoring stages, in TOML.

This module parses and validates a declaration (:class:`Pipeline`) and holds the built-in ones;
:mod:`braid.retrieval.pipeline.runner` runs it. Retriever names, their knobs, PRF methods and default
weights come from the retriever registry (:mod:`braid.retrieval.retrievers`); rescoring stages from
:data:`braid.retrieval.pipeline.rerank.RESCORE_STAGES`.

A pipeline file::

    name = "hybrid-prf"
    depth = 1000                      # candidates per retriever

    [[retriever]]
    name = "bm25"                     # bm25 | sparse | sparse-if | dense | pyserini
    weight = 1.0
    prf = { method = "rm3", fb_docs = 10, fb_terms = 10, original_weight = 0.5 }

    [[retriever]]
    name = "dense"
    weight = 1.0
    prf = { method = "rocchio", fb_docs = 5, alpha = 0.4, beta = 0.6 }

    [fusion]
    method = "linear"                 # linear | rrf | combsum | combmnz | combmax
    norm = "minmax"                   # minmax | zscore | max | sum | none
    rrf_k = 60

    [[rescore]]                       # optional, applied in order to the fused top_n
    stage = "sparse"                  # sparse (full SPLADE on the candidates) | dense | cross-encoder
    top_n = 100
    weight = 0.3                      # share of the new score in a min-max interpolation (1.0 = replace)

With PRF and several retrievers the pipeline follows "To Interpolate or not to Interpolate"
(Li et al., SIGIR 2022): fuse the first-round lists, take feedback documents from the fused
ranking, run each PRF retriever again with its expanded query, and fuse again. Every result
records the pipeline that made it (``Pipeline.to_dict``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


from braid.data.errors import OptionError, check_finite, check_int

from braid.retrieval import retrievers as registry

FUSION_KEYS = {"method", "norm", "rrf_k", "missing"}
STEP_KEYS = {"name", "weight", "depth", "prf"}  # plus the retriever's own knobs
PRF_KEYS = {"method", "fb_docs", "fb_terms", "original_weight", "alpha", "beta", "source"}
RESCORE_KEYS = {"stage", "top_n", "weight", "model", "batch_size", "max_length"}


@dataclass(frozen=True)
class RetrieverStep:
    name: str
    weight: float = 1.0
    depth: int | None = None
    prf: dict | None = None
    knobs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Pipeline:
    name: str
    retrievers: tuple[RetrieverStep, ...]
    fusion: dict
    depth: int = 1000
    rescore: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "depth": self.depth,
            "retriever": [
                {"name": r.name, "weight": r.weight, **({"depth": r.depth} if r.depth else {}), **({"prf": r.prf} if r.prf else {}), **r.knobs}
                for r in self.retrievers
            ],
            "fusion": dict(self.fusion),
            "rescore": [dict(s) for s in self.rescore],
        }

    def to_toml(self) -> str:
        d = self.to_dict()
        lines = [f'name = "{d["name"]}"', f"depth = {d['depth']}", ""]
        for r in d["retriever"]:
            lines.append("[[retriever]]")
            for key, value in r.items():
                lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        lines.append("[fusion]")
        for key, value in d["fusion"].items():
            lines.append(f"{key} = {_toml_value(value)}")
        for stage in d["rescore"]:
            lines += ["", "[[rescore]]"] + [f"{key} = {_toml_value(v)}" for key, v in stage.items()]
        return "\n".join(lines) + "\n"

    @property
    def components(self) -> set[str]:
        from braid.retrieval.pipeline.rerank import RESCORE_STAGES

        need = {registry.get(r.name).component for r in self.retrievers}
        for stage in self.rescore:
            component = RESCORE_STAGES[stage["stage"]].component
            if component is not None:
                need.add(component)
        return need


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


# ---------------------------------------------------------------------- parsing / validation
def _number(where: str, key: str, value, *, integer=False, positive=False, nonneg=False):
    if integer:
        return check_int(f"{where}.{key}", value, low=1 if positive else 0)
    return check_finite(f"{where}.{key}", value, low=0 if nonneg else None)


def pipeline_from_dict(d: dict, where: str = "pipeline") -> Pipeline:
    """Validate a pipeline declaration (TOML table) and return it; errors name the key and value."""
    from braid.retrieval.pipeline.fusion import FUSION_METHODS
    from braid.retrieval.pipeline.rerank import RESCORE_STAGES

    if not isinstance(d, dict):
        raise OptionError(where, d, "a table")
    unknown = set(d) - {"name", "depth", "retriever", "fusion", "rescore"}
    if unknown:
        raise OptionError(where, ", ".join(sorted(unknown)), "unknown key; allowed: name, depth, retriever, fusion, rescore")
    steps = []
    raw_steps = d.get("retriever", [])
    if not isinstance(raw_steps, list) or not raw_steps:
        raise OptionError(f"{where}.retriever", raw_steps, "a non-empty list of [[retriever]] tables")
    for i, r in enumerate(raw_steps):
        at = f"{where}.retriever[{i}]"
        if not isinstance(r, dict):
            raise OptionError(at, r, "a table")
        name = r.get("name")
        if name not in registry.RETRIEVERS:
            raise OptionError(f"{at}.name", name, "one of " + ", ".join(registry.RETRIEVERS))
        spec = registry.get(name)
        allowed = STEP_KEYS | set(spec.knob_names)
        bad = set(r) - allowed
        if bad:
            raise OptionError(at, ", ".join(sorted(bad)), f"unknown key for {name}; allowed: " + ", ".join(sorted(allowed)))
        weight = _number(at, "weight", r.get("weight", 1.0))
        depth = _number(at, "depth", r["depth"], integer=True, positive=True) if "depth" in r else None
        prf = r.get("prf")
        if prf is not None:
            if not isinstance(prf, dict):
                raise OptionError(f"{at}.prf", prf, "a table")
            bad = set(prf) - PRF_KEYS
            if bad:
                raise OptionError(f"{at}.prf", ", ".join(sorted(bad)), "unknown key; allowed: " + ", ".join(sorted(PRF_KEYS)))
            if prf.get("method") not in spec.prf:
                raise OptionError(f"{at}.prf.method", prf.get("method"), f"for {name}: " + (", ".join(sorted(spec.prf)) or "no PRF"))
            for key in ("fb_docs", "fb_terms"):
                if key in prf:
                    _number(f"{at}.prf", key, prf[key], integer=True, positive=True)
            for key in ("original_weight", "alpha", "beta"):
                if key in prf:
                    _number(f"{at}.prf", key, prf[key], nonneg=True)
            if prf.get("source", "fused") not in ("fused", "own"):
                raise OptionError(f"{at}.prf.source", prf.get("source"), "fused or own")
        knobs = spec.check_knobs({key: r[key] for key in spec.knob_names if key in r}, where=f"{at}.")
        steps.append(RetrieverStep(name=name, weight=weight, depth=depth, prf=prf, knobs=knobs))
    fusion = dict(d.get("fusion", {"method": "linear", "norm": "minmax"}))
    bad = set(fusion) - FUSION_KEYS
    if bad:
        raise OptionError(f"{where}.fusion", ", ".join(sorted(bad)), "unknown key; allowed: " + ", ".join(sorted(FUSION_KEYS)))
    fusion.setdefault("method", "linear")
    if fusion["method"] not in FUSION_METHODS:
        raise OptionError(f"{where}.fusion.method", fusion["method"], "one of " + ", ".join(FUSION_METHODS))
    if "rrf_k" in fusion:
        _number(f"{where}.fusion", "rrf_k", fusion["rrf_k"], nonneg=True)
    rescore = []
    for i, s in enumerate(d.get("rescore", [])):
        at = f"{where}.rescore[{i}]"
        if not isinstance(s, dict):
            raise OptionError(at, s, "a table")
        bad = set(s) - RESCORE_KEYS
        if bad:
            raise OptionError(at, ", ".join(sorted(bad)), "unknown key; allowed: " + ", ".join(sorted(RESCORE_KEYS)))
        if s.get("stage") not in RESCORE_STAGES:
            raise OptionError(f"{at}.stage", s.get("stage"), "one of " + ", ".join(RESCORE_STAGES))
        stage = dict(s)
        stage["top_n"] = _number(at, "top_n", s.get("top_n", 100), integer=True, positive=True)
        stage["weight"] = _number(at, "weight", s.get("weight", 1.0), nonneg=True)
        if stage["weight"] > 1:
            raise OptionError(f"{at}.weight", stage["weight"], "between 0 and 1")
        if stage["stage"] == "cross-encoder" and not s.get("model"):
            raise OptionError(f"{at}.model", None, "a cross-encoder model folder or hub id")
        rescore.append(stage)
    depth = _number(where, "depth", d.get("depth", 1000), integer=True, positive=True)
    return Pipeline(name=str(d.get("name", "pipeline")), retrievers=tuple(steps), fusion=fusion, depth=depth, rescore=tuple(rescore))


def read_pipeline(path: str | Path) -> Pipeline:
    path = Path(path)
    if not path.exists():
        raise OptionError("--pipeline", str(path), "no such file (or a built-in name: " + ", ".join(BUILTIN) + ")")
    try:
        d = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OptionError("--pipeline", str(path), f"not valid TOML: {exc}") from None
    d.setdefault("name", path.stem)
    return pipeline_from_dict(d, where=str(path))


# The default interpolation: z-score normalisation, each retriever at its spec's weight (bm25 0.75 /
# learned sparse 0.75 / dense 1.0). Chosen once by `braid tune` on scifact's *train* split
# (docs/pipelines/scifact-tuned.toml) and then fixed: the same on every collection, never tuned on a
# test split. Across the six shared collections it is at least as good as the best single retriever
# (equal-weight min-max fails that on cisi).
DEFAULT_FUSION = {"method": "linear", "norm": "zscore"}

# PRF settings of the built-in hybrid-prf pipeline, per PRF stage (Pyserini's / Anserini's published settings).
BUILTIN_PRF = {
    "rm3": {"method": "rm3", "fb_docs": 10, "fb_terms": 10, "original_weight": 0.5},
    "dense-rocchio": {"method": "rocchio", "fb_docs": 5, "alpha": 0.4, "beta": 0.6},
    "sparse-rocchio": {"method": "rocchio", "fb_docs": 5, "alpha": 1.0, "beta": 0.75},
}


def builtin_pipeline(name: str, available: Sequence[str]) -> Pipeline:
    """The built-in pipelines over whatever retrievers the index has (same defaults on every collection)."""
    names = registry.hybrid_members(available)
    if not names:
        raise OptionError("--pipeline", name, "the index has no retriever to fuse")
    weighted = name != "hybrid-rrf"  # RRF stays unweighted
    retrievers = [{"name": n, "weight": registry.get(n).weight} if weighted else {"name": n} for n in names]
    d: dict = {"name": name, "depth": 1000, "retriever": retrievers}
    if name == "hybrid":
        d["fusion"] = dict(DEFAULT_FUSION)
    elif name == "hybrid-rrf":
        d["fusion"] = {"method": "rrf", "rrf_k": 60}
    elif name == "hybrid-prf":
        d["fusion"] = dict(DEFAULT_FUSION)
        for r in d["retriever"]:
            stages = set(registry.get(r["name"]).prf.values())
            for stage, settings in BUILTIN_PRF.items():
                if stage in stages:
                    r["prf"] = dict(settings)
                    break
    else:
        raise OptionError("--pipeline", name, "a TOML file or a built-in name: " + ", ".join(BUILTIN))
    return pipeline_from_dict(d, where=name)


BUILTIN = ("hybrid", "hybrid-rrf", "hybrid-prf")


def pipeline_components(spec) -> set[str]:
    """Components an index needs for ``spec`` (a file or built-in name), before any index exists."""
    if str(spec) in BUILTIN:
        return set()
    return read_pipeline(spec).components
