"""Braid: hybrid retrieval over one collection.

Three retrievers (BM25 on tantivy, learned sparse on a Seismic-style blocked index,
dense on FAISS) share one index directory and one document numbering; the fusion
layer in :mod:`braid.retrieval` braids them. Importing this package imports no
heavy dependency (torch, faiss, a JVM, ray): those load inside the functions that
need them.
"""

__version__ = "0.1.0"
