"""The Milvus backend: load a Braid index into a Milvus collection and search it with Milvus's own rankers.

One collection per index::

    docno   INT64 primary key     the Braid docno (so results map back to the index and its evaluation)
    doc_id  VARCHAR               the external id
    text    VARCHAR               title + " " + text (cut to 65,535 UTF-8 bytes, Milvus's VARCHAR limit)
    sparse  SPARSE_FLOAT_VECTOR   the learned sparse document vector (SPARSE_INVERTED_INDEX, IP)
    dense   FLOAT_VECTOR(dim)     the dense embedding (FLAT by default: exact; IP, or L2 if the index is L2)
    metadata JSON                 the document's filterable metadata, each value in its field's type

Filters. Braid types each metadata field by its values over the whole index (number / date /
keyword, :mod:`braid.index.metadata`); ``braid.meta`` records those kinds, and each row's
``metadata`` holds its values converted to them: numbers as floats, dates as one ISO form
(``YYYY-MM-DDTHH:MM:SS.ffffff``, so that string order is time order), keywords as strings (other
values as their JSON text). :func:`milvus_filter` turns a Braid filter into a Milvus boolean
expression over that field with Braid's meaning: every comparison also requires the key to exist
(``exists metadata["f"] and ...``), so a document without the field never matches a comparison and
``not`` selects it (Milvus alone would treat the missing value as unknown in both). Milvus applies the
expression inside each field search, before its top-k, as Braid's retrievers do.

The sparse field holds the vectors Braid's blocked index scores with (its forward index: every
nonzero, weights rounded to float16 as the index stores them), so exact Milvus sparse search and
exact Braid sparse search rank the same documents. The collection property ``braid.meta`` records
the encoders (JSON), so :class:`MilvusSearcher` can encode queries with no Braid index at hand.

Hybrid search runs in Milvus: one ``AnnSearchRequest`` per field (``depth`` candidates each) and
Milvus's ``RRFRanker(rrf_k)`` or ``WeightedRanker(*weights, norm_score=...)``. Results come back as
Braid ``SearchResults`` (docnos, scores, ids), so Braid's evaluation, run writers and fusion work
on them. The same code serves milvus-lite (``uri`` a local ``.db`` file, embedded) and a Milvus
server or cluster (``uri="http://host:19530"``, ``token`` for authentication).

pymilvus (and milvus-lite for local files) are imported inside functions; without them a BraidError
names the extra (``pip install 'braid[distributed]'``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from braid.data.errors import BraidError, DataError, OptionError, check_positive_int
from braid.data.filters import parse_filter
from braid.data.text import query_batch
from braid.index.hits import Hits

MAX_VARCHAR = 65535
RANKERS = ("rrf", "weighted")
MODES = ("sparse", "dense", "hybrid")
DENSE_INDEXES = ("FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX")
_DESCRIPTION_KEY = "braid"
_PROPERTY = "braid.meta"  # a collection property (milvus-lite keeps no collection description)


def require_pymilvus():
    """Import pymilvus, or raise a BraidError naming the extra to install."""
    try:
        import pymilvus
    except ImportError:
        raise BraidError("pymilvus is not installed: pip install 'braid[distributed]' (pymilvus, milvus-lite)") from None
    return pymilvus


def connect(uri: str, token: str | None = None):
    """A ``MilvusClient``: ``uri`` a local ``*.db`` file (milvus-lite, embedded) or a server URL."""
    pymilvus = require_pymilvus()
    if not isinstance(uri, str) or not uri:
        raise OptionError("--milvus-uri", uri, "a local .db file (milvus-lite) or a server URL such as http://localhost:19530")
    if not uri.startswith(("http://", "https://", "tcp://", "unix:")):
        if not uri.endswith(".db"):
            raise OptionError("--milvus-uri", uri, "a local file must end in .db (milvus-lite), or give a server URL")
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            import milvus_lite  # noqa: F401
        except ImportError:
            raise BraidError("milvus-lite is not installed (needed for a local .db uri): pip install 'braid[distributed]'") from None
    try:
        return pymilvus.MilvusClient(uri=uri, token=token or "")
    except Exception as exc:  # pymilvus raises MilvusException with its own text
        raise BraidError(f"cannot connect to Milvus at {uri}: {exc}") from None


@dataclass(frozen=True)
class MilvusLoadConfig:
    """How a Braid index is laid out in Milvus (load-time settings; search knobs are arguments).

    ``dense_index``: FLAT (exact), HNSW, IVF_FLAT or AUTOINDEX. ``batch_size``: rows per insert.
    """

    collection: str = "braid"
    dense_index: str = "FLAT"
    batch_size: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.collection, str) or not self.collection or not self.collection.replace("_", "a").isalnum() or self.collection[0].isdigit():
            raise OptionError("--collection", self.collection, "letters, digits and underscores, not starting with a digit")
        if self.dense_index not in DENSE_INDEXES:
            raise OptionError("--dense-index", self.dense_index, "one of " + ", ".join(DENSE_INDEXES))
        check_positive_int("--batch-size", self.batch_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MilvusLoadConfig":
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise OptionError("milvus config", ", ".join(sorted(set(d) - known)), "unknown keys; known: " + ", ".join(sorted(known)))
        return cls(**d)


# --------------------------------------------------------------------------------------------------
# Reading what to load from a (plain or sharded) Braid index
# --------------------------------------------------------------------------------------------------
@dataclass
class _Part:
    """One ordinary index directory and the global docno of its first document."""

    searcher: object
    offset: int


def _parts(index_dir: Path) -> tuple[list[_Part], dict]:
    from braid.retrieval.searcher import Searcher
    from braid.retrieval.scale.sharded import is_sharded_index, read_sharded_manifest

    if is_sharded_index(index_dir):
        m = read_sharded_manifest(index_dir)
        parts = [_Part(Searcher(index_dir / s["path"]), s["offset"]) for s in m["shards"]]
        return parts, {"num_docs": m["num_docs"], "corpus": m.get("corpus"), "sharded": True}
    s = Searcher(index_dir)
    return [_Part(s, 0)], {"num_docs": s.num_docs, "corpus": s.manifest.get("corpus"), "sharded": False,
                           "generation": s.context.generation, "num_docnos": s.context.num_docnos}  # fmt: skip


def _texts(part: _Part, corpus: dict | None, lo: int, hi: int, corpus_cache: dict) -> list[str]:
    """Texts (title + " " + text) of local docnos lo..hi-1: from the corpus file when it is unchanged, else the doc store."""
    searcher = part.searcher
    path = Path(corpus["path"]) if corpus and corpus.get("path") else None
    if path is not None and path.exists():
        from braid.retrieval.build.builder import corpus_fingerprint

        if corpus_fingerprint(path) == corpus:
            texts = corpus_cache.get("texts")
            if texts is None:
                from braid.data.corpus import iter_corpus

                texts = {d.doc_id: d.contents for d in iter_corpus(path, skip_bad=True, allow_empty=True)}
                corpus_cache["texts"] = texts
            return [texts.get(searcher.doc_ids[d], "") for d in range(lo, hi)]
    docs = searcher.documents(list(range(lo, hi)))
    return [f"{d['title']} {d['text']}".strip() for d in docs]


def _cut_utf8(text: str, limit: int = MAX_VARCHAR) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def _encoders_of(components: dict) -> dict:
    out = {}
    if "sparse" in components:
        out["sparse"] = components["sparse"].get("encoder", {})
    if "dense" in components:
        enc = components["dense"].get("encoder", {})
        out["dense"] = {**enc, "metric": components["dense"].get("index", {}).get("config", {}).get("metric", "ip")}
    return out


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def load_index(
    index_dir: str | Path,
    uri: str,
    config: MilvusLoadConfig | None = None,
    overwrite: bool = False,
    token: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Load the Braid index ``index_dir`` (plain or sharded) into the Milvus collection ``config.collection``.

    Needs a ``sparse`` or a ``dense`` component (or both). Returns ``{"collection", "num_docs",
    "fields", "seconds"}``. An existing collection is replaced only with ``overwrite``.
    """
    config = config or MilvusLoadConfig()
    index_dir = Path(index_dir)
    parts, meta = _parts(index_dir)
    components = parts[0].searcher.components
    if "sparse" not in components and "dense" not in components:
        raise OptionError("INDEX_DIR", str(index_dir), "an index with a sparse or a dense component (Milvus holds vectors)")
    pymilvus = require_pymilvus()
    client = connect(uri, token)
    name = config.collection
    if client.has_collection(name):
        if not overwrite:
            raise OptionError("--collection", name, f"exists in {uri}; pass --overwrite to replace it")
        client.drop_collection(name)
    encoders = _encoders_of(components)
    dim = None
    metric = "IP"
    if "dense" in components:
        dim = int(parts[0].searcher.component("dense").dim)
        metric = "L2" if encoders["dense"].get("metric") == "l2" else "IP"
    max_id = max(len(d.encode("utf-8")) for p in parts for d in p.searcher.doc_ids)
    kinds = _metadata_kinds([p.searcher for p in parts])
    DataType = pymilvus.DataType
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("docno", DataType.INT64, is_primary=True)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=min(MAX_VARCHAR, max(1, max_id)))
    schema.add_field("text", DataType.VARCHAR, max_length=MAX_VARCHAR)
    schema.add_field("metadata", DataType.JSON)
    index_params = client.prepare_index_params()
    if "sparse" in components:
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        index_params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    if dim is not None:
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
        index_params.add_index("dense", index_type=config.dense_index, metric_type=metric)
    synced = {"generation": meta["generation"], "num_docnos": meta["num_docnos"]} if not meta["sharded"] else {}
    description = json.dumps({_DESCRIPTION_KEY: {"encoders": encoders, "num_docs": meta["num_docs"], "source": str(index_dir),
                                                 "metadata_kinds": kinds, **synced}})  # fmt: skip
    t0 = time.perf_counter()
    client.create_collection(name, schema=schema, index_params=index_params)
    client.alter_collection_properties(name, properties={_PROPERTY: description})
    corpus_cache: dict = {}
    n = 0
    for part in parts:
        s = part.searcher
        if s.context.live:  # a live index: its live docnos (added documents come from its document store)
            n += _write_rows(client, name, s, live_docnos(s), components, dim, config.batch_size, upsert=False, kinds=kinds)
            continue
        for lo in range(0, s.num_docs, config.batch_size):
            hi = min(s.num_docs, lo + config.batch_size)
            texts = _texts(part, meta["corpus"], lo, hi, corpus_cache)
            rows = _rows(s, np.arange(lo, hi, dtype=np.int64), texts, components, dim, part.offset, kinds=kinds)
            client.insert(name, rows)
            n += len(rows)
    client.flush(name)
    client.load_collection(name)
    seconds = time.perf_counter() - t0
    log(f"loaded {n} documents into Milvus collection {name!r} at {uri} in {seconds:.1f} s")
    return {"collection": name, "num_docs": n, "fields": ["docno", "doc_id", "text", "metadata"] + [f for f in ("sparse", "dense") if f in components],
            "metadata_kinds": kinds, "seconds": seconds}  # fmt: skip


def _rows(s, docnos: np.ndarray, texts: list[str], components: dict, dim: int | None, offset: int = 0, kinds: dict | None = None) -> list[dict]:
    """Milvus rows of local ``docnos``: docno, doc_id, text, metadata (in ``kinds``' types), the sparse
    forward-index row, the dense vector."""
    metadata = s.context.metadata.rows(docnos) if kinds else [{}] * len(docnos)
    rows = [{"docno": offset + int(d), "doc_id": s.doc_ids[int(d)], "text": _cut_utf8(t), "metadata": _typed_metadata(m, kinds)}
            for d, t, m in zip(docnos, texts, metadata)]  # fmt: skip
    if "sparse" in components:
        fwd = s.component("sparse").forward_vectors(docnos)
        for j, row in enumerate(rows):
            a, b = int(fwd.indptr[j]), int(fwd.indptr[j + 1])
            row["sparse"] = dict(zip(fwd.indices[a:b].tolist(), fwd.data[a:b].tolist()))
    if dim is not None:
        vectors = _dense_vectors(s, docnos)
        for j, row in enumerate(rows):
            row["dense"] = vectors[j].tolist()
    return rows


def _write_rows(client, name: str, s, docnos: np.ndarray, components: dict, dim: int | None, batch_size: int, upsert: bool,
                kinds: dict | None = None) -> int:  # fmt: skip
    for lo in range(0, docnos.shape[0], batch_size):
        chunk = docnos[lo : lo + batch_size]
        texts = [f"{d['title']} {d['text']}".strip() for d in s.documents(chunk.tolist())]
        rows = _rows(s, chunk, texts, components, dim, kinds=kinds)
        (client.upsert if upsert else client.insert)(name, rows)
    return int(docnos.shape[0])


# --------------------------------------------------------------------------------------------------
# Metadata and filters
# --------------------------------------------------------------------------------------------------
MIXED = "mixed"  # a field typed differently by the shards of a sharded index: not filterable in Milvus


def _metadata_kinds(searchers: list) -> dict[str, str]:
    """Each metadata field's Braid kind (number / date / keyword) over the searchers' documents."""
    kinds: dict[str, str] = {}
    for s in searchers:
        for name, kind in s.context.metadata.kinds().items():
            kinds[name] = kind if kinds.get(name, kind) == kind else MIXED
    return kinds


def _iso(text: str) -> str:
    from braid.index.metadata import _to_date

    return str(_to_date(text))  # datetime64[us]: YYYY-MM-DDTHH:MM:SS.ffffff


def _typed_metadata(row: dict, kinds: dict | None) -> dict:
    """A document's metadata with each value in its field's kind (what a Milvus expression compares)."""
    from braid.index.metadata import Column

    out = {}
    for name, value in (row or {}).items():
        kind = (kinds or {}).get(name)
        if kind == "number":
            out[name] = float(value)
        elif kind == "date":
            out[name] = _iso(value)
        elif kind == "keyword":
            out[name] = Column._keyword(value)
    return out


_MILVUS_OPS = {"eq": "==", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_FALSE = "docno < 0"  # docnos are never negative


def milvus_filter(spec, kinds: dict[str, str], where: str = "--filter") -> str:
    """A Braid filter (any form :func:`braid.data.filters.parse_filter` takes) as a Milvus boolean
    expression over the collection's ``metadata`` field typed by ``kinds``; OptionError (naming
    ``where``) for a value the field's kind cannot take, as Braid's own filters raise."""
    from braid.index.metadata import _is_canonical

    return _expr(spec if _is_canonical(spec) else parse_filter(spec, where), kinds, where)


def _expr(node: dict, kinds: dict, where: str) -> str:
    if "and" in node:
        return "(" + " and ".join(_expr(p, kinds, where) for p in node["and"]) + ")" if node["and"] else "(docno >= 0)"
    if "or" in node:
        return "(" + " or ".join(_expr(p, kinds, where) for p in node["or"]) + ")" if node["or"] else _FALSE
    if "not" in node:
        return f"(not {_expr(node['not'], kinds, where)})"
    name, op, value = node["field"], node["op"], node["value"]
    kind = kinds.get(name)
    if kind is None:
        return _FALSE  # no document has the field
    if kind == MIXED:
        raise OptionError(where, name, "a field with one type across the shards (this one is typed differently in different shards: filter it in Braid)")
    ref = f"metadata[{_quote(name)}]"
    lits = [_literal(v, kind, name, op, where) for v in (value if op == "in" else [value])]
    if op == "in":
        if not lits:
            return _FALSE
        cmp = "(" + " or ".join(f"{ref} == {v}" for v in lits) + ")"
    else:
        cmp = f"{ref} {_MILVUS_OPS[op]} {lits[0]}"
    return f"(exists {ref} and {cmp})"


def _literal(value, kind: str, name: str, op: str, where: str) -> str:
    """A filter value as a Milvus literal in the field's stored form, checked as Braid's filters check it."""
    from braid.index.metadata import check_range_literal, typed_literal

    at = f"{where} ({name})"
    check_range_literal(kind, name, op, value, at)
    v = typed_literal(kind, name, value, at)
    if kind == "number":
        return repr(v)
    return _quote(str(v))  # a date's datetime64[us] prints as the stored ISO form


def live_docnos(searcher) -> np.ndarray:
    """int64: the docnos of the live documents of the searcher's generation, increasing."""
    ctx = searcher.context
    if not ctx.live:
        return np.arange(searcher.num_docs, dtype=np.int64)
    live = np.zeros(ctx.num_docnos, bool)
    for _, docnos in ctx.segment_list():
        live[docnos] = True
    if ctx.deleted is not None:
        live &= ~ctx.deleted
    return np.flatnonzero(live).astype(np.int64)


def sync_collection(index_dir: str | Path, uri: str, collection: str, token: str | None = None, batch_size: int = 1000,
                    log: Callable[[str], None] = print) -> dict:  # fmt: skip
    """Bring the Milvus ``collection`` (made by :func:`load_index` from ``index_dir``) to the index's
    current generation, after ``braid add`` / ``delete`` / ``compact`` on it.

    A live index gives an added or updated document a new docno and never reuses one, and
    compaction keeps docnos, so the sync is: ``upsert`` the live documents numbered at or past the
    ``num_docnos`` the collection was last synced at (their vectors read from the index: nothing is
    encoded again), then ``delete`` every docno below it that is no longer live (an update's old
    docno, a deleted document). Both are idempotent, so a sync interrupted part-way is completed by
    running it again. Returns ``{"collection", "generation", "upserted", "deleted", "seconds"}``.
    """
    from braid.retrieval.scale.sharded import is_sharded_index
    from braid.retrieval.searcher import Searcher

    index_dir = Path(index_dir)
    if is_sharded_index(index_dir):
        raise OptionError("INDEX_DIR", str(index_dir), "an unsharded index: sharded indexes are not changed in place, so reload the collection (braid milvus load --overwrite)")
    t0 = time.perf_counter()
    client = connect(uri, token)
    if not client.has_collection(collection):
        raise OptionError("--collection", collection, f"no such collection in {uri}; load one with `braid milvus load`")
    props = (client.describe_collection(collection).get("properties") or {}).get(_PROPERTY)
    try:
        meta = json.loads(props or "{}")[_DESCRIPTION_KEY]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(f"collection {collection!r} was not loaded by braid (no description)") from None
    if "num_docnos" not in meta:
        raise OptionError("--collection", collection, "a collection loaded from an unsharded index by this version of braid (it records no synced generation); reload it with --overwrite")
    s = Searcher(index_dir)
    components = s.components
    if set(meta["encoders"]) != set(_encoders_of(components)):
        raise OptionError("INDEX_DIR", str(index_dir), f"the index the collection was loaded from (its fields: {sorted(meta['encoders'])})")
    dim = int(s.component("dense").dim) if "dense" in components else None
    live = live_docnos(s)
    synced = int(meta["num_docnos"])
    new = live[live >= synced]
    kinds = _metadata_kinds([s])
    if kinds != meta.get("metadata_kinds"):
        new = live  # a field's type changed (or a new field came): every live row is rewritten in the new types
    is_live = np.zeros(max(synced, 1), bool)
    is_live[live[live < synced]] = True
    gone = np.flatnonzero(~is_live[:synced]).astype(np.int64)
    if "metadata_kinds" not in meta:
        raise OptionError("--collection", collection, "a collection with a metadata field (loaded by an older braid); reload it with braid milvus load --overwrite")
    upserted = _write_rows(client, collection, s, new, components, dim, batch_size, upsert=True, kinds=kinds)
    for lo in range(0, gone.shape[0], batch_size):
        client.delete(collection, filter=f"docno in [{', '.join(str(int(d)) for d in gone[lo : lo + batch_size])}]")
    client.flush(collection)
    meta.update({"generation": s.context.generation, "num_docnos": s.context.num_docnos, "num_docs": s.num_docs, "metadata_kinds": kinds})
    client.alter_collection_properties(collection, properties={_PROPERTY: json.dumps({_DESCRIPTION_KEY: meta})})
    client.load_collection(collection)
    seconds = time.perf_counter() - t0
    log(f"collection {collection!r} at generation {s.context.generation}: {upserted} upserted, {gone.shape[0]} docnos deleted ({seconds:.1f} s)")
    return {"collection": collection, "generation": s.context.generation, "upserted": upserted, "deleted": int(gone.shape[0]), "seconds": seconds}


def _dense_vectors(searcher, docnos: np.ndarray) -> np.ndarray:
    component = searcher.component("dense")
    if hasattr(component, "doc_vectors"):  # a live index's segments: each keeps the vectors it was built from
        return np.asarray(component.doc_vectors(np.asarray(docnos, dtype=np.int64)), dtype=np.float32)
    path = searcher.index_dir / "vectors" / "dense" / "vectors.npy"
    if path.exists():
        return np.asarray(np.load(path, mmap_mode="r", allow_pickle=False)[docnos], dtype=np.float32)
    return np.asarray(searcher.component("dense").reconstruct(docnos), dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# Searching
# --------------------------------------------------------------------------------------------------
def _sparse_rows(vectors) -> list[dict[int, float]]:
    out = []
    for i in range(vectors.n_rows):
        idx, w = vectors.row(i)
        out.append(dict(zip(np.asarray(idx).tolist(), np.asarray(w, dtype=np.float32).tolist())))
    return out


def _to_hits(results: list[list[dict]], k: int, negate: bool = False) -> tuple[Hits, list[list[str]]]:
    """Milvus hits -> Braid Hits (rows by (-score, docno)) and their doc ids."""
    rows, ids_of = [], {}
    for res in results:
        docnos = np.array([int(h.get("docno", h.get("id"))) for h in res], dtype=np.int64)
        scores = np.array([float(h["distance"]) for h in res], dtype=np.float32)
        if negate:
            scores = -scores
        for h in res:
            ids_of[int(h.get("docno", h.get("id")))] = (h.get("entity") or {}).get("doc_id", h.get("doc_id"))
        rows.append((docnos, scores))
    hits = Hits.from_lists(rows, k)
    doc_ids = [[ids_of[int(d)] for d in row if d >= 0] for row in hits.docnos]
    return hits, doc_ids


class MilvusSearcher:
    """Searches a collection made by :func:`load_index`, with Braid's encoders and Milvus's rankers.

    ``retriever``: ``sparse`` | ``dense`` | ``hybrid-rrf`` | ``hybrid-weighted`` (both fields, fused
    by Milvus). Query encoders are those recorded in the collection's description (the models the
    index was built with).
    """

    RETRIEVERS = ("sparse", "dense", "hybrid-rrf", "hybrid-weighted")

    def __init__(self, uri: str, collection: str, token: str | None = None, device: str = "auto"):
        self.client = connect(uri, token)
        if not self.client.has_collection(collection):
            raise OptionError("--collection", collection, f"no such collection in {uri}; load one with `braid milvus load`")
        self.uri = uri
        self.collection = collection
        info = self.client.describe_collection(collection)
        try:
            self.meta = json.loads((info.get("properties") or {}).get(_PROPERTY) or "{}")[_DESCRIPTION_KEY]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"collection {collection!r} was not loaded by braid (no encoder description)") from None
        self.fields = {f["name"] for f in info.get("fields", [])}
        self.device = device
        self._encoders: dict[str, object] = {}
        self.client.load_collection(collection)

    # encoders ------------------------------------------------------------------------------------
    def encoder(self, kind: str):
        if kind not in self.meta["encoders"]:
            raise OptionError("--retriever", kind, f"collection {self.collection!r} has no {kind} field")
        if kind not in self._encoders:
            enc = self.meta["encoders"][kind]
            if kind == "sparse":
                from braid.encoders.sparse import SparseEncoder

                self._encoders[kind] = SparseEncoder(enc["model"], max_length=int(enc.get("max_length", 256)), query_top_k=enc.get("query_top_k"), device=self.device)
            else:
                from braid.encoders.dense import DenseEncoder

                kwargs = {k: enc[k] for k in ("query_prefix", "document_prefix") if enc.get(k) is not None}
                self._encoders[kind] = DenseEncoder(enc["model"], max_length=int(enc.get("max_length", 256)), device=self.device, **kwargs)
        return self._encoders[kind]

    def encode_queries(self, texts: Sequence[str], kinds: Sequence[str]) -> dict:
        out = {}
        if "sparse" in kinds:
            out["sparse"] = self.encoder("sparse").encode_queries(list(texts))
        if "dense" in kinds:
            out["dense"] = np.ascontiguousarray(self.encoder("dense").encode_queries(list(texts)), dtype=np.float32)
        return out

    # search --------------------------------------------------------------------------------------
    def search_vectors(
        self,
        vectors: dict,
        k: int = 10,
        retriever: str = "hybrid-rrf",
        depth: int = 1000,
        rrf_k: float = 60,
        weights: Sequence[float] | None = None,
        norm_score: bool = True,
        exclude_ids: Sequence[str] | None = None,
        filter=None,
    ) -> tuple[Hits, list[list[str]]]:
        """Search with already encoded queries ``{"sparse": SparseVectors, "dense": float32 (n, dim)}``.

        ``depth``: candidates per field before a hybrid ranker (Milvus's per-request limit).
        ``weights``: WeightedRanker weights (sparse, dense), default (1, 1); ``norm_score``:
        WeightedRanker's score normalisation (arctan; False sums raw scores). ``exclude_ids``: per
        query, a doc id that must not be returned (filtered inside Milvus, before ranking).
        ``filter``: a metadata filter (Braid's forms, :func:`milvus_filter`), applied inside each field
        search before its top-k. Returns (Hits (n_queries, k) in Braid docnos, doc ids per row).
        """
        pymilvus = require_pymilvus()
        if retriever not in self.RETRIEVERS:
            raise OptionError("--retriever", retriever, "one of " + ", ".join(self.RETRIEVERS))
        check_positive_int("k", k)
        check_positive_int("depth", depth)
        kinds = ["sparse", "dense"] if retriever.startswith("hybrid") else [retriever]
        data = {}
        n = None
        for kind in kinds:
            if kind not in vectors:
                raise OptionError("vectors", sorted(vectors), f"{retriever} needs {kind} query vectors")
            data[kind] = _sparse_rows(vectors[kind]) if kind == "sparse" else [v.tolist() for v in np.asarray(vectors[kind], dtype=np.float32)]
            n = len(data[kind])
        metric = {"sparse": "IP", "dense": "L2" if self.meta["encoders"].get("dense", {}).get("metric") == "l2" else "IP"}
        params = {"sparse": {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}, "dense": {"metric_type": metric["dense"], "params": {}}}
        negate = retriever == "dense" and metric["dense"] == "L2"
        if retriever.startswith("hybrid"):
            if retriever == "hybrid-rrf":
                ranker = pymilvus.RRFRanker(rrf_k)
            else:
                w = list(weights) if weights is not None else [1.0, 1.0]
                if len(w) != 2:
                    raise OptionError("weights", weights, "two weights: sparse, dense")
                ranker = pymilvus.WeightedRanker(*[float(x) for x in w], norm_score=bool(norm_score))
        hybrid = retriever.startswith("hybrid")
        where = self.filter_expression(filter) if filter is not None else None
        results: list[list[dict]] = [[] for _ in range(n)]
        if hybrid and exclude_ids is not None:
            # The excluded document must leave each list before the ranker sees it (as Braid's
            # pipelines drop it before fusing): one filtered request per query.
            for i in range(n):
                filt = f"doc_id != {_quote(str(exclude_ids[i]))}" + (f" and {where}" if where else "")
                reqs = [pymilvus.AnnSearchRequest([data[kind][i]], kind, params[kind], limit=int(depth), expr=filt) for kind in kinds]
                results[i] = list(self.client.hybrid_search(self.collection, reqs, ranker, limit=int(k), output_fields=["doc_id"])[0])
        elif hybrid:
            reqs = [pymilvus.AnnSearchRequest(data[kind], kind, params[kind], limit=int(depth), expr=where) for kind in kinds]
            results = [list(r) for r in self.client.hybrid_search(self.collection, reqs, ranker, limit=int(k), output_fields=["doc_id"])]
        else:
            # One list: dropping the excluded document after a k+1 search is the same as filtering it.
            extra = 1 if exclude_ids is not None else 0
            kind = kinds[0]
            res = self.client.search(self.collection, data=data[kind], anns_field=kind, limit=int(k) + extra, search_params=params[kind],
                                     output_fields=["doc_id"], filter=where or "")  # fmt: skip
            for i, r in enumerate(res):
                r = list(r)
                if extra:
                    r = [h for h in r if (h.get("entity") or {}).get("doc_id") != exclude_ids[i]]
                results[i] = r[: int(k)]
        return _to_hits(results, int(k), negate=negate)  # type: ignore[arg-type]

    def filter_expression(self, spec) -> str:
        """The Milvus expression of a Braid filter over this collection (:func:`milvus_filter`)."""
        if "metadata" not in self.fields or "metadata_kinds" not in self.meta:
            raise OptionError("--filter", spec, f"a collection with a metadata field: {self.collection!r} was loaded by an older braid; reload it with braid milvus load --overwrite")
        return milvus_filter(spec, self.meta["metadata_kinds"])

    def batch_search(
        self,
        queries: Sequence[str] | Mapping[str, str],
        k: int = 10,
        retriever: str = "hybrid-rrf",
        query_ids: Sequence[str] | None = None,
        exclude_self: bool = False,
        **knobs,
    ):
        """Encode and search many queries; returns Braid's ``SearchResults`` (``to_run()`` for evaluation).

        ``knobs``: ``depth``, ``rrf_k``, ``weights``, ``norm_score``, ``filter`` (see :meth:`search_vectors`).
        ``exclude_self`` keeps the document whose id equals the query id out of every list (BEIR).
        """
        from braid.retrieval.searcher import SearchResults

        query_ids, texts = query_batch(queries, query_ids)
        kinds = ["sparse", "dense"] if retriever.startswith("hybrid") else [retriever]
        vectors = self.encode_queries(texts, kinds)
        hits, doc_ids = self.search_vectors(vectors, k=k, retriever=retriever, exclude_ids=query_ids if exclude_self else None, **knobs)
        return SearchResults(query_ids=query_ids, hits=hits, doc_ids=doc_ids, retriever=f"milvus-{retriever}")


def _quote(value: str) -> str:
    """A Milvus filter string literal (milvus-lite has no filter templates)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def iter_batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for lo in range(0, len(items), size):
        yield items[lo : lo + size]


def evaluate_collection(
    searcher: MilvusSearcher,
    dataset: str | Path,
    split: str = "test",
    k: int = 1000,
    metrics: Sequence[str] = ("ndcg@10", "recall@100"),
    remove_self_hits: bool = True,
    runs_dir: str | Path | None = None,
    retriever: str = "hybrid-rrf",
    **knobs,
) -> dict[str, dict[str, float]]:
    """Search the BEIR folder ``dataset``'s ``split`` queries in ``searcher``'s collection and score
    them with Braid's evaluation (pytrec_eval); return ``{dataset_name: {metric: mean}}``.

    ``knobs``: as for :meth:`MilvusSearcher.batch_search`. With ``runs_dir``, writes
    ``RUNS_DIR/NAME/SYSTEM.SPLIT.trec`` and ``...metrics.json`` (mean and per query) as ``braid eval`` does.
    """
    from braid.data.beir import BeirDataset
    from braid.data.runs import write_run
    from braid.retrieval.eval.evaluate import check_metrics, evaluate

    metrics = check_metrics(metrics)
    ds = BeirDataset(dataset)
    queries, qrels = ds.queries(split), ds.qrels(split)
    res = searcher.batch_search(queries, k=k, retriever=retriever, exclude_self=remove_self_hits, **knobs)
    run = res.to_run()
    mean, per_query = evaluate(run, qrels, metrics, ignore_identical_ids=remove_self_hits)
    if runs_dir is not None:
        out = Path(runs_dir) / ds.name
        write_run(run, out / f"{res.retriever}.{split}.trec", tag=res.retriever)
        summary = {"dataset": ds.name, "split": split, "system": res.retriever, "mean": mean, "per_query": per_query}
        (out / f"{res.retriever}.{split}.metrics.json").write_text(json.dumps(summary, indent=1))
    return {ds.name: mean}
