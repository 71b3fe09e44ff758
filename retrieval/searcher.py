"""The Python search API: open an index directory, search it with any retriever or pipeline it holds.

>>> searcher = Searcher("indexes/scifact")
>>> searcher.search("microglia in the brain", k=5, fields=True)[0]["id"]
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from braid.data.errors import OptionError, check_positive_int
from braid.data.runs import Run
from braid.data.text import is_blank, query_batch
from braid.index.hits import Hits
from braid.retrieval import retrievers as registry
from braid.retrieval.context import IndexContext


def _number(x) -> float | None:
    """A float, or None for NaN (JSON has no NaN)."""
    x = float(x)
    return None if x != x else x


@dataclass(frozen=True)
class SearchResults:
    """Results of a batch: ``hits`` holds docnos/scores of shape (n_queries, k); ids are external ids."""

    query_ids: list[str]
    hits: Hits
    doc_ids: list[list[str]]
    retriever: str
    # the index generation searched (its doc ids and document store belong with these docnos)
    context: IndexContext | None = dataclasses.field(default=None, compare=False, repr=False)

    def to_run(self) -> Run:
        run: Run = {}
        for qid, ids, (_, scores) in zip(self.query_ids, self.doc_ids, (self.hits.row(i) for i in range(self.hits.n_queries))):
            run[qid] = {d: float(s) for d, s in zip(ids, scores)}
        return run


class Searcher:
    """Searches one Braid index directory.

    ``retriever`` picks the default retriever (any name in
    :data:`braid.retrieval.retrievers.RETRIEVERS` the index serves) or ``pipeline`` a fusion pipeline
    (a TOML path or a built-in name such as ``hybrid``); the default is the pipeline ``hybrid`` when
    the index has several retrievers, else its only retriever. Components and models load on first use.
    ``runtime``: what runs the query encoders, ``"auto"`` (ONNX Runtime on a CPU when installed,
    else torch), ``"torch"``, ``"onnx"`` or ``"onnx-int8"``; it does not change which documents
    an index holds, only how queries are encoded (fp32 ONNX gives torch's vectors to rounding).
    ``query_threads``: intra-op threads of each query encoder (None: the runtime's default, one per
    core: the lowest latency for one query at a time; a server running several searches at once
    spends less CPU per query with fewer, docs/benchmarks/encoders.md).
    """

    def __init__(
        self,
        index_dir: str | Path | None = None,
        retriever: str | None = None,
        pipeline: str | Path | None = None,
        device: str = "auto",
        context: IndexContext | None = None,
        runtime: str = "auto",
        query_threads: int | None = None,
    ):
        if retriever is not None and pipeline is not None:
            raise OptionError("--retriever/--pipeline", f"{retriever} / {pipeline}", "give one of them, not both")
        if context is None:
            if index_dir is None:
                raise OptionError("index_dir", None, "an index directory")
            context = IndexContext.open(index_dir, device=device, runtime=runtime, query_threads=query_threads)
        # (context, retrievers): one generation of the index and the retrievers opened over it,
        # replaced as a whole by reload(); a search pins the pair it started with
        self._state: tuple[IndexContext, dict[str, object]] = (context, {})
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._stamp = self._manifest_stamp()
        self.default = pipeline if pipeline is not None else retriever

    # ------------------------------------------------------------------ generations
    @property
    def context(self) -> IndexContext:
        return self._state[0]

    @property
    def _retrievers(self) -> dict:
        """The retrievers opened over the current generation (name -> retriever)."""
        return self._state[1]

    @property
    def generation(self) -> int:
        """The index generation this searcher searches (0 for an index never updated)."""
        return self.context.generation

    def _manifest_stamp(self):
        try:
            st = os.stat(self.context.index_dir / "manifest.json")
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Open the newest committed generation if it is not the one searched; True when it changed.

        Searches running meanwhile finish on the generation they started with; later ones see the
        new one. Models are not loaded again: the opened retrievers are re-bound to the new
        generation's components (one whose query side changed, e.g. a recomputed IDF table, is reopened).
        """
        from braid.index.generations import read_generation

        with self._reload_lock:
            old_ctx, old_retrievers = self._state
            if getattr(old_ctx, "manifest", None) is None or not (old_ctx.index_dir / "manifest.json").exists():
                return False
            stamp = self._manifest_stamp()
            if read_generation(old_ctx.index_dir) == old_ctx.generation:
                self._stamp = stamp
                return False
            ctx = IndexContext.open(old_ctx.index_dir, device=old_ctx.device, runtime=old_ctx.runtime, query_threads=old_ctx.query_threads)
            retrievers = {name: _rebind(r, name, old_ctx, ctx) for name, r in old_retrievers.items()}
            self._state = (ctx, retrievers)
            self._stamp = stamp
            return True

    def maybe_reload(self) -> bool:
        """:meth:`reload` when ``manifest.json`` changed since the last look (one ``stat``: cheap enough
        for every request of ``braid serve``)."""
        if self._manifest_stamp() == self._stamp:
            return False
        return self.reload()

    def _pinned(self) -> "Searcher":
        """This searcher fixed to its current generation (what one search runs on)."""
        pinned = object.__new__(Searcher)
        pinned._state = self._state
        pinned._lock = self._lock
        pinned._reload_lock = self._reload_lock
        pinned._stamp = self._stamp
        pinned.default = self.default
        return pinned

    # ------------------------------------------------------------------ parts
    @property
    def index_dir(self) -> Path:
        return self.context.index_dir

    @property
    def manifest(self) -> dict:
        return self.context.manifest

    @property
    def doc_ids(self) -> list[str]:
        return self.context.doc_ids

    @property
    def device(self) -> str:
        return self.context.device

    @property
    def runtime(self) -> str:
        return self.context.runtime

    @property
    def num_docs(self) -> int:
        return self.context.num_docs

    @property
    def components(self) -> dict:
        return self.context.components

    def available_retrievers(self) -> list[str]:
        return registry.available(self.manifest)

    def docno(self, doc_id: str) -> int:
        """Internal docno of an external id, -1 when absent."""
        return self.context.docno(doc_id)

    def retriever(self, name: str):
        """The retriever object ``name`` (opened once, then cached)."""
        context, retrievers = self._state
        got = retrievers.get(name)
        if got is None:
            with self._lock:
                if name not in retrievers:
                    retrievers[name] = registry.open_retriever(context, name)
                got = retrievers[name]
        return got

    def component(self, name: str):
        """The opened index component ``name`` (``bm25``, ``sparse``, ``dense``, ``pyserini``)."""
        return self.context.component(name)

    def engine(self, retriever: str | Path | None = None):
        """What a search with ``retriever`` runs: a retriever object, or a pipeline runner (a name of
        :data:`~braid.retrieval.retrievers.RETRIEVERS`, a built-in pipeline name, a TOML path, a
        :class:`~braid.retrieval.pipeline.spec.Pipeline`, or None for the searcher's default)."""
        name = retriever if retriever is not None else self.default
        if name is None:
            name = registry.default_name(self.manifest)
        if isinstance(name, str) and name in registry.RETRIEVERS:
            return self.retriever(name)
        from braid.retrieval.pipeline.runner import load_pipeline

        return load_pipeline(name, self)

    def recipe(self, retriever: str | Path | None = None, **knobs) -> dict:
        """What produced a result: the pipeline declaration, or ``{"retriever": name, **knobs}``; plus
        ``"runtime": {retriever: "torch" | "onnx" | "onnx-int8"}`` for the retrievers that encode
        queries with a model (absent when none does: BM25, inference-free sparse)."""
        engine = self.engine(retriever)
        if hasattr(engine, "pipeline"):
            out = {**engine.pipeline.to_dict(), **({"knobs": dict(knobs)} if knobs else {})}
            names = [step.name for step in engine.pipeline.retrievers]
        else:
            out = {"retriever": engine.name, **knobs}
            names = [engine.name]
        runtimes = self.query_runtimes(names)
        return {**out, "runtime": runtimes} if runtimes else out

    def query_runtimes(self, names: Sequence[str]) -> dict[str, str]:
        """``{retriever: runtime}`` of those of ``names`` whose queries a model encodes (see :meth:`recipe`)."""
        out = {}
        for name in names:
            got = getattr(self.retriever(name), "query_runtime", None)
            label = got() if callable(got) else None
            if label is not None:
                out[name] = label
        return out

    # ------------------------------------------------------------------ search
    def batch_search(
        self,
        queries: Sequence[str] | Mapping[str, str],
        k: int = 10,
        retriever: str | Path | None = None,
        threads: int = 1,
        query_ids: Sequence[str] | None = None,
        exclude_self: bool = False,
        filter=None,
        **knobs,
    ) -> SearchResults:
        """Search many queries at once.

        ``queries``: a list of strings or ``{query_id: text}``. ``exclude_self`` drops, for each
        query, the document whose id equals the query id before anything else sees the lists
        (BEIR's convention). ``filter``: a metadata filter (:mod:`braid.data.filters`: a dict, its JSON
        text or the string form ``"year >= 2000 and lang = en"``), applied inside every retriever
        before its top-k. ``knobs`` are retriever arguments such as ``query_cut``,
        ``heap_factor``, ``nprobe`` (validated against the retrievers searched).
        """
        pinned = self._pinned()
        return pinned._batch_search(queries, k, retriever, threads, query_ids, exclude_self, filter, knobs)

    def _batch_search(self, queries, k, retriever, threads, query_ids, exclude_self, filter, knobs) -> SearchResults:
        if type(k) is not int or k < 1:
            check_positive_int("k", k)
        if type(threads) is not int or threads < 1:
            check_positive_int("threads", threads)
        query_ids, texts = query_batch(queries, query_ids)
        context = self.context
        k = min(int(k), context.num_docs)  # never allocate beyond the collection
        engine = self.engine(retriever)
        if knobs and engine.name in registry.RETRIEVERS and not hasattr(engine, "pipeline"):
            spec = registry.get(engine.name)
            knobs = spec.check_knobs(knobs, self.components.get(spec.component))
        exclude = None
        if exclude_self:
            exclude = np.array([self.docno(q) for q in query_ids], dtype=np.int64)
        if filter is not None:
            knobs = {**knobs, "allow": context.filter_mask(filter)}
        # A blank query (no letter or digit) has no hits in any retriever, as in BM25.
        live = [i for i, t in enumerate(texts) if not is_blank(t)]
        if len(live) == len(texts):
            hits = engine.search(texts, k=k, threads=threads, exclude=exclude, **knobs)
        else:
            hits = Hits.empty(len(texts), k)
            if live:
                sub = engine.search(
                    [texts[i] for i in live], k=k, threads=threads, exclude=exclude[live] if exclude is not None else None, **knobs
                )
                hits.docnos[live, : sub.k] = sub.docnos
                hits.scores[live, : sub.k] = sub.scores
        ids = context.doc_ids
        doc_ids = [[ids[d] for d in row if d >= 0] for row in hits.docnos]
        return SearchResults(query_ids=query_ids, hits=hits, doc_ids=doc_ids, retriever=engine.name, context=context)

    def search(
        self,
        query: str,
        k: int = 10,
        retriever: str | Path | None = None,
        fields: bool = False,
        filter=None,
        **knobs,
    ) -> list[dict]:
        """One query: a list of ``{"id", "score", "rank"}`` (plus ``title``/``text`` when ``fields``)."""
        res = self.batch_search([query], k=k, retriever=retriever, filter=filter, **knobs)
        docnos, scores = res.hits.row(0)
        ctx = res.context if res.context is not None else self.context
        out = [
            {"rank": r + 1, "id": ctx.doc_ids[d], "score": float(s)}
            for r, (d, s) in enumerate(zip(docnos, scores))
        ]
        if fields and out:
            for hit, stored in zip(out, ctx.documents(docnos)):
                hit["title"] = stored["title"]
                hit["text"] = stored["text"]
        return out

    def explain(
        self,
        query: str,
        k: int = 10,
        retriever: str | Path | None = None,
        fields: bool = False,
        top: int = 10,
        filter=None,
        **knobs,
    ) -> dict:
        """One query with the fusion laid open (plain data, JSON-ready; ``None`` where a figure does not exist).

        Returns ``{"retriever", "fusion", "hits", "lists"}``: ``hits`` as :meth:`search` gives them, each
        with ``"explain": {"fused_score", "retrievers": [{"name", "weight", "rank", "score", "normalized",
        "fill", "contribution", "share"}]}`` -- per retriever of the pipeline its 1-based rank and own
        score in its list (None when the document is not in it), its normalised score (``fill``: what an
        absent document is counted as), its contribution to the fused score and its share
        (contribution / fused score). The contributions sum to ``fused_score``, which is the hit's
        ``score`` unless the pipeline rescores (``fusion["rescored"]``). ``lists``: each retriever's own
        top ``top`` (``{"name", "prf", "weight", "hits": [{"rank", "id", "score"(, "title")}]}``), the
        lists the pipeline fused last. ``fusion``: the method and its parameters. ``filter``: as for
        :meth:`batch_search`. Runs on one generation of a live index, like a search.
        """
        return self._pinned()._explain(query, k, retriever, fields, top, filter, knobs)

    def _explain(self, query, k, retriever, fields, top, filter, knobs) -> dict:
        from braid.retrieval.pipeline.fusion import explain
        from braid.retrieval.pipeline.runner import PipelineExplanation

        check_positive_int("k", k)
        check_positive_int("top", top)
        _, texts = query_batch([query])
        k = min(int(k), self.num_docs)
        engine = self.engine(retriever)
        if is_blank(texts[0]):
            return {"retriever": engine.name, "fusion": None, "hits": [], "lists": []}
        if filter is not None:
            knobs = {**knobs, "allow": self.context.filter_mask(filter)}
        if hasattr(engine, "explain"):
            ex = engine.explain(texts, k=k, **knobs)
            fusion = {**engine.pipeline.fusion, "rescored": ex.rescored} if len(ex.lists) > 1 else {"method": None, "rescored": ex.rescored}
        else:
            allow = knobs.pop("allow", None)
            if knobs:
                spec = registry.get(engine.name)
                knobs = spec.check_knobs(knobs, self.components.get(spec.component))
            if allow is not None:
                knobs["allow"] = allow
            hits = engine.search(texts, k=k, **knobs)
            single = explain([hits], "linear", hits.docnos, [1.0], norm="none", missing="zero")
            ex = PipelineExplanation(hits, hits, [hits], [engine.name], [False], single, False)
            fusion = {"method": None, "rescored": False}
        fx = ex.fusion
        docnos, scores = ex.hits.row(0)
        out = []
        for j, (d, s) in enumerate(zip(docnos.tolist(), scores.tolist())):
            fused = _number(fx.fused[0, j])
            parts = []
            for r, name in enumerate(ex.names):
                present = bool(fx.ranks[r, 0, j] > 0)
                contribution = float(fx.contributions[r, 0, j])
                parts.append({
                    "name": name,
                    "weight": float(fx.weights[r]),
                    "rank": int(fx.ranks[r, 0, j]) if present else None,
                    "score": _number(fx.scores[r, 0, j]),
                    "normalized": _number(fx.normalized[r, 0, j]),
                    "fill": None if present else _number(fx.fills[r, 0]),
                    "contribution": contribution,
                    "share": contribution / fused if fused is not None and abs(fused) > 1e-12 else None,
                })
            out.append({"rank": j + 1, "id": self.doc_ids[d], "score": float(s), "explain": {"fused_score": fused, "retrievers": parts}})
        lists = []
        for name, prf, weight, hits in zip(ex.names, ex.prf, fx.weights.tolist(), ex.lists):
            ln, ls = hits.row(0)
            ln, ls = ln[:top], ls[:top]
            lists.append({"name": name, "prf": prf, "weight": weight, "hits": [{"rank": r + 1, "id": self.doc_ids[d], "score": float(x)} for r, (d, x) in enumerate(zip(ln.tolist(), ls.tolist()))]})
        if fields:
            for hit, stored in zip(out, self.documents(docnos)) if out else ():
                hit["title"], hit["text"] = stored["title"], stored["text"]
            for entry, (hits) in zip(lists, ex.lists):
                ln = hits.row(0)[0][:top]
                for hit, stored in zip(entry["hits"], self.documents(ln)) if len(ln) else ():
                    hit["title"] = stored["title"]
        return {"retriever": engine.name, "fusion": fusion, "hits": out, "lists": lists}

    def documents(self, docnos: Sequence[int]) -> list[dict]:
        """Stored ``{"id", "title", "text"}`` of documents (from the tantivy document store)."""
        return self.context.documents(docnos)


def _rebind(retriever, name: str, old: IndexContext, new: IndexContext):
    """``retriever`` (opened over generation ``old``) over generation ``new``, keeping its encoder: the
    same object with the new generation's component, or a fresh one when its query side changed."""
    inner = getattr(retriever, "_inner", None)
    if inner is not None:  # a wrapper (braid serve's per-component lock): rebind what it wraps
        return type(retriever)(_rebind(inner, name, old, new), retriever._lock)
    spec = registry.get(name)
    info_old, info_new = old.components.get(spec.component), new.components.get(spec.component)
    if info_new is None:
        return registry.open_retriever(new, name)  # raises: the component is gone
    same_query_side = (info_old or {}).get("idf_path") == info_new.get("idf_path") and (info_old or {}).get("encoder") == info_new.get("encoder")
    if not dataclasses.is_dataclass(retriever) or not hasattr(retriever, "index") or not same_query_side or name == "dense-bin":
        return registry.open_retriever(new, name)
    changes = {"index": new.component(spec.component)}
    if hasattr(retriever, "vectors") and new.live:
        changes["vectors"] = None  # a live index's vectors are per segment (SegmentedDenseIndex.doc_vectors)
    return dataclasses.replace(retriever, **changes)
