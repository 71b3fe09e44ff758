"""Resumable training checkpoints: one directory per run, its ``latest`` checkpoint replaced atomically.

A checkpoint directory ``CKDIR`` holds ``latest/`` (and, for an instant during a replace, or after
a crash in it, ``latest.old/``). A checkpoint is plain files, no pickle of objects:
``NAME.safetensors`` per torch module, ``NAME.npy`` per array, ``optimizer.pt`` (``torch.save`` of
the optimizer's tensors, read back with ``weights_only=True``) and ``state.json``. ``state.json``
carries the run's ``fingerprint`` (what determines the result: model, data, settings); resuming
with another fingerprint is refused, naming what differs, so a checkpoint is never continued by a
different run. Trainers choose what goes in; this module owns the layout and the rules.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from braid.data.errors import OptionError
from braid.index.manifest import replace_directory

CHECKPOINT_LATEST = "latest"
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"


@dataclass
class Checkpoint:
    """A checkpoint read back: its directory, ``state.json`` and its arrays (name -> ndarray)."""

    path: Path
    state: dict
    arrays: dict = field(default_factory=dict)


def default_checkpoint_dir(index_dir: str | Path, trainer: str) -> Path:
    """``.NAME.TRAINER-train`` next to the index ``NAME`` (like the encoding caches of a build)."""
    index_dir = Path(index_dir)
    return index_dir.parent / f".{index_dir.name}.{trainer}-train"


def write_checkpoint(
    ckdir: str | Path,
    state: Mapping[str, Any],
    *,
    modules: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    optimizer: Any = None,
) -> Path:
    """Replace ``ckdir/latest`` atomically with ``modules`` (safetensors), ``arrays`` (.npy), the optimizer state and ``state``.

    ``state``: JSON-serialisable, with the run's ``"fingerprint"``. Built in a temporary sibling
    and renamed into place, so a crash leaves the previous checkpoint (``latest`` or
    ``latest.old``), never a half-written one. Returns the path of the new checkpoint.
    """
    ckdir = Path(ckdir)
    ckdir.mkdir(parents=True, exist_ok=True)
    tmp = ckdir / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if modules:
        from safetensors.torch import save_model

        for name, module in modules.items():
            save_model(module, str(tmp / f"{name}.safetensors"))
    for name, arr in (arrays or {}).items():
        np.save(tmp / f"{name}.npy", np.asarray(arr), allow_pickle=False)
    if optimizer is not None:
        import torch

        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    (tmp / STATE_FILE).write_text(json.dumps(dict(state), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    latest = ckdir / CHECKPOINT_LATEST
    replace_directory(tmp, latest, old=ckdir / f"{CHECKPOINT_LATEST}.old")
    return latest


def find_checkpoint(ckdir: str | Path) -> Path | None:
    """``ckdir/latest``, else ``latest.old`` (left by a crash mid-replace), else None."""
    for name in (CHECKPOINT_LATEST, f"{CHECKPOINT_LATEST}.old"):
        path = Path(ckdir) / name
        if (path / STATE_FILE).is_file():
            return path
    return None


def check_fingerprint(ckdir: str | Path, theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> None:
    """OptionError naming the differing keys (``config.KEY`` inside ``config``) when a checkpoint belongs to another run."""
    if dict(theirs) == dict(ours):
        return
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if "config" in diff:
        a, b = theirs.get("config") or {}, ours.get("config") or {}
        diff = [d for d in diff if d != "config"] + [f"config.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    raise OptionError(
        "checkpoint_dir",
        str(ckdir),
        f"it holds a checkpoint of another training run (differs in {', '.join(diff)}); remove it or choose another directory",
    )


def read_checkpoint(
    ckdir: str | Path,
    fingerprint: Mapping[str, Any],
    *,
    modules: Mapping[str, Any] | None = None,
    arrays: tuple[str, ...] = (),
    optimizer: Any = None,
    device: Any = "cpu",
) -> Checkpoint | None:
    """Load the checkpoint of ``ckdir`` into ``modules`` and ``optimizer``; None when there is none.

    ``fingerprint``: this run's (see :func:`check_fingerprint`); ``arrays``: names of the arrays to
    read back (returned in :attr:`Checkpoint.arrays`, float as saved); ``device``: where the module
    weights and optimizer tensors go.
    """
    ckdir = Path(ckdir)
    path = find_checkpoint(ckdir)
    if path is None:
        return None
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OptionError("checkpoint_dir", str(ckdir), f"unreadable checkpoint state ({exc}); remove {path}") from None
    if not isinstance(state, dict):
        raise OptionError("checkpoint_dir", str(ckdir), f"unreadable checkpoint state (not a JSON object); remove {path}")
    check_fingerprint(ckdir, state.get("fingerprint") or {}, fingerprint)
    if modules:
        from safetensors.torch import load_model

        for name, module in modules.items():
            load_model(module, str(path / f"{name}.safetensors"), device=str(device))
    loaded = {name: np.load(path / f"{name}.npy", allow_pickle=False) for name in arrays}
    if optimizer is not None:
        import torch

        optimizer.load_state_dict(torch.load(path / OPTIMIZER_FILE, map_location=device, weights_only=True))
    return Checkpoint(path, state, loaded)
