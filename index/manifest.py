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

The manifest is validated against a schema when it is read (:func:`validate_manifest`: the type
of every field; IndexFormatError naming the file and the field), and records the size and SHA-256
of every file of the index (``checksums``, written by :func:`write_manifest`; see
:mod:`braid.index.checksums`). Opening checks that each recorded file is there with its size and
that ``docids.txt`` has its hash; :func:`verify_index` (``braid verify``) re-hashes every file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from braid import __version__
from braid.data.corpus import JSONProblem, parse_json
from braid.data.errors import IndexFormatError, OptionError
from braid.index import checksums

FORMAT = "braid-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCIDS = "docids.txt"
LOCK_FILE = "write.lock"  # the one writer's lock (braid.index.generations.writer_lock)


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
    """Read and validate ``manifest.json`` (:func:`validate_manifest`) and check that every file it
    records is present with its recorded size; raise IndexFormatError with a clear reason otherwise."""
    index_dir = Path(index_dir)
    manifest = load_manifest(index_dir)
    for name, info in manifest["components"].items():
        where = index_dir / component_path(name, info)
        if not where.is_dir():
            raise IndexFormatError(f"{index_dir}: manifest lists component {name!r} but {where} is missing")
    docids = index_dir / DOCIDS
    if not docids.exists():
        raise IndexFormatError(f"{index_dir}: {DOCIDS} is missing")
    if "checksums" in manifest:
        problems = checksums.check_sizes(index_dir, manifest["checksums"], checksums.append_only(manifest))
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise IndexFormatError(f"{index_dir}: damaged index: {problems[0]}{more}; run `braid verify {index_dir}`")
    return manifest


def load_manifest(index_dir: str | Path) -> dict:
    """Parse ``INDEX_DIR/manifest.json`` and validate it against the schema, without looking at the other files."""
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
        manifest = parse_json(path.read_bytes().decode("utf-8"))
    except (JSONProblem, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: corrupted manifest ({exc})") from None
    except OSError as exc:
        raise IndexFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return validate_manifest(manifest, path)


def verify_index(index_dir: str | Path) -> list[checksums.Problem]:
    """``braid verify``: every problem with the files of the index at ``index_dir`` (empty: intact).

    Re-reads every file the manifest records and compares its SHA-256; reports each missing,
    resized, changed and extra file (:func:`braid.index.checksums.verify`). A manifest that does
    not parse or fails the schema raises IndexFormatError (there is nothing to verify against).
    """
    index_dir = Path(index_dir)
    return checksums.verify(index_dir, load_manifest(index_dir))


# --------------------------------------------------------------------------------------------------
# The manifest's schema: the type of every field, checked when it is read
# --------------------------------------------------------------------------------------------------
_COMPONENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}\Z")


def _is_int(v: object, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_str(v: object) -> bool:
    return isinstance(v, str)


def _is_opt_str(v: object) -> bool:
    return v is None or isinstance(v, str)


def _is_mapping(v: object) -> bool:
    return isinstance(v, dict)


def _is_corpus(v: object) -> bool:
    return v is None or (
        isinstance(v, dict) and _is_str(v.get("path")) and _is_int(v.get("size")) and _is_int(v.get("mtime_ns"), low=-(2**63))
    )


# field -> (check, what it must be, required)
MANIFEST_FIELDS: dict[str, tuple] = {
    "format": (_is_str, "a string", True),
    "format_version": (_is_int, "an integer", True),
    "num_docs": (_is_int, "an integer >= 0", True),
    "components": (_is_mapping, "a mapping of component name -> mapping", True),
    "library": (_is_str, "a string", False),
    "library_version": (_is_str, "a string", False),
    "created": (_is_str, "a string", False),
    "source": (_is_opt_str, "a string or null", False),
    "corpus": (_is_corpus, "null or a mapping {path: string, size: integer, mtime_ns: integer}", False),
    "skipped_records": (_is_int, "an integer >= 0", False),
    "shard": (_is_mapping, "a mapping", False),
    "checksums": (_is_mapping, "a mapping of relative path -> {size, sha256}", False),
}

# component -> {field: (check, what it must be)}: what the component's opener reads without further checks
COMPONENT_FIELDS: dict[str, dict[str, tuple]] = {
    "bm25": {"num_docs": (_is_int, "an integer >= 0")},
    "pyserini": {"num_docs": (_is_int, "an integer >= 0"), "k1": (_is_number, "a finite number"), "b": (_is_number, "a finite number")},
    "sparse": {"index": (_is_mapping, "a mapping"), "encoder": (lambda v: _is_mapping(v) and _is_str(v.get("model")), "a mapping with a string 'model'")},
    "dense": {"index": (_is_mapping, "a mapping"), "encoder": (lambda v: _is_mapping(v) and _is_str(v.get("model")), "a mapping with a string 'model'")},
}


def _show(value: object) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else f"a {type(value).__name__}"
    if value is None:
        text = "null"
    return text if len(text) <= 60 else text[:57] + "..."


def validate_manifest(manifest: object, path: str | Path = MANIFEST) -> dict:
    """Check a parsed manifest against the schema (:data:`MANIFEST_FIELDS`, :data:`COMPONENT_FIELDS`,
    the checksums' shape); IndexFormatError naming ``path`` and the field otherwise. Unknown fields
    are allowed (a later braid of the same format version may add some)."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise IndexFormatError(f"{path}: not a Braid index manifest (format is {_show(found)}, expected {FORMAT!r})")
    version = manifest.get("format_version")
    if not _is_int(version):
        raise IndexFormatError(f"{path}: format_version must be an integer, got {_show(version)}")
    if version > FORMAT_VERSION or version < 1:
        raise IndexFormatError(
            f"{path}: index format version {version} is not supported by braid {__version__} "
            f"(supports 1..{FORMAT_VERSION}); rebuild the index or upgrade braid"
        )
    for key, (check, what, required) in MANIFEST_FIELDS.items():
        if key not in manifest:
            if required:
                raise IndexFormatError(f"{path}: manifest lacks {key!r}")
            continue
        if not check(manifest[key]):
            raise IndexFormatError(f"{path}: field {key!r} must be {what}, got {_show(manifest[key])}")
    for name, entry in manifest["components"].items():
        if not _COMPONENT_NAME.match(name):
            raise IndexFormatError(f"{path}: component name {_show(name)} is not a plain directory name")
        if not isinstance(entry, dict):
            raise IndexFormatError(f"{path}: field 'components.{name}' must be a mapping, got {_show(entry)}")
        for key, (check, what) in COMPONENT_FIELDS.get(name, {}).items():
            if key not in entry:
                raise IndexFormatError(f"{path}: field 'components.{name}' lacks {key!r}")
            if not check(entry[key]):
                raise IndexFormatError(f"{path}: field 'components.{name}.{key}' must be {what}, got {_show(entry[key])}")
    for rel, entry in manifest.get("checksums", {}).items():
        parts = rel.split("/")
        if not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
            raise IndexFormatError(f"{path}: checksums entry {_show(rel)} is not a relative path inside the index")
        if not (
            isinstance(entry, dict) and _is_int(entry.get("size")) and isinstance(entry.get(checksums.ALGORITHM), str)
            and _HEX_DIGEST.match(entry[checksums.ALGORITHM])
        ):
            raise IndexFormatError(f"{path}: field 'checksums.{rel}' must be {{size: integer >= 0, {checksums.ALGORITHM}: 64 hex digits}}, got {_show(entry)}")
    return manifest


def component_path(name: str, info: dict | None) -> str:
    """The directory of component ``name`` relative to the index (``info["path"]``, default ``name``):
    a live index's tantivy component moves to ``bm25.gN`` at each commit (:mod:`braid.index.generations`)."""
    if isinstance(info, dict) and info.get("path"):
        return str(info["path"])
    return name


def covered_files(index_dir: Path, manifest: dict) -> list[str]:
    """The files the manifest's ``checksums`` cover (:mod:`braid.index.checksums`). A live index: exactly
    the files its generation uses (:func:`braid.index.generations.referenced_paths`), not what older
    generations and pinned readers still hold and a later writer removes; otherwise every file of
    the listed components, ``vectors/`` and the top-level files."""
    if not manifest.get("live"):
        dirs = [component_path(name, info) for name, info in manifest["components"].items()]
        return checksums.index_files(index_dir, dirs, exclude=(MANIFEST, LOCK_FILE))
    from braid.index.generations import HISTORY, referenced_paths

    out: list[str] = []
    for rel in sorted(referenced_paths(manifest) - {MANIFEST, LOCK_FILE, HISTORY}):
        path = index_dir / rel
        if path.is_file():
            out.append(rel)
        elif path.is_dir():
            out.extend(checksums.walk(index_dir, rel))
    return sorted(out)


def write_manifest(index_dir: Path, manifest: dict, durable: bool = False) -> None:
    """Write the manifest atomically (temp file + rename); the one function that writes a manifest.

    The ``checksums`` of the files it covers (:func:`covered_files`) are computed now: the files are
    complete when this is called. A live index's files are written once under new names, so an entry
    of the previous generation with the same path and size is reused instead of re-hashing the file
    (``docids.txt``, which grows, is hashed again). ``durable``: fsync the file before the rename and
    the directory after it (a commit of a live index: the rename is its commit point, see
    :mod:`braid.index.generations`).
    """
    index_dir = Path(index_dir)
    previous = manifest.get("checksums") if manifest.get("live") else None
    manifest["checksums"] = checksums.compute(index_dir, covered_files(index_dir, manifest), reuse=previous)
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp-0", dir=index_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.write("\n")
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())  # mkstemp made it 0600
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


def current_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status; elsewhere set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # not atomic: another thread creating a file now gets 022
    os.umask(mask)
    return mask


def apply_umask(root: str | Path) -> None:
    """Give ``root`` and everything under it the modes a plain ``mkdir`` / ``open`` would have given.

    Temporary directories and files (``tempfile.mkdtemp`` / ``mkstemp``, which build directories,
    atomic writes and tantivy's own atomic writes use) are created 0700 / 0600 whatever the umask,
    so an index built that way could be read by its owner only; a service running as another user
    could not open it. Directories become ``0777 & ~umask``, files ``0666 & ~umask`` (``0777`` if
    they were executable).
    """
    mask = current_umask()
    root = Path(root)
    os.chmod(root, 0o777 & ~mask)
    for path, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(path, name), 0o777 & ~mask, follow_symlinks=False)
        for name in files:
            full = os.path.join(path, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                os.chmod(full, (0o777 if st.st_mode & 0o111 else 0o666) & ~mask)


def write_docids(index_dir: Path, doc_ids: list[str]) -> None:
    with open(index_dir / DOCIDS, "w", encoding="utf-8") as fh:
        for doc_id in doc_ids:
            fh.write(doc_id + "\n")


def read_docids(index_dir: Path, count: int | None = None, manifest: dict | None = None) -> list[str]:
    """The external ids in docno order: the first ``count`` (all without ``count``).

    With ``manifest``, the file's bytes are checked against its recorded checksum, so a reordered or
    edited ``docids.txt`` is refused instead of returning wrong ids. A live index appends to
    ``docids.txt`` before it commits, so bytes past the recorded size (lines past ``num_docnos``) may
    belong to a commit in progress or one that crashed: only the recorded prefix is read and checked.
    """
    path = Path(index_dir) / DOCIDS
    data = path.read_bytes()
    recorded = (manifest or {}).get("checksums", {}).get(DOCIDS)
    if recorded is not None:
        size = int(recorded["size"])
        if len(data) < size:
            raise IndexFormatError(f"{path}: {len(data)} bytes, the manifest records {size} (truncated); rebuild the index")
        data = data[:size]
        if checksums.bytes_digest(data) != recorded[checksums.ALGORITHM]:
            raise IndexFormatError(f"{path}: does not match the checksum in the manifest (edited or reordered); rebuild the index")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IndexFormatError(f"{path}: not UTF-8 ({exc})") from None
    lines = text.split("\n")
    if text.endswith("\n") or not text:
        lines = lines[:-1]
    elif count is not None:
        lines = lines[:-1]  # a partial last line of an append in progress
    return lines[:count] if count is not None else lines


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
    from braid.index.generations import writer_lock

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OptionError("--out", str(out_dir), "the directory exists; pass --overwrite to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise OptionError("--out", str(out_dir), "exists and is not a directory")
    parent = out_dir.parent if str(out_dir.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    # One writer: two builds into the same --out (the lock beside it), or a build replacing an index
    # that a live-index writer is changing (its own write.lock), are refused naming the holder's pid.
    with writer_lock(parent, log=_report, path=parent / f".{out_dir.name}.write.lock"):
        with contextlib.ExitStack() as held:
            if (out_dir / MANIFEST).exists():
                held.enter_context(writer_lock(out_dir, log=_report))
            yield from _build_in_temporary(out_dir, parent, marker)


def _build_in_temporary(out_dir: Path, parent: Path, marker: str) -> Iterator[Path]:
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
        apply_umask(tmp)
        replace_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def adding_component(index_dir: str | Path, name: str, config: dict, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary subdirectory to build component ``name`` in; install it and list it in the manifest on success.

    ``config`` (the component's manifest entry) is read when the block ends, so the block may fill
    it in (``config.update(index.save(tmp))``): the manifest never lists the component with a
    partial entry.
    """
    from braid.index.generations import writer_lock

    index_dir = Path(index_dir)
    with writer_lock(index_dir, log=_report):
        yield from _add_component(index_dir, name, config, overwrite)


def _add_component(index_dir: Path, name: str, config: dict, overwrite: bool) -> Iterator[Path]:
    manifest = read_manifest(index_dir)
    target = index_dir / name
    if name in manifest["components"] and not overwrite:
        raise OptionError("--retriever", name, f"{index_dir} already has a {name!r} component; pass --overwrite to rebuild it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=index_dir))
    try:
        yield tmp
        manifest = load_manifest(index_dir)  # the block may have changed files (vectors/): their checksums are rewritten now
        manifest["components"].pop(name, None)
        write_manifest(index_dir, manifest)
        apply_umask(tmp)
        replace_directory(tmp, target)
        manifest["components"][name] = config
        write_manifest(index_dir, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _report(message: str) -> None:
    """A stale writer lock taken over by a build: said on stderr (stdout may carry a command's JSON)."""
    print(f"braid: {message}", file=sys.stderr)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
