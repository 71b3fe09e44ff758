"""Reading and writing collections, queries, qrels and runs (BEIR layout, TREC formats)."""

from braid.data.errors import BraidError, DataError
from braid.data.corpus import Document, iter_corpus, count_corpus
from braid.data.queries import read_queries
from braid.data.qrels import read_qrels
from braid.data.runs import read_run, write_run
from braid.data.beir import BeirDataset

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
