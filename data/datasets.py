"""Collections by name: the one resolver every dataset argument goes through.

A dataset argument is one of

- a folder or file that exists: returned unchanged (an existing path wins over a name);
- ``beir/NAME`` or ``beir/NAME/SUB`` (e.g. ``beir/cqadupstack/android``): the public BEIR zip of NAME,
  downloaded once with a progress bar, checked against BEIR's published md5 (:data:`BEIR_MD5`) and
  unpacked into the cache;
- ``irds:ID``: any ir_datasets id (``irds:beir/scifact/test``, ``irds:cranfield``), exported once
  through the ``ir_datasets`` package (optional extra ``braid[datasets]``) into a BEIR-layout folder.

The cache is ``$BRAID_DATA`` (default ``~/.cache/braid``): ``beir/NAME/`` and ``irds/KEY/``, each a
plain BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) plus a
``braid-source.json`` saying where it came from and the checksums of what was downloaded. A folder
appears under its final name only by a rename once it is complete, so an interrupted download or
export never looks like a dataset; a cached one is reused without the network.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from braid.data.errors import BraidError

BEIR_BASE_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"
SOURCE_FILE = "braid-source.json"

# md5 of each public BEIR zip, as published in the "Available Datasets" table of the BEIR README
# (github.com/beir-cellar/beir, README.md at commit 20b76b0d7715a2d91f92638b52cee28104979df0). Only
# these are known; any other NAME is still downloaded, said to be unverified, and its sha256 recorded.
BEIR_MD5: dict[str, str] = {
    "msmarco": "444067daf65d982533ea17ebd59501e4",
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}

# Last components of an ir_datasets id that name a split of the collection before them: such ids share
# one cached folder (one corpus, one index), each adding its qrels/<split>.tsv.
IRDS_SPLITS = ("train", "dev", "test", "validation", "valid")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class DatasetError(BraidError):
    """A named dataset that could not be fetched, verified, unpacked or exported; names the dataset."""

    def __init__(self, dataset: str, message: str):
        super().__init__(f"dataset {dataset}: {message}")
        self.dataset = dataset


def cache_root() -> Path:
    """``$BRAID_DATA``, default ``~/.cache/braid``."""
    return Path(os.environ.get("BRAID_DATA") or Path.home() / ".cache" / "braid").expanduser()


def beir_url(name: str) -> str:
    """The zip URL of BEIR dataset ``name``; the base is ``$BRAID_BEIR_URL`` when set (a mirror)."""
    base = os.environ.get("BRAID_BEIR_URL") or BEIR_BASE_URL
    return f"{base.rstrip('/')}/{name}.zip"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def resolve_dataset(
    spec: str | os.PathLike,
    *,
    cache: str | os.PathLike | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The local path of dataset ``spec`` (see the module docstring for the forms), fetching it if needed.

    ``progress``: tqdm bars (None: when stderr is a terminal). ``log``: where notes such as "no published
    checksum" go (default stderr). Raises :class:`DatasetError` naming the dataset and what failed.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        return path
    log = log or _stderr
    root = Path(cache).expanduser() if cache is not None else cache_root()
    if text.startswith("beir/"):
        return fetch_beir(text[len("beir/") :], cache=root, progress=progress, log=log)
    if text.startswith("irds:"):
        return export_irds(text[len("irds:") :], cache=root, progress=progress, log=log)
    return path


# ---------------------------------------------------------------------------------------------- BEIR
def fetch_beir(
    name: str,
    *,
    cache: str | os.PathLike | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The folder of BEIR dataset ``name`` (``NAME`` or ``NAME/SUB``), downloaded and unpacked on first use."""
    spec = f"beir/{name}"
    parts = name.strip("/").split("/")
    if not 1 <= len(parts) <= 2 or not all(_NAME.match(p) and ".." not in p for p in parts):
        raise DatasetError(spec, "expected beir/NAME or beir/NAME/SUB (NAME as in BEIR's list: scifact, nfcorpus, cqadupstack/android, ...)")
    log = log or _stderr
    root = (Path(cache).expanduser() if cache is not None else cache_root()) / "beir"
    top = root / parts[0]
    if not top.is_dir():
        _download_beir(parts[0], top, progress, log)
    folder = top.joinpath(*parts[1:])
    if not folder.is_dir():
        have = sorted(p.name for p in top.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DatasetError(spec, f"no {'/'.join(parts[1:])} in the BEIR archive {parts[0]} (it has: {', '.join(have) or 'nothing'})")
    return folder


def _download_beir(name: str, dest: Path, progress: bool | None, log: Callable[[str], None]) -> None:
    spec = f"beir/{name}"
    url = beir_url(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=dest.parent))
    try:
        archive = work / f"{name}.zip"
        size, md5, sha256 = _download(url, archive, spec, progress)
        expected = BEIR_MD5.get(name)
        if expected is None:
            checksum = "unverified: BEIR publishes no md5 Braid knows for this name; sha256 recorded"
            log(f"{spec}: no published checksum known, not verified; sha256 of the download: {sha256}")
        elif md5 != expected:
            raise DatasetError(spec, f"checksum mismatch for {url}: md5 {md5}, BEIR publishes {expected}; the download was discarded")
        else:
            checksum = "md5 verified against BEIR's published table"
        unpacked = _unpack(archive, work / "unpacked", spec)
        top = unpacked / name if (unpacked / name).is_dir() else unpacked
        if not _is_beir_folder(top) and not any(_is_beir_folder(p) for p in top.iterdir() if p.is_dir()):
            raise DatasetError(spec, f"the archive from {url} holds no BEIR dataset (no corpus.jsonl with queries.jsonl)")
        record = {
            "dataset": spec,
            "url": url,
            "bytes": size,
            "md5": md5,
            "md5_published": expected,
            "sha256": sha256,
            "checksum": checksum,
            "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (top / SOURCE_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        _publish(top, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download(url: str, path: Path, spec: str, progress: bool | None) -> tuple[int, str, str]:
    """Stream ``url`` into ``path``; return (bytes, md5, sha256). A short body is an error, not a file."""
    from tqdm.auto import tqdm

    from braid import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"braid/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        raise DatasetError(spec, f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(spec, f"download of {url} failed ({reason}) and there is no cached copy") from None
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    size = 0
    try:
        with response, open(path, "wb") as fh, tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"download {spec}", disable=None if progress is None else not progress
        ) as bar:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                fh.write(chunk)
                md5.update(chunk)
                sha256.update(chunk)
                size += len(chunk)
                bar.update(len(chunk))
    except http.client.IncompleteRead as exc:
        size += len(exc.partial)
        raise DatasetError(spec, f"truncated download from {url}: {size} of {total} bytes received; nothing was kept") from None
    except OSError as exc:
        raise DatasetError(spec, f"download of {url} failed after {size} bytes: {exc}") from None
    if total is not None and size != total:
        raise DatasetError(spec, f"truncated download from {url}: {size} of {total} bytes received; nothing was kept")
    return size, md5.hexdigest(), sha256.hexdigest()


def _unpack(archive: Path, out: Path, spec: str) -> Path:
    """Extract ``archive`` into ``out``, refusing members that would land outside it."""
    try:
        with zipfile.ZipFile(archive) as zf:
            base = out.resolve()
            for member in zf.namelist():
                target = (out / member).resolve()
                if target != base and base not in target.parents:
                    raise DatasetError(spec, f"the archive has a member outside its folder: {member!r}")
            zf.extractall(out)
    except zipfile.BadZipFile as exc:
        raise DatasetError(spec, f"the download is not a valid zip archive ({exc}); truncated or corrupt") from None
    return out


def _is_beir_folder(path: Path) -> bool:
    has_corpus = (path / "corpus.jsonl").is_file() or (path / "corpus.jsonl.gz").is_file()
    return has_corpus and (path / "queries.jsonl").is_file()


def _publish(ready: Path, dest: Path) -> None:
    """Move a complete folder to its final name in one rename; a concurrent winner is kept."""
    try:
        os.rename(ready, dest)
    except OSError:
        if not dest.is_dir():
            raise


# ---------------------------------------------------------------------------------------------- ir_datasets
def irds_location(dataset_id: str) -> tuple[str, str]:
    """``(key, split)`` of an ir_datasets id: ``beir/scifact/test`` -> ``("beir/scifact", "test")``;
    an id without a split suffix is its own key, with split ``test``."""
    head, _, last = dataset_id.rpartition("/")
    if head and last in IRDS_SPLITS:
        return head, last
    return dataset_id, "test"


def export_irds(
    dataset_id: str,
    *,
    cache: str | os.PathLike | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The BEIR-layout folder of ir_datasets id ``dataset_id``, exported on first use.

    Ids that differ only in a split suffix (``beir/scifact/train``, ``beir/scifact/test``) share one
    folder (``irds/beir-scifact``): the corpus is written once and each split adds ``qrels/<split>.tsv``
    and its queries.
    """
    spec = f"irds:{dataset_id}"
    try:
        import ir_datasets
    except ImportError:
        raise DatasetError(spec, "the ir_datasets package is not installed: pip install 'braid[datasets]'") from None
    key, split = irds_location(dataset_id)
    root = (Path(cache).expanduser() if cache is not None else cache_root()) / "irds"
    dest = root / key.replace("/", "-")
    if (dest / "qrels" / f"{split}.tsv").is_file():
        _check_source(dest, key, spec)
        return dest
    try:
        dataset = ir_datasets.load(dataset_id)
    except KeyError:
        raise DatasetError(spec, "not an ir_datasets id (see `ir_datasets list` or ir-datasets.com)") from None
    for part in ("docs", "queries", "qrels"):
        if not getattr(dataset, f"has_{part}")():
            raise DatasetError(spec, f"this ir_datasets id has no {part}; an evaluation folder needs documents, queries and qrels")
    root.mkdir(parents=True, exist_ok=True)
    try:
        if dest.is_dir():
            _check_source(dest, key, spec)
            _add_split(dataset, dest, split, dataset_id)
        else:
            work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=root))
            try:
                folder = work / dest.name
                folder.mkdir()
                _write_corpus(dataset, folder / "corpus.jsonl", spec, progress)
                _write_json(folder / SOURCE_FILE, {"dataset": f"irds:{key}", "ir_datasets": ir_datasets.__version__, "splits": {}})
                _add_split(dataset, folder, split, dataset_id)
                _publish(folder, dest)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    except DatasetError:
        raise
    except Exception as exc:  # ir_datasets' own download/parse errors: say which dataset and step
        raise DatasetError(spec, f"ir_datasets export failed: {type(exc).__name__}: {exc}") from exc
    log(f"{spec}: exported to {dest}")
    return dest


def _check_source(dest: Path, key: str, spec: str) -> None:
    try:
        source = json.loads((dest / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DatasetError(spec, f"{dest} exists but has no readable {SOURCE_FILE}; remove it to export again") from None
    if source.get("dataset") != f"irds:{key}":
        raise DatasetError(spec, f"{dest} holds {source.get('dataset')!r}, not irds:{key}; remove it or set BRAID_DATA elsewhere")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _write_lines(path: Path, lines) -> None:
    """Write text lines to ``path`` atomically (temp file in the same folder, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line)
    os.replace(tmp, path)


def _texts(record, title_field: bool) -> tuple[str, str]:
    """(title, text) of an ir_datasets record: its ``title``/``text`` fields, else ``default_text()``."""
    fields = type(record)._fields
    if "text" in fields:
        title = getattr(record, "title", "") if title_field and "title" in fields else ""
        return str(title or ""), str(record.text or "")
    return "", str(record.default_text())


def _write_corpus(dataset, path: Path, spec: str, progress: bool | None) -> None:
    from tqdm.auto import tqdm

    try:
        total = dataset.docs_count()
    except Exception:  # some handlers only know their count after a first pass
        total = None

    def lines():
        with tqdm(dataset.docs_iter(), total=total, unit="doc", desc=f"export {spec}", disable=None if progress is None else not progress) as docs:
            for doc in docs:
                title, text = _texts(doc, title_field=True)
                yield json.dumps({"_id": str(doc.doc_id), "title": title, "text": text}, ensure_ascii=False) + "\n"

    _write_lines(path, lines())


def _add_split(dataset, folder: Path, split: str, dataset_id: str) -> None:
    """Add ``qrels/<split>.tsv`` and the split's queries to ``folder``; queries first, so a crash in
    between leaves a folder without that split (exported again next time), never qrels without queries."""
    from braid.data.queries import read_queries

    spec = f"irds:{dataset_id}"
    queries_path = folder / "queries.jsonl"
    queries = read_queries(queries_path) if queries_path.is_file() else {}
    for query in dataset.queries_iter():
        qid = str(query.query_id)
        _, text = _texts(query, title_field=False)
        text = " ".join(text.split())
        if qid in queries and queries[qid] != text:
            raise DatasetError(spec, f"query {qid!r} already exported with a different text from another split")
        if text:
            queries[qid] = text
    _write_lines(queries_path, (json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n" for q, t in queries.items()))
    (folder / "qrels").mkdir(exist_ok=True)
    rows = ["query-id\tcorpus-id\tscore\n"]
    rows += [f"{q.query_id}\t{q.doc_id}\t{int(q.relevance)}\n" for q in dataset.qrels_iter()]
    _write_lines(folder / "qrels" / f"{split}.tsv", rows)
    source = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    source["splits"][split] = dataset_id
    _write_json(folder / SOURCE_FILE, source)
