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
    """

    def __init__(
        self,
        index_dir: str | Path | None = None,
        retriever: str | None = None,
        pipeline: str | Path | None = None,
        device: str = "auto",
        context: IndexContext | None = None,
    ):
        if retriever is not None and pipeline is not None:
            raise OptionError("--retriever/--pipeline", f"{retriever} / {pipeline}", "give one of them, not both")
        if context is None:
            if index_dir is None:
                raise OptionError("index_dir", None, "an index directory")
            context = IndexContext.open(index_dir, device=device)
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
            ctx = IndexContext.open(old_ctx.index_dir, device=old_ctx.device)
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
        """What produced a result: the pipeline declaration, or ``{"retriever": name, **knobs}``."""
        engine = self.engine(retriever)
        if hasattr(engine, "pipeline"):
            return {**engine.pipeline.to_dict(), **({"knobs": dict(knobs)} if knobs else {})}
        return {"retriever": engine.name, **knobs}

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
        check_positive_int("k", k)
        query_ids, texts = query_batch(queries, query_ids)
        k = min(int(k), self.num_docs)  # never allocate beyond the collection
        engine = self.engine(retriever)
        if knobs and engine.name in registry.RETRIEVERS and not hasattr(engine, "pipeline"):
            spec = registry.get(engine.name)
            knobs = spec.check_knobs(knobs, self.components.get(spec.component))
        exclude = None
        if exclude_self:
            exclude = np.array([self.docno(q) for q in query_ids], dtype=np.int64)
        if filter is not None:
            knobs = {**knobs, "allow": self.context.filter_mask(filter)}
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
        doc_ids = [[self.doc_ids[d] for d in row if d >= 0] for row in hits.docnos]
        return SearchResults(query_ids=query_ids, hits=hits, doc_ids=doc_ids, retriever=engine.name, context=self.context)

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
