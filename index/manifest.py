"""The index directory: ``manifest.json``, the shared document numbering, and atomic writes.

Layout::

    INDEX_DIR/
      manifest.json      format, format_version, library version, num_docs, components
      docids.txt         external document ids, one per line, in docno order (docno = line number - 1)
      bm25/              tantivy index (also the document store)
      sparse/            blocked inverted index (.npy arrays)
      dense/             FAISS index
      vectors/           cached encodings, so rebuilding with other parameters does not re-encode

A whole index is built in a temporary sibling directory and renamed into place; a component added
to an existing index is built in a temporary subdirectory, renamed, and only then listed in the
manifest (written to a temp file and renamed). A directory without a manifest, or whose manifest
lists a component that is not there, does not open.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from braid import __version__
from braid.data.errors import IndexFormatError, OptionError

FORMAT = "braid-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCIDS = "docids.txt"


def new_manifest(num_docs: int, source: str | None = None) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library": "braid",
        "library_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "num_docs": int(num_docs),
        "source": source,
        "components": {},
    }


def read_manifest(index_dir: str | Path) -> dict:
    """Read and validate ``manifest.json``; raise IndexFormatError with a clear reason otherwise."""
    index_dir = Path(index_dir)
    if not index_dir.exists():
        raise IndexFormatError(f"{index_dir}: no such index directory")
    if not index_dir.is_dir():
        raise IndexFormatError(f"{index_dir}: not a directory")
    path = index_dir / MANIFEST
    if not path.exists():
        raise IndexFormatError(
            f"{index_dir}: not a Braid index (no {MANIFEST}); it may be a foreign directory or a build that did not finish"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: corrupted manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not a Braid index manifest (format is {manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise IndexFormatError(f"{path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION or version < 1:
        raise IndexFormatError(
            f"{path}: index format version {version} is not supported by braid {__version__} "
            f"(supports 1..{FORMAT_VERSION}); rebuild the index or upgrade braid"
        )
    for key in ("num_docs", "components"):
        if key not in manifest:
            raise IndexFormatError(f"{path}: manifest lacks {key!r}")
    for name, info in manifest["components"].items():
        where = index_dir / component_path(name, info)
        if not where.is_dir():
            raise IndexFormatError(f"{index_dir}: manifest lists component {name!r} but {where} is missing")
    docids = index_dir / DOCIDS
    if not docids.exists():
        raise IndexFormatError(f"{index_dir}: {DOCIDS} is missing")
    return manifest


def component_path(name: str, info: dict | None) -> str:
    """The directory of component ``name`` relative to the index (``info["path"]``, default ``name``):
    a live index's tantivy component moves to ``bm25.gN`` at each commit (:mod:`braid.index.generations`)."""
    if isinstance(info, dict) and info.get("path"):
        return str(info["path"])
    return name


def write_manifest(index_dir: Path, manifest: dict, durable: bool = False) -> None:
    """Write the manifest atomically (temp file + rename); the one function that writes a manifest.

    ``durable``: fsync the file before the rename and the directory after it (a commit of a live
    index: the rename is its commit point, see :mod:`braid.index.generations`).
    """
    index_dir = Path(index_dir)
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp-0", dir=index_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.write("\n")
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, index_dir / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        dfd = os.open(index_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_docids(index_dir: Path, doc_ids: list[str]) -> None:
    with open(index_dir / DOCIDS, "w", encoding="utf-8") as fh:
        for doc_id in doc_ids:
            fh.write(doc_id + "\n")


def read_docids(index_dir: Path, count: int | None = None) -> list[str]:
    """The first ``count`` ids of ``docids.txt`` (all without ``count``).

    A live index appends to ``docids.txt`` before it commits, so lines past the committed count
    (``num_docnos`` in the manifest) may belong to a commit in progress or one that crashed.
    """
    out: list[str] = []
    with open(Path(index_dir) / DOCIDS, encoding="utf-8") as fh:
        for line in fh:
            if count is not None and len(out) >= count:
                break
            if not line.endswith("\n") and count is not None:
                break  # a partial last line of an append in progress
            out.append(line.rstrip("\n"))
    return out


def num_docnos(manifest: dict) -> int:
    """Document numbers allocated (``docids.txt`` lines in use), deleted ones included; ``num_docs``
    counts the live documents. Equal for an index no document was ever deleted from."""
    return int(manifest.get("num_docnos", manifest["num_docs"]))


def replace_directory(src: str | Path, dst: str | Path, old: str | Path | None = None) -> None:
    """Rename the finished directory ``src`` to ``dst``, replacing a ``dst`` that exists.

    The old ``dst`` is first renamed aside to ``old`` (default: the hidden sibling ``.NAME.old-PID``),
    then removed; ``dst`` is never half-written: it is the old directory, absent for the instant
    between the two renames (a crash there leaves ``old``, which a reader may fall back to), or
    the new one. ``src`` and ``dst`` must be on one file system (a temporary sibling is).
    """
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        os.replace(src, dst)
        return
    old = Path(old) if old is not None else dst.parent / f".{dst.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def building_index(out_dir: str | Path, overwrite: bool = False, marker: str = MANIFEST) -> Iterator[Path]:
    """Yield a temporary sibling directory to build a whole index in; rename it to ``out_dir`` on success.

    An existing ``out_dir`` is replaced only with ``overwrite=True``, and only after the new build
    finished (the temporary directory holds ``marker``: the manifest, or ``sharded.json`` for a
    sharded index); a build that fails or is killed leaves ``out_dir`` as it was (a killed build
    leaves a ``.NAME.tmp-*`` sibling that is not an index and is removed by the next build).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OptionError("--out", str(out_dir), "the directory exists; pass --overwrite to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise OptionError("--out", str(out_dir), "exists and is not a directory")
    parent = out_dir.parent if str(out_dir.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{out_dir.name}.tmp-*"):
        if stale.is_dir():
            pid = stale.name.rsplit("-", 2)[-2] if stale.name.count("-") >= 2 else ""
            if not (pid.isdigit() and _pid_alive(int(pid))):
                shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=parent))
    try:
        yield tmp
        if not (tmp / marker).exists():
            raise IndexFormatError(f"internal error: build of {out_dir} finished without {marker}")
        replace_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def adding_component(index_dir: str | Path, name: str, config: dict, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary subdirectory to build component ``name`` in; install it and list it in the manifest on success."""
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    target = index_dir / name
    if name in manifest["components"] and not overwrite:
        raise OptionError("--retriever", name, f"{index_dir} already has a {name!r} component; pass --overwrite to rebuild it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=index_dir))
    try:
        yield tmp
        manifest = read_manifest(index_dir)
        manifest["components"].pop(name, None)
        write_manifest(index_dir, manifest)
        replace_directory(tmp, target)
        manifest["components"][name] = config
        write_manifest(index_dir, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
