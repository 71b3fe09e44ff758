"""Encoding a corpus into a resumable on-disk cache of vectors (orchestration: encoders -> arrays on disk).

Layout of a cache directory::

    CACHE_DIR/
      cache.json           format, version, kind, the encoder's description, chunk_size
      chunk-000000.npz     one finished chunk (written to a temp file, then renamed):
                           sparse: indptr, indices, data; dense: vectors; both: text_sha1
      ...
      indptr.npy indices.npy data.npy     (sparse) or vectors.npy (dense): the whole corpus,
      complete.json        written once the concatenated arrays are in place (with the chunks' text hashes)

A finished chunk is never encoded again: re-running after an interruption reads (and hashes) the
texts of finished chunks without encoding them, checks the hash against the one stored in the
chunk (a changed corpus is refused), and continues with the first missing chunk. A cache made by
a different encoder or configuration is refused with the differences listed.

Progress advances per model batch, not per chunk (the encoders' ``on_batch``): a tqdm bar with
documents/s and time left on a terminal, else (``log``) a line at most every ``log_every`` seconds,
so that a build whose output goes to a log file is never silent for long.

The chunks exist for resuming only: once ``complete.json`` is written they are deleted (a complete
cache is returned without reading the texts, so nothing reads them again), and a complete cache
holds each vector once, in the concatenated arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from braid.data.errors import BraidError, DataError, OptionError, check_positive_int

FORMAT = "braid-vector-cache"
FORMAT_VERSION = 1
KINDS = ("sparse", "dense")
CACHE_META = "cache.json"
COMPLETE = "complete.json"


def chunk_path(cache_dir: Path, i: int) -> Path:
    return Path(cache_dir) / f"chunk-{i:06d}.npz"


def _text_hash(items: list[tuple[str | None, str]]) -> str:
    h = hashlib.sha1()
    for doc_id, text in items:
        if doc_id is not None:
            h.update(doc_id.encode("utf-8", "surrogatepass"))
            h.update(b"\x1f")
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()


def _normalise(items: Iterable) -> Iterator[tuple[str | None, str]]:
    """Texts, or ``(doc_id, text)`` pairs -> ``(doc_id | None, text)``."""
    for i, item in enumerate(items):
        if isinstance(item, str):
            yield None, item
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str):
            yield (None if item[0] is None else str(item[0])), item[1]
        else:
            raise OptionError(f"texts[{i}]", type(item).__name__, "a str or a (doc_id, text) pair")


def _atomic_save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_json(path: Path, obj: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _describe(encoder: Any, kind: str, mode: str) -> dict:
    if kind == "sparse" and not hasattr(encoder, "encode_csr"):
        raise OptionError("kind", kind, f"the encoder is a {type(encoder).__name__}, not a sparse encoder")
    if kind == "dense" and hasattr(encoder, "encode_csr"):
        raise OptionError("kind", kind, f"the encoder is a {type(encoder).__name__}, not a dense encoder")
    describe = getattr(encoder, "describe", None)
    if describe is None:
        raise OptionError("encoder", type(encoder).__name__, "an encoder with describe() (SparseEncoder or DenseEncoder)")
    return json.loads(json.dumps(describe(mode)))  # canonical JSON types, comparable with a loaded cache.json


def _check_meta(cache_dir: Path, meta: dict) -> None:
    path = cache_dir / CACHE_META
    if not path.exists():
        if any(cache_dir.glob("chunk-*.npz")):
            raise BraidError(f"{cache_dir}: holds chunks but no {CACHE_META}; not a braid vector cache, or a damaged one: delete it")
        _atomic_write_json(path, meta)
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BraidError(f"{path}: corrupted ({exc}); delete {cache_dir} to re-encode") from None
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        raise BraidError(f"{path}: not a braid vector cache")
    if old.get("format_version") != FORMAT_VERSION:
        raise BraidError(f"{path}: cache format version {old.get('format_version')!r} not supported ({FORMAT_VERSION}); delete it")
    diffs = []
    for key in ("kind", "chunk_size"):
        if old.get(key) != meta[key]:
            diffs.append(f"{key}: cache {old.get(key)!r}, now {meta[key]!r}")
    a, b = old.get("encoder", {}), meta["encoder"]
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            diffs.append(f"encoder {key}: cache {a.get(key)!r}, now {b.get(key)!r}")
    if diffs:
        raise BraidError(
            f"{cache_dir}: this vector cache was made by a different encoder or configuration ("
            + "; ".join(diffs)
            + "); use another cache directory or delete this one to re-encode"
        )


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Texts done out of ``total``: a tqdm bar on a terminal (``progress`` and stderr a TTY), else log lines.

    Log lines (``log`` given, no bar) come at most every ``every`` seconds, and at the end unless the last
    one already gave the final count:
    ``"DESC: 2,048 / 5,183 documents, 13.2 documents/s, about 3 min 57 s left"``. The rate counts
    only texts encoded in this run (``update(n, encoded=False)`` for texts read back from the cache),
    so a resumed build does not promise more than it delivers.
    """

    def __init__(self, total: int | None, progress: bool, desc: str, log: Callable[[str], None] | None = None, every: float = 30.0):
        self.total, self.desc, self.log, self.every = total, desc, log, every
        self.done = 0
        self._encoded = 0
        self._reported = -1  # self.done at the last log line
        self._start = self._last = time.perf_counter()
        self.bar = None
        if progress and hasattr(sys.stderr, "isatty") and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="doc", desc=desc, dynamic_ncols=True)

    def update(self, n: int, encoded: bool = True) -> None:
        self.done += n
        if encoded:
            self._encoded += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.log is not None and time.perf_counter() - self._last >= self.every:
            self._report()

    def line(self) -> str:
        elapsed = time.perf_counter() - self._start
        rate = self._encoded / elapsed if elapsed > 0 else 0.0
        of = f" / {self.total:,}" if self.total is not None else ""
        text = f"{self.desc}: {self.done:,}{of} documents, {rate:.1f} documents/s"
        if self.total is not None and rate > 0 and self.done < self.total:
            text += f", about {_duration((self.total - self.done) / rate)} left"
        elif self.done and (self.total is None or self.done >= self.total):
            text += f", {_duration(elapsed)} in all"
        return text

    def _report(self) -> None:
        self._last = time.perf_counter()
        self._reported = self.done
        self.log(self.line())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.log is not None and self.done and self._reported != self.done:  # the last count, once
            self._report()


def encode_corpus(
    texts: Iterable[str] | Iterable[tuple[str, str]],
    encoder: Any,
    cache_dir: str | Path,
    kind: str,
    chunk_size: int = 4096,
    total: int | None = None,
    progress: bool = True,
    mode: str = "document",
    on_chunk: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    log_every: float = 30.0,
) -> Any:
    """Encode a stream of texts through a resumable chunked cache; return all vectors in input order.

    ``texts``: texts, or ``(doc_id, text)`` pairs (ids enter the chunk hashes, so a reordered
    corpus is noticed). ``encoder``: a SparseEncoder (``kind="sparse"``) or DenseEncoder
    (``kind="dense"``); ``mode``: ``"document"`` or ``"query"``. ``chunk_size``: texts per cached
    chunk. ``total``: number of texts, for the progress bar only. ``on_chunk(chunk_index, n_done)``
    is called after each chunk is on disk. Progress (:class:`Progress`): a bar when ``progress``
    and stderr is a terminal, else a line through ``log`` (when given) every ``log_every`` seconds.
    The encoder's ``encode_csr`` / ``encode`` take ``(texts, mode, on_batch=...)``.

    Returns, for ``kind="sparse"``, :class:`braid.data.vectors.SparseVectors` over
    memory-mapped ``indptr``/``indices``/``data`` files; for ``kind="dense"``, float32
    ``(n, dim)`` memory-mapped from ``vectors.npy``. A cache that is already complete is returned
    without reading ``texts``.
    """
    if kind not in KINDS:
        raise OptionError("kind", kind, f"one of {', '.join(KINDS)}")
    check_positive_int("chunk_size", chunk_size)
    if isinstance(texts, str):
        raise OptionError("texts", "a single str", "an iterable of texts")
    cache_dir = Path(cache_dir)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise OptionError("cache_dir", str(cache_dir), "exists and is not a directory")
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "chunk_size": chunk_size,
        "encoder": _describe(encoder, kind, mode),
    }
    _check_meta(cache_dir, meta)
    if (cache_dir / COMPLETE).exists():
        _remove_chunks(cache_dir)  # a run killed between complete.json and the clean-up
        return load_cached(cache_dir)

    n_chunks = 0
    done = 0
    buf: list[tuple[str | None, str]] = []
    bar = Progress(total, progress, f"encoding ({kind})", log=log, every=log_every)
    try:

        def finish_chunk() -> None:
            nonlocal n_chunks, done
            path = chunk_path(cache_dir, n_chunks)
            digest = _text_hash(buf)
            if path.exists():
                with np.load(path, allow_pickle=False) as z:
                    stored = str(z["text_sha1"])
                if stored != digest:
                    raise BraidError(
                        f"{cache_dir}: the texts of chunk {n_chunks} differ from those it was encoded from "
                        "(the corpus changed); delete the cache directory to re-encode"
                    )
                bar.update(len(buf), encoded=False)
            else:
                texts_only = [t for _, t in buf]
                reported = [0]

                def on_batch(n: int) -> None:
                    reported[0] += n
                    bar.update(n)

                if kind == "sparse":
                    indptr, indices, data = encoder.encode_csr(texts_only, mode, on_batch=on_batch)
                    arrays = {"indptr": indptr, "indices": indices, "data": data}
                else:
                    vectors = np.ascontiguousarray(encoder.encode(texts_only, mode, on_batch=on_batch), dtype=np.float32)
                    arrays = {"vectors": vectors}
                if reported[0] < len(buf):  # an encoder that reports less (or nothing) still completes the chunk
                    bar.update(len(buf) - reported[0])
                arrays["text_sha1"] = np.array(digest)
                _atomic_save_npz(path, arrays)
            n_chunks += 1
            done += len(buf)
            buf.clear()
            if on_chunk is not None:
                on_chunk(n_chunks - 1, done)

        for item in _normalise(texts):
            buf.append(item)
            if len(buf) >= chunk_size:
                finish_chunk()
        if buf:
            finish_chunk()
    finally:
        bar.close()
    if chunk_path(cache_dir, n_chunks).exists():
        raise BraidError(
            f"{cache_dir}: holds more chunks than the corpus fills ({n_chunks} from {done} texts); "
            "the corpus shrank since it was encoded: delete the cache directory to re-encode"
        )
    _concatenate(cache_dir, kind, n_chunks, meta)
    return load_cached(cache_dir)


def _concatenate(cache_dir: Path, kind: str, n_chunks: int, meta: dict) -> None:
    """Write the whole-corpus arrays from the chunks, streaming into .npy files, then complete.json."""
    from numpy.lib.format import open_memmap

    sizes = []
    width = None
    for i in range(n_chunks):
        with np.load(chunk_path(cache_dir, i), allow_pickle=False) as z:
            if kind == "sparse":
                ptr = z["indptr"]
                sizes.append((len(ptr) - 1, int(ptr[-1])))
            else:
                v = z["vectors"]
                sizes.append((v.shape[0], 0))
                width = v.shape[1] if width is None else width
                if v.shape[1] != width:
                    raise BraidError(f"{chunk_path(cache_dir, i)}: dimension {v.shape[1]} differs from {width}")
    n = sum(s[0] for s in sizes)
    nnz = sum(s[1] for s in sizes)

    def tmp_path(name: str) -> Path:
        return cache_dir / f".{name}.tmp"

    if kind == "sparse":
        names = ["indptr.npy", "indices.npy", "data.npy"]
        indptr = open_memmap(tmp_path(names[0]), mode="w+", dtype=np.int64, shape=(n + 1,))
        indices = open_memmap(tmp_path(names[1]), mode="w+", dtype=np.int32, shape=(nnz,))
        data = open_memmap(tmp_path(names[2]), mode="w+", dtype=np.float32, shape=(nnz,))
        indptr[0] = 0
        row = at = 0
        for i in range(n_chunks):
            with np.load(chunk_path(cache_dir, i), allow_pickle=False) as z:
                ptr, ind, dat = z["indptr"], z["indices"], z["data"]
                m, k = len(ptr) - 1, int(ptr[-1])
                indptr[row + 1 : row + m + 1] = ptr[1:] + at
                indices[at : at + k] = ind
                data[at : at + k] = dat
                row += m
                at += k
        arrays = [indptr, indices, data]
        info = {"num_docs": n, "nnz": nnz}
    else:
        names = ["vectors.npy"]
        vectors = open_memmap(tmp_path(names[0]), mode="w+", dtype=np.float32, shape=(n, width or 0))
        row = 0
        for i in range(n_chunks):
            with np.load(chunk_path(cache_dir, i), allow_pickle=False) as z:
                v = z["vectors"]
                vectors[row : row + len(v)] = v
                row += len(v)
        arrays = [vectors]
        info = {"num_docs": n, "dim": int(width or 0)}
    for arr in arrays:
        arr.flush()
    del arrays
    for name in names:
        os.replace(tmp_path(name), cache_dir / name)
    hashes = []
    for i in range(n_chunks):
        with np.load(chunk_path(cache_dir, i), allow_pickle=False) as z:
            hashes.append(str(z["text_sha1"]))
    _atomic_write_json(
        cache_dir / COMPLETE,
        {**info, "chunks": n_chunks, "chunk_text_sha1": hashes, "kind": kind, "encoder": meta["encoder"]},
    )
    _remove_chunks(cache_dir)


def _remove_chunks(cache_dir: Path) -> None:
    """Delete the chunk files of a complete cache: the concatenated arrays hold the same vectors."""
    for path in cache_dir.glob("chunk-*.npz"):
        path.unlink(missing_ok=True)


def load_cached(cache_dir: str | Path) -> Any:
    """Open a complete cache (memory-mapped): SparseVectors for a sparse cache, float32 (n, dim) for a dense one."""
    cache_dir = Path(cache_dir)
    try:
        info = json.loads((cache_dir / COMPLETE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("not a complete vector cache (no complete.json): run encode_corpus to finish it", cache_dir) from None
    if info.get("kind") == "sparse":
        from braid.encoders.sparse import make_sparse_vectors

        arrays = [np.load(cache_dir / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ("indptr", "indices", "data")]
        if len(arrays[0]) != info["num_docs"] + 1 or len(arrays[1]) != info.get("nnz"):
            raise DataError("cached arrays disagree with complete.json; delete the cache to re-encode", cache_dir)
        return make_sparse_vectors(*arrays, int(info["encoder"]["vocab_size"]))
    vectors = np.load(cache_dir / "vectors.npy", mmap_mode="r", allow_pickle=False)
    if vectors.shape != (info["num_docs"], info["dim"]):
        raise DataError("cached vectors disagree with complete.json; delete the cache to re-encode", cache_dir)
    return vectors

