"""Storage and search of vectors and text: the index directory, its manifest, and one module per retriever.

Indexes take text (tantivy) or vectors (sparse, dense), never models: nothing here imports
:mod:`braid.encoders`.
"""
