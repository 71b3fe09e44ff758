"""The query tower of a JPQ dense index: the jointly trained query encoder saved in the index.

JPQ training (:mod:`braid.retrieval.train.jpq`) trains a :class:`~braid.encoders.towers.DenseTower`,
writes it with :meth:`~braid.encoders.dense.DenseEncoder.save` (a Hugging Face folder with
sentence-transformers pooling files) under ``INDEX/dense/`` and records it in the manifest's
``components["dense"]["jpq"]``; at query time it is an ordinary
:class:`~braid.encoders.dense.DenseEncoder` over that folder, giving the vectors the tower gave in
eval mode. Nothing here imports training code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from braid.data.errors import IndexFormatError

JPQ_FORMAT_VERSION = 1


def is_jpq(dense_info: Mapping[str, Any] | None) -> bool:
    """Whether a manifest's ``components["dense"]`` entry is a JPQ index (its queries need the JPQ encoder)."""
    return isinstance(dense_info, Mapping) and isinstance(dense_info.get("jpq"), Mapping)


def open_jpq_query_encoder(index_dir: str | Path, info: Mapping[str, Any], device: str = "auto", batch_size: int = 32, runtime: str = "auto",
                           threads: int | None = None):  # fmt: skip
    """The query encoder of a JPQ index: an object with ``encode_queries(texts) -> float32 (n, dim)``.

    ``runtime``: a ``--runtime`` spelling (:data:`braid.encoders.base.RUNTIME_SPECS`); the saved
    tower is a fixed folder, so its ONNX export is cached like any model's. ``threads``: intra-op threads.
    ``index_dir``: the index root; ``info``: its manifest's ``components["dense"]`` (see
    :func:`is_jpq`). Query vectors come out in the original space (FAISS applies OPQ itself).
    """
    from braid.encoders.base import runtime_kwargs
    from braid.encoders.dense import DenseEncoder

    if not is_jpq(info):
        raise IndexFormatError(f"{index_dir}: the dense component has no JPQ query encoder")
    jpq = info["jpq"]
    version = jpq.get("format_version")
    if version != JPQ_FORMAT_VERSION:
        raise IndexFormatError(f"{index_dir}: JPQ format version {version!r} is not supported (supports {JPQ_FORMAT_VERSION}); train it again")
    path = Path(index_dir) / "dense" / str(jpq["query_encoder"])
    if not (path / "config.json").is_file():
        raise IndexFormatError(f"{index_dir}: the JPQ query encoder {path} is missing")
    return DenseEncoder(
        str(path),
        max_length=int(jpq["max_length"]),
        batch_size=batch_size,
        device=device,
        pooling=jpq["pooling"],
        normalize=bool(jpq["normalize"]),
        query_prefix=str(jpq.get("query_prefix") or ""),
        document_prefix="",
        threads=threads,
        **runtime_kwargs(runtime, "--runtime"),
    )
