"""Pipelines: retrievers -> fusion -> (PRF -> fusion again) -> rescoring stages, declared in TOML.

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

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from braid.data.errors import OptionError
from braid.index.hits import Hits

FUSION_KEYS = {"method", "norm", "rrf_k", "missing"}
RETRIEVER_KEYS = {"name", "weight", "depth", "prf", "query_cut", "heap_factor", "exact", "nprobe", "ef_search"}
PRF_METHODS = {"bm25": {"rm3"}, "pyserini": set(), "sparse": {"rocchio"}, "sparse-if": {"rocchio"}, "dense": {"average", "rocchio"}}
PRF_KEYS = {"method", "fb_docs", "fb_terms", "original_weight", "alpha", "beta", "source"}
RESCORE_STAGES = {"sparse", "dense", "cross-encoder"}
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
        from braid.retrieval.retrievers import RETRIEVERS

        need = {RETRIEVERS[r.name][0] for r in self.retrievers}
        for stage in self.rescore:
            if stage["stage"] in ("sparse", "dense"):
                need.add(stage["stage"])
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
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if integer:
        ok = ok and float(value).is_integer()
    if ok and positive and value <= 0:
        ok = False
    if ok and nonneg and value < 0:
        ok = False
    if not ok:
        kind = "a positive integer" if integer and positive else "a finite number" + (" >= 0" if nonneg else "")
        raise OptionError(f"{where}.{key}", value, kind)
    return int(value) if integer else float(value)


def pipeline_from_dict(d: dict, where: str = "pipeline") -> Pipeline:
    """Validate a pipeline declaration (TOML table) and return it; errors name the key and value."""
    from braid.retrieval.fusion import FUSION_METHODS
    from braid.retrieval.retrievers import RETRIEVERS

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
        bad = set(r) - RETRIEVER_KEYS
        if bad:
            raise OptionError(at, ", ".join(sorted(bad)), "unknown key; allowed: " + ", ".join(sorted(RETRIEVER_KEYS)))
        name = r.get("name")
        if name not in RETRIEVERS:
            raise OptionError(f"{at}.name", name, "one of " + ", ".join(RETRIEVERS))
        weight = _number(at, "weight", r.get("weight", 1.0))
        depth = _number(at, "depth", r["depth"], integer=True, positive=True) if "depth" in r else None
        prf = r.get("prf")
        if prf is not None:
            if not isinstance(prf, dict):
                raise OptionError(f"{at}.prf", prf, "a table")
            bad = set(prf) - PRF_KEYS
            if bad:
                raise OptionError(f"{at}.prf", ", ".join(sorted(bad)), "unknown key; allowed: " + ", ".join(sorted(PRF_KEYS)))
            if prf.get("method") not in PRF_METHODS[name]:
                raise OptionError(f"{at}.prf.method", prf.get("method"), f"for {name}: " + (", ".join(sorted(PRF_METHODS[name])) or "no PRF"))
            for key in ("fb_docs", "fb_terms"):
                if key in prf:
                    _number(f"{at}.prf", key, prf[key], integer=True, positive=True)
            for key in ("original_weight", "alpha", "beta"):
                if key in prf:
                    _number(f"{at}.prf", key, prf[key], nonneg=True)
            if prf.get("source", "fused") not in ("fused", "own"):
                raise OptionError(f"{at}.prf.source", prf.get("source"), "fused or own")
        knobs = {key: r[key] for key in ("query_cut", "heap_factor", "exact", "nprobe", "ef_search") if key in r}
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
            raise OptionError(f"{at}.stage", s.get("stage"), "one of " + ", ".join(sorted(RESCORE_STAGES)))
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
    return pipeline_from_dict(d, where=path.name)


def _default_retrievers(available: Sequence[str]) -> list[str]:
    names = [r for r in ("bm25", "sparse", "dense") if r in available]
    if "sparse" not in names and "sparse-if" in available:
        names.insert(1, "sparse-if")
    return names


# The default interpolation: z-score normalisation, weights bm25 0.75 / learned sparse 0.75 / dense 1.0.
# Chosen once by `braid tune` on scifact's *train* split (docs/pipelines/scifact-tuned.toml) and then
# fixed: the same on every collection, never tuned on a test split. Across the six shared collections
# it is at least as good as the best single retriever (equal-weight min-max fails that on cisi).
DEFAULT_WEIGHTS = {"bm25": 0.75, "sparse": 0.75, "sparse-if": 0.75, "dense": 1.0}
DEFAULT_FUSION = {"method": "linear", "norm": "zscore"}


def builtin_pipeline(name: str, available: Sequence[str]) -> Pipeline:
    """The built-in pipelines over whatever retrievers the index has (same defaults on every collection)."""
    names = _default_retrievers(available)
    if not names:
        raise OptionError("--pipeline", name, "the index has no retriever to fuse")
    weighted = name != "hybrid-rrf"  # RRF stays unweighted
    retrievers = [{"name": n, "weight": DEFAULT_WEIGHTS[n]} if weighted else {"name": n} for n in names]
    d: dict = {"name": name, "depth": 1000, "retriever": retrievers}
    if name == "hybrid":
        d["fusion"] = dict(DEFAULT_FUSION)
    elif name == "hybrid-rrf":
        d["fusion"] = {"method": "rrf", "rrf_k": 60}
    elif name == "hybrid-prf":
        d["fusion"] = dict(DEFAULT_FUSION)
        for r in d["retriever"]:
            if r["name"] == "bm25":
                r["prf"] = {"method": "rm3", "fb_docs": 10, "fb_terms": 10, "original_weight": 0.5}
            elif r["name"] == "dense":
                r["prf"] = {"method": "rocchio", "fb_docs": 5, "alpha": 0.4, "beta": 0.6}
            elif r["name"].startswith("sparse"):
                r["prf"] = {"method": "rocchio", "fb_docs": 5, "alpha": 1.0, "beta": 0.75}
    else:
        raise OptionError("--pipeline", name, "a TOML file or a built-in name: " + ", ".join(BUILTIN))
    return pipeline_from_dict(d, where=name)


BUILTIN = ("hybrid", "hybrid-rrf", "hybrid-prf")


def pipeline_components(spec) -> set[str]:
    """Components an index needs for ``spec`` (a file or built-in name), before any index exists."""
    if str(spec) in BUILTIN:
        return set()
    return read_pipeline(spec).components


def load_pipeline(spec, searcher) -> "PipelineRunner":
    if isinstance(spec, Pipeline):
        return PipelineRunner(spec, searcher)
    if str(spec) in BUILTIN:
        return PipelineRunner(builtin_pipeline(str(spec), searcher.available_retrievers()), searcher)
    if not str(spec).endswith(".toml") and not Path(spec).exists():
        from braid.retrieval.retrievers import RETRIEVERS

        raise OptionError(
            "--retriever/--pipeline",
            str(spec),
            "known retrievers: " + ", ".join(RETRIEVERS) + "; pipelines: a .toml file or " + ", ".join(BUILTIN),
        )
    return PipelineRunner(read_pipeline(spec), searcher)


# ---------------------------------------------------------------------- running
class PipelineRunner:
    """Runs a Pipeline over a Searcher's retrievers; exposes the retriever interface (``name``, ``search``)."""

    def __init__(self, pipeline: Pipeline, searcher):
        self.pipeline = pipeline
        self.searcher = searcher
        self.name = pipeline.name
        for step in pipeline.retrievers:
            searcher.retriever(step.name)  # fail early on a missing component
        for stage in pipeline.rescore:
            if stage["stage"] in ("sparse", "dense") and stage["stage"] not in searcher.components:
                raise OptionError("rescore.stage", stage["stage"], f"{searcher.index_dir} has no {stage['stage']!r} component")

    def _fuse(self, lists: list[Hits], weights: list[float], k: int) -> Hits:
        from braid.retrieval.fusion import fuse

        if len(lists) == 1:
            return Hits(lists[0].docnos[:, :k], lists[0].scores[:, :k])
        params = {key: v for key, v in self.pipeline.fusion.items() if key != "method"}
        return fuse(lists, self.pipeline.fusion["method"], k=k, weights=weights, **params)

    def search(self, queries: Sequence[str], k: int, threads: int = 1, exclude=None, **knobs) -> Hits:
        p = self.pipeline
        depth = max(p.depth, k)
        first: list[Hits] = []
        for step in p.retrievers:
            retriever = self.searcher.retriever(step.name)
            step_knobs = {**step.knobs, **_knobs_for(step.name, knobs)}
            first.append(retriever.search(queries, k=step.depth or depth, threads=threads, exclude=exclude, **step_knobs))
        weights = [s.weight for s in p.retrievers]
        fused = self._fuse(first, weights, depth)
        if any(s.prf for s in p.retrievers):
            second = []
            for step, hits in zip(p.retrievers, first):
                if not step.prf:
                    second.append(hits)
                    continue
                source = fused if step.prf.get("source", "fused") == "fused" else hits
                second.append(self._prf(step, queries, source, depth, threads, exclude, knobs))
            fused = self._fuse(second, weights, depth)
        for stage in p.rescore:
            fused = self._rescore(stage, queries, fused, threads)
        return Hits(fused.docnos[:, :k].copy(), fused.scores[:, :k].copy())

    def _prf(self, step: RetrieverStep, queries, feedback: Hits, depth, threads, exclude, knobs) -> Hits:
        from braid.retrieval import prf as prf_lib

        cfg = step.prf
        retriever = self.searcher.retriever(step.name)
        fb_docs = int(cfg.get("fb_docs", 10))
        step_knobs = {**step.knobs, **_knobs_for(step.name, knobs)}
        if cfg["method"] == "rm3":
            lexical = retriever.index
            expanded = []
            for i, q in enumerate(queries):
                docnos, scores = feedback.row(i)
                docnos, scores = docnos[:fb_docs], scores[:fb_docs]
                terms = lexical.query_terms(q)
                if len(docnos) == 0 or not terms:
                    expanded.append(terms)
                    continue
                expanded.append(
                    prf_lib.rm3_expand(
                        terms,
                        lexical.term_frequencies(docnos),
                        np.asarray(scores, dtype=np.float64),
                        fb_terms=int(cfg.get("fb_terms", 10)),
                        original_query_weight=float(cfg.get("original_weight", 0.5)),
                        fb_docs=fb_docs,
                        doc_freqs=lexical.doc_freq,
                        num_docs=lexical.num_docs,
                    )
                )
            return retriever.search_terms(expanded, k=depth, threads=threads, exclude=exclude)
        if step.name.startswith("sparse"):
            qvecs = retriever.encode_queries(queries)
            new_rows = []
            for i in range(len(queries)):
                docnos, _ = feedback.row(i)
                fb = retriever.index.forward_vectors(np.asarray(docnos[:fb_docs], dtype=np.int64))
                q_idx, q_w = qvecs.row(i)
                new_rows.append(
                    prf_lib.rocchio_sparse(
                        (q_idx, q_w),
                        (fb.indptr, fb.indices, fb.data),
                        alpha=float(cfg.get("alpha", 1.0)),
                        beta=float(cfg.get("beta", 0.75)),
                        fb_terms=cfg.get("fb_terms"),
                    )
                )
            from braid.index.sparse.vectors import SparseVectors

            indptr = np.zeros(len(new_rows) + 1, dtype=np.int64)
            indptr[1:] = np.cumsum([len(r[0]) for r in new_rows])
            indices = np.concatenate([r[0] for r in new_rows]).astype(np.int32) if new_rows else np.empty(0, np.int32)
            data = np.concatenate([r[1] for r in new_rows]).astype(np.float32) if new_rows else np.empty(0, np.float32)
            vectors = SparseVectors(indptr, indices, data, qvecs.vocab_size)
            return retriever.search_vectors(vectors, k=depth, threads=threads, exclude=exclude, **step_knobs)
        # dense vector PRF
        qvecs = retriever.encode_queries(queries)
        dim = qvecs.shape[1]
        fb = np.zeros((len(queries), fb_docs, dim), dtype=np.float32)
        counts = np.zeros(len(queries), dtype=np.int64)
        for i in range(len(queries)):
            docnos, _ = feedback.row(i)
            docnos = docnos[:fb_docs]
            if len(docnos):
                fb[i, : len(docnos)] = retriever.doc_vectors(docnos)
            counts[i] = len(docnos)
        new_q = prf_lib.dense_prf(
            qvecs,
            fb,
            method=cfg["method"],
            depth=fb_docs,
            alpha=float(cfg.get("alpha", 0.4)),
            beta=float(cfg.get("beta", 0.6)),
            counts=counts,
        )
        return retriever.search_vectors(new_q, k=depth, threads=threads, exclude=exclude, **step_knobs)

    def _rescore(self, stage: dict, queries, hits: Hits, threads: int) -> Hits:
        top_n = min(int(stage["top_n"]), hits.k)
        weight = float(stage["weight"])
        head = Hits(hits.docnos[:, :top_n], hits.scores[:, :top_n])
        if stage["stage"] == "cross-encoder":
            from braid.retrieval.rerank import CrossEncoderReranker

            reranker = CrossEncoderReranker(stage["model"], batch_size=int(stage.get("batch_size", 32)), max_length=int(stage.get("max_length", 512)))
            texts = lambda docno: " ".join(v for v in self.searcher.documents([docno])[0].values() if v)  # noqa: E731
            new_scores = _scores_of(reranker.rerank(list(queries), head, texts, top_n), head)
        else:
            retriever = self.searcher.retriever("sparse" if stage["stage"] == "sparse" else "dense")
            new_scores = retriever.score_candidates(queries, head.docnos)
        return _interpolate_head(hits, head, new_scores, weight)


def _scores_of(reranked: Hits, head: Hits) -> np.ndarray:
    """Scores of ``reranked`` laid out in ``head``'s order."""
    out = np.full(head.scores.shape, -np.inf, dtype=np.float32)
    for i in range(head.n_queries):
        pos = {int(d): j for j, d in enumerate(head.docnos[i]) if d >= 0}
        for d, s in zip(reranked.docnos[i], reranked.scores[i]):
            if d >= 0 and int(d) in pos:
                out[i, pos[int(d)]] = s
    return out


def _minmax_rows(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    lo = np.where(valid, x, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, x, -np.inf).max(axis=1, keepdims=True)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return np.where(valid, (x - lo) / span, 0.0)


def _interpolate_head(hits: Hits, head: Hits, new_scores: np.ndarray, weight: float) -> Hits:
    """Re-rank the head: ``(1-w)*minmax(old) + w*minmax(new)``, shifted above the untouched tail."""
    valid = head.docnos >= 0
    mixed = (1 - weight) * _minmax_rows(head.scores.astype(np.float64), valid) + weight * _minmax_rows(new_scores.astype(np.float64), valid)
    rows = []
    tail_k = hits.k - head.k
    for i in range(hits.n_queries):
        d = head.docnos[i][valid[i]]
        s = mixed[i][valid[i]] + 2.0  # head above the tail, whose scores are mapped below 1
        if tail_k:
            td, ts = hits.docnos[i, head.k :], hits.scores[i, head.k :]
            tv = td >= 0
            ts = ts[tv].astype(np.float64)
            if len(ts):
                span = ts.max() - ts.min()
                ts = (ts - ts.min()) / span if span > 0 else np.zeros_like(ts)
            d = np.concatenate([d, td[tv]])
            s = np.concatenate([s, ts])
        rows.append((d, s.astype(np.float32)))
    return Hits.from_lists(rows, hits.k)


def _knobs_for(name: str, knobs: dict) -> dict:
    allowed = {"sparse": {"query_cut", "heap_factor", "exact"}, "sparse-if": {"query_cut", "heap_factor", "exact"}, "dense": {"nprobe", "ef_search"}}
    return {key: v for key, v in knobs.items() if key in allowed.get(name, set())}
