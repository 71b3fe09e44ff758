"""What a retriever may see of an index: its directory, manifest, document ids and opened components.

Retrievers and pipeline stages receive an :class:`IndexContext`, never the :class:`Searcher`, so the
query side depends on this small object alone. Components (tantivy, the blocked sparse index, FAISS)
open on first use through :data:`braid.retrieval.retrievers.components.COMPONENT_OPENERS` and are
cached here, once per context. A sharded index supplies a context whose components are sharded views
(:class:`braid.retrieval.scale.sharded.ShardedContext`) and the retrievers run unchanged over it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from braid.data.errors import IndexFormatError, OptionError
from braid.index.manifest import component_path, num_docnos, read_docids, read_manifest


class IndexContext:
    """One opened index directory: ``index_dir``, ``manifest``, ``doc_ids``, ``device``, ``runtime``, components.

    ``runtime``: what runs the query encoders (``"auto"``, ``"torch"``, ``"onnx"``, ``"onnx-int8"``;
    :data:`braid.encoders.base.RUNTIME_SPECS`); ``"auto"`` is ONNX Runtime on a CPU when installed.
    ``query_threads``: intra-op threads of the query encoders (None: the runtime's default, one per core).
    """

    def __init__(self, index_dir: str | Path, manifest: dict, doc_ids: list[str], device: str = "auto", runtime: str = "auto",
                 query_threads: int | None = None):  # fmt: skip
        from braid.data.errors import check_positive_int
        from braid.encoders.base import parse_runtime

        parse_runtime(runtime)
        check_positive_int("query_threads", query_threads, allow_none=True)
        self.query_threads = query_threads
        self.index_dir = Path(index_dir)
        self.manifest = manifest
        self.doc_ids = doc_ids
        self.device = device
        self.runtime = runtime
        self._components: dict[str, object] = {}
        self._lock = threading.Lock()
        self._docno_of: dict[str, int] | None = None
        self._metadata = None
        self._deleted: np.ndarray | None | bool = False  # False: not read yet

    @classmethod
    def open(cls, index_dir: str | Path, device: str = "auto", runtime: str = "auto", query_threads: int | None = None) -> "IndexContext":
        """Read and check the manifest and ``docids.txt`` of ``index_dir`` (one generation: a snapshot)."""
        index_dir = Path(index_dir)
        manifest = read_manifest(index_dir)
        if manifest.get("live"):
            from braid.index.generations import check_generation

            check_generation(index_dir, manifest)
        count = num_docnos(manifest)
        doc_ids = read_docids(index_dir, count if manifest.get("live") else None, manifest=manifest)
        if len(doc_ids) != count:
            raise IndexFormatError(f"{index_dir}: docids.txt has {len(doc_ids)} ids, the manifest says {count}")
        return cls(index_dir, manifest, doc_ids, device, runtime, query_threads)

    def encoder_kwargs(self) -> dict:
        """Keyword arguments of the query encoders' runtime: ``runtime`` (and ``precision``), ``threads`` when set."""
        from braid.encoders.base import runtime_kwargs

        out = runtime_kwargs(self.runtime, "--runtime")
        if self.query_threads is not None:
            out["threads"] = int(self.query_threads)
        return out

    @property
    def num_docs(self) -> int:
        """Live documents (deleted ones excluded)."""
        return int(self.manifest["num_docs"])

    @property
    def num_docnos(self) -> int:
        """Document numbers allocated, deleted ones included (the length of ``doc_ids``)."""
        return num_docnos(self.manifest)

    @property
    def generation(self) -> int:
        return int(self.manifest.get("generation", 0))

    @property
    def live(self) -> dict | None:
        """The manifest's ``live`` section (segments, deletion bitmap), None for an index never updated."""
        return self.manifest.get("live") or None

    @property
    def deleted(self) -> np.ndarray | None:
        """bool (num_docnos,): deleted docnos of this generation (None when none are)."""
        if self._deleted is False:
            from braid.index.segments import read_deleted

            self._deleted = read_deleted(self.index_dir, self.live, self.num_docnos) if self.live else None
        return self._deleted

    def component_dir(self, name: str) -> Path:
        """Where component ``name`` of this generation lives."""
        return self.index_dir / component_path(name, self.components.get(name))

    def segment_list(self) -> list[tuple[Path | None, np.ndarray]]:
        """Per segment: its ``metadata.jsonl`` (None without one) and its docnos."""
        from braid.index.segments import segment_docnos

        if not self.live:
            meta = self.manifest.get("metadata")
            return [(self.index_dir / meta if meta else None, np.arange(self.num_docnos, dtype=np.int64))]
        out = []
        for seg in self.live["segments"]:
            meta = seg.get("metadata")
            out.append((self.index_dir / seg["path"] / meta if meta else None, segment_docnos(self.index_dir, seg)))
        return out

    @property
    def metadata(self):
        """The documents' metadata (:class:`braid.index.metadata.MetadataStore`), read on first use."""
        if self._metadata is None:
            from braid.index.metadata import MetadataStore

            with self._lock:
                if self._metadata is None:
                    self._metadata = MetadataStore.open(self.index_dir, self.segment_list(), self.num_docnos)
        return self._metadata

    def filter_mask(self, spec) -> np.ndarray:
        """bool (num_docnos,): the documents the filter ``spec`` lets through (deleted ones too: each
        component skips those itself)."""
        return self.metadata.mask(spec)

    @property
    def components(self) -> dict:
        """The manifest's component entries (name -> config)."""
        return self.manifest["components"]

    def path(self, *parts: str) -> Path:
        return self.index_dir.joinpath(*parts)

    def docno(self, doc_id: str) -> int:
        """Internal docno of an external id, -1 when absent (the newest docno of an updated document)."""
        if self._docno_of is None:
            self._docno_of = {d: i for i, d in enumerate(self.doc_ids)}
        return self._docno_of.get(doc_id, -1)

    def docnos(self, doc_ids: Sequence[str]) -> list[int]:
        return [self.docno(d) for d in doc_ids]

    def require(self, name: str, for_what: str = "--retriever") -> dict:
        """The manifest entry of component ``name``; OptionError naming what the index has otherwise."""
        if name not in self.components:
            have = ", ".join(self.components) or "none"
            raise OptionError(
                for_what, name, f"{self.index_dir} has no {name!r} component (it has: {have}); build it with `braid index ... --retrievers {name}`"
            )
        return self.components[name]

    def component(self, name: str):
        """The opened component ``name`` (opened once, then cached; safe from several threads)."""
        got = self._components.get(name)
        if got is not None:
            return got
        with self._lock:
            if name not in self._components:
                self._components[name] = self._open_component(name, self.require(name))
            return self._components[name]

    def _open_component(self, name: str, info: dict):
        from braid.retrieval.retrievers.components import COMPONENT_OPENERS

        if name not in COMPONENT_OPENERS:
            raise IndexFormatError(f"{self.index_dir}: unknown component {name!r} in the manifest (known: {', '.join(COMPONENT_OPENERS)})")
        return COMPONENT_OPENERS[name](self, info)

    def documents(self, docnos: Sequence[int]) -> list[dict]:
        """Stored ``{"id", "title", "text"}`` of documents (the tantivy document store; empty fields without it)."""
        if "bm25" not in self.components:
            return [{"id": self.doc_ids[d], "title": "", "text": ""} for d in docnos]
        return self.component("bm25").documents(docnos)
