"""A live index: add (upsert), delete and compact documents without a rebuild; each operation one commit.

>>> index = Index("indexes/scifact")
>>> index.add([{"_id": "new-1", "title": "...", "text": "...", "metadata": {"year": 2024}}])
>>> index.delete(["4983"])
>>> index.compact()

This is orchestration (encode new documents with the models the manifest records, then store them),
above :mod:`braid.index.segments` (segments, deletion bitmaps), :mod:`braid.index.generations` (commits,
the writer lock, orphans) and the components' own writers. What each operation writes:

``add``
    one new segment ``segments/sN/`` (docnos, sparse: flat below ``flat_max_docs`` documents, else
    blocked; dense: a FAISS index of the component's trained structure; metadata), the tantivy
    generation ``bm25.gG/`` (hard links to the previous one + the new documents + tantivy deletes of
    the documents replaced), the deletion bitmap ``deleted/gG.npy`` when an id already existed (upsert
    = delete the old docno, add under a new one), the ids appended to ``docids.txt``; then the tiered
    merge policy may merge segments (:class:`~braid.index.segments.MergePolicy`), in the same commit.
``delete``
    the tantivy generation with the deletes, the deletion bitmap.
``compact``
    one segment holding every live document (sparse blocked index rebuilt with the build's
    configuration resolved for the live count; dense re-added into the trained structure), a tantivy
    index built afresh from its stored documents (so BM25 statistics are those of the live documents
    alone), the inference-free IDF table recomputed over the live documents when it came from the
    corpus, no deletion bitmap.

Statistics: tantivy keeps deleted documents in its BM25 statistics (document frequencies, average
length) until it merges their segments or the index is compacted; the IDF table of ``sparse-if`` is
that of the last build or compaction; dense vectors are normalised per document by the encoder, so
nothing collection-wide goes stale there. docs/live-index.md measures the staleness.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from braid.data.corpus import Document, iter_corpus, parse_record
from braid.data.errors import DataError, IndexFormatError, OptionError
from braid.data.vectors import SparseVectors
from braid.index.generations import (
    commit,
    fsync_tree,
    generation_of,
    kept_manifests,
    remove_orphans,
    writer_lock,
)
from braid.index.manifest import DOCIDS, MANIFEST, num_docnos, read_manifest
from braid.index.segments import DELETED_DIR, SEGMENTS_DIR, MergePolicy

CRASH_ENV = "BRAID_CRASH_AT"  # fault injection for the crash tests: SIGKILL this process at a named step
LIVE_COMPONENTS = ("bm25", "sparse", "dense")
ENCODE_BATCH = 256
# Why a sharded index (``braid shard``) is not changed in place (docs/live-index.md, "Which backends"):
# its global docnos are ``offset(shard) + local docno`` with offsets fixed by the shards' document
# counts in sharded.json, so a delete (fewer documents) or an add (docnos past the count) in one
# shard would move every later shard's documents; and its BM25 shards hold padding documents sized
# at build time, numbered right after the shard's own, where an add would number its documents.
SHARDED_REFUSAL = ("an unsharded Braid index directory: a sharded index (braid shard) cannot be changed in place (its shard offsets "
                   "are fixed by the document counts and its BM25 shards hold padding documents); change the unsharded index with "
                   "braid add / delete / compact and run braid shard again")  # fmt: skip


@dataclass(frozen=True)
class CommitResult:
    """What one operation committed."""

    generation: int
    added: int = 0
    updated: int = 0
    deleted: int = 0
    not_found: tuple[str, ...] = ()
    segments: int = 0
    merged: int = 0
    num_docs: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _checkpoint(step: str) -> None:
    """Crash-test hook: SIGKILL ourselves when ``BRAID_CRASH_AT`` names this step (no-op otherwise)."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _fmt(n: int) -> str:
    return f"{n:06d}"


class Index:
    """A Braid index directory opened for writing: :meth:`add`, :meth:`delete`, :meth:`compact`.

    Each call takes the writer lock, removes orphans of earlier crashed commits, writes its new
    files and commits a new generation (:mod:`braid.index.generations`); readers (``Searcher``,
    ``braid serve``) see either the previous generation or the new one, never a mixture.
    ``merge_policy``: overrides the policy recorded in the index (a dict of
    :class:`~braid.index.segments.MergePolicy` fields, saved with the next commit).
    """

    def __init__(self, index_dir: str | Path, device: str = "auto", batch_size: int = 32, progress: bool = False,
                 log: Callable[[str], None] = print, merge_policy: dict | None = None):  # fmt: skip
        self.index_dir = Path(index_dir)
        from braid.retrieval.scale.sharded import is_sharded_index

        if is_sharded_index(self.index_dir):
            raise OptionError("index", str(self.index_dir), SHARDED_REFUSAL)
        if is_sharded_index(self.index_dir.resolve().parent):  # one shard changed alone would no longer match sharded.json
            raise OptionError("index", str(self.index_dir), "a directory that is not one shard of a sharded index: " + SHARDED_REFUSAL.split(": ", 1)[1])
        read_manifest(self.index_dir)  # refuse a missing or foreign directory now
        self.device = device
        self.batch_size = int(batch_size)
        self.progress = progress
        self.log = log
        self._policy_override = MergePolicy.from_dict(merge_policy).to_dict() if merge_policy is not None else None
        self._encoders: dict[str, object] = {}

    # ------------------------------------------------------------------------------------------
    # public operations
    # ------------------------------------------------------------------------------------------
    def add(self, docs: Iterable | str | Path, skip_bad: bool = False) -> CommitResult:
        """Add documents (an id already in the index is updated: upsert). ``docs``: a corpus JSONL path,
        or an iterable of :class:`~braid.data.corpus.Document` or BEIR records (``{"_id", "title",
        "text", "metadata"}``). Every record is checked before anything is written (DataError naming
        the file and line, or the position in the iterable)."""
        batch = self._read_docs(docs, skip_bad)
        if not batch:
            raise DataError("no documents to add", docs if isinstance(docs, (str, Path)) else None)
        return self._run(lambda state: state.add(batch))

    def delete(self, ids: Iterable[str]) -> CommitResult:
        """Delete documents by id; ids not in the index are reported in ``not_found`` (nothing else changes)."""
        if isinstance(ids, str):
            raise OptionError("ids", ids, "a list of document ids, not one string")
        ids = list(dict.fromkeys(str(i) for i in ids))
        if not ids:
            raise OptionError("ids", [], "at least one document id")
        return self._run(lambda state: state.delete(ids))

    def compact(self) -> CommitResult:
        """Rewrite the index as one segment of its live documents (see the module docstring)."""
        return self._run(lambda state: state.compact())

    # ------------------------------------------------------------------------------------------
    def _read_docs(self, docs, skip_bad: bool) -> list[Document]:
        if isinstance(docs, (str, Path)):
            path = Path(docs)
            if path.is_dir():
                from braid.retrieval.build.builder import corpus_path

                path = corpus_path(path)
            return list(iter_corpus(path, skip_bad=skip_bad))
        out: list[Document] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(docs):
            where = f"document {i}"
            doc = item if isinstance(item, Document) else parse_record(item, "documents", i + 1)
            if not isinstance(doc, Document):
                raise DataError(f"{where}: expected a Document or a record dict, got {type(item).__name__}")
            if doc.doc_id in seen:
                raise DataError(f"duplicate document id {doc.doc_id!r} (also record {seen[doc.doc_id] + 1})", "documents", i + 1)
            seen[doc.doc_id] = i
            out.append(doc)
        return out

    def _run(self, work: Callable[["_Draft"], CommitResult | None]) -> CommitResult:
        t0 = time.perf_counter()
        with writer_lock(self.index_dir, self.log):
            remove_orphans(self.index_dir, kept_manifests(self.index_dir), log=self.log)
            state = _Draft(self)
            result = work(state)
            if result is None:  # nothing to change: no commit
                return CommitResult(generation=state.generation, num_docs=state.num_live(), not_found=tuple(state.not_found),
                                    seconds=round(time.perf_counter() - t0, 3))  # fmt: skip
            _checkpoint("before-commit")
            generation = commit(self.index_dir, state.manifest, before=_checkpoint)
            _checkpoint("after-commit")
            remove_orphans(self.index_dir, kept_manifests(self.index_dir))
        from dataclasses import replace

        return replace(result, generation=generation, seconds=round(time.perf_counter() - t0, 3))

    def encoder(self, kind: str, info: dict):
        """The document encoder the index records for component ``kind`` (loaded once)."""
        got = self._encoders.get(kind)
        if got is not None:
            return got
        from braid.retrieval.retrievers.base import model_for_queries

        enc = info.get("encoder") or {}
        # the runtime that encoded the index's documents (recorded by the build), so new ones match them
        runtime = {"runtime": enc["runtime"]} if enc.get("runtime") in ("torch", "onnx") else {}
        if not enc.get("model"):
            raise OptionError("add", kind, f"the {kind} component was built from pre-encoded vectors without a model; documents cannot be encoded for it")
        if kind == "sparse":
            from braid.encoders.sparse import SparseEncoder

            got = SparseEncoder(model_for_queries(enc), max_length=int(enc.get("max_length", 256)), batch_size=self.batch_size,
                                device=self.device, precision=enc.get("precision", "fp32"), top_k=enc.get("top_k"),
                                query_top_k=enc.get("query_top_k"), quantization_step=enc.get("quantization_step"), **runtime)  # fmt: skip
        else:
            from braid.encoders.dense import DenseEncoder

            kwargs = {k: enc[k] for k in ("query_prefix", "document_prefix", "pooling", "normalize") if enc.get(k) is not None}
            got = DenseEncoder(model_for_queries(enc), max_length=int(enc.get("max_length", 256)), batch_size=self.batch_size,
                               device=self.device, precision=enc.get("precision", "fp32"), **runtime, **kwargs)  # fmt: skip
        self._encoders[kind] = got
        return got


class _Draft:
    """The next generation being prepared, from the current one (under the writer lock)."""

    def __init__(self, owner: Index):
        from braid.retrieval.context import IndexContext

        self.owner = owner
        self.dir = owner.index_dir
        self.ctx = IndexContext.open(self.dir, device=owner.device)
        self.manifest = json.loads(json.dumps(self.ctx.manifest))  # a deep copy to edit
        self.generation = generation_of(self.manifest)
        self.next_gen = self.generation + 1
        self.not_found: list[str] = []
        self._check_supported()
        if not self.manifest.get("live"):
            self.manifest["live"] = self._base_live()
        live = self.manifest["live"]
        policy = owner._policy_override or live.get("merge_policy")
        self.policy = MergePolicy.from_dict(policy)
        live["merge_policy"] = self.policy.to_dict()
        self.num_docnos = num_docnos(self.manifest)
        self.doc_ids = list(self.ctx.doc_ids)
        deleted = self.ctx.deleted
        self.deleted = np.array(deleted, dtype=bool) if deleted is not None else np.zeros(self.num_docnos, bool)
        self._truncate_docids()

    # ------------------------------------------------------------------ setup
    def _check_supported(self) -> None:
        comps = self.manifest["components"]
        unsupported = [n for n in comps if n not in LIVE_COMPONENTS]
        if unsupported:
            raise OptionError("index", str(self.dir), f"components {', '.join(unsupported)} cannot be updated in place (only {', '.join(LIVE_COMPONENTS)}); rebuild the index without them")
        if "dense" in comps:
            kind = comps["dense"].get("index", {}).get("config", {}).get("kind", "flat")
            if kind == "bin" or comps["dense"].get("jpq"):
                raise OptionError("index", str(self.dir), f"a dense index of kind {'jpq' if comps['dense'].get('jpq') else kind} cannot be updated in place; rebuild it")

    def _base_live(self) -> dict:
        """The ``live`` section of an index as ``braid index`` built it: one base segment, nothing deleted."""
        comps = self.manifest["components"]
        seg_components = {}
        files = []
        if "sparse" in comps:
            seg_components["sparse"] = {"kind": "blocked", "dir": "sparse", "index": comps["sparse"]["index"]}
            files.append("sparse")
        if "dense" in comps:
            vec = "vectors/dense/vectors.npy"
            seg_components["dense"] = {"dir": "dense", "index": comps["dense"]["index"], "vectors": vec if (self.dir / vec).is_file() else None}
            files.append("dense")
        meta = self.manifest.get("metadata")
        if meta:
            files.append(meta)
        base = {"id": "base", "path": ".", "num_docs": int(self.manifest["num_docs"]), "docnos": None,
                "components": seg_components, "metadata": meta, "files": files}  # fmt: skip
        return {"segments": [base], "deleted": None, "num_deleted": 0, "next_segment": 1}

    def _truncate_docids(self) -> None:
        """Drop lines past the committed count (a crashed add appended them)."""
        path = self.dir / DOCIDS
        size = 0
        with open(path, "rb") as fh:
            for i, line in enumerate(fh):
                if i >= self.num_docnos:
                    break
                size += len(line)
        if path.stat().st_size != size:
            with open(path, "r+b") as fh:
                fh.truncate(size)
                fh.flush()
                os.fsync(fh.fileno())

    def num_live(self) -> int:
        return int(self.manifest["num_docs"])

    def _live_docno_of(self) -> dict[str, int]:
        live = self.ctx_live_mask()
        return {self.doc_ids[d]: int(d) for d in np.flatnonzero(live)}

    def ctx_live_mask(self) -> np.ndarray:
        """bool (num_docnos,): docnos held by a segment (or by tantivy alone) and not deleted."""
        from braid.index.segments import segment_docnos

        mask = np.zeros(self.num_docnos, bool)
        for seg in self.manifest["live"]["segments"]:
            mask[segment_docnos(self.dir, seg)] = True
        return mask & ~self.deleted[: self.num_docnos]

    # ------------------------------------------------------------------ operations
    def add(self, docs: list[Document]) -> CommitResult:
        docno_of = self._live_docno_of()
        replaced = [docno_of[d.doc_id] for d in docs if d.doc_id in docno_of]
        first = self.num_docnos
        new_docnos = np.arange(first, first + len(docs), dtype=np.int64)
        comps = self.manifest["components"]
        encode_seconds = 0.0
        self.deleted = np.concatenate([self.deleted, np.zeros(len(docs), bool)])
        self.deleted[replaced] = True
        segments = self.manifest["live"]["segments"]
        t = time.perf_counter()
        vectors = self._encode(docs)
        encode_seconds = time.perf_counter() - t
        seg = self._write_segment(new_docnos, vectors.get("sparse"), vectors.get("dense"), [d.metadata or {} for d in docs],
                                  blocked=len(docs) > self.policy.flat_max_docs)  # fmt: skip
        segments.append(seg)
        _checkpoint("segment")
        if "bm25" in comps:
            self._bm25_update(list(zip(new_docnos.tolist(), docs)), replaced)
            _checkpoint("bm25")
        merged = self._apply_merge_policy()
        self._append_docids([d.doc_id for d in docs])
        _checkpoint("docids")
        self.num_docnos = first + len(docs)
        self._finish()
        # the merge policy replaced the list: count the segments the commit holds, not those before the merge
        return CommitResult(generation=0, added=len(docs) - len(replaced), updated=len(replaced), segments=len(self.manifest["live"]["segments"]),
                            merged=merged, num_docs=self.num_live(), encode_seconds=round(encode_seconds, 3))  # fmt: skip

    def delete(self, ids: list[str]) -> CommitResult | None:
        docno_of = self._live_docno_of()
        docnos = [docno_of[i] for i in ids if i in docno_of]
        self.not_found = [i for i in ids if i not in docno_of]
        if not docnos:
            return None
        self.deleted[docnos] = True
        if "bm25" in self.manifest["components"]:
            self._bm25_update([], docnos)
            _checkpoint("bm25")
        self._finish()
        return CommitResult(generation=0, deleted=len(docnos), not_found=tuple(self.not_found),
                            segments=len(self.manifest["live"]["segments"]), num_docs=self.num_live())  # fmt: skip

    def compact(self) -> CommitResult:
        live = self.manifest["live"]
        live_mask = self.ctx_live_mask()
        docnos = np.flatnonzero(live_mask).astype(np.int64)
        if docnos.size == 0:
            raise OptionError("compact", str(self.dir), "the index holds no live documents; rebuild it from a corpus instead")
        comps = self.manifest["components"]
        before = len(live["segments"])
        live["segments"] = [self._merged_segment(docnos, blocked=True, compaction=True)]
        _checkpoint("segment")
        if "bm25" in comps:
            self._bm25_rebuild(docnos)
            _checkpoint("bm25")
        self.deleted[:] = False
        self._finish()
        return CommitResult(generation=0, merged=before, segments=len(live["segments"]), num_docs=self.num_live())

    # ------------------------------------------------------------------ pieces
    def _encode(self, docs: list[Document]) -> dict:
        from tqdm.auto import tqdm

        comps = self.manifest["components"]
        texts = [d.contents for d in docs]
        out = {}
        for kind in ("sparse", "dense"):
            if kind not in comps:
                continue
            encoder = self.owner.encoder(kind, comps[kind])
            parts = []
            bar = tqdm(total=len(texts), disable=not self.owner.progress, desc=f"encode {kind}", unit="doc")
            for lo in range(0, len(texts), ENCODE_BATCH):
                parts.append(encoder.encode(texts[lo : lo + ENCODE_BATCH], "document"))
                bar.update(min(ENCODE_BATCH, len(texts) - lo))
            bar.close()
            if kind == "sparse":
                out[kind] = SparseVectors.concat(parts, encoder.vocab_size)
            else:
                out[kind] = np.ascontiguousarray(np.vstack(parts), dtype=np.float32)
        return out

    def _new_segment_dir(self) -> tuple[str, Path]:
        live = self.manifest["live"]
        number = int(live.get("next_segment", 1))
        live["next_segment"] = number + 1
        name = f"s{_fmt(number)}"
        tmp = self.dir / SEGMENTS_DIR / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return name, tmp

    def _write_segment(self, docnos: np.ndarray, sparse, dense, metadata: list[dict], blocked: bool, compaction: bool = False) -> dict:
        """Write a segment of ``docnos`` (rows in that order) into ``segments/sN`` and return its record."""
        from braid.index.metadata import METADATA_FILE, write_metadata

        comps = self.manifest["components"]
        name, tmp = self._new_segment_dir()
        np.save(tmp / "docnos.npy", np.ascontiguousarray(docnos, dtype=np.int64), allow_pickle=False)
        record = {"id": name, "path": f"{SEGMENTS_DIR}/{name}", "num_docs": int(docnos.shape[0]), "docnos": "docnos.npy",
                  "components": {}, "metadata": None, "created_generation": self.next_gen}  # fmt: skip
        if "sparse" in comps:
            record["components"]["sparse"] = self._sparse_segment(tmp / "sparse", sparse, blocked, compaction)
        if "dense" in comps:
            record["components"]["dense"] = self._dense_segment(tmp / "dense", dense)
        if any(metadata):
            write_metadata(tmp / METADATA_FILE, metadata)
            record["metadata"] = METADATA_FILE
        fsync_tree(tmp)
        os.replace(tmp, self.dir / SEGMENTS_DIR / name)
        return record

    def _sparse_config(self, compaction: bool):
        from braid.index.sparse.blocked import BlockedIndexConfig

        info = self.manifest["components"]["sparse"]
        requested = info.get("requested_config")
        if requested is not None:  # as the build was asked for: resolved for this segment's size
            return BlockedIndexConfig.from_dict(requested) if requested else BlockedIndexConfig()
        return BlockedIndexConfig.from_dict(info["index"]["config"])

    def _sparse_segment(self, where: Path, vectors, blocked: bool, compaction: bool) -> dict:
        from braid.index.sparse.blocked import BlockedSparseIndex
        from braid.index.sparse.flat import FlatSparseIndex

        where.mkdir()
        config = self._sparse_config(compaction)
        if blocked:
            index = BlockedSparseIndex.build(vectors, config)
            return {"kind": "blocked", "dir": "sparse", "index": index.save(where)}
        index = FlatSparseIndex.build(vectors, forward_dtype=config.forward_dtype)
        return {"kind": "flat", "dir": "sparse", "index": index.save(where)}

    def _dense_segment(self, where: Path, vectors: np.ndarray) -> dict:
        """A FAISS index of the component's trained structure (codebooks, coarse centroids) holding ``vectors``."""
        import faiss

        from braid.index.dense import DenseIndex, _new_index

        where.mkdir()
        base = self._first_dense()
        cfg = base.config
        if cfg.kind in ("flat", "hnsw"):
            index = _new_index(cfg, base.dim)  # nothing trained: a fresh index, as a build makes
        else:
            index = faiss.clone_index(base.index)
            index.reset()
        from braid.index.dense import ADD_BATCH

        for lo in range(0, vectors.shape[0], ADD_BATCH):
            index.add(np.ascontiguousarray(vectors[lo : lo + ADD_BATCH], dtype=np.float32))
        info = {**base.info, "num_docs": int(vectors.shape[0]), "built_on": "cpu", "notes": [], "segment_of": "live"}
        dense = DenseIndex(index, cfg, vectors.shape[0], base.dim, info)
        saved = dense.save(where)
        np.save(where / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
        return {"dir": "dense", "index": saved, "vectors": "dense/vectors.npy"}

    def _first_dense(self):
        view = self.ctx.component("dense") if self.ctx.live else None
        if view is not None:
            return view.segments[0]
        from braid.index.dense import DenseIndex

        return DenseIndex.load(self.dir / "dense", self.manifest["components"]["dense"]["index"])

    def _rows_of(self, docnos: np.ndarray) -> tuple:
        """The stored sparse rows, dense vectors and metadata of live ``docnos`` (for merges)."""
        comps = self.manifest["components"]
        sparse = dense = None
        if "sparse" in comps:
            sparse = self._sparse_view().forward_vectors(docnos)
        if "dense" in comps:
            dense = self._dense_view().doc_vectors(docnos)
        store = self.ctx.metadata
        meta = store.rows(docnos)
        return sparse, dense, meta

    def _sparse_view(self):
        from braid.index.segments import open_sparse_segments

        if not hasattr(self, "_sv"):
            self._sv = open_sparse_segments(self.dir, self._view_manifest(), None)
        return self._sv

    def _dense_view(self):
        from braid.index.segments import open_dense_segments

        if not hasattr(self, "_dv"):
            self._dv = open_dense_segments(self.dir, self._view_manifest(), None)
        return self._dv

    def _view_manifest(self) -> dict:
        """The committed generation's segments, as a manifest the segment openers read (the base
        segment included before the first commit)."""
        m = json.loads(json.dumps(self.ctx.manifest))
        if not m.get("live"):
            m["live"] = self._base_live()
        return m

    def _merged_segment(self, docnos: np.ndarray, blocked: bool, compaction: bool = False) -> dict:
        sparse, dense, meta = self._rows_of(docnos)
        return self._write_segment(docnos, sparse, dense, meta, blocked=blocked, compaction=compaction)

    def _apply_merge_policy(self) -> int:
        """Merge segments while the policy asks (their deleted documents dropped); returns segments merged."""
        live = self.manifest["live"]
        merged = 0
        committed_paths = {s["path"] for s in self._view_manifest()["live"]["segments"]}
        while True:
            segs = live["segments"]
            sizes = [self._live_in(seg) for seg in segs]
            pick = self.policy.pick(sizes)
            if pick is None:
                return merged
            # segments written by this very commit are read back from their files too
            chosen = [segs[i] for i in pick]
            docnos = np.sort(np.concatenate([self._segment_live_docnos(s) for s in chosen]))
            if any(s["path"] not in committed_paths for s in chosen):
                self._reset_views(live)
            rest = [s for i, s in enumerate(segs) if i not in set(pick)]
            if docnos.size:
                new = self._merged_segment(docnos, blocked=docnos.size > self.policy.flat_max_docs)
                rest.append(new)
            rest.sort(key=lambda s: self._first_docno(s))
            live["segments"] = rest
            merged += len(chosen)
            _checkpoint("merge")

    def _reset_views(self, live: dict) -> None:
        """Re-open the segment views over the draft's segments (some not yet committed)."""
        from braid.index.segments import open_dense_segments, open_sparse_segments

        m = {"live": live, "num_docnos": int(self.deleted.shape[0]), "num_docs": 0}
        comps = self.manifest["components"]
        if "sparse" in comps:
            self._sv = open_sparse_segments(self.dir, m, None)
        if "dense" in comps:
            self._dv = open_dense_segments(self.dir, m, None)
        from braid.index.metadata import MetadataStore

        segs = []
        from braid.index.segments import segment_docnos

        for seg in live["segments"]:
            meta = seg.get("metadata")
            segs.append((self.dir / seg["path"] / meta if meta else None, segment_docnos(self.dir, seg)))
        self.ctx._metadata = MetadataStore.open(self.dir, segs, int(self.deleted.shape[0]))

    def _segment_live_docnos(self, seg: dict) -> np.ndarray:
        from braid.index.segments import segment_docnos

        d = segment_docnos(self.dir, seg)
        return d[~self.deleted[d]]

    def _live_in(self, seg: dict) -> int:
        return int(self._segment_live_docnos(seg).shape[0])

    def _first_docno(self, seg: dict) -> int:
        from braid.index.segments import segment_docnos

        d = segment_docnos(self.dir, seg)
        return int(d[0]) if d.size else 0

    def _bm25_dir(self) -> Path:
        from braid.index.manifest import component_path

        return self.dir / component_path("bm25", self.manifest["components"]["bm25"])

    def _bm25_update(self, add: list[tuple[int, Document]], delete: list[int]) -> None:
        from braid.index.lexical import LexicalIndex

        name = f"bm25.g{_fmt(self.next_gen)}"
        tmp = self.dir / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        info = self.manifest["components"]["bm25"]
        new = LexicalIndex.update(self._bm25_dir(), tmp, add, delete, {k: v for k, v in info.items() if k != "path"})
        fsync_tree(tmp)
        os.replace(tmp, self.dir / name)
        new["path"] = name
        self.manifest["components"]["bm25"] = new

    def _bm25_rebuild(self, docnos: np.ndarray) -> None:
        """A fresh tantivy index of the live documents (from its own document store), in docno order."""
        from braid.index.lexical import LexicalIndex

        name = f"bm25.g{_fmt(self.next_gen)}"
        tmp = self.dir / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        lexical = LexicalIndex.open(self._bm25_dir(), self.manifest["components"]["bm25"])
        texts: list[str] = []

        def stream():
            for lo in range(0, docnos.shape[0], 1024):
                chunk = docnos[lo : lo + 1024]
                for docno, stored in zip(chunk.tolist(), lexical.documents(chunk)):
                    doc = Document(stored["id"], stored["title"], stored["text"])
                    texts.append(doc.contents)
                    yield docno, doc

        info = LexicalIndex.build(tmp, stream())
        fsync_tree(tmp)
        os.replace(tmp, self.dir / name)
        info["path"] = name
        self.manifest["components"]["bm25"] = info
        self._refresh_idf(texts)

    def _refresh_idf(self, texts: list[str]) -> None:
        """Recompute the inference-free IDF table over the live documents (when it came from the corpus)."""
        comps = self.manifest["components"]
        if "sparse" not in comps or comps["sparse"].get("encoder", {}).get("idf_source") != "corpus" or not texts:
            return
        from braid.encoders.sparse import compute_idf

        seg = self.manifest["live"]["segments"][0]
        encoder = self.owner.encoder("sparse", comps["sparse"])
        table = compute_idf(texts, encoder, max_length=int(comps["sparse"]["encoder"].get("max_length", 256)))
        rel = f"{seg['path']}/sparse/idf.npy"
        table.save(self.dir / rel)  # atomic (temp file + rename) into the segment written by this commit
        comps["sparse"]["idf_path"] = rel
        comps["sparse"]["idf_num_docs"] = len(texts)

    def _append_docids(self, ids: list[str]) -> None:
        with open(self.dir / DOCIDS, "a", encoding="utf-8") as fh:
            for doc_id in ids:
                fh.write(doc_id + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.doc_ids.extend(ids)

    def _finish(self) -> None:
        """Fill the manifest of the next generation: counts, deletion bitmap, component paths."""
        live = self.manifest["live"]
        total = int(self.deleted.shape[0])
        self.num_docnos = max(self.num_docnos, total)
        self.manifest["num_docnos"] = total
        segs = live["segments"]
        from braid.index.segments import segment_docnos

        held = np.zeros(total, bool)
        for seg in segs:
            held[segment_docnos(self.dir, seg)] = True
        self.manifest["num_docs"] = int((held & ~self.deleted).sum())
        # the bitmap lists only deleted docnos still held by some segment (merged-away ones are in none)
        dead = self.deleted & held
        if dead.any():
            rel = f"{DELETED_DIR}/g{_fmt(self.next_gen)}.npy"
            (self.dir / DELETED_DIR).mkdir(exist_ok=True)
            tmp = self.dir / DELETED_DIR / f".g{_fmt(self.next_gen)}.tmp-{os.getpid()}.npy"
            np.save(tmp, dead, allow_pickle=False)
            fsync_tree(tmp)
            os.replace(tmp, self.dir / rel)
            live["deleted"] = rel
            live["num_deleted"] = int(dead.sum())
        else:
            live["deleted"] = None
            live["num_deleted"] = 0
        _checkpoint("deleted")
        comps = self.manifest["components"]
        for name in ("sparse", "dense"):
            if name in comps:
                if segs:
                    comps[name]["path"] = f"{segs[0]['path']}/{name}" if segs[0]["path"] != "." else name
        self.manifest["library_version"] = __import__("braid").__version__


def read_ids_file(path: str | Path) -> list[str]:
    """Document ids, one per line (blank lines skipped), for ``braid delete --ids FILE``."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such ids file", path)
    out = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            text = line.strip()
            if text:
                out.append(text)
    return out


__all__ = ["Index", "CommitResult", "read_ids_file", "MergePolicy"]
