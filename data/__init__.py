"""Reading and writing collections, queries, qrels and runs (BEIR layout, TREC formats)."""

from braid.data.lazy import lazy_exports

# Lazy re-exports (PEP 562): `from braid.data.errors import ...` (every command's path) must not
# import the corpus, run and BEIR readers with it.
_EXPORTS = {
    "BraidError": "braid.data.errors",
    "DataError": "braid.data.errors",
    "Document": "braid.data.corpus",
    "iter_corpus": "braid.data.corpus",
    "count_corpus": "braid.data.corpus",
    "read_queries": "braid.data.queries",
    "read_qrels": "braid.data.qrels",
    "read_run": "braid.data.runs",
    "write_run": "braid.data.runs",
    "BeirDataset": "braid.data.beir",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "BraidError",
    "DataError",
    "Document",
    "iter_corpus",
    "count_corpus",
    "read_queries",
    "read_qrels",
    "read_run",
    "write_run",
    "BeirDataset",
]
