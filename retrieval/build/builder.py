"""Building an index directory from a corpus: stream documents, encode, store each component.

This is orchestration (it sits above ``index/`` and ``encoders/``): ``index/`` never sees text
models and ``encoders/`` never sees storage. The whole index is built in a temporary sibling
directory and renamed into place (see :mod:`braid.index.manifest`). Encodings are cached in a
sibling ``.NAME.encode-KIND`` directory while they are made, so an interrupted build resumes from
the last finished chunk, and they are kept in ``INDEX/vectors/`` so that rebuilding with other
index parameters reuses them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from braid.data.beir import BeirDataset
from braid.data.corpus import Document, ReadStats, count_corpus, iter_corpus
from braid.data.errors import DataError, OptionError, check_positive_int
from braid.index.manifest import apply_umask, building_index, new_manifest, read_docids, read_manifest, write_docids, write_manifest
from braid.retrieval.build.components import COMPONENT_BUILDERS, corpus_fingerprint


@dataclass
class BuildOptions:
    """What to build and how. Query-time knobs are not here: they are search arguments."""

    retrievers: tuple[str, ...] = ("bm25",)
    overwrite: bool = False
    keep_vectors: bool = True  # INDEX/vectors/: exact rescoring / PRF for PQ, rebuilds without re-encoding
    skip_bad: bool = False
    allow_empty: bool = False
    progress: bool = True
    threads: int = 0
    # learned sparse
    sparse_model: str | None = None
    sparse_vectors: Path | None = None
    sparse_index: dict = field(default_factory=dict)
    sparse_encoder: dict = field(default_factory=dict)
    # dense
    dense_model: str | None = None
    dense_vectors: Path | None = None
    dense_index: dict = field(default_factory=dict)
    dense_encoder: dict = field(default_factory=dict)
    # encoding mechanics
    batch_size: int = 32
    max_length: int = 256
    device: str = "auto"
    chunk_size: int = 2048
    # what runs the encoders (braid.encoders.base.RUNTIME_SPECS): "auto" = on a CPU, ONNX Runtime for
    # SPLADE and queries, torch for dense documents (the faster of the two, docs/benchmarks/encoders.md)
    runtime: str = "auto"

    def __post_init__(self) -> None:
        bad = [r for r in self.retrievers if r not in COMPONENT_BUILDERS]
        if bad:
            raise OptionError("--retrievers", ",".join(bad), "choose from " + ", ".join(COMPONENT_BUILDERS))
        if not self.retrievers:
            raise OptionError("--retrievers", "", "at least one retriever")
        if self.sparse_vectors is not None and "sparse" not in self.retrievers:
            self.retrievers = tuple(self.retrievers) + ("sparse",)
        if self.dense_vectors is not None and "dense" not in self.retrievers:
            self.retrievers = tuple(self.retrievers) + ("dense",)
        for name in ("batch_size", "max_length", "chunk_size"):
            check_positive_int("--" + name.replace("_", "-"), getattr(self, name))
        from braid.encoders.base import parse_runtime

        parse_runtime(self.runtime, "--runtime")
        if self.dense_index:  # checked even when no dense component is built: a typo is never ignored
            from braid.index.dense import DenseIndexConfig

            try:
                DenseIndexConfig.from_dict(self.dense_index)
            except OptionError as exc:
                where = "--dense-index" if exc.name == "kind" else f"--dense-index {exc.name}"
                raise OptionError(where, exc.value, exc.allowed) from None

    def check_applies(self, building: Sequence[str]) -> None:
        """Refuse settings of a component that is not among those ``building`` (a dense index type
        with no dense component would otherwise be ignored without a word)."""
        if self.dense_index and "dense" not in building:
            raise OptionError(
                "--dense-index", _describe_dense_index(self.dense_index), f"applies to the dense component, which is not built here ({', '.join(building)}); add dense to --retrievers"
            )


def _describe_dense_index(d: dict) -> str:
    return f"{d.get('kind')}:{d['m']}" if d.get("m") is not None else str(d.get("kind"))


def corpus_path(source: str | Path) -> Path:
    """A BEIR directory's corpus file, or the file itself."""
    source = Path(source)
    if source.is_dir():
        return BeirDataset(source).corpus_path
    if not source.exists():
        raise DataError("no such corpus file or dataset directory", source)
    return source


class CorpusReader:
    """Re-iterable stream of ``(docno, Document)`` with the build's bad-record policy."""

    def __init__(self, path: Path, skip_bad: bool, allow_empty: bool):
        self.path = path
        self.skip_bad = skip_bad
        self.allow_empty = allow_empty
        self.stats = ReadStats()
        self._total: int | None = None

    @property
    def total(self) -> int:
        if self._total is None:
            self._total = count_corpus(self.path)
        return self._total

    def __iter__(self) -> Iterator[tuple[int, Document]]:
        self.stats = ReadStats()
        docs = iter_corpus(self.path, skip_bad=self.skip_bad, allow_empty=self.allow_empty, stats=self.stats)
        return enumerate(docs)

    def texts(self) -> Iterator[str]:
        for _, doc in self:
            yield doc.contents


def build_index(source: str | Path, out_dir: str | Path, options: BuildOptions | None = None, log=print) -> dict:
    """Build the index directory ``out_dir`` from ``source`` (a BEIR folder or a corpus JSONL[.gz]).

    Returns the manifest. Raises DataError on bad input (naming file and line) before anything
    is renamed into place, and OptionError when ``out_dir`` exists and ``overwrite`` is False.
    """
    options = options or BuildOptions()
    path = corpus_path(source)
    out_dir = Path(out_dir)
    reader = CorpusReader(path, options.skip_bad, options.allow_empty)
    previous_vectors = _reusable_vectors(out_dir) if options.overwrite else None
    with building_index(out_dir, overwrite=options.overwrite) as tmp:
        doc_ids: list[str] = []
        metadata: list[dict] = []

        def first_pass() -> Iterator[tuple[int, Document]]:
            for docno, doc in reader:
                doc_ids.append(doc.doc_id)
                metadata.append(doc.metadata or {})
                yield docno, doc

        manifest = new_manifest(0, source=str(Path(source)))
        manifest["corpus"] = corpus_fingerprint(path)
        names = [n for n in COMPONENT_BUILDERS if n in options.retrievers]
        options.check_applies(names)
        if "bm25" in names:  # the first pass builds tantivy while it collects the doc ids
            manifest["components"]["bm25"] = COMPONENT_BUILDERS["bm25"](
                tmp, out_dir, reader, doc_ids, options, previous_vectors, log=log, docs=first_pass()
            )
        else:
            for _ in first_pass():
                pass
        if not doc_ids:
            raise DataError("the corpus holds no documents", path)
        write_docids(tmp, doc_ids)
        if any(metadata):  # documents' metadata, for filters (braid.index.metadata)
            from braid.index.metadata import METADATA_FILE, write_metadata

            write_metadata(tmp / METADATA_FILE, metadata)
            manifest["metadata"] = METADATA_FILE
        del metadata
        manifest["num_docs"] = len(doc_ids)
        manifest["skipped_records"] = reader.stats.skipped
        if reader.stats.skipped:
            log(f"skipped {reader.stats.skipped} bad records (first: {reader.stats.reasons[0]})")
        for name in names:
            if name != "bm25":
                manifest["components"][name] = COMPONENT_BUILDERS[name](tmp, out_dir, reader, doc_ids, options, previous_vectors, log=log)
        write_manifest(tmp, manifest)
    return read_manifest(out_dir)


def _reusable_vectors(out_dir: Path) -> Path | None:
    """The ``vectors/`` folder of an existing index at ``out_dir`` (to reuse its encodings), if any."""
    try:
        read_manifest(out_dir)
    except Exception:
        return None
    vectors = out_dir / "vectors"
    return vectors if vectors.is_dir() else None


def add_components(source: str | Path, index_dir: str | Path, options: BuildOptions, log=print, reuse_vectors: bool = True, annotate: dict | None = None) -> dict:
    """Add (or, with ``overwrite``, rebuild) components of an existing index from the same corpus.

    The corpus is re-read with the policy recorded at build time and must yield exactly the
    documents of ``docids.txt`` in the same order; each component is installed atomically.
    ``reuse_vectors``: False re-encodes even when the index keeps vectors of the same corpus
    (a retrained model under the same folder name). ``annotate``: extra keys merged into each
    new component's manifest entry (e.g. what its model was trained on).
    """
    from braid.index.manifest import adding_component

    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    options.check_applies([n for n in COMPONENT_BUILDERS if n in options.retrievers])
    path = corpus_path(source)
    doc_ids = read_docids(index_dir, manifest=manifest)
    reader = CorpusReader(path, options.skip_bad or manifest.get("skipped_records", 0) > 0, options.allow_empty)
    check = [doc.doc_id for _, doc in reader]
    if check != doc_ids:
        raise DataError(
            f"the corpus does not hold the documents of {index_dir} in the same order; rebuild the index with --overwrite",
            path,
        )
    previous_vectors = index_dir / "vectors" if reuse_vectors and (index_dir / "vectors").is_dir() else None
    for name in [n for n in COMPONENT_BUILDERS if n in options.retrievers]:
        staging = index_dir / f".{name}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            info = COMPONENT_BUILDERS[name](staging, index_dir, reader, doc_ids, options, previous_vectors, log=log)
            if annotate:
                info = {**info, **annotate}
            with adding_component(index_dir, name, info, overwrite=options.overwrite) as tmp:
                shutil.rmtree(tmp)
                os.replace(staging / name, tmp)
                # before the manifest is written, so that its checksums cover the new vectors
                _merge_vectors(staging, index_dir)
                if not options.keep_vectors:  # the old component's vectors no longer belong to it
                    shutil.rmtree(index_dir / "vectors" / name, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return read_manifest(index_dir)


def _merge_vectors(staging: Path, index_dir: Path) -> None:
    src = staging / "vectors"
    if not src.is_dir():
        return
    apply_umask(src)
    dst = index_dir / "vectors"
    dst.mkdir(exist_ok=True)
    for item in src.iterdir():
        target = dst / item.name
        if target.exists():
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        os.replace(item, target)
