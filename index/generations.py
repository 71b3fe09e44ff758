"""The commit protocol of a live index: generations, the one-writer lock, and orphan clean-up.

Every add / delete / compact is one commit. A commit writes its new files under names no earlier
generation uses (segment directories, the tantivy directory of the generation, the deletion bitmap
of the generation, lines appended to ``docids.txt`` past the committed count), and only then replaces
``manifest.json`` atomically (temp file, fsync, rename, fsync of the directory) with ``generation``
one higher. ``manifest.json`` is the commit point: a crash at any moment before the rename leaves the
previous generation, whose files were never touched, and a crash after it leaves the new one. Files
no manifest refers to (a crashed commit's, or those the last two generations no longer use) are
orphans; the next writer removes them (:func:`remove_orphans`).

One writer at a time: :func:`writer_lock` creates ``write.lock`` exclusively, holding the writer's
pid, host and start time. A second writer is refused with a message naming that pid; a lock whose
pid is no longer running on this host is stale: it is reported and taken over.

Readers never lock: they read ``manifest.json`` once and open the files it lists (a snapshot);
:func:`read_generation` is the cheap check (one small file read) a reader does to see whether a newer
generation was committed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from braid.data.errors import BraidError, IndexFormatError
from braid.index.manifest import DOCIDS, LOCK_FILE, MANIFEST, _pid_alive, write_manifest

LOCK = LOCK_FILE
HISTORY = "generations"  # INDEX/generations/manifest-N.json: the manifests of earlier generations
KEEP_GENERATIONS = 2  # the current one and the one before stay openable (a reader may have just read it)


class IndexLockedError(BraidError):
    """Another process holds the index's writer lock."""


def generation_of(manifest: dict) -> int:
    """The manifest's generation (0 for an index as ``braid index`` built it)."""
    return int(manifest.get("generation", 0))


def read_generation(index_dir: str | Path) -> int | None:
    """The committed generation of ``index_dir`` (a read of the small manifest file), None if unreadable."""
    try:
        with open(Path(index_dir) / MANIFEST, "rb") as fh:
            return generation_of(json.loads(fh.read()))
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------
# the writer lock
# --------------------------------------------------------------------------------------------------
@dataclass
class LockHolder:
    pid: int
    host: str
    started: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (since {self.started})"


def _read_holder(path: Path) -> LockHolder | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return LockHolder(int(raw["pid"]), str(raw["host"]), str(raw["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def writer_lock(index_dir: str | Path, log: Callable[[str], None] = print, path: str | Path | None = None) -> Iterator[LockHolder]:
    """Hold ``INDEX/write.lock`` for the body; IndexLockedError when a running process holds it.

    ``path``: another lock file (a build of a new index locks ``.NAME.write.lock`` beside the
    directory it will create: :func:`braid.index.manifest.building_index`).

    A lock left by a process that is no longer running (same host) is reported through ``log`` and
    taken over; a lock held from another host cannot be checked and is refused (remove it by hand
    when that writer is known to be gone). A lock file that cannot be read (a writer killed while
    writing it) counts as stale once it is a few seconds old.
    """
    index_dir = Path(index_dir)
    path = Path(path) if path is not None else index_dir / LOCK
    me = LockHolder(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_holder(path)
            if holder is None:
                try:
                    age = time.time() - path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < 5.0:
                    raise IndexLockedError(f"{index_dir} is being opened for writing by another process (lock {path} was just created)") from None
                log(f"{path}: unreadable writer lock (a writer killed while taking it); taking it over")
            elif holder.host != me.host:
                raise IndexLockedError(
                    f"{index_dir} is locked for writing by {holder.describe()}; that host cannot be checked from here: "
                    f"remove {path} if that writer is gone"
                ) from None
            elif holder.pid == me.pid or _pid_alive(holder.pid):
                raise IndexLockedError(
                    f"{index_dir} is locked for writing by {holder.describe()}; one writer at a time: wait for it to finish"
                ) from None
            else:
                log(f"{path}: stale writer lock of {holder.describe()}, which is no longer running; taking it over")
            # move the stale file aside under a unique name first, so two processes taking it over
            # cannot both succeed (only one rename of the same file wins)
            aside = path.parent / f".{path.name}.stale-{me.pid}"
            try:
                os.replace(path, aside)
                aside.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"pid": me.pid, "host": me.host, "started": me.started}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            yield me
        finally:
            holder = _read_holder(path)
            if holder is not None and holder.pid == me.pid and holder.host == me.host:
                path.unlink(missing_ok=True)
        return
    raise IndexLockedError(f"{index_dir}: could not take the writer lock {path} (other writers keep taking it)")


# --------------------------------------------------------------------------------------------------
# commits
# --------------------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file under ``path`` and the directories themselves (new segment files before the commit)."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
        return
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                with open(Path(root) / name, "rb") as fh:
                    os.fsync(fh.fileno())
            except OSError:
                pass
        _fsync_dir(Path(root))


def commit(index_dir: str | Path, manifest: dict, before: Callable[[str], None] | None = None) -> int:
    """Commit ``manifest`` as the next generation of ``index_dir``; returns its number.

    The current manifest is kept as ``generations/manifest-N.json`` (so the previous generation stays
    describable), then ``manifest.json`` is replaced atomically by :func:`~braid.index.manifest.write_manifest`
    (the one function that writes manifests). ``before(step)``: a hook the crash tests use to stop a
    commit at a named point.
    """
    index_dir = Path(index_dir)
    current = json.loads((index_dir / MANIFEST).read_text(encoding="utf-8"))
    number = generation_of(current) + 1
    history = index_dir / HISTORY
    history.mkdir(exist_ok=True)
    keep = history / f"manifest-{generation_of(current)}.json"
    if not keep.exists():
        tmp = history / f".manifest-{generation_of(current)}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, keep)
    manifest = dict(manifest)
    manifest["generation"] = number
    manifest["committed"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _fsync_dir(index_dir)
    if before is not None:
        before("manifest")
    write_manifest(index_dir, manifest, durable=True)
    return number


def referenced_paths(manifest: dict) -> set[str]:
    """Top-level entries of the index directory (or ``segments/NAME``, ``deleted/NAME``) a manifest uses."""
    out = {MANIFEST, DOCIDS, LOCK, HISTORY, "vectors"}
    if manifest.get("metadata"):  # the base build's metadata.jsonl
        out.add(str(manifest["metadata"]))
    for name, info in manifest.get("components", {}).items():
        parts = str(info.get("path", name) if isinstance(info, dict) else name).split("/")
        out.add("/".join(parts[:2]) if parts[0] in ("segments", "deleted") else parts[0])
        if isinstance(info, dict) and info.get("idf_path"):
            idf = str(info["idf_path"]).split("/")
            out.add("/".join(idf[:2]) if idf[0] == "segments" else idf[0])
    live = manifest.get("live") or {}
    for seg in live.get("segments", []):
        path = str(seg.get("path", "."))
        if path != ".":
            out.add(path)
        else:
            out.update(seg.get("files", []))
    if live.get("deleted"):
        out.add(str(live["deleted"]))
    if live.get("metadata"):
        out.add(str(live["metadata"]))
    return out


def remove_orphans(index_dir: str | Path, manifests: Iterable[dict], log: Callable[[str], None] | None = None) -> list[str]:
    """Remove what none of ``manifests`` (the generations to keep) refers to: crashed commits' files,
    segments merged away, tantivy directories and deletion bitmaps of older generations.

    Only names this protocol writes are considered (``segments/*``, ``deleted/*``, ``bm25.g*``,
    ``.*.tmp-*`` and the ``generations/`` history beyond the kept ones); the base components of a
    ``braid index`` build (``bm25``, ``sparse``, ``dense``) go once no kept generation uses them.
    Returns the removed paths (relative).
    """
    index_dir = Path(index_dir)
    manifests = list(manifests)
    keep: set[str] = set()
    for m in manifests:
        keep |= referenced_paths(m)
    removed: list[str] = []

    def rm(rel: str) -> None:
        p = index_dir / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(rel)

    for sub in ("segments", "deleted"):
        folder = index_dir / sub
        if folder.is_dir():
            for item in folder.iterdir():
                rel = f"{sub}/{item.name}"
                if rel not in keep:
                    rm(rel)
    base_names = {"bm25", "sparse", "dense", "metadata.jsonl"}
    for item in index_dir.iterdir():
        name = item.name
        if name in keep:
            continue
        if name.startswith("bm25.g") or (name.startswith(".") and ".tmp-" in name) or name in base_names:
            rm(name)
    history = index_dir / HISTORY
    if history.is_dir():
        kept = {f"manifest-{generation_of(m)}.json" for m in manifests}
        for item in history.iterdir():
            if item.name not in kept:
                rm(f"{HISTORY}/{item.name}")
    if log is not None and removed:
        log(f"removed {len(removed)} orphaned file(s) or folder(s): {', '.join(sorted(removed)[:6])}{' ...' if len(removed) > 6 else ''}")
    return removed


def kept_manifests(index_dir: str | Path) -> list[dict]:
    """The current manifest and the ``KEEP_GENERATIONS - 1`` before it (those still on record)."""
    index_dir = Path(index_dir)
    current = json.loads((index_dir / MANIFEST).read_text(encoding="utf-8"))
    out = [current]
    gen = generation_of(current)
    for g in range(gen - 1, max(-1, gen - KEEP_GENERATIONS), -1):
        path = index_dir / HISTORY / f"manifest-{g}.json"
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            break
    return out


def check_generation(index_dir: Path, manifest: dict) -> None:
    """Refuse a manifest whose live files are missing (IndexFormatError naming the first one)."""
    live = manifest.get("live") or {}
    for seg in live.get("segments", []):
        path = index_dir / str(seg.get("path", "."))
        if not path.is_dir():
            raise IndexFormatError(f"{index_dir}: generation {generation_of(manifest)} lists segment {seg.get('path')!r}, which is missing")
    if live.get("deleted") and not (index_dir / live["deleted"]).is_file():
        raise IndexFormatError(f"{index_dir}: generation {generation_of(manifest)} lists deletion bitmap {live['deleted']!r}, which is missing")
