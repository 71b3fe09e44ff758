"""Text -> vectors: one learned sparse encoder (SPLADE pooling, inference-free query mode) and one dense encoder.

Importing this package imports neither torch nor transformers; models load on first use.
Encoders know nothing of storage: building an index from a corpus is orchestration
(:mod:`braid.retrieval.build.vectorcache`).
"""

from braid.encoders.resolve import DEFAULT_DENSE_MODEL, DEFAULT_SPARSE_MODEL, ModelRef, resolve_model

__all__ = [
    "DEFAULT_DENSE_MODEL",
    "DEFAULT_SPARSE_MODEL",
    "ModelRef",
    "resolve_model",
    "SparseEncoder",
    "DenseEncoder",
    "IdfTable",
    "compute_idf",
]


def __getattr__(name: str):
    # Lazy re-exports: keep `import braid.encoders` light and free of import cycles.
    if name in ("SparseEncoder", "IdfTable", "compute_idf", "SparseEncoderConfig"):
        from braid.encoders import sparse

        return getattr(sparse, name)
    if name in ("DenseEncoder", "DenseEncoderConfig"):
        from braid.encoders import dense

        return getattr(dense, name)
    raise AttributeError(f"module 'braid.encoders' has no attribute {name!r}")
