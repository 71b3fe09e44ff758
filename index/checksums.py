"""Checksums of an index directory's files: recorded in the manifest when it is written, checked when the index opens.

The manifest's ``checksums`` entry maps the path of every file of the index (relative to the index
directory, ``/``-separated) to ``{"size": BYTES, "sha256": HEX}``. It is computed by
:func:`braid.index.manifest.write_manifest`, the moment the manifest is written: the files it
covers are complete by then (a whole index is built in a temporary directory, a component in a
temporary subdirectory, and the manifest is written last).

Which files are covered (:func:`index_files`): the top-level files other than the manifest
(``docids.txt``), and every file under the directory of each component the manifest lists and
under ``vectors/``. Not covered: entries whose name starts with ``.`` at the top level (temporary
build directories and files, writers' lock files) and directories of components that are not
listed (a component being replaced, between two manifest writes); :func:`verify` reports any
other file as extra.

Opening an index checks the cheap things (:func:`check_sizes`: every recorded file is present
with its recorded size); ``braid verify INDEX`` (:func:`verify`) re-reads every file and compares
its hash, so it also finds a flipped byte and a reordered ``docids.txt``.

SHA-256, not BLAKE2b: with the SHA extensions of current x86 and ARM processors OpenSSL's SHA-256
is the faster of the two in :mod:`hashlib` (887 vs 381 MiB/s on the Intel Xeon of the build
machine, 256 MiB buffer, best of 3), and ``sha256sum`` checks a file by hand. A checksum here
detects corruption (disk, copy, a truncated transfer, an edit); it is not a signature.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

ALGORITHM = "sha256"
VECTORS_DIR = "vectors"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an index's files: ``kind`` is ``missing``, ``size``, ``checksum``, ``extra``,
    ``unreadable`` or ``unchecked``; ``path`` is relative to the index directory."""

    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


def index_files(index_dir: str | Path, components: Iterable[str], exclude: Iterable[str] = ("manifest.json",)) -> list[str]:
    """The files :func:`compute` covers (see the module docstring), as sorted relative ``/`` paths."""
    index_dir = Path(index_dir)
    exclude = set(exclude)
    covered_dirs = set(components) | {VECTORS_DIR}
    out: list[str] = []
    for entry in sorted(os.scandir(index_dir), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in exclude:
            continue
        if entry.is_file(follow_symlinks=False):
            out.append(entry.name)
        elif entry.is_dir(follow_symlinks=False) and entry.name in covered_dirs:
            out.extend(walk(index_dir, entry.name))
    return out


def walk(index_dir: Path, top: str) -> list[str]:
    """Every file under ``index_dir/top``, as sorted relative ``/`` paths."""
    out = []
    for root, dirs, files in os.walk(index_dir / top):
        dirs.sort()
        rel = Path(root).relative_to(index_dir).as_posix()
        out.extend(f"{rel}/{name}" for name in sorted(files))
    return out


def file_digest(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    import hashlib  # here, not at import: opening an index for search never hashes

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, ALGORITHM).hexdigest() if hasattr(hashlib, "file_digest") else _digest_stream(fh)


def _digest_stream(fh) -> str:  # Python 3.10 has no hashlib.file_digest
    import hashlib

    h = hashlib.new(ALGORITHM)
    for block in iter(lambda: fh.read(_CHUNK), b""):
        h.update(block)
    return h.hexdigest()


def append_only(manifest: Mapping) -> tuple[str, ...]:
    """The files of the index that only grow (a live index's ``docids.txt``): checked over their recorded prefix."""
    return ("docids.txt",) if manifest.get("live") else ()


def prefix_digest(path: str | Path, size: int) -> str:
    """Hex SHA-256 of the first ``size`` bytes of a file."""
    import hashlib

    h = hashlib.new(ALGORITHM)
    left = int(size)
    with open(path, "rb") as fh:
        while left > 0:
            block = fh.read(min(_CHUNK, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def bytes_digest(data: bytes) -> str:
    import hashlib

    return hashlib.new(ALGORITHM, data).hexdigest()


def compute(index_dir: str | Path, files: Iterable[str], reuse: Mapping[str, Mapping] | None = None) -> dict[str, dict]:
    """``{relative path: {"size": int, "sha256": hex}}`` of ``files`` (relative to ``index_dir``).

    ``reuse``: entries known for files that are never rewritten in place (a live index's write-once
    segment files): an entry with the same path and size is taken instead of hashing the file again.
    """
    index_dir = Path(index_dir)
    reuse = reuse or {}
    out = {}
    for rel in files:
        path = index_dir / rel
        size = path.stat().st_size
        known = reuse.get(rel)
        if isinstance(known, Mapping) and known.get("size") == size and isinstance(known.get(ALGORITHM), str):
            out[rel] = {"size": size, ALGORITHM: known[ALGORITHM]}
        else:
            out[rel] = {"size": size, ALGORITHM: file_digest(path)}
    return out


def check_sizes(index_dir: str | Path, checksums: Mapping[str, Mapping], grows: Iterable[str] = ()) -> list[Problem]:
    """The cheap check done at every open: each recorded file is present and has its recorded size.

    ``grows``: append-only files (a live index's ``docids.txt``, appended before a commit, so a commit in
    progress or a crashed one leaves it longer): at least the recorded size, whose prefix is what was committed.
    """
    index_dir = Path(index_dir)
    grows = set(grows)
    problems = []
    for rel, entry in checksums.items():
        try:
            size = (index_dir / rel).stat().st_size
        except FileNotFoundError:
            problems.append(Problem("missing", rel, "missing (the manifest records it)"))
            continue
        except OSError as exc:
            problems.append(Problem("unreadable", rel, f"cannot be read ({exc.strerror or exc})"))
            continue
        if size != entry["size"] and not (rel in grows and size > entry["size"]):
            problems.append(Problem("size", rel, f"{size} bytes, the manifest records {entry['size']} (truncated or replaced)"))
    return problems


def verify(index_dir: str | Path, manifest: Mapping) -> list[Problem]:
    """Every problem with the files of the index at ``index_dir`` whose (validated) manifest is ``manifest``.

    Recomputes the hash of every recorded file; reports missing files, changed sizes, changed
    contents and extra files (covered by :func:`index_files` but not recorded). An index whose
    manifest records no checksums (built by braid before they existed) gives one ``unchecked``
    problem: it cannot be verified.
    """
    index_dir = Path(index_dir)
    recorded = manifest.get("checksums")
    if recorded is None:
        return [Problem("unchecked", "manifest.json", "records no checksums (built by an older braid); rebuild the index to verify it")]
    grows = append_only(manifest)
    problems = check_sizes(index_dir, recorded, grows)
    bad = {p.path for p in problems}
    for rel, entry in recorded.items():
        if rel in bad:
            continue
        try:
            digest = prefix_digest(index_dir / rel, entry["size"]) if rel in grows else file_digest(index_dir / rel)
        except OSError as exc:
            problems.append(Problem("unreadable", rel, f"cannot be read ({exc.strerror or exc})"))
            continue
        if digest != entry[ALGORITHM]:
            problems.append(Problem("checksum", rel, f"contents changed ({ALGORITHM} {digest[:16]}..., the manifest records {entry[ALGORITHM][:16]}...)"))
    if manifest.get("live"):
        # a live index also holds what older generations use (kept for readers pinned to them, removed
        # by a later writer) and a commit in progress: files outside this generation are not "extra"
        return problems
    components = manifest.get("components", {})
    dirs = {str(info.get("path") or name) if isinstance(info, Mapping) else name for name, info in components.items()}
    for rel in index_files(index_dir, dirs):
        if rel not in recorded:
            problems.append(Problem("extra", rel, "not recorded in the manifest (added after the index was written)"))
    for entry in sorted(os.scandir(index_dir), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".") and entry.name not in dirs and entry.name != VECTORS_DIR:
            problems.append(Problem("extra", entry.name + "/", "a directory that no component of the manifest owns"))
    return problems
