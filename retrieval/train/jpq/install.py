"""JPQ on an index directory: train from its PQ/OPQ dense component (:func:`train_jpq_index`) and install the result (:func:`install_jpq`).

``INDEX/dense/jpq/`` holds the query encoder (a model folder :class:`~braid.encoders.dense.DenseEncoder`
reads, written by :meth:`DenseEncoder.save`), ``centroids.npy``, ``base_centroids.npy`` (the
centroids before training, so that training again starts from the same point) and ``jpq.json``
(the manifest entry plus the loss history); the FAISS index file gets the trained centroids, so
plain FAISS search scores documents with them. The manifest's ``components["dense"]["jpq"]``
records it all, including the dataset and split trained on
(:func:`~braid.retrieval.train.leakage.training_record`). Searching reads it back with
:func:`braid.encoders.jpq.open_jpq_query_encoder`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from braid.data.errors import BraidError, IndexFormatError, OptionError
from braid.encoders.jpq import JPQ_FORMAT_VERSION, is_jpq
from braid.retrieval.train import checkpoint
from braid.retrieval.train.jpq.config import JPQ_KINDS, JPQConfig
from braid.retrieval.train.jpq.loop import JPQResult, loss_curve, train_jpq
from braid.retrieval.train.leakage import REPORT_SPLIT, check_training_split
from braid.retrieval.train.pairs import training_set_from_dataset

JPQ_DIR = "jpq"
# jpq.json keeps the per-step history up to this many steps (the curve always).
_HISTORY_LIMIT = 5000


def default_checkpoint_dir(index_dir: str | Path) -> Path:
    """``.NAME.jpq-train`` next to the index (:func:`braid.retrieval.train.checkpoint.default_checkpoint_dir`)."""
    return checkpoint.default_checkpoint_dir(index_dir, "jpq")


def install_jpq(index_dir: str | Path, result: JPQResult, base_model: str, trained_on: Mapping | None = None) -> dict:
    """Put a trained JPQ into ``index_dir``'s dense component (atomically) and return the new manifest entry.

    ``trained_on``: :func:`~braid.retrieval.train.leakage.training_record` of the training data
    (its ``dataset`` and ``split`` are recorded; None records them as null). The dense component is
    rebuilt in a temporary directory (its files copied, the FAISS index rewritten with the trained
    centroids, ``jpq/`` added) and swapped in by :func:`braid.index.manifest.adding_component`;
    the document codes are copied unchanged.
    """
    import faiss

    from braid.index import pq as pqmod
    from braid.index.manifest import adding_component, read_manifest

    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    dense = manifest["components"].get("dense")
    if not isinstance(dense, dict):
        raise OptionError("INDEX_DIR", str(index_dir), "an index with a dense component")
    src = index_dir / "dense"
    file = str(dense.get("index", {}).get("file", "dense.faiss"))
    tower = result.tower
    trained_on = dict(trained_on or {})
    meta = {
        "format_version": JPQ_FORMAT_VERSION,
        "dir": JPQ_DIR,
        "query_encoder": f"{JPQ_DIR}/query_encoder",
        "centroids": f"{JPQ_DIR}/centroids.npy",
        "base_centroids": f"{JPQ_DIR}/base_centroids.npy",
        "base_model": base_model,
        "pooling": tower.pooling,
        "normalize": tower.normalize,
        "query_prefix": tower.prefix,
        "max_length": tower.max_length,
        "config": result.config.to_dict(),
        "dataset": trained_on.get("dataset"),
        "split": trained_on.get("split"),
        "steps": len(result.history),
        "train_seconds": round(result.seconds, 1),
        "epoch_losses": [round(x, 6) for x in result.epoch_losses],
        "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    new_info = {**{k: v for k, v in dense.items() if k != "jpq"}, "jpq": meta}
    with adding_component(index_dir, "dense", new_info, overwrite=True) as tmp:
        for item in src.iterdir():
            if item.name == JPQ_DIR or item.name == file:
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
        index = faiss.read_index(str(src / file))
        before = pqmod.get_codes(index)
        pqmod.set_codebooks(index, result.centroids)
        if not np.array_equal(pqmod.get_codes(index), before):  # pragma: no cover - set_codebooks never re-encodes
            raise BraidError("internal error: document codes changed while installing JPQ centroids")
        faiss.write_index(index, str(tmp / file))
        out = tmp / JPQ_DIR
        tower.save(out / "query_encoder")
        np.save(out / "centroids.npy", result.centroids.astype(np.float32), allow_pickle=False)
        np.save(out / "base_centroids.npy", result.base_centroids.astype(np.float32), allow_pickle=False)
        record = {**meta, "history": result.history if len(result.history) <= _HISTORY_LIMIT else None, "curve": loss_curve(result.history)}
        (out / "jpq.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return new_info


def train_jpq_index(
    index_dir: str | Path,
    dataset_dir: str | Path,
    split: str = "train",
    config: JPQConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    threads: int | None = None,
    report_split: str = REPORT_SPLIT,
) -> dict:
    """``braid train jpq``: train JPQ on ``dataset_dir``'s ``split`` qrels for the PQ/OPQ dense index of ``index_dir``, save it there.

    ``split`` equal to ``report_split`` is refused
    (:func:`~braid.retrieval.train.leakage.check_training_split`). Training always starts from the
    index's pre-JPQ state (its base encoder and centroids), so training an index again replaces
    the previous JPQ rather than compounding it. ``checkpoint_dir``: None uses
    :func:`default_checkpoint_dir`, removed after a successful install; an explicit directory is
    kept. Re-running after an interruption resumes. Returns a summary dict (pairs, steps,
    seconds, losses, the manifest entry).
    """
    from braid.index import pq as pqmod
    from braid.index.dense import DenseIndex
    from braid.index.manifest import read_docids, read_manifest

    check_training_split(split, report_split)
    config = config or JPQConfig()
    log = log or (lambda _msg: None)
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    dense = manifest["components"].get("dense")
    if not isinstance(dense, dict):
        raise OptionError("INDEX_DIR", str(index_dir), "an index with a dense component (build it with --retrievers dense --dense-index pq or opq)")
    kind = (dense.get("index", {}).get("config") or {}).get("kind")
    if kind not in JPQ_KINDS:
        raise OptionError("dense index kind", kind, f"JPQ trains {' or '.join(JPQ_KINDS)} dense indexes; rebuild with --dense-index pq or opq")
    encoder = dense.get("encoder") or {}
    doc_ids = read_docids(index_dir, manifest=manifest)
    data = training_set_from_dataset(dataset_dir, split, doc_ids, report_split)
    log(f"jpq: {len(data.query_ids)} queries, {data.n_pairs} pairs from {split} ({data.skipped} judged queries skipped)")
    index = DenseIndex.load(index_dir / "dense", dense["index"], mmap=False).index
    if is_jpq(dense):
        jpq = dense["jpq"]
        base_model = str(jpq["base_model"])
        base = np.load(index_dir / "dense" / jpq["base_centroids"], allow_pickle=False)
        pqmod.set_codebooks(index, base)
    else:
        base_model = str(encoder.get("model") or "")
    if not base_model:
        raise IndexFormatError(f"{index_dir}: the dense component does not record its encoder model")
    explicit = checkpoint_dir is not None
    ckdir = Path(checkpoint_dir) if explicit else default_checkpoint_dir(index_dir)
    result = train_jpq(
        base_model,
        index,
        data,
        config,
        checkpoint_dir=ckdir,
        progress=progress,
        log=log,
        pooling=encoder.get("pooling"),
        normalize=encoder.get("normalize"),
        query_prefix=encoder.get("query_prefix"),
        threads=threads,
    )
    info = install_jpq(index_dir, result, base_model, data.source)
    if not explicit:
        shutil.rmtree(ckdir, ignore_errors=True)
    return {
        "queries": len(data.query_ids),
        "pairs": data.n_pairs,
        "skipped_queries": data.skipped,
        "steps": len(result.history),
        "resumed_at_step": result.resumed_at_step,
        "seconds": round(result.seconds, 1),
        "epoch_losses": result.epoch_losses,
        "dense": info,
    }
