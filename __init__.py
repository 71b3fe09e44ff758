"""Braid: hybrid retrieval over one collection.

Three retrievers (BM25 on tantivy, learned sparse on a Seismic-style blocked index,
dense on FAISS) share one index directory and one document numbering; the fusion
layer in :mod:`braid.retrieval` braids them. Importing this package imports no
heavy dependency (torch, faiss, a JVM, ray): those load inside the functions that
need them.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # braid.compare(...) without importing the experiment machinery (or anything heavy) with braid
    if name == "compare":
        from braid.retrieval.eval.compare import compare

        return compare
    raise AttributeError(f"module 'braid' has no attribute {name!r}")
