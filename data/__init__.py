"""Reading and writing collections, queries, qrels and runs (BEIR layout, TREC formats)."""

import importlib

# Lazy re-exports (PEP 562): `from braid.data.errors import ...` (every command's path) must not
# import the corpus, run and BEIR readers with it.
_EXPORTS = {
    "BraidError": "errors",
    "DataError": "errors",
    "Document": "corpus",
    "iter_corpus": "corpus",
    "count_corpus": "corpus",
    "read_queries": "queries",
    "read_qrels": "qrels",
    "read_run": "runs",
    "write_run": "runs",
    "BeirDataset": "beir",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'braid.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"braid.data.{module}"), name)


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
