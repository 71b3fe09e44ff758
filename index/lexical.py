"""BM25 on tantivy: the lexical retriever and the document store (id, title, text) of an index directory.

One indexed field ``contents`` (title and text together, BEIR's "flat" convention, which scores
higher than multi-field on BEIR: Pyserini 0.6789 against 0.6647 on scifact) analysed by
``braid_en``: simple tokenizer, lowercase, English stop words, Snowball English stemmer. Queries
are analysed by the same analyzer in Python and sent as a disjunction of term queries, so no
query-language syntax (``AND``, ``:``, ``"``) can break a user's query. tantivy's Python
bindings fix BM25 at k1=1.2, b=0.75.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from braid.data.corpus import Document
from braid.data.errors import IndexFormatError
from braid.index.hits import Hits

ANALYZER = "braid_en"
_HEAP_BYTES = 256 * 1024 * 1024


def _analyzer():
    import tantivy

    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def _schema():
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("docno", stored=True, indexed=True, fast=True)
    builder.add_text_field("id", stored=True, tokenizer_name="raw")
    builder.add_text_field("title", stored=True, index_option="basic", tokenizer_name="raw")
    builder.add_text_field("text", stored=True, index_option="basic", tokenizer_name="raw")
    builder.add_text_field("contents", stored=False, tokenizer_name=ANALYZER, index_option="freq")
    return builder.build()


# A filtered query runs unfiltered and drops the disallowed hits when this depth is expected to hold
# twice the hits it needs (see LexicalIndex.search_weighted); narrower filters run inside tantivy.
POSTFILTER_MAX_FETCH = 8192
POSTFILTER_FACTOR = 2.0
# ... and when fetching that deep costs less than the docno-set clause: a fetched hit costs about a tenth
# of an allowed docno in the clause (about 1.4 us against 15 us, scifact and dictionary, this machine).
POSTFILTER_HITS_PER_ALLOWED = 10


class LexicalIndex:
    """A tantivy BM25 index over ``contents`` that also stores each document's id, title and text."""

    def __init__(self, index, info: dict):
        self._index = index
        self._searcher = index.searcher()
        self._analyzer = _analyzer()
        self.info = info
        self.num_docs = int(info["num_docs"])

    # ---------------------------------------------------------------- build / open
    @classmethod
    def build(
        cls,
        directory: Path,
        docs: Iterable[tuple[int, Document]],
        progress: bool = False,
        threads: int = 0,
        total: int | None = None,
    ) -> dict:
        """Index ``(docno, Document)`` pairs into the existing empty ``directory``; return the manifest info."""
        import tantivy
        from tqdm.auto import tqdm

        index = tantivy.Index(_schema(), path=str(directory))
        index.register_tokenizer(ANALYZER, _analyzer())
        writer = index.writer(_HEAP_BYTES, threads)
        n = 0
        try:
            for docno, doc in tqdm(docs, total=total, disable=not progress, desc="bm25", unit="doc"):
                writer.add_document(
                    tantivy.Document(
                        docno=[int(docno)],
                        id=[doc.doc_id],
                        title=[doc.title],
                        text=[doc.text],
                        contents=[doc.contents],
                    )
                )
                n += 1
            writer.commit()
        except BaseException:
            # Stop the writer's threads before the caller removes the directory, or they keep writing into it.
            writer.rollback()
            writer.wait_merging_threads()
            del writer, index
            raise
        writer.wait_merging_threads()
        import importlib.metadata

        return {
            "backend": "tantivy",
            "tantivy_version": importlib.metadata.version("tantivy"),
            "analyzer": "simple+lowercase+stop(en)+stem(en)",
            "fields": ["contents = title + ' ' + text"],
            "k1": 1.2,
            "b": 0.75,
            "num_docs": n,
        }

    @classmethod
    def open(cls, directory: Path, info: dict) -> "LexicalIndex":
        import tantivy

        directory = Path(directory)
        if not (directory / "meta.json").exists():
            raise IndexFormatError(f"{directory}: not a tantivy index (no meta.json)")
        try:
            index = tantivy.Index.open(str(directory))
        except Exception as exc:  # tantivy raises ValueError with its own text
            raise IndexFormatError(f"{directory}: cannot open the tantivy index ({exc})") from None
        index.register_tokenizer(ANALYZER, _analyzer())
        found = index.searcher().num_docs
        if found != int(info["num_docs"]):
            raise IndexFormatError(f"{directory}: tantivy holds {found} documents, the manifest says {info['num_docs']}")
        return cls(index, info)

    # ---------------------------------------------------------------- analysis
    def analyze(self, text: str) -> list[str]:
        """Terms of ``text`` as the index sees them (lowercased, stop words removed, stemmed)."""
        return self._analyzer.analyze(text)

    def query_terms(self, query: str) -> dict[str, float]:
        """The query as term -> weight (weight = number of occurrences, as Lucene's BM25 sums repeated terms)."""
        return {t: float(c) for t, c in Counter(self.analyze(query)).items()}

    def doc_freq(self, term: str) -> int:
        return self._searcher.doc_freq("contents", term)

    # ---------------------------------------------------------------- search
    def _search_terms(self, terms: Mapping[str, float], k: int, allow_query=None) -> tuple[np.ndarray, np.ndarray]:
        import tantivy

        if not terms or k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        schema = self._index.schema
        clauses = []
        for term, weight in terms.items():
            q = tantivy.Query.term_query(schema, "contents", term, index_option="freq")
            if weight != 1.0:
                q = tantivy.Query.boost_query(q, float(weight))
            clauses.append((tantivy.Occur.Should, q))
        query = tantivy.Query.boolean_query(clauses)
        if allow_query is not None:
            # the filter inside tantivy, before its top-k: a required clause of score 0 (BM25 + 0.0 is
            # the BM25 score, bit for bit)
            query = tantivy.Query.boolean_query([(tantivy.Occur.Must, query), (tantivy.Occur.Must, allow_query)])
        # SearchResult.hits builds a new list of (score, DocAddress) on every access (75 us at 1,016 hits): read it once
        hits = self._searcher.search(query, limit=k, count=False).hits
        if not hits:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        scores = np.fromiter((h[0] for h in hits), dtype=np.float32, count=len(hits))
        docnos = np.asarray(self._searcher.fast_field_values("docno", [h[1] for h in hits]), dtype=np.int64)
        return docnos, scores

    def search(self, queries: Sequence[str], k: int = 10, threads: int = 1, allow: np.ndarray | None = None) -> Hits:
        """BM25 top-k for each query string. Returns Hits of shape (len(queries), k).

        ``allow``: bool over docnos, the documents that may be returned (a filter), applied inside
        tantivy as a required docno-set clause of score 0, so the top-k is that of the allowed documents.
        Deleted documents are tantivy's own deletes: never returned.
        """
        return self.search_weighted([self.query_terms(q) for q in queries], k=k, threads=threads, allow=allow)

    def search_weighted(self, queries: Sequence[Mapping[str, float]], k: int = 10, threads: int = 1, allow: np.ndarray | None = None) -> Hits:
        """Top-k for queries given as analysed term -> weight maps (e.g. RM3-expanded queries).

        A filter (``allow``) is applied one of two ways, with the same result. When it lets through a
        large enough share of the documents, each query first runs unfiltered to a depth where about
        twice the needed allowed documents are expected (at most :data:`POSTFILTER_MAX_FETCH`, and at most
        :data:`POSTFILTER_HITS_PER_ALLOWED` hits per allowed document, where the docno-set clause would
        cost more) and keeps the allowed ones; that is exact when enough of them came back, or when tantivy returned every
        match. Otherwise (a narrow filter, or too few allowed hits) the filter runs inside tantivy as a
        docno-set clause, which costs per allowed document: 172 ms a query at 50% of the 244k-document
        dictionary set (docs/BENCHMARKS.md section 11) against one unfiltered search.
        """
        # Ask for a few more than k so that ties at the cut are broken by docno, not by segment order.
        limit = k + 16
        allow_query = None
        fetch = 0
        if allow is not None:
            allow = np.asarray(allow, dtype=bool)
            n_allowed = int(np.count_nonzero(allow))
            if n_allowed == 0:
                return Hits.empty(len(queries), k)
            fetch = max(1, int(np.ceil(POSTFILTER_FACTOR * limit * allow.shape[0] / n_allowed)))
            if fetch > POSTFILTER_MAX_FETCH or fetch > POSTFILTER_HITS_PER_ALLOWED * n_allowed:
                fetch = 0
                allow_query = self._allow_query(allow)
        built: list = []

        def run(q: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
            if not fetch:
                return self._search_terms(q, limit, allow_query)
            docnos, scores = self._search_terms(q, fetch)
            ok = allow[docnos]
            if docnos.shape[0] < fetch or int(np.count_nonzero(ok)) >= limit:
                keep = np.flatnonzero(ok)[:limit]
                return docnos[keep], scores[keep]
            if not built:  # too few allowed documents in reach: the filter inside tantivy
                built.append(self._allow_query(allow))
            return self._search_terms(q, limit, built[0])

        if threads <= 1 or len(queries) <= 1:
            rows = [run(q) for q in queries]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=threads) as pool:
                rows = list(pool.map(run, queries))
        return Hits.from_lists(rows, k)

    def _allow_query(self, allow: np.ndarray):
        """The filter clause for a bool mask over docnos (False when nothing is allowed)."""
        import tantivy

        docnos = np.flatnonzero(np.asarray(allow, dtype=bool))
        if docnos.size == 0:
            return False
        terms = tantivy.Query.term_set_query(self._index.schema, "docno", docnos.tolist())
        return tantivy.Query.const_score_query(terms, 0.0)

    # ---------------------------------------------------------------- live updates
    @staticmethod
    def update(src: Path, dst: Path, add: Iterable[tuple[int, Document]], delete: Sequence[int], info: dict, threads: int = 0) -> dict:
        """A new generation of the tantivy index in ``dst`` (created here): ``src``'s files, plus
        ``add`` (``(docno, Document)``), less the documents numbered ``delete``; returns the new info.

        ``src`` is never modified: its immutable segment files are hard-linked into ``dst`` and its
        metadata (``meta.json``, ``.managed.json``) copied, then tantivy commits in ``dst``
        (new segment files, new delete files, a new ``meta.json``). A reader with ``src`` open keeps
        its snapshot. Deleted documents stay in tantivy's segments (and in its BM25 statistics:
        document frequencies, average length) until tantivy merges those segments or the index is
        compacted (:meth:`build` over the live documents).
        """
        import shutil

        import tantivy

        src, dst = Path(src), Path(dst)
        dst.mkdir(parents=True)
        for item in src.iterdir():
            if item.name.endswith(".lock") or item.name.startswith(".tantivy-"):
                continue
            if item.name in ("meta.json", ".managed.json") or not item.is_file():
                shutil.copy2(item, dst / item.name)
            else:
                os.link(item, dst / item.name)
        index = tantivy.Index.open(str(dst))
        index.register_tokenizer(ANALYZER, _analyzer())
        writer = index.writer(_HEAP_BYTES, threads)
        try:
            for docno in delete:
                writer.delete_documents_by_term("docno", int(docno))
            for docno, doc in add:
                writer.add_document(
                    tantivy.Document(docno=[int(docno)], id=[doc.doc_id], title=[doc.title], text=[doc.text], contents=[doc.contents])
                )
            writer.commit()
        except BaseException:
            writer.rollback()
            writer.wait_merging_threads()
            del writer, index
            raise
        writer.wait_merging_threads()
        index.reload()
        out = dict(info)
        out["num_docs"] = int(index.searcher().num_docs)
        return out

    # ---------------------------------------------------------------- document store
    def documents(self, docnos: Sequence[int]) -> list[dict]:
        """Stored fields ``{"id", "title", "text"}`` of each docno (in the given order)."""
        import tantivy

        out = []
        schema = self._index.schema
        for docno in docnos:
            q = tantivy.Query.term_query(schema, "docno", int(docno))
            hits = self._searcher.search(q, limit=1, count=False).hits
            if not hits:
                raise KeyError(f"docno {docno} is not in the index")
            stored = self._searcher.doc(hits[0][1])
            out.append({"id": stored["id"][0], "title": stored["title"][0], "text": stored["text"][0]})
        return out

    def term_frequencies(self, docnos: Sequence[int]) -> list[dict[str, int]]:
        """Analysed term frequencies of each document's contents (for RM3 feedback)."""
        return [
            dict(Counter(self.analyze(f"{d['title']} {d['text']}".strip())))
            for d in self.documents(docnos)
        ]
