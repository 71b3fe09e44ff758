"""The Python search API: open an index directory, search it with any retriever or pipeline it holds.

>>> searcher = Searcher("indexes/scifact")
>>> searcher.search("microglia in the brain", k=5, fields=True)[0]["id"]
"""

from __future__ import annotations

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
        self.context = context
        self._retrievers: dict[str, object] = {}
        self._lock = threading.Lock()
        self.default = pipeline if pipeline is not None else retriever

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
        got = self._retrievers.get(name)
        if got is None:
            with self._lock:
                if name not in self._retrievers:
                    self._retrievers[name] = registry.open_retriever(self.context, name)
                got = self._retrievers[name]
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
        **knobs,
    ) -> SearchResults:
        """Search many queries at once.

        ``queries``: a list of strings or ``{query_id: text}``. ``exclude_self`` drops, for each
        query, the document whose id equals the query id before anything else sees the lists
        (BEIR's convention). ``knobs`` are retriever arguments such as ``query_cut``,
        ``heap_factor``, ``nprobe`` (validated against the retrievers searched).
        """
        check_positive_int("k", k)
        check_positive_int("threads", threads)
        query_ids, texts = query_batch(queries, query_ids)
        k = min(int(k), self.num_docs)  # never allocate beyond the collection
        engine = self.engine(retriever)
        if knobs and engine.name in registry.RETRIEVERS and not hasattr(engine, "pipeline"):
            spec = registry.get(engine.name)
            knobs = spec.check_knobs(knobs, self.components.get(spec.component))
        exclude = None
        if exclude_self:
            exclude = np.array([self.docno(q) for q in query_ids], dtype=np.int64)
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
        return SearchResults(query_ids=query_ids, hits=hits, doc_ids=doc_ids, retriever=engine.name)

    def search(
        self,
        query: str,
        k: int = 10,
        retriever: str | Path | None = None,
        fields: bool = False,
        **knobs,
    ) -> list[dict]:
        """One query: a list of ``{"id", "score", "rank"}`` (plus ``title``/``text`` when ``fields``)."""
        res = self.batch_search([query], k=k, retriever=retriever, **knobs)
        docnos, scores = res.hits.row(0)
        out = [
            {"rank": r + 1, "id": self.doc_ids[d], "score": float(s)}
            for r, (d, s) in enumerate(zip(docnos, scores))
        ]
        if fields and out:
            for hit, stored in zip(out, self.documents(docnos)):
                hit["title"] = stored["title"]
                hit["text"] = stored["text"]
        return out

    def documents(self, docnos: Sequence[int]) -> list[dict]:
        """Stored ``{"id", "title", "text"}`` of documents (from the tantivy document store)."""
        return self.context.documents(docnos)
