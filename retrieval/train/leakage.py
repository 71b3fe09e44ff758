"""Leakage rules: what may be fitted on, and the record of what a model was fitted on.

Anything fitted to judgments (a trained encoder, PQ centroids, tuned fusion weights) is fitted on a
training split, never on the split that is reported: :func:`check_training_split` is the one check
``braid train`` and ``braid tune`` apply. :func:`training_record` is what a trained model stores
about its training data (dataset name, path, a fingerprint of the qrels file, split), so that a
reported number can be checked against it later.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from braid.data.errors import OptionError

REPORT_SPLIT = "test"


def check_training_split(split: str, report_split: str = REPORT_SPLIT, *, what: str = "training", option: str = "--split") -> str:
    """Refuse to fit on the split that is reported; returns ``split``.

    ``split``: the qrels split to fit on; ``report_split``: the split whose numbers are reported
    (``"test"`` for BEIR); ``what``: the verb in the message (``"training"``, ``"tuning"``);
    ``option``: the option named in the error. The comparison ignores case and surrounding
    spaces (``TEST`` is the test split on a case-insensitive file system). Raises
    :class:`~braid.data.errors.OptionError`.
    """
    if not isinstance(split, str) or not split.strip():
        raise OptionError(option, split, "the name of a qrels split (e.g. train or dev)")
    if split.strip().casefold() == str(report_split).strip().casefold():
        raise OptionError(option, split, f"{what} on the split that is reported ({report_split!r}) would overfit it; use a train or dev split")
    return split


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def training_record(dataset_dir: str | Path, split: str) -> dict:
    """What a model trained on ``dataset_dir``'s ``split`` qrels records about them.

    Returns ``{"dataset": {"name", "path", "qrels", "qrels_sha256"}, "split": split}``: ``path`` the
    dataset folder, resolved; ``qrels`` the qrels file relative to it; ``qrels_sha256`` the
    fingerprint of its bytes. DataError when the split has no qrels file.
    """
    from braid.data.beir import BeirDataset

    ds = BeirDataset(Path(dataset_dir))
    path = ds.root / "qrels" / f"{split}.tsv"
    if not path.is_file():
        ds.qrels(split)  # raises the DataError that names the available splits
    return {
        "dataset": {"name": ds.name, "path": str(ds.root.resolve()), "qrels": f"qrels/{split}.tsv", "qrels_sha256": file_sha256(path)},
        "split": split,
    }
