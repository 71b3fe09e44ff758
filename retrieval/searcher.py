"""The Python search API: open an index directory, search it with any retriever or pipeline it holds.

>>> searcher = Searcher("indexes/scifact")
>>> searcher.search("microglia in the brain", k=5, fields=True)[0]["id"]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from braid.data.errors import OptionError
from braid.data.runs import Run
from braid.index.hits import Hits
from braid.index.manifest import read_docids, read_manifest


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

    ``retriever`` picks the default retriever (``bm25``, ``sparse``, ``sparse-if``, ``dense``,
    ``pyserini``) or ``pipeline`` a fusion pipeline (a TOML path or a built-in name such as
    ``hybrid``); the default is the pipeline ``hybrid`` when the index has several retrievers,
    else its only retriever. Components and models load on first use.
    """

    def __init__(
        self,
        index_dir: str | Path,
        retriever: str | None = None,
        pipeline: str | Path | None = None,
        device: str = "auto",
    ):
        from braid.retrieval import retrievers as registry

        self.index_dir = Path(index_dir)
        self.manifest = read_manifest(self.index_dir)
        self.doc_ids = read_docids(self.index_dir)
        if len(self.doc_ids) != self.manifest["num_docs"]:
            from braid.data.errors import IndexFormatError

            raise IndexFormatError(
                f"{self.index_dir}: docids.txt has {len(self.doc_ids)} ids, the manifest says {self.manifest['num_docs']}"
            )
        self._docno_of: dict[str, int] | None = None
        self.device = device
        self._retrievers: dict[str, object] = {}
        self._registry = registry
        if retriever is not None and pipeline is not None:
            raise OptionError("--retriever/--pipeline", f"{retriever} / {pipeline}", "give one of them, not both")
        self.default = pipeline if pipeline is not None else retriever

    # ------------------------------------------------------------------ parts
    @property
    def num_docs(self) -> int:
        return int(self.manifest["num_docs"])

    @property
    def components(self) -> dict:
        return self.manifest["components"]

    def available_retrievers(self) -> list[str]:
        return self._registry.available(self.manifest)

    def docno(self, doc_id: str) -> int:
        """Internal docno of an external id, -1 when absent."""
        if self._docno_of is None:
            self._docno_of = {d: i for i, d in enumerate(self.doc_ids)}
        return self._docno_of.get(doc_id, -1)

    def retriever(self, name: str):
        """The retriever object ``name`` (loaded once, then cached)."""
        if name not in self._retrievers:
            self._retrievers[name] = self._registry.open_retriever(self, name)
        return self._retrievers[name]

    def component(self, name: str):
        """The opened index component ``name`` (``bm25``, ``sparse``, ``dense``, ``pyserini``)."""
        return self._registry.open_component(self, name)

    def _resolve(self, retriever: str | Path | None):
        name = retriever if retriever is not None else self.default
        if name is None:
            have = self.available_retrievers()
            real = [r for r in have if r not in ("sparse-if", "pyserini")]
            name = "hybrid" if len(real) > 1 else have[0]
        if not isinstance(name, Path) and str(name) in self._registry.RETRIEVERS:
            return self.retriever(str(name))
        from braid.retrieval import pipeline as pipelines

        return pipelines.load_pipeline(name, self)

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
        ``heap_factor``, ``nprobe``.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise OptionError("k", k, "a positive integer")
        if isinstance(queries, Mapping):
            query_ids = list(queries.keys())
            texts = list(queries.values())
        else:
            texts = list(queries)
            query_ids = list(query_ids) if query_ids is not None else [str(i) for i in range(len(texts))]
        if len(query_ids) != len(texts):
            raise OptionError("query_ids", len(query_ids), f"one id per query ({len(texts)} queries)")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise OptionError("queries", t, f"query {i} must be a string")
        engine = self._resolve(retriever)
        exclude = None
        if exclude_self:
            exclude = np.array([self.docno(q) for q in query_ids], dtype=np.int64)
        hits = engine.search(texts, k=int(k), threads=threads, exclude=exclude, **knobs)
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
        if "bm25" not in self.components:
            return [{"id": self.doc_ids[d], "title": "", "text": ""} for d in docnos]
        return self.component("bm25").documents(docnos)
