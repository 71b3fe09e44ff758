"""Where a model comes from: a local folder, a folder on ``BRAID_MODEL_PATH``, or a Hugging Face hub id.

Resolution order for a ``model`` argument:

1. an existing local folder (it must hold a ``config.json``);
2. a folder named after the id's last component (``sentence-transformers/all-MiniLM-L6-v2`` ->
   ``all-MiniLM-L6-v2``, or the whole id) in one of the folders of ``BRAID_MODEL_PATH``
   (separated by ``:``);
3. the hub id, handed to transformers as-is (downloads or reads the Hugging Face cache; honours
   ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``HF_HOME``).

Anything else is a :class:`BraidError` that names the argument and lists what was tried.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from braid.data.errors import BraidError

DEFAULT_SPARSE_MODEL = "rasyosef/splade-tiny"
DEFAULT_DENSE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PATH_ENV = "BRAID_MODEL_PATH"

# owner/name or name: letters, digits, '-', '_', '.' (the hub's own rule, minus the length limit).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference.

    ``name``: the argument as given (recorded in configs and manifests); ``location``: what is
    handed to ``from_pretrained`` (a folder path or a hub id); ``local_dir``: the folder when the
    model is local, else None; ``source``: ``"local"``, ``"search_path"`` or ``"hub"``;
    ``tried``: human-readable list of what resolution looked at (for error messages).
    """

    name: str
    location: str
    local_dir: Path | None
    source: str
    tried: tuple[str, ...] = field(default=())

    def file(self, relpath: str) -> Path | None:
        """A file of the model folder (``modules.json``, ``1_Pooling/config.json``, ...), or None if absent."""
        if self.local_dir is not None:
            path = self.local_dir / relpath
            return path if path.is_file() else None
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(self.location, relpath))
        except Exception:  # absent file, or offline without it in the cache: both mean "not there"
            return None

    def load(self, loader: Any, argument: str = "model", what: str = "model") -> Any:
        """``loader.from_pretrained(location)`` with failures turned into a BraidError naming ``argument``."""
        try:
            with _quiet_transformers():
                return loader.from_pretrained(self.location)
        except (OSError, ValueError, KeyError) as exc:
            raise BraidError(
                f"{argument}={self.name!r}: could not load the {what} from {self.location!r} ({self.source}): "
                f"{_first_line(exc)}{_tried_text(self.tried)}"
            ) from None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load progress bar ("Loading weights") while loading."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def model_search_path() -> list[Path]:
    """The folders of ``BRAID_MODEL_PATH`` (``:``-separated; empty entries ignored)."""
    raw = os.environ.get(MODEL_PATH_ENV, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name in (".", "..")
        or name.count("/") > 1
        or "\\" in name
        or name.endswith("/")
    )


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _tried_text(tried: tuple[str, ...]) -> str:
    return ("; tried: " + "; ".join(tried)) if tried else ""


def resolve_model(name: str | os.PathLike, argument: str = "model", check_hub: bool = True) -> ModelRef:
    """Resolve a model argument (see the module docstring) without loading any weights.

    For a hub id, ``check_hub`` fetches (or finds in the cache) its ``config.json`` so that an id
    that cannot be had fails here, with the list of what was tried, rather than deep inside
    transformers. Raises BraidError naming ``argument``.
    """
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise BraidError(f"{argument}={name!r}: expected a model folder or a Hugging Face hub id")
    name = name.strip()
    tried: list[str] = []

    path = Path(name).expanduser()
    if path.exists():
        if _is_model_dir(path):
            return ModelRef(name, str(path), path.resolve(), "local", (f"local folder {path}",))
        what = "a folder without config.json" if path.is_dir() else "a file"
        raise BraidError(
            f"{argument}={name!r}: {path} is {what}, not a Hugging Face model folder "
            "(expected config.json with the weights and tokenizer files)"
        )
    tried.append(f"local folder {path} (does not exist)")
    if _looks_like_path(name):
        raise BraidError(f"{argument}={name!r}: no such model folder {path}")

    search = model_search_path()
    candidates = [name.rsplit("/", 1)[-1]] + ([name] if "/" in name else [])
    for folder in search:
        for cand in candidates:
            p = folder / cand
            if _is_model_dir(p):
                return ModelRef(name, str(p), p.resolve(), "search_path", tuple(tried + [f"{MODEL_PATH_ENV} folder {p}"]))
    if search:
        tried.append(
            f"{MODEL_PATH_ENV} folders {', '.join(str(f) for f in search)} (no model folder named "
            f"{' or '.join(repr(c) for c in candidates)})"
        )
    else:
        tried.append(f"{MODEL_PATH_ENV} is not set (a ':'-separated list of folders holding model folders)")

    if not _HUB_ID.match(name):
        raise BraidError(f"{argument}={name!r}: not a model folder and not a valid hub id{_tried_text(tuple(tried))}")
    ref = ModelRef(name, name, None, "hub", tuple(tried + [f"Hugging Face hub id {name!r}"]))
    if check_hub:
        _check_hub(ref, argument)
    return ref


def _check_hub(ref: ModelRef, argument: str) -> None:
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return
    try:
        hf_hub_download(ref.location, "config.json")
    except Exception as exc:  # noqa: BLE001 - every failure here means the same thing to the user
        offline = " (HF_HUB_OFFLINE is set: the hub is not contacted, only the local cache is read)" if constants.HF_HUB_OFFLINE else ""
        raise BraidError(
            f"{argument}={ref.name!r}: not found locally and the hub id could not be fetched{offline}: "
            f"{type(exc).__name__}: {_first_line(exc)}{_tried_text(ref.tried)}"
        ) from None
