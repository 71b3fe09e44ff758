"""Segments of a live index: each component is an ordered list of segments plus one deletion bitmap.

Docnos are global and append-only (``docids.txt`` only grows): a segment holds documents numbered
``docnos`` (int64, increasing) and searches them as its local rows ``0..n-1``; an update deletes the
old docno and adds the document again under a new one. One bool bitmap over all docnos per generation
(``deleted/gN.npy``) marks the deleted ones; a segment's own deletion mask is that bitmap read at its
docnos. Segment files are written once and never changed; the merge policy and compaction write new
segments and drop old ones from the next generation's list.

The segmented views here have the interface the retrievers already search (``search``,
``forward_vectors``, ``reconstruct``) and merge segments exactly: each segment returns its own top-k
of the documents it may return (deleted ones and those outside a filter never enter its heap), and
the union is cut to k by (-score, docno). A document's score does not depend on the segment it sits
in (the same forward-index row, the same FAISS code), so in exact mode the merged top-k is the top-k
of one segment holding the same live documents.

Manifest (``live``)::

    "live": {
      "segments": [{"id", "path", "num_docs", "docnos", "components": {"sparse": {...}, "dense": {...}},
                    "metadata", "files"}, ...],
      "deleted": "deleted/g000004.npy" | null, "num_deleted": int, "next_segment": int,
      "merge_policy": {...}
    }

The base segment of a ``braid index`` build is ``{"path": ".", "docnos": null}``: its components stay
where the build put them (``sparse/``, ``dense/``, ``vectors/dense``).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from braid.data.errors import IndexFormatError, OptionError, check_int, check_positive_int
from braid.data.vectors import SparseVectors
from braid.index.hits import Hits

DELETED_DIR = "deleted"
SEGMENTS_DIR = "segments"
# Dense segments of at most SMALL_SEGMENT_DOCS documents are joined into one flat search unit when a
# generation opens: up to JOIN_FLAT_DOCS in all for a flat index (an in-memory copy of their vectors),
# up to JOIN_HNSW_DOCS for HNSW (scanned exactly instead of one graph search each).
SMALL_SEGMENT_DOCS = 20_000
JOIN_FLAT_DOCS = 50_000
JOIN_HNSW_DOCS = 8_192
# HNSW: once the segments other than the largest hold at least ABSORB_HNSW_DOCS documents, their
# vectors are inserted into a copy of the largest segment's graph (FAISS ``add``, ABSORB_CHUNK at a time)
# and that one graph replaces the generation's search units, so a many-segment generation makes one
# graph search (a flat scan of the small segments, or one graph search per segment, costs more than a
# graph search over all of them: scripts/bench_live_speed.py). The graphs are kept per process
# (GRAPH_CACHE_SIZE, keyed by the largest segment's files), so the next generation reuses one that
# covers the same segments (a delete) or extends a copy of it with the new segments only (an add).
# HNSW_ABSORB: "background" (the default: the generation opens at once and swaps the graph in when it
# is ready), "sync" (done before the generation opens) or "off".
ABSORB_HNSW_DOCS = 1_024
ABSORB_CHUNK = 512
HNSW_ABSORB = "background"
BACKGROUND_MODES = ("background", "sync", "off")  # HNSW_ABSORB and SPARSE_JOIN
GRAPH_CACHE_SIZE = 4
# Sparse: a generation with two or more search units beside its largest blocked segment (blocked
# segments too large to be flat, as 10 adds of 13,550 documents make) gets, in a background thread,
# one blocked index over all of those documents (their forward rows, the component's build settings),
# swapped in for their units: two blocked searches instead of one per segment (each fills its own
# top-k before its block skipping starts). Kept per process like the HNSW graphs. SPARSE_JOIN: as
# HNSW_ABSORB; ABSORB_SPARSE_DOCS: the fewest documents beside the largest segment worth it.
SPARSE_JOIN = "background"
ABSORB_SPARSE_DOCS = 4_096


@dataclass(frozen=True)
class MergePolicy:
    """When ``add`` merges segments (tiered, as Lucene's TieredMergePolicy in spirit).

    A segment's tier is ``floor(log(num_docs / min_segment_docs) / log(tier_factor))`` (0 for small
    ones). When a tier holds ``segments_per_tier`` segments they are merged into one (dropping their
    deleted documents); this repeats while some tier is full. ``flat_max_docs``: sparse segments with
    at most this many documents are flat (forward index, exact scan); larger ones are blocked.
    ``max_segments``: a hard cap, beyond which the smallest segments are merged whatever their tier.
    """

    segments_per_tier: int = 10
    tier_factor: float = 10.0
    min_segment_docs: int = 1000
    flat_max_docs: int = 2000
    max_segments: int = 32

    def __post_init__(self) -> None:
        check_int("segments_per_tier", self.segments_per_tier, low=2)
        check_positive_int("min_segment_docs", self.min_segment_docs)
        check_int("flat_max_docs", self.flat_max_docs, low=0)
        check_int("max_segments", self.max_segments, low=2)
        if not isinstance(self.tier_factor, (int, float)) or isinstance(self.tier_factor, bool) or not self.tier_factor > 1:
            raise OptionError("tier_factor", self.tier_factor, "a number > 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "MergePolicy":
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise OptionError("merge_policy", unknown, f"unknown field(s); known: {sorted(known)}")
        return cls(**d)

    def tier(self, num_docs: int) -> int:
        if num_docs <= self.min_segment_docs:
            return 0
        return int(np.floor(np.log(num_docs / self.min_segment_docs) / np.log(self.tier_factor))) + 1

    def pick(self, sizes: Sequence[int]) -> list[int] | None:
        """Positions of the segments to merge next (live document counts ``sizes``), None when none."""
        tiers: dict[int, list[int]] = {}
        for i, n in enumerate(sizes):
            tiers.setdefault(self.tier(int(n)), []).append(i)
        for t in sorted(tiers):
            if len(tiers[t]) >= self.segments_per_tier:
                return tiers[t][: self.segments_per_tier]
        if len(sizes) > self.max_segments:
            order = sorted(range(len(sizes)), key=lambda i: sizes[i])
            return sorted(order[: len(sizes) - self.max_segments + 1])
        return None


# --------------------------------------------------------------------------------------------------
# deletion bitmaps
# --------------------------------------------------------------------------------------------------
def read_deleted(index_dir: Path, live: dict, num_docnos: int) -> np.ndarray | None:
    """The generation's deletion bitmap: bool (num_docnos,), True = deleted; None when nothing is deleted."""
    rel = live.get("deleted")
    if not rel:
        return None
    path = Path(index_dir) / rel
    try:
        mask = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise IndexFormatError(f"{index_dir}: deletion bitmap {rel} is missing") from None
    except Exception as exc:
        raise IndexFormatError(f"{path}: corrupted deletion bitmap ({type(exc).__name__}: {exc})") from None
    if mask.dtype != np.bool_ or mask.shape != (num_docnos,):
        raise IndexFormatError(f"{path}: deletion bitmap is {mask.dtype} {mask.shape}, expected bool ({num_docnos},)")
    mask.flags.writeable = False
    return mask


def segment_docnos(index_dir: Path, seg: dict) -> np.ndarray:
    """The global docnos of a segment's rows (int64, increasing)."""
    n = int(seg["num_docs"])
    if not seg.get("docnos"):
        return np.arange(n, dtype=np.int64)
    path = Path(index_dir) / seg["path"] / seg["docnos"]
    try:
        docnos = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise IndexFormatError(f"{index_dir}: segment docnos {path} are missing") from None
    if docnos.dtype != np.int64 or docnos.shape != (n,):
        raise IndexFormatError(f"{path}: segment docnos are {docnos.dtype} {docnos.shape}, expected int64 ({n},)")
    if n > 1 and not bool(np.all(np.diff(docnos) > 0)):
        raise IndexFormatError(f"{path}: segment docnos are not increasing")
    docnos.flags.writeable = False
    return docnos


class SegmentMap:
    """Where each global docno lives: ``segment[d]`` (-1 when in none) and ``row[d]``, and which docnos are
    live. (What a search may not return is per :class:`SearchUnit`: :func:`rows_excluded`.)"""

    def __init__(self, docnos: list[np.ndarray], num_docnos: int, deleted: np.ndarray | None):
        self.docnos = docnos
        self.num_docnos = int(num_docnos)
        self.deleted = deleted
        self.segment = np.full(self.num_docnos, -1, np.int32)
        self.row = np.full(self.num_docnos, -1, np.int64)
        for i, d in enumerate(docnos):
            if d.size and (int(d[-1]) >= self.num_docnos or int(d[0]) < 0):
                raise IndexFormatError(f"segment {i} holds docnos beyond the {self.num_docnos} allocated")
            self.segment[d] = i
            self.row[d] = np.arange(d.shape[0])
        live = np.zeros(self.num_docnos, bool)
        for d in docnos:
            live[d] = True
        if deleted is not None:
            live &= ~deleted
        self.live = live
        self.num_live = int(live.sum())

    def locate(self, docnos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        docnos = np.asarray(docnos, dtype=np.int64).reshape(-1)
        if docnos.size and (docnos.min() < 0 or docnos.max() >= self.num_docnos):
            raise OptionError("docnos", docnos.tolist()[:5], f"document numbers in [0, {self.num_docnos})")
        seg, row = self.segment[docnos], self.row[docnos]
        if docnos.size and seg.min() < 0:
            raise OptionError("docnos", docnos[seg < 0].tolist()[:5], "documents held by a segment (these were merged away as deleted)")
        return seg, row


def rows_excluded(docnos: np.ndarray, dead: np.ndarray | None, allow: np.ndarray | None) -> np.ndarray | None | bool:
    """The rows (global ``docnos``) never to return: deleted (``dead``, bool per row) or outside ``allow``
    (bool over docnos). None when none is, True when all are, else a bool array per row."""
    if allow is not None:
        out = ~allow[docnos]
        if dead is not None:
            out |= dead
    elif dead is None:
        return None
    else:
        out = dead
    if not out.any():
        return None
    if out.all():
        return True
    return out


class SearchUnit:
    """What one search call covers: a segment, or several small segments joined into one in-memory
    index at open time (``index`` rows = ``docnos``, increasing; ``dead``: bool per row or None)."""

    __slots__ = ("index", "docnos", "dead", "deleted_bits")

    def __init__(self, index, docnos: np.ndarray, deleted: np.ndarray | None):
        self.index = index
        self.docnos = docnos
        dead = deleted[docnos] if deleted is not None else None
        self.dead = dead if dead is not None and dead.any() else None
        self.deleted_bits: object = _UNSET  # the kernels' form of ``dead`` (dense: a prepared AllowedRows), made on first use


_UNSET = object()


def _join_order(docnos: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """The joined segments' docnos in increasing order, and the row permutation that sorts them (None when
    already sorted): a joined unit breaks score ties by row, which must be by docno as in one segment."""
    joined = np.concatenate(docnos)
    if joined.size < 2 or bool(np.all(np.diff(joined) > 0)):
        return joined, None
    order = np.argsort(joined, kind="stable")
    return joined[order], order


def check_allow(allow: np.ndarray | None, num_docnos: int) -> np.ndarray | None:
    """``allow`` as a bool (num_docnos,) array (the documents a filter lets through), or OptionError."""
    if allow is None:
        return None
    allow = np.asarray(allow)
    if allow.dtype != np.bool_ or allow.shape != (num_docnos,):
        raise OptionError("allow", f"array {allow.dtype} {allow.shape}", f"a bool array over the {num_docnos} docnos")
    return allow


# A single query's parts holding at most this many hits in all are merged by a Python sort; more
# (a depth-1000 pipeline over several segments) by lexsort, cheaper at that size.
MERGE_ONE_MAX = 256


def merge_hits(parts: list[Hits], n_queries: int, k: int) -> Hits:
    """The top-``k`` of several Hits over global docnos, ordered by (-score, docno)."""
    if not parts:
        return Hits.empty(n_queries, k)
    if len(parts) == 1 and parts[0].k == k:
        return parts[0]
    if n_queries == 1 and sum(p.k for p in parts) <= MERGE_ONE_MAX:
        return _merge_one(parts, k)
    docnos = np.concatenate([p.docnos for p in parts], axis=1)
    scores = np.concatenate([p.scores for p in parts], axis=1)
    pad = docnos < 0
    key = np.where(pad, np.iinfo(np.int64).max, docnos)
    order = np.lexsort((key, np.where(pad, np.inf, -scores.astype(np.float64))), axis=-1)[:, :k]
    out = Hits.empty(n_queries, k)
    width = order.shape[1]
    out.docnos[:, :width] = np.take_along_axis(docnos, order, axis=1)
    out.scores[:, :width] = np.take_along_axis(scores, order, axis=1)
    out.docnos[out.docnos < 0] = -1
    return out


def _merge_one(parts: list[Hits], k: int) -> Hits:
    """:func:`merge_hits` for a single query (the common case of a search request): a Python sort of a
    few dozen (score, docno) pairs costs less than numpy's per-call overhead on arrays that small."""
    pairs = []
    for p in parts:
        pairs += [(-s, d) for d, s in zip(p.docnos[0].tolist(), p.scores[0].tolist()) if d >= 0]
    pairs.sort()
    out = Hits.empty(1, k)
    top = pairs[:k]
    if top:
        out.docnos[0, : len(top)] = [d for _, d in top]
        out.scores[0, : len(top)] = [-s for s, _ in top]
    return out


def _to_global(hits: Hits, docnos: np.ndarray) -> Hits:
    valid = hits.docnos >= 0
    out = np.full(hits.docnos.shape, -1, np.int64)
    out[valid] = docnos[hits.docnos[valid]]
    return Hits(out, np.where(valid, hits.scores, np.float32(-np.inf)).astype(np.float32))


# --------------------------------------------------------------------------------------------------
# sparse
# --------------------------------------------------------------------------------------------------
class SegmentedSparseIndex:
    """The sparse component of a live index: blocked and flat segments over global docnos.

    Searching: every blocked segment is one kernel call, and all flat segments together are one more
    (they are joined into a single flat index with inverted lists when the generation is opened: one exact
    term-at-a-time call instead of one scan per small segment; the query knobs apply to the blocked ones).
    """

    def __init__(self, segments: list, docnos: list[np.ndarray], num_docnos: int, deleted: np.ndarray | None, vocab_size: int,
                 join: str | None = None, keys: list | None = None, config=None):  # fmt: skip
        self.segments = segments
        self.map = SegmentMap(docnos, num_docnos, deleted)
        self.vocab_size = int(vocab_size)
        self.num_docs = self.map.num_live
        self.num_docnos = int(num_docnos)
        self.units = _sparse_units(segments, docnos, deleted)
        self._joined_ready = threading.Event()
        self.join_seconds: float | None = None  # how long building the joined index took, once done (0: reused)
        join = SPARSE_JOIN if join is None else join
        if join not in BACKGROUND_MODES:
            raise OptionError("join", join, f"one of {', '.join(BACKGROUND_MODES)}")
        plan = None if join == "off" else self._join_plan(keys, config)
        if plan is None:
            self._joined_ready.set()
            return
        cached = None
        if plan[0] is not None:
            with _GRAPHS_LOCK:
                cached = _GRAPHS.get(plan[0])
        if cached is not None:
            self._use_joined(plan, cached.index, cached.docnos, deleted)
            self.join_seconds = 0.0
            self._joined_ready.set()
        elif join == "sync":
            _join_sparse(weakref.ref(self), plan, deleted)
        else:
            threading.Thread(target=_join_sparse, args=(weakref.ref(self), plan, deleted), name="braid-sparse-join", daemon=True).start()

    def wait_joined(self, timeout: float | None = None) -> bool:
        """Wait until the segments beside the largest are one blocked index (at once when there is nothing
        to join); False if ``timeout`` seconds passed first. Searches meanwhile use their own units."""
        return self._joined_ready.wait(timeout)

    def _join_plan(self, keys: list | None, config):
        """(cache key, the largest blocked segment, the others, config) or None."""
        from braid.index.sparse.blocked import BlockedSparseIndex

        blocked = [i for i, seg in enumerate(self.segments) if isinstance(seg, BlockedSparseIndex)]
        if not blocked:
            return None
        base = max(blocked, key=lambda i: self.segments[i].num_docs)
        others = [i for i in range(len(self.segments)) if i != base]
        if len([u for u in self.units if u.index is not self.segments[base]]) < 2:
            return None  # already at most two searches
        if sum(self.segments[i].num_docs for i in others) < ABSORB_SPARSE_DOCS:
            return None
        key = None if keys is None or any(keys[i] is None for i in others) else ("sparse-join", tuple(keys[i] for i in others))
        return key, base, others, config if config is not None else self.segments[base].config

    def _use_joined(self, plan, index, docnos: np.ndarray, deleted: np.ndarray | None) -> None:
        base = self.segments[plan[1]]
        self.units = [u for u in self.units if u.index is base] + [SearchUnit(index, docnos, deleted)]

    @staticmethod
    def _bits(unit: SearchUnit, allow: np.ndarray | None):
        from braid.index.sparse.blocked import exclusion_bitset

        if allow is None and unit.deleted_bits is not _UNSET:
            return unit.deleted_bits
        excl = rows_excluded(unit.docnos, unit.dead, allow)
        bits = excl if (excl is None or excl is True) else exclusion_bitset(excl)
        if allow is None:
            unit.deleted_bits = bits
        return bits

    def search(self, queries: SparseVectors, k: int = 10, query_cut: int = 10, heap_factor: float = 0.7, exact: bool = False,
               threads: int | None = None, block_order: str = "seismic", allow: np.ndarray | None = None) -> Hits:  # fmt: skip
        """Top-``k`` over all segments (global docnos); ``allow``: bool over docnos (a filter)."""
        from braid.index.sparse.flat import FlatSparseIndex

        k = check_positive_int("k", k)
        allow = check_allow(allow, self.num_docnos)
        parts = []
        for unit in self.units:
            bits = self._bits(unit, allow)
            if bits is True:
                continue
            if isinstance(unit.index, FlatSparseIndex):
                hits = unit.index.search(queries, k=k, threads=threads, excluded=bits)
            else:
                hits = unit.index.search(queries, k=k, query_cut=query_cut, heap_factor=heap_factor, exact=exact, threads=threads,
                                         block_order=block_order, excluded=bits)  # fmt: skip
            parts.append(_to_global(hits, unit.docnos))
        return merge_hits(parts, queries.n_rows, k)

    def forward_vectors(self, docnos: np.ndarray) -> SparseVectors:
        """Forward-index rows of global ``docnos`` (float32 weights), in the given order."""
        seg, row = self.map.locate(docnos)
        rows: list = [None] * seg.shape[0]
        for s in np.unique(seg):
            at = np.flatnonzero(seg == s)
            got = self.segments[int(s)].forward_vectors(row[at])
            for j, pos in enumerate(at):
                rows[pos] = got.row(j)
        return SparseVectors.from_rows(rows, self.vocab_size)


def _join_sparse(ref: "weakref.ref[SegmentedSparseIndex]", plan, deleted: np.ndarray | None) -> None:
    """Build one blocked index over the segments ``plan`` names beside the largest (their forward rows in
    increasing docno order, one numba thread) and swap it in; keep it for the next generation."""
    import time

    import numba

    from braid.index.sparse.blocked import BlockedSparseIndex

    t0 = time.perf_counter()
    try:
        self = ref()
        if self is None:
            return
        key, _, others, config = plan
        building = None
        if key is not None:
            with _GRAPHS_LOCK:
                building = _BUILDING.get(key)
                if building is None:
                    _BUILDING[key] = threading.Event()
        if building is not None:  # another generation of this process is joining the same segments: wait for it
            del self
            building.wait()
            with _GRAPHS_LOCK:
                made = _GRAPHS.get(key)
            self = ref()
            if made is not None and self is not None:
                self._use_joined(plan, made.index, made.docnos, deleted)
                self.join_seconds = time.perf_counter() - t0
            return
        try:
            parts = [self.segments[i].forward_vectors(np.arange(self.segments[i].num_docs)) for i in others]
            docnos, order = _join_order([self.map.docnos[i] for i in others])
            del self
            vectors = SparseVectors.concat(parts, parts[0].vocab_size)
            if order is not None:
                vectors = vectors.take(order)
            numba.set_num_threads(1)  # this thread's own count: the searches keep theirs
            index = BlockedSparseIndex.build(vectors, config)
            if key is not None:
                _keep(_Graph(key, (), index, docnos))
        finally:
            if key is not None:
                with _GRAPHS_LOCK:
                    _BUILDING.pop(key).set()
        self = ref()
        if self is None:
            return
        self._use_joined(plan, index, docnos, deleted)
        self.join_seconds = time.perf_counter() - t0
    finally:
        self = ref()
        if self is not None:
            self._joined_ready.set()


def _sparse_units(segments: list, docnos: list[np.ndarray], deleted: np.ndarray | None) -> list[SearchUnit]:
    """Blocked segments one unit each; the flat ones joined into one flat index (when there are two or more)."""
    from braid.index.sparse.flat import FlatSparseIndex

    flat = [i for i, s in enumerate(segments) if isinstance(s, FlatSparseIndex)]
    units = [SearchUnit(s, d, deleted) for i, (s, d) in enumerate(zip(segments, docnos)) if i not in flat or len(flat) < 2]
    if len(flat) >= 2:
        joined, order = _join_order([docnos[i] for i in flat])
        units.append(SearchUnit(FlatSparseIndex.join([segments[i] for i in flat], order), joined, deleted))
    return units


# --------------------------------------------------------------------------------------------------
# dense
# --------------------------------------------------------------------------------------------------
class SegmentedDenseIndex:
    """The dense component of a live index: FAISS segments (the same trained structure) over global docnos.

    ``raw``: per segment, the float32 vectors it was built from (memory-mapped; None where absent),
    used for rescoring, PRF and merging so PQ segments never re-quantize decoded vectors.
    """

    def __init__(self, segments: list, docnos: list[np.ndarray], raw: list, num_docnos: int, deleted: np.ndarray | None,
                 absorb: str | None = None, keys: list | None = None):  # fmt: skip
        self.segments = segments
        self.raw = raw
        self.map = SegmentMap(docnos, num_docnos, deleted)
        self.num_docs = self.map.num_live
        self.num_docnos = int(num_docnos)
        self.config = segments[0].config
        self.dim = segments[0].dim
        self.info = segments[0].info
        self.binary = None
        self.units = self._units(deleted)
        self._graph_ready = threading.Event()
        self.graph_seconds: float | None = None  # how long making the one graph took, once done (0: reused)
        absorb = HNSW_ABSORB if absorb is None else absorb
        if absorb not in BACKGROUND_MODES:
            raise OptionError("absorb", absorb, f"one of {', '.join(BACKGROUND_MODES)}")
        plan = None if absorb == "off" else self._absorb_plan(keys)
        if plan is None:
            self._graph_ready.set()
        elif plan.todo == ():  # a graph of this process already holds exactly these segments
            self._use_graph(plan.start, deleted)
            self.graph_seconds = 0.0
            self._graph_ready.set()
        elif absorb == "sync":
            _absorb_into_graph(weakref.ref(self), plan, deleted)
        else:
            threading.Thread(target=_absorb_into_graph, args=(weakref.ref(self), plan, deleted), name="braid-hnsw-absorb", daemon=True).start()

    def _absorb_plan(self, keys: list | None) -> "_Plan | None":
        """What to insert into which graph (None: nothing to do)."""
        if self.config.kind != "hnsw" or len(self.segments) < 2:
            return None
        base = max(range(len(self.segments)), key=lambda i: self.segments[i].num_docs)
        others = [i for i in range(len(self.segments)) if i != base]
        if sum(self.segments[i].num_docs for i in others) < ABSORB_HNSW_DOCS:
            return None
        key = None if keys is None or any(k is None for k in keys) else keys[base]
        start = None
        if key is not None:
            with _GRAPHS_LOCK:
                start = _GRAPHS.get(key)
            if start is not None and not set(start.members) <= {keys[i] for i in others}:
                start = None  # a segment it holds was merged away: start from the segment's own graph
        if start is None:
            start = _Graph(key, (), self.segments[base].index, self.map.docnos[base])
        todo = tuple(i for i in others if keys is None or keys[i] not in start.members)
        return _Plan(start, todo, tuple(keys[i] for i in todo) if key is not None else None)

    def _use_graph(self, graph: "_Graph", deleted: np.ndarray | None) -> None:
        from braid.index.dense import DenseIndex

        base = self.segments[0]
        n = int(graph.index.ntotal)
        index = DenseIndex(graph.index, base.config, n, base.dim, {**base.info, "num_docs": n})
        self.units = [SearchUnit(index, graph.docnos, deleted)]

    def wait_graph(self, timeout: float | None = None) -> bool:
        """Wait until the HNSW segments are one graph (at once when there is nothing to insert); False if
        ``timeout`` seconds passed first. Searches before then go through the segments' own units (the
        largest graph, the small segments scanned exactly, other graphs) over the same documents."""
        return self._graph_ready.wait(timeout)

    def _units(self, deleted: np.ndarray | None) -> list[SearchUnit]:
        """One search unit per segment, except the small segments of a ``flat`` or ``hnsw`` index: those are
        joined into one exact flat index (their stored vectors, the same FAISS flat scan), so a generation
        with many small segments makes two FAISS calls instead of one per segment. A flat index scores a
        joined document exactly as its own segment did; for HNSW the joined ones are scanned exactly
        (at most :data:`JOIN_HNSW_DOCS` of them, about the cost of one graph search; never the largest segment)."""
        from braid.index.dense import DenseIndex, DenseIndexConfig

        kind = self.config.kind
        limit = JOIN_FLAT_DOCS if kind == "flat" else JOIN_HNSW_DOCS if kind == "hnsw" else 0
        small: list[int] = []
        total = 0
        by_size = sorted(range(len(self.segments)), key=lambda i: self.segments[i].num_docs)
        if kind == "hnsw":
            by_size = by_size[:-1]  # the largest segment keeps its graph
        for i in by_size:
            n = self.segments[i].num_docs
            if n > SMALL_SEGMENT_DOCS or total + n > limit:
                break
            small.append(i)
            total += n
        if len(small) < 2:
            small = []
        units = [SearchUnit(s, d, deleted) for i, (s, d) in enumerate(zip(self.segments, self.map.docnos)) if i not in small]
        if small:
            small.sort()
            joined, order = _join_order([self.map.docnos[i] for i in small])
            vectors = np.concatenate([self._segment_vectors(i) for i in small])
            if order is not None:
                vectors = vectors[order]
            cfg = DenseIndexConfig(kind="flat", metric=self.config.metric, store_dtype=self.config.store_dtype)
            units.append(SearchUnit(DenseIndex.build(vectors, cfg), joined, deleted))
        return units

    def _segment_vectors(self, i: int) -> np.ndarray:
        src = self.raw[i]
        if src is not None:
            return np.asarray(src, dtype=np.float32)
        return self.segments[i].reconstruct(np.arange(self.segments[i].num_docs))

    def search(self, query_vectors: np.ndarray, k: int, nprobe: int | None = None, ef_search: int | None = None,
               threads: int | None = None, allow: np.ndarray | None = None) -> Hits:  # fmt: skip
        k = check_positive_int("k", k)
        allow = check_allow(allow, self.num_docnos)
        q = np.ascontiguousarray(query_vectors, dtype=np.float32)
        parts = []
        for unit in self.units:
            excl = rows_excluded(unit.docnos, unit.dead, allow)
            if excl is True:
                continue
            if excl is None:
                allowed = None
            elif allow is None:  # the unit's deletions only: the same mask for every search of this generation
                if unit.deleted_bits is _UNSET:
                    unit.deleted_bits = unit.index.prepare_allowed(~excl)
                allowed = unit.deleted_bits
            else:
                allowed = ~excl
            hits = unit.index.search(q, k, nprobe=nprobe, ef_search=ef_search, threads=threads, allowed=allowed)
            parts.append(_to_global(hits, unit.docnos))
        return merge_hits(parts, q.shape[0], k)

    def reconstruct(self, docnos: np.ndarray) -> np.ndarray:
        return self._gather(docnos, raw=False)

    def doc_vectors(self, docnos: np.ndarray) -> np.ndarray:
        """float32 (n, dim): the vectors the documents were encoded as (decoded codes where none are kept)."""
        return self._gather(docnos, raw=True)

    def _gather(self, docnos: np.ndarray, raw: bool) -> np.ndarray:
        seg, row = self.map.locate(docnos)
        out = np.zeros((seg.shape[0], self.dim), np.float32)
        for s in np.unique(seg):
            at = np.flatnonzero(seg == s)
            src = self.raw[int(s)] if raw else None
            if src is not None:
                out[at] = np.asarray(src[row[at]], dtype=np.float32)
            else:
                out[at] = self.segments[int(s)].reconstruct(row[at])
        return out


# --------------------------------------------------------------------------------------------------
# opening a generation's segments
# --------------------------------------------------------------------------------------------------
class _Graph:
    """A search structure over several segments, kept per process under ``key``: an HNSW graph
    (``members``: the keys of the segments inserted into it, in order, after the base whose key is
    ``key``) or a joined blocked sparse index (``members`` empty; ``key`` names all its segments). The
    index is never changed once made; ``docnos``: the global docnos of its rows."""

    __slots__ = ("key", "members", "index", "docnos")

    def __init__(self, key: Any, members: tuple, index: Any, docnos: np.ndarray):
        self.key, self.members, self.index, self.docnos = key, members, index, docnos


class _Plan:
    """An HNSW insertion: the segments ``todo`` (their keys ``todo_keys``) go into a copy of ``start``."""

    __slots__ = ("start", "todo", "todo_keys")

    def __init__(self, start: _Graph, todo: tuple, todo_keys: tuple | None):
        self.start, self.todo, self.todo_keys = start, todo, todo_keys


_GRAPHS: "OrderedDict[Any, _Graph]" = OrderedDict()
_GRAPHS_LOCK = threading.Lock()
_BUILDING: dict = {}  # key -> Event: a sparse join under way in this process (a second generation waits for it)


def _keep(made: _Graph) -> None:
    """Keep ``made`` for later generations of this process (the last GRAPH_CACHE_SIZE)."""
    with _GRAPHS_LOCK:
        _GRAPHS[made.key] = made
        _GRAPHS.move_to_end(made.key)
        while len(_GRAPHS) > GRAPH_CACHE_SIZE:
            _GRAPHS.popitem(last=False)


def _absorb_into_graph(ref: "weakref.ref[SegmentedDenseIndex]", plan: _Plan, deleted: np.ndarray | None) -> None:
    """Insert the segments ``plan.todo`` of ``ref()`` into a copy of ``plan.start``'s graph (FAISS
    ``add``: the links a build makes for late arrivals, at the index's efConstruction), swap the one
    graph in for the generation's units and keep it for the next generation. Holds only a weak reference
    between chunks, so a generation closed meanwhile stops it; a failure leaves the units as they were."""
    import time

    from braid.index.dense import _omp_threads, _require_faiss

    t0 = time.perf_counter()
    try:
        self = ref()
        if self is None:
            return
        parts = [(self._segment_vectors(i), self.map.docnos[i]) for i in plan.todo]
        del self
        graph = _require_faiss().clone_index(plan.start.index)  # the segment's file may be mapped read-only: a writable copy
        with _omp_threads(1):  # leave the other cores to the searches served meanwhile
            for vectors, _ in parts:
                for at in range(0, vectors.shape[0], ABSORB_CHUNK):
                    if ref() is None:
                        return
                    graph.add(np.ascontiguousarray(vectors[at : at + ABSORB_CHUNK], dtype=np.float32))
        made = _Graph(plan.start.key, plan.start.members + (plan.todo_keys or ()),
                      graph, np.concatenate([plan.start.docnos] + [d for _, d in parts]))  # fmt: skip
        if made.key is not None:
            _keep(made)
        self = ref()
        if self is None:
            return
        self._use_graph(made, deleted)
        self.graph_seconds = time.perf_counter() - t0
    finally:
        self = ref()
        if self is not None:
            self._graph_ready.set()


def _segment_entry(seg: dict, name: str, index_dir: Path) -> dict:
    entry = (seg.get("components") or {}).get(name)
    if not isinstance(entry, dict):
        raise IndexFormatError(f"{index_dir}: segment {seg.get('id')!r} has no {name!r} component")
    return entry


def open_sparse_segments(index_dir: Path, manifest: dict, deleted: np.ndarray | None) -> SegmentedSparseIndex:
    """The sparse component of a live index's generation (segments listed in ``manifest["live"]``)."""
    from braid.index.sparse.blocked import BlockedSparseIndex
    from braid.index.sparse.flat import FlatSparseIndex

    index_dir = Path(index_dir)
    live = manifest["live"]
    segments, docnos, keys = [], [], []
    vocab = None
    for seg in live["segments"]:
        entry = _segment_entry(seg, "sparse", index_dir)
        where = index_dir / seg["path"] / entry.get("dir", "sparse")
        if entry.get("kind", "blocked") == "flat":
            index = FlatSparseIndex.load(where, entry["index"])
        else:
            index = BlockedSparseIndex.load(where, entry["index"])
        if index.num_docs != int(seg["num_docs"]):
            raise IndexFormatError(f"{where}: holds {index.num_docs} documents, the manifest says {seg['num_docs']}")
        vocab = index.vocab_size if vocab is None else vocab
        if index.vocab_size != vocab:
            raise IndexFormatError(f"{where}: vocabulary of {index.vocab_size} terms, other segments have {vocab}")
        segments.append(index)
        docnos.append(segment_docnos(index_dir, seg))
        keys.append(_file_key(where))
    config = None
    requested = (manifest.get("components") or {}).get("sparse", {}).get("requested_config")
    if requested is not None:
        from braid.index.sparse.blocked import BlockedIndexConfig

        config = BlockedIndexConfig.from_dict(requested) if requested else BlockedIndexConfig()
    return SegmentedSparseIndex(segments, docnos, int(manifest.get("num_docnos", manifest["num_docs"])), deleted, vocab or 0,
                                keys=keys, config=config)  # fmt: skip


def open_dense_segments(index_dir: Path, manifest: dict, deleted: np.ndarray | None) -> SegmentedDenseIndex:
    """The dense component of a live index's generation."""
    from braid.index.dense import DenseIndex

    index_dir = Path(index_dir)
    live = manifest["live"]
    segments, docnos, raw, keys = [], [], [], []
    for seg in live["segments"]:
        entry = _segment_entry(seg, "dense", index_dir)
        where = index_dir / seg["path"] / entry.get("dir", "dense")
        index = DenseIndex.load(where, entry["index"])
        keys.append(_file_key(where / str(entry["index"].get("file", "dense.faiss"))))
        if index.num_docs != int(seg["num_docs"]):
            raise IndexFormatError(f"{where}: holds {index.num_docs} documents, the manifest says {seg['num_docs']}")
        segments.append(index)
        docnos.append(segment_docnos(index_dir, seg))
        vec = entry.get("vectors")
        path = index_dir / seg["path"] / vec if vec else None
        raw.append(np.load(path, mmap_mode="r", allow_pickle=False) if path is not None and path.is_file() else None)
    dims = {s.dim for s in segments}
    if len(dims) > 1:
        raise IndexFormatError(f"{index_dir}: dense segments of different dimensions {sorted(dims)}")
    return SegmentedDenseIndex(segments, docnos, raw, int(manifest.get("num_docnos", manifest["num_docs"])), deleted, keys=keys)


def _file_key(path: Path) -> tuple | None:
    """A segment file's (dense) or directory's (sparse) identity for the per-process cache: path, inode,
    size and mtime (segment files are written once; a rebuilt index at the same path has new ones)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
