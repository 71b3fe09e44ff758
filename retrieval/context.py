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

from braid.data.errors import IndexFormatError, OptionError
from braid.index.manifest import read_docids, read_manifest


class IndexContext:
    """One opened index directory: ``index_dir``, ``manifest``, ``doc_ids``, ``device``, components."""

    def __init__(self, index_dir: str | Path, manifest: dict, doc_ids: list[str], device: str = "auto"):
        self.index_dir = Path(index_dir)
        self.manifest = manifest
        self.doc_ids = doc_ids
        self.device = device
        self._components: dict[str, object] = {}
        self._lock = threading.Lock()
        self._docno_of: dict[str, int] | None = None

    @classmethod
    def open(cls, index_dir: str | Path, device: str = "auto") -> "IndexContext":
        """Read and check the manifest and ``docids.txt`` of ``index_dir``."""
        index_dir = Path(index_dir)
        manifest = read_manifest(index_dir)
        doc_ids = read_docids(index_dir, manifest)
        if len(doc_ids) != manifest["num_docs"]:
            raise IndexFormatError(f"{index_dir}: docids.txt has {len(doc_ids)} ids, the manifest says {manifest['num_docs']}")
        return cls(index_dir, manifest, doc_ids, device)

    @property
    def num_docs(self) -> int:
        return int(self.manifest["num_docs"])

    @property
    def components(self) -> dict:
        """The manifest's component entries (name -> config)."""
        return self.manifest["components"]

    def path(self, *parts: str) -> Path:
        return self.index_dir.joinpath(*parts)

    def docno(self, doc_id: str) -> int:
        """Internal docno of an external id, -1 when absent."""
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
