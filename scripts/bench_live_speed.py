"""Live-index speed figures (issue 15's "Speed" list), one run: add throughput, segmented vs compacted
search latency at accuracy@10 >= 0.95, pyseismic-lsr on the compacted set, delete-to-invisible, and
filtered search at 1%, 10%, 50% selectivity with exactness against brute force.

    flock -x /work/bench.lock python scripts/bench_live_speed.py --part scifact \
        --out docs/benchmarks/results/live-speed-scifact.json
    flock -x /work/bench.lock python scripts/bench_live_speed.py --part dictionary \
        --out docs/benchmarks/results/live-speed-dictionary.json

``--part scifact`` uses the REAL pre-encoded vectors of ``../shared/vectors/scifact`` (splade-tiny
CSR, MiniLM float32), so nothing is re-encoded except in the one real ``braid add`` that measures
the share of its wall time that is not encoding:

- the live index: a ``braid index`` build (bm25 + sparse + dense, from the pre-encoded vectors:
  ``BuildOptions(sparse_vectors=..., dense_vectors=...)``) of the first half of the corpus, then 9
  ``Index.add`` commits of the rest (288 documents each, default merge policy: they stay 9 flat sparse
  segments beside the blocked base; 10 segments in all), then 10% of all documents deleted in one
  commit. Those adds get their vectors from the pre-encoded matrices through an encoder stand-in
  that looks each text up (its time is subtracted: the throughput excludes encoding); the time in
  each component's writer is measured by wrapping ``_Draft._sparse_segment``, ``_dense_segment`` and
  ``_bm25_update`` with a timer (behaviour unchanged).
- the compacted index: a copy of it after ``Index.compact()`` (one segment, the same live documents).
- a dense HNSW pair (live and compacted) built the same way, for a dense index with a query knob.
- latency: one query at a time, one thread (NUMBA / OpenMP / RAYON 1), at the index level (pre-encoded
  queries: no query encoding), the 300 scifact test queries. Each system sweeps its knobs (sparse:
  ``query_cut`` x ``heap_factor``, the grid of ``../shared/tools/sparse-ratio``; HNSW: ``ef_search``),
  the cheapest setting reaching accuracy@10 >= 0.95 is kept, then the systems are timed interleaved
  query by query over 3 shuffled passes (median). accuracy@10: the share of the top 10 whose exact
  score (float64 product over the live documents) reaches the exact 10th score, as in sparse-ratio.
  pyseismic-lsr gets the compacted index's resolved build parameters and only the live documents.
- delete-to-invisible: on the live index with a ``Searcher`` open, delete the top hit of a query,
  then ``maybe_reload()`` and search again (what ``braid serve`` does on each request); the commit,
  reload and search times, and whether the document is gone.
- filtered: random keyword tags p1 / p10 / p50 in each document's metadata; the filter mask from the
  index's metadata; the segmented index searched with it at the setting chosen above and exact.
  Exactness: the same accuracy@10 against brute force over the matching live documents, and the
  share of queries whose exact-mode top 10 equals the brute-force top 10.
- add share not encoding: a real ``braid add`` (a subprocess, encoding 256 new documents with the
  models the index records) on a copy of the live index: process wall time and the library's own
  encoding seconds (which include loading the two models).

``--part add-sequence --index DIR [--collection scifact] [--adds 10]``: ``--adds`` real ``braid add`` calls one
after another on a copy of DIR (``--real-add-docs`` new documents each, drawn from the collection under new ids),
under the merge policy the index records: the not-encoding share per call and over the sequence, which pays the
tiered policy's merge once per tier as a user adding in batches does.

``--part dictionary`` (243,895 documents) gives BM25 figures only: there are no pre-encoded vectors
for it and encoding it on this CPU takes about an hour. The same live layout (half built, 9 adds,
10% deleted) and its compacted copy; latency of 500 queries at the index level; filtered search with
exactness against the unfiltered ranking restricted to the matches (200 queries; depth 20,000, a
query whose restricted list is not complete within that depth is counted as undetermined).
"""

from __future__ import annotations

import os

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "RAYON_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from machine import cpu_model  # noqa: E402 - scripts/machine.py (the scripts run as files)

ROOT = Path(__file__).resolve().parents[1]
SPARSE_GRID = [(qc, hf) for qc in (3, 4, 5, 6, 8, 10, 12, 16, 20) for hf in (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)]
EF_GRID = (10, 12, 14, 16, 20, 24, 28, 32, 48, 64, 96, 128, 256)
N_ADDS = 9
N_QUERIES = None  # all (--smoke: a few)
clock = time.perf_counter


def cpu_info() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "search_threads": 1, "load_average_start": round(os.getloadavg()[0], 2)}


def tags(rng: random.Random) -> dict:
    t = rng.random()
    return {"p1": t < 0.01, "p10": t < 0.10, "p50": t < 0.50}


# --------------------------------------------------------------------------------------------------
# an encoder stand-in: pre-encoded rows looked up by text (its own time is measured and subtracted)
# --------------------------------------------------------------------------------------------------
class Lookup:
    def __init__(self, row_of_text: dict[str, int], rows, sparse: bool, vocab_size: int = 0):
        self.row_of_text, self.rows, self.sparse, self.vocab_size = row_of_text, rows, sparse, vocab_size
        self.seconds = 0.0

    def encode(self, texts, mode):
        t = clock()
        idx = np.array([self.row_of_text[x] for x in texts], dtype=np.int64)
        out = self.rows.take(idx) if self.sparse else np.asarray(self.rows[idx], dtype=np.float32)
        self.seconds += clock() - t
        return out


class Timers:
    """Wraps the live writer's per-component steps with timers (behaviour unchanged)."""

    def __init__(self):
        from braid.retrieval import live

        self.seconds = {"sparse": 0.0, "dense": 0.0, "bm25": 0.0}
        for name, method in (("sparse", "_sparse_segment"), ("dense", "_dense_segment"), ("bm25", "_bm25_update")):
            orig = getattr(live._Draft, method)

            def wrapped(*a, _orig=orig, _name=name, **kw):
                t = clock()
                try:
                    return _orig(*a, **kw)
                finally:
                    self.seconds[_name] += clock() - t

            setattr(live._Draft, method, wrapped)


def quiet(_msg):
    pass


# --------------------------------------------------------------------------------------------------
# building the live and compacted indexes
# --------------------------------------------------------------------------------------------------
def make_live(work: Path, name: str, docs: list[dict], retrievers, options_kw: dict, vectors: dict, rng: random.Random,
              delete_ids: list[str], timers: Timers | None) -> dict:  # fmt: skip
    """Build half, add the rest in N_ADDS commits, delete ``delete_ids``; copy and compact. Returns paths + add figures."""
    import scipy.sparse as sp

    from braid.retrieval.build.builder import BuildOptions, build_index
    from braid.retrieval.live import Index

    half = len(docs) // 2
    base, rest = docs[:half], docs[half:]
    corpus = work / f"{name}-base.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in base))
    kw = dict(options_kw)
    if "sparse" in vectors:
        sp.save_npz(work / f"{name}-sparse.npz", vectors["sparse_scipy"][:half])
        kw["sparse_vectors"] = work / f"{name}-sparse.npz"
    if "dense" in vectors:
        np.save(work / f"{name}-dense.npy", vectors["dense"][:half])
        kw["dense_vectors"] = work / f"{name}-dense.npy"
    live = work / name
    t = clock()
    build_index(corpus, live, BuildOptions(retrievers=tuple(retrievers), progress=False, **kw), log=quiet)
    build_seconds = clock() - t
    index = Index(live, log=quiet)
    lookups = {}
    for kind in ("sparse", "dense"):
        if kind in vectors:
            lookups[kind] = Lookup(vectors["row_of_text"], vectors[kind], kind == "sparse", vectors.get("vocab_size", 0))
            index._encoders[kind] = lookups[kind]
    if timers is not None:
        timers.seconds = dict.fromkeys(timers.seconds, 0.0)
    per_add, total = [], 0.0
    step = -(-len(rest) // N_ADDS)
    for i in range(N_ADDS):
        chunk = rest[i * step : (i + 1) * step]
        looked = sum(lk.seconds for lk in lookups.values())
        t = clock()
        r = index.add(chunk)
        took = clock() - t - (sum(lk.seconds for lk in lookups.values()) - looked)
        per_add.append(round(took, 3))
        total += took
    n_added = len(rest)
    in_components = dict(timers.seconds) if timers is not None else {}
    t = clock()
    d = index.delete(delete_ids)
    delete_seconds = clock() - t
    compacted = work / f"{name}-compacted"
    shutil.copytree(live, compacted, symlinks=True)
    t = clock()
    Index(compacted, log=quiet).compact()
    compact_seconds = clock() - t
    out = {
        "live": live, "compacted": compacted, "segments": r.segments, "deleted": d.deleted,
        "figures": {
            "base_build_docs": half, "base_build_seconds": round(build_seconds, 2), "adds": N_ADDS, "docs_per_add": step,
            "add_seconds_excluding_encoding": per_add, "add_docs_per_second_excluding_encoding": round(n_added / total, 1),
            "segments_after_adds": r.segments, "deleted_docs": d.deleted, "delete_commit_seconds": round(delete_seconds, 3),
            "compact_seconds": round(compact_seconds, 2),
        },
    }  # fmt: skip
    if timers is not None:
        out["figures"]["component_seconds"] = {k: round(v, 3) for k, v in in_components.items() if k in retrievers}
        out["figures"]["component_docs_per_second"] = {k: round(n_added / v, 1) for k, v in in_components.items() if k in retrievers and v > 0}
        out["figures"]["rest_of_commit_seconds"] = round(total - sum(v for k, v in in_components.items() if k in retrievers), 3)
    return out


# --------------------------------------------------------------------------------------------------
# accuracy and timing
# --------------------------------------------------------------------------------------------------
class Exact:
    """Exact scores over live documents (float64), rows = live doc ids; accuracy@10 as in sparse-ratio."""

    def __init__(self, scores: np.ndarray, doc_ids: list[str], allow: np.ndarray | None = None):
        self.row_of = {d: i for i, d in enumerate(doc_ids)}
        s = np.array(scores, dtype=np.float64)  # (docs, queries)
        if allow is not None:
            s[~allow] = -np.inf
        self.scores = s
        self.tenth = -np.sort(-s, axis=0)[9]
        self.top10 = [set(np.argsort(-s[:, j], kind="stable")[:10].tolist()) for j in range(s.shape[1])]

    def accuracy(self, j: int, ids) -> float:
        rows = [self.row_of[d] for d in list(ids)[:10] if d in self.row_of]
        return sum(1 for r in rows if self.scores[r, j] >= self.tenth[j] * (1 - 1e-6) and np.isfinite(self.scores[r, j])) / 10.0


def interleaved(systems: dict, settings: dict, order: list[int], flip: int = 0):
    """Time each query on every system, rotating which goes first; latencies (s) and mean accuracy."""
    names = list(systems)
    lat = {n: [] for n in names}
    acc = {n: 0.0 for n in names}
    for i, j in enumerate(order):
        rot = (i + flip) % len(names)
        for n in names[rot:] + names[:rot]:
            run, accuracy = systems[n]
            t0 = clock()
            ids = run(j, settings[n])
            t1 = clock()
            lat[n].append(t1 - t0)
            acc[n] += accuracy(j, ids)
    return lat, {n: v / len(order) for n, v in acc.items()}


def sweep_and_time(systems: dict, grid: list, order: list[int], reps: int = 3) -> dict:
    for j in order[:50]:  # warm-up
        for n, (run, _) in systems.items():
            run(j, grid[len(grid) // 2])
    gc.disable()
    table = {}
    for i, point in enumerate(grid):
        lat, acc = interleaved(systems, dict.fromkeys(systems, point), order, flip=i)
        table[point] = {n: (acc[n], float(np.median(lat[n]))) for n in systems}
    gc.enable()
    chosen = {}
    for n in systems:
        ok = [(v[n][1], p) for p, v in table.items() if v[n][0] >= 0.95]
        chosen[n] = min(ok)[1] if ok else max(grid, key=lambda p: table[p][n][0])
    rng = random.Random(0)
    lats = {n: [] for n in systems}
    accs = {}
    gc.disable()
    for r in range(reps):
        o = order[:]
        rng.shuffle(o)
        lat, acc = interleaved(systems, chosen, o, flip=r)
        for n in systems:
            lats[n] += lat[n]
        accs = acc
    gc.enable()
    return {n: {"setting": list(chosen[n]) if isinstance(chosen[n], tuple) else chosen[n], "accuracy_at_10": round(accs[n], 4),
                "median_us": round(float(np.median(lats[n])) * 1e6, 1), "p99_us": round(float(np.percentile(lats[n], 99)) * 1e6, 1),
                "reached_0.95": table[tuple(chosen[n]) if isinstance(chosen[n], tuple) else chosen[n]][n][0] >= 0.95}
            for n in systems}  # fmt: skip


def hits_ids(hits, doc_ids) -> list[str]:
    return [doc_ids[d] for d in hits.docnos[0] if d >= 0]


# --------------------------------------------------------------------------------------------------
# scifact: bm25 + sparse + dense from the real vectors
# --------------------------------------------------------------------------------------------------
def load_scifact(args):
    """scifact's pre-encoded vectors (../shared/vectors/scifact): docs and test queries."""
    import scipy.sparse as sp

    shared = args.shared
    vec = shared / "vectors" / "scifact"
    ids = json.load(open(vec / "ids.json"))
    docs_csr = sp.load_npz(vec / "splade-tiny-docs.npz").tocsr()
    q_csr = sp.load_npz(vec / "splade-tiny-queries.npz").tocsr()
    dense_docs = np.load(vec / "minilm-docs.npy")
    dense_q = np.load(vec / "minilm-queries.npy")
    return shared / "data" / "scifact", ids["doc_ids"], ids["query_ids"], ids["query_ids"], docs_csr, q_csr, dense_docs, dense_q


def load_encoded(args, name: str):
    """A collection encoded by scripts/encode_collection.py into ``--vectors DIR``: DIR/splade (the
    vector cache's indptr / indices / data, queries.npz) and DIR/minilm (vectors.npy, queries.npy)."""
    import scipy.sparse as sp

    from braid.data.beir import BeirDataset
    from braid.data.corpus import iter_corpus

    data = args.shared / "data" / name
    vec = args.vectors
    path = vec / "splade" / "complete.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing: encode the collection first (scripts/encode_collection.py, see --help)")
    has_dense = (vec / "minilm" / "complete.json").is_file()  # without it: bm25 + sparse figures only
    indptr, indices, values = (np.load(vec / "splade" / f"{a}.npy") for a in ("indptr", "indices", "data"))
    q_csr = sp.load_npz(vec / "splade" / "queries.npz").tocsr()
    docs_csr = sp.csr_matrix((values, indices, indptr), shape=(indptr.shape[0] - 1, q_csr.shape[1]))
    dense_docs = np.load(vec / "minilm" / "vectors.npy") if has_dense else None
    dense_q = np.load(vec / "minilm" / "queries.npy") if has_dense else None
    sq_ids = json.load(open(vec / "splade" / "queries.ids.json"))["query_ids"]
    dq_ids = json.load(open(vec / "minilm" / "queries.ids.json"))["query_ids"] if has_dense else sq_ids
    corpus = BeirDataset(data).corpus_path
    doc_ids = [d.doc_id for d in iter_corpus(corpus)]
    if len(doc_ids) != docs_csr.shape[0] or (has_dense and dense_docs.shape[0] != len(doc_ids)):
        raise SystemExit(f"{vec}: {docs_csr.shape[0]} sparse / {None if dense_docs is None else dense_docs.shape[0]} dense vectors for {len(doc_ids)} documents")
    return data, doc_ids, sq_ids, dq_ids, docs_csr, q_csr, dense_docs, dense_q


def vectors_part(args, name: str) -> dict:
    """bm25 + sparse + dense from real pre-encoded vectors (scifact, or ``--vectors`` for another collection)."""
    import faiss

    from braid.data.vectors import SparseVectors
    from braid.retrieval.context import IndexContext

    faiss.omp_set_num_threads(1)
    loaded = load_scifact(args) if name == "scifact" else load_encoded(args, name)
    data, doc_ids, sq_ids, dq_ids, docs_csr, q_csr, dense_docs, dense_q = loaded
    docs_csr.sort_indices()
    q_csr.sort_indices()
    test = {line.split("\t")[0] for line in open(data / "qrels/test.tsv").read().splitlines()[1:] if line.strip()}
    qrows = [i for i, q in enumerate(sq_ids) if q in test][: N_QUERIES or args.queries]
    drow = {q: i for i, q in enumerate(dq_ids)}
    has_dense = dense_docs is not None
    q_csr = q_csr[qrows]
    dense_q = np.ascontiguousarray(dense_q[[drow[sq_ids[i]] for i in qrows]]) if has_dense else None
    queries_text = {json.loads(line)["_id"]: json.loads(line)["text"] for line in open(data / "queries.jsonl")}
    qtexts = [queries_text[sq_ids[i]] for i in qrows]
    nq = len(qrows)

    from braid.data.beir import BeirDataset
    from braid.data.corpus import iter_corpus

    rng = random.Random(args.seed)
    docs, row_of_text = [], {}
    corpus = BeirDataset(data).corpus_path
    for i, d in enumerate(iter_corpus(corpus)):
        assert d.doc_id == doc_ids[i], "vectors and corpus out of order"
        docs.append({"_id": d.doc_id, "title": d.title, "text": d.text, "metadata": tags(rng)})
        row_of_text.setdefault(d.contents, i)
    all_sparse = SparseVectors.from_scipy(docs_csr)
    vectors = {"sparse": all_sparse, "sparse_scipy": docs_csr, "row_of_text": row_of_text, "vocab_size": docs_csr.shape[1]}
    if has_dense:
        vectors["dense"] = dense_docs
    delete_ids = rng.sample([d["_id"] for d in docs], len(docs) // 10)
    shared = args.shared
    models = {"sparse_model": str(shared / "models/splade-tiny")}
    if has_dense:
        models["dense_model"] = str(shared / "models/all-MiniLM-L6-v2")
    retrievers = ("bm25", "sparse", "dense") if has_dense else ("bm25", "sparse")
    ids = {"doc_ids": doc_ids}

    work = Path(tempfile.mkdtemp(prefix="bench-live-speed-", dir=args.tmp))
    out: dict = {"dataset": name, "num_docs": len(docs), "queries": nq, **cpu_info()}
    try:
        timers = Timers()
        main = make_live(work, "live", docs, retrievers, models, vectors, rng, delete_ids, timers)
        out["add"] = main["figures"]
        if has_dense:
            hnsw = make_live(work, "hnsw", docs, ("dense",), {**models, "dense_index": {"kind": "hnsw"}}, vectors, rng, delete_ids, None)
            out["add_dense_hnsw"] = hnsw["figures"]
        else:
            out["dense"] = "not measured: no dense vectors in --vectors (minilm/complete.json missing)"
        print(json.dumps(out, indent=1), file=sys.stderr)

        ctx_l, ctx_c = IndexContext.open(main["live"]), IndexContext.open(main["compacted"])
        live_ids = [ctx_c.doc_ids[d] for d in np.flatnonzero(_live_mask(ctx_c))]
        assert sorted(live_ids) == sorted(ctx_l.doc_ids[d] for d in np.flatnonzero(_live_mask(ctx_l)))
        pos = {d: i for i, d in enumerate(ids["doc_ids"])}
        live_rows = np.array([pos[d] for d in live_ids])
        exact_sparse = Exact((docs_csr[live_rows].astype(np.float64) @ q_csr.T.astype(np.float64)).toarray(), live_ids)
        exact_dense = Exact(dense_docs[live_rows].astype(np.float64) @ dense_q.T.astype(np.float64), live_ids) if has_dense else None
        order = list(range(nq))

        # ---- sparse: segmented vs compacted vs pyseismic-lsr on the compacted set
        t0 = clock()
        sl, sc = ctx_l.component("sparse"), ctx_c.component("sparse")
        opened = clock() - t0
        sl.wait_joined()
        out["sparse_join"] = {"open_s": round(opened, 4), "join_s": None if sl.join_seconds is None else round(sl.join_seconds, 2),
                              "units_after": [type(u.index).__name__ for u in sl.units]}  # fmt: skip
        bq = [SparseVectors.from_scipy(q_csr[j]) for j in range(nq)]
        systems = {
            "segmented": (lambda j, p: hits_ids(sl.search(bq[j], k=10, query_cut=p[0], heap_factor=p[1], threads=1), ctx_l.doc_ids), exact_sparse.accuracy),
            "compacted": (lambda j, p: hits_ids(sc.search(bq[j], k=10, query_cut=p[0], heap_factor=p[1], threads=1), ctx_c.doc_ids), exact_sparse.accuracy),
        }  # fmt: skip
        if len(sl.units) != len(sl.segments) and out["sparse_join"]["join_s"] is not None:
            # the generation as it opens, before the background join (segments.SPARSE_JOIN "off")
            c0, s0 = _as_it_opens(main["live"], "sparse", "SPARSE_JOIN")
            out["sparse_join"]["units_before"] = [type(u.index).__name__ for u in s0.units]
            systems["segmented_before_join"] = (lambda j, p: hits_ids(s0.search(bq[j], k=10, query_cut=p[0], heap_factor=p[1], threads=1), c0.doc_ids),
                                                exact_sparse.accuracy)  # fmt: skip
        seis = _seismic(sc, docs_csr[live_rows], live_ids, q_csr)
        if seis is not None:
            run_s, params = seis
            systems["pyseismic-lsr"] = (run_s, exact_sparse.accuracy)
            out["pyseismic_params"] = params
        kinds = [type(s).__name__ for s in sl.segments]
        res = sweep_and_time(systems, SPARSE_GRID, order)
        res["layout"] = {"segments": len(sl.segments), "kinds": kinds, "segment_docs": [int(s.num_docs) for s in sl.segments],
                         "deleted": int(ctx_l.deleted.sum()) if ctx_l.deleted is not None else 0}  # fmt: skip
        res["ratio_segmented_to_compacted"] = round(res["segmented"]["median_us"] / res["compacted"]["median_us"], 3)
        if "segmented_before_join" in res:
            res["ratio_before_join_to_compacted"] = round(res["segmented_before_join"]["median_us"] / res["compacted"]["median_us"], 3)
        if "pyseismic-lsr" in res:
            res["ratio_compacted_to_pyseismic"] = round(res["compacted"]["median_us"] / res["pyseismic-lsr"]["median_us"], 3)
            res["ratio_segmented_to_pyseismic"] = round(res["segmented"]["median_us"] / res["pyseismic-lsr"]["median_us"], 3)
        out["sparse_latency"] = res
        print(json.dumps(res, indent=1), file=sys.stderr)

        if has_dense:
            # ---- dense flat (the default) and HNSW
            dl, dc = ctx_l.component("dense"), ctx_c.component("dense")
            flat = {
                "segmented": (lambda j, p: hits_ids(dl.search(dense_q[j : j + 1], 10, threads=1), ctx_l.doc_ids), exact_dense.accuracy),
                "compacted": (lambda j, p: hits_ids(dc.search(dense_q[j : j + 1], 10, threads=1), ctx_c.doc_ids), exact_dense.accuracy),
            }
            res = sweep_and_time(flat, [None], order)
            res["ratio_segmented_to_compacted"] = round(res["segmented"]["median_us"] / res["compacted"]["median_us"], 3)
            out["dense_flat_latency"] = res
            # HNSW: the generation as it opens (its 9 small segments scanned exactly beside the base graph,
            # segments.HNSW_ABSORB "off") and once the background thread has inserted them into a copy of the
            # base graph (the default; searches are served meanwhile by the former)
            hl, hc = IndexContext.open(hnsw["live"]), IndexContext.open(hnsw["compacted"])
            t0 = clock()
            hsl, hsc = hl.component("dense"), hc.component("dense")
            opened = clock() - t0
            hsl.wait_graph()
            out["dense_hnsw_insertion"] = {"open_s": round(opened, 4), "insert_s": None if hsl.graph_seconds is None else round(hsl.graph_seconds, 3),
                                           "units_after": [u.index.config.kind for u in hsl.units]}  # fmt: skip
            h0, hs0 = _as_it_opens(hnsw["live"], "dense", "HNSW_ABSORB")
            out["dense_hnsw_insertion"]["units_before"] = [u.index.config.kind for u in hs0.units]
            hn = {
                "segmented": (lambda j, p: hits_ids(hsl.search(dense_q[j : j + 1], 10, ef_search=p, threads=1), hl.doc_ids), exact_dense.accuracy),
                "segmented_before_insertion": (lambda j, p: hits_ids(hs0.search(dense_q[j : j + 1], 10, ef_search=p, threads=1), h0.doc_ids), exact_dense.accuracy),
                "compacted": (lambda j, p: hits_ids(hsc.search(dense_q[j : j + 1], 10, ef_search=p, threads=1), hc.doc_ids), exact_dense.accuracy),
            }
            res = sweep_and_time(hn, list(EF_GRID), order)
            res["ratio_segmented_to_compacted"] = round(res["segmented"]["median_us"] / res["compacted"]["median_us"], 3)
            res["ratio_before_insertion_to_compacted"] = round(res["segmented_before_insertion"]["median_us"] / res["compacted"]["median_us"], 3)
            out["dense_hnsw_latency"] = res
            print(json.dumps(out["dense_flat_latency"]), json.dumps(res), file=sys.stderr)

        # ---- filtered search on the segmented index
        out["filtered"] = {}
        qc, hf = out["sparse_latency"]["segmented"]["setting"]
        ef = out["dense_hnsw_latency"]["segmented"]["setting"] if has_dense else None
        for field in ("p1", "p10", "p50"):
            mask = ctx_l.filter_mask({"field": field, "eq": True})
            allow_live = np.array([mask[ctx_l.docno(d)] for d in live_ids])
            es = Exact(exact_sparse.scores, live_ids, allow_live)
            ed = Exact(exact_dense.scores, live_ids, allow_live) if has_dense else None
            row = {"selectivity_of_live": round(float(allow_live.mean()), 4), "matching_live_docs": int(allow_live.sum())}
            cases = {
                "sparse": (lambda j: sl.search(bq[j], k=10, query_cut=qc, heap_factor=hf, threads=1, allow=mask), es),
                "sparse_exact": (lambda j: sl.search(bq[j], k=10, exact=True, threads=1, allow=mask), es),
                "sparse_unfiltered": (lambda j: sl.search(bq[j], k=10, query_cut=qc, heap_factor=hf, threads=1), exact_sparse),
            }  # fmt: skip
            if has_dense:
                cases["dense_flat"] = (lambda j: dl.search(dense_q[j : j + 1], 10, threads=1, allow=mask), ed)
                cases["dense_flat_unfiltered"] = (lambda j: dl.search(dense_q[j : j + 1], 10, threads=1), exact_dense)
                hmask = hl.filter_mask({"field": field, "eq": True})
                cases["dense_hnsw"] = (lambda j, m=hmask: hsl.search(dense_q[j : j + 1], 10, ef_search=ef, threads=1, allow=m), ed)
            for name, (run, ref) in cases.items():
                ids_of = hl.doc_ids if name.startswith("dense_hnsw") else ctx_l.doc_ids
                lat, acc, same = [], 0.0, 0
                for j in order:
                    t0 = clock()
                    h = run(j)
                    lat.append(clock() - t0)
                    got = hits_ids(h, ids_of)
                    acc += ref.accuracy(j, got)
                    same += {ref.row_of[d] for d in got} == ref.top10[j]
                row[name] = {"median_us": round(float(np.median(lat)) * 1e6, 1), "accuracy_at_10": round(acc / nq, 4),
                             "identical_top10_fraction": round(same / nq, 4)}  # fmt: skip
            out["filtered"][field] = row
        print(json.dumps(out["filtered"], indent=1), file=sys.stderr)

        # ---- delete-to-invisible (sparse, dense, bm25), through a Searcher as braid serve uses it
        out["delete_to_invisible"] = _delete_to_invisible(main["live"], qtexts[:5], work, retrievers)

        # ---- a real braid add: the share of its wall time that is not encoding
        # on the compacted copy (one segment: no merge is due) and on the 10-segment index, where
        # this add makes the tenth small segment and the default tiered policy merges them in the commit
        out["braid_add_real"] = _real_add(main["compacted"], docs, work, n=args.real_add_docs, tag="compacted")
        out["braid_add_real_with_merge"] = _real_add(main["live"], docs, work, n=args.real_add_docs, tag="live")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["load_average_end"] = round(os.getloadavg()[0], 2)
    return out


def _as_it_opens(index_dir: Path, component: str, switch: str):
    """The index's context and ``component`` with ``braid.index.segments.<switch>`` "off": the generation
    as it opens, before its background join / graph insertion."""
    from braid.index import segments as seg_mod
    from braid.retrieval.context import IndexContext

    before = getattr(seg_mod, switch)
    setattr(seg_mod, switch, "off")
    try:
        ctx = IndexContext.open(index_dir)
        return ctx, ctx.component(component)
    finally:
        setattr(seg_mod, switch, before)


def _live_mask(ctx) -> np.ndarray:
    live = np.zeros(ctx.num_docnos, bool)
    for _, docnos in ctx.segment_list():
        live[docnos] = True
    if ctx.deleted is not None:
        live &= ~ctx.deleted
    return live


def _seismic(compacted_sparse, live_csr, live_ids, q_csr):
    """pyseismic-lsr over the live documents with the compacted index's resolved build parameters."""
    try:
        import seismic
    except ImportError:
        return None
    (c,) = [s.config for s in compacted_sparse.segments]
    params = dict(n_postings=c.n_postings, centroid_fraction=c.centroid_fraction, min_cluster_size=c.min_cluster_size,
                  summary_energy=c.summary_energy, max_fraction=c.max_fraction, doc_cut=c.doc_cut)  # fmt: skip
    live_csr = live_csr.tocsr()
    live_csr.sort_indices()
    dataset = seismic.SeismicDataset(dim=live_csr.shape[1])
    dataset.add_documents_by_id(list(live_ids), live_csr.indices.astype(np.int64), live_csr.data.astype(np.float32), live_csr.indptr.astype(np.int64))
    # pyseismic-lsr logs its build on fd 1: keep stdout clean
    saved = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    try:
        index = seismic.SeismicIndex.build_from_dataset(dataset, num_threads=1, **params)
    finally:
        os.dup2(saved, 1)
    st = seismic.get_seismic_string()
    sq = []
    for j in range(q_csr.shape[0]):
        a, b = q_csr.indptr[j], q_csr.indptr[j + 1]
        sq.append((str(j), np.array([str(t) for t in q_csr.indices[a:b]], dtype=st), np.ascontiguousarray(q_csr.data[a:b], dtype=np.float32)))

    def run(j, p):
        return [r[2] for r in index.search(sq[j][0], sq[j][1], sq[j][2], k=10, query_cut=p[0], heap_factor=p[1])]

    return run, params


def _delete_to_invisible(live_dir: Path, qtexts: list[str], work: Path, retrievers=("bm25", "sparse", "dense")) -> dict:
    from braid.retrieval.live import Index
    from braid.retrieval.searcher import Searcher

    copy = work / "d2i"
    shutil.copytree(live_dir, copy, symlinks=True)
    s = Searcher(copy)
    index = Index(copy, log=quiet)
    out = {}
    for name in retrievers:
        rows = []
        for q in qtexts:
            s.search(q, k=10, retriever=name)  # models loaded, caches warm
            victim = s.search(q, k=10, retriever=name)[0]["id"]
            t0 = clock()
            index.delete([victim])
            t1 = clock()
            s.maybe_reload()
            t2 = clock()
            after = s.search(q, k=10, retriever=name)
            t3 = clock()
            rows.append({"commit": t1 - t0, "reload": t2 - t1, "search": t3 - t2, "gone": victim not in [h["id"] for h in after]})
        out[name] = {k: round(float(np.median([r[k] for r in rows])) * 1000, 1) for k in ("commit", "reload", "search")}
        out[name] = {f"{k}_ms_median": v for k, v in out[name].items()}
        out[name]["invisible_on_next_search"] = f"{sum(r['gone'] for r in rows)}/{len(rows)}"
    return out


def _subprocess_add(index_dir: Path, new: list[dict], corpus: Path) -> tuple[float, dict]:
    """One real ``braid add`` of the records ``new`` (written to ``corpus``) as a user runs it: (process wall s, its JSON)."""
    corpus.write_text("".join(json.dumps(d) + "\n" for d in new))
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent), "HF_HUB_OFFLINE": "1"}
    for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        env.pop(v, None)  # encoding uses every core, as a user's braid add would
    t = clock()
    proc = subprocess.run([sys.executable, "-m", "braid.cli.main", "add", str(index_dir), str(corpus), "--json", "-q"],
                          env=env, capture_output=True, text=True)  # fmt: skip
    wall = clock() - t
    if proc.returncode != 0:
        raise RuntimeError(f"braid add failed: {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def _add_row(wall: float, r: dict) -> dict:
    return {"merged": r["merged"], "segments_after": r["segments"], "process_wall_seconds": round(wall, 2),
            "commit_seconds": r["seconds"], "encode_seconds": r["encode_seconds"],
            "not_encoding_share_of_process_wall": round((wall - r["encode_seconds"]) / wall, 4),
            "not_encoding_share_of_commit": round((r["seconds"] - r["encode_seconds"]) / r["seconds"], 4)}  # fmt: skip


def _real_add(live_dir: Path, docs: list[dict], work: Path, n: int, tag: str) -> dict:
    copy = work / f"real-add-{tag}"
    shutil.copytree(live_dir, copy, symlinks=True)
    rng = random.Random(5)
    new = [{**d, "_id": f"new-{d['_id']}"} for d in rng.sample(docs, n)]
    try:
        wall, r = _subprocess_add(copy, new, work / f"real-add-{tag}.jsonl")
    except RuntimeError as exc:
        return {"error": str(exc)}
    return {"docs": n, "segments_before": "1" if tag == "compacted" else "10", **_add_row(wall, r),
            "note": "encode_seconds include loading the two models; process wall also counts Python start-up and imports"}  # fmt: skip


def add_sequence_part(args) -> dict:
    """``--adds`` real ``braid add`` calls of ``--real-add-docs`` new documents each, one after another on a copy of
    ``--index`` under the merge policy it records: the share of ``braid add`` time that is not encoding per call
    and over the whole sequence (where the tiered policy's merges are paid once per tier, not by every add)."""
    from braid.data.beir import BeirDataset
    from braid.data.corpus import iter_corpus

    ds = args.shared / "data" / args.collection
    corpus = BeirDataset(ds).corpus_path
    docs = [{"_id": d.doc_id, "title": d.title, "text": d.text} for d in iter_corpus(corpus)]
    need = args.adds * args.real_add_docs
    if need > len(docs):
        raise SystemExit(f"--adds x --real-add-docs = {need} is more than the {len(docs)} documents of {args.collection}")
    new = [{**d, "_id": f"new-{d['_id']}"} for d in random.Random(args.seed).sample(docs, need)]
    work = Path(tempfile.mkdtemp(prefix="bench-add-seq-", dir=args.tmp))
    out: dict = {"collection": args.collection, "index": str(args.index), "adds": args.adds, "docs_per_add": args.real_add_docs, **cpu_info()}
    try:
        copy = work / "index"
        shutil.copytree(args.index, copy, symlinks=True)
        out["merge_policy"] = json.loads((copy / "manifest.json").read_text()).get("live", {}).get("merge_policy", "default (no live section yet)")
        rows = []
        for i in range(args.adds):
            wall, r = _subprocess_add(copy, new[i * args.real_add_docs:(i + 1) * args.real_add_docs], work / f"add-{i}.jsonl")
            rows.append(_add_row(wall, r))
            print(json.dumps(rows[-1]), file=sys.stderr)
        out["per_add"] = rows
        tot = {k: sum(r[k] for r in rows) for k in ("process_wall_seconds", "commit_seconds", "encode_seconds")}
        out["sequence"] = {**{k: round(v, 2) for k, v in tot.items()}, "adds_that_merged": sum(1 for r in rows if r["merged"]),
                           "not_encoding_share_of_commit": round((tot["commit_seconds"] - tot["encode_seconds"]) / tot["commit_seconds"], 4),
                           "not_encoding_share_of_process_wall": round((tot["process_wall_seconds"] - tot["encode_seconds"]) / tot["process_wall_seconds"], 4),
                           "worst_add_share_of_commit": max(r["not_encoding_share_of_commit"] for r in rows)}  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["load_average_end"] = round(os.getloadavg()[0], 2)
    return out


# --------------------------------------------------------------------------------------------------
# BM25 only (the dictionary set, and scifact for comparison)
# --------------------------------------------------------------------------------------------------
def bm25_part(args, name: str, n_latency: int, n_exact: int) -> dict:
    from braid.data.beir import BeirDataset
    from braid.data.corpus import iter_corpus
    from braid.data.queries import read_queries
    from braid.retrieval.context import IndexContext

    ds = args.shared / "data" / name
    corpus = BeirDataset(ds).corpus_path
    rng = random.Random(args.seed)
    docs = [{"_id": d.doc_id, "title": d.title, "text": d.text, "metadata": tags(rng)} for d in iter_corpus(corpus)]
    queries = list(read_queries(ds / "queries.jsonl").values())
    queries = random.Random(1).sample(queries, min(N_QUERIES or n_latency, len(queries)))
    delete_ids = rng.sample([d["_id"] for d in docs], len(docs) // 10)
    work = Path(tempfile.mkdtemp(prefix="bench-live-bm25-", dir=args.tmp))
    out: dict = {"dataset": name, "num_docs": len(docs), "queries": len(queries), **cpu_info()}
    try:
        made = make_live(work, "bm25", docs, ("bm25",), {}, {}, rng, delete_ids, None)
        out["add"] = made["figures"]
        print(json.dumps(out, indent=1), file=sys.stderr)
        cl, cc = IndexContext.open(made["live"]), IndexContext.open(made["compacted"])
        bl, bc = cl.component("bm25"), cc.component("bm25")
        order = list(range(len(queries)))
        systems = {
            "segmented": (lambda j, p: hits_ids(bl.search([queries[j]], k=10, threads=1), cl.doc_ids), lambda j, ids: 1.0),
            "compacted": (lambda j, p: hits_ids(bc.search([queries[j]], k=10, threads=1), cc.doc_ids), lambda j, ids: 1.0),
        }
        res = sweep_and_time(systems, [None], order)
        for n in systems:
            res[n].pop("accuracy_at_10")
            res[n].pop("reached_0.95")
            res[n].pop("setting")
        res["ratio_segmented_to_compacted"] = round(res["segmented"]["median_us"] / res["compacted"]["median_us"], 3)
        res["note"] = "BM25 scores differ before compaction (deleted documents still count in tantivy's statistics), so no accuracy target"
        out["bm25_latency"] = res
        out["filtered"] = {}
        depth = min(20000, cl.num_docs)
        live = _live_mask(cl)
        ex = order[:n_exact]
        full = bl.search([queries[j] for j in ex], k=depth, threads=1)
        for field in ("p1", "p10", "p50"):
            mask = cl.filter_mask({"field": field, "eq": True})
            lat, same, undetermined = [], 0, 0
            for j in order:
                t0 = clock()
                h = bl.search([queries[j]], k=10, threads=1, allow=mask)
                lat.append(clock() - t0)
                if j < n_exact:
                    got = [int(d) for d in h.docnos[0] if d >= 0]
                    row = [int(d) for d in full.docnos[j] if d >= 0]
                    want = [d for d in row if mask[d]][:10]
                    if len(want) < 10 and len(row) == depth:
                        undetermined += 1
                    else:
                        same += got == want
            unfiltered = []
            for j in order:
                t0 = clock()
                bl.search([queries[j]], k=10, threads=1)
                unfiltered.append(clock() - t0)
            out["filtered"][field] = {"selectivity_of_live": round(float((mask & live).sum() / live.sum()), 4), "median_us": round(float(np.median(lat)) * 1e6, 1),
                                      "unfiltered_median_us": round(float(np.median(unfiltered)) * 1e6, 1),
                                      "identical_top10": f"{same}/{len(ex) - undetermined}", "undetermined": undetermined}  # fmt: skip
        print(json.dumps(out["filtered"], indent=1), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["load_average_end"] = round(os.getloadavg()[0], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("scifact", "dictionary", "dictionary-vectors", "scifact-bm25", "add-sequence"), required=True)
    ap.add_argument("--index", type=Path, default=None, help="--part add-sequence: the index the adds go to (a copy of it).")
    ap.add_argument("--adds", type=int, default=10, help="--part add-sequence: how many braid add calls.")
    ap.add_argument("--vectors", type=Path, default=None, help="--part dictionary-vectors: the folder scripts/encode_collection.py wrote (splade/, minilm/).")
    ap.add_argument("--collection", default="dictionary", help="--part dictionary-vectors: the ../shared/data collection the vectors encode.")
    ap.add_argument("--queries", type=int, default=500, help="--part dictionary-vectors: test queries timed (scifact: all 300).")
    ap.add_argument("--shared", type=Path, default=ROOT / ".." / "shared")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--tmp", type=Path, default=None, help="Where the temporary indexes go (default: the system's).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real-add-docs", type=int, default=256)
    ap.add_argument("--smoke", action="store_true", help="A quick check of the script itself (few queries, a tiny grid): no figures.")
    args = ap.parse_args()
    if args.smoke:
        global SPARSE_GRID, EF_GRID, N_QUERIES
        SPARSE_GRID, EF_GRID, N_QUERIES = [(5, 0.8), (20, 1.0)], (16, 64), 20
    args.shared = args.shared.resolve()
    t = clock()
    if args.part == "scifact":
        out = vectors_part(args, "scifact")
    elif args.part == "dictionary-vectors":
        if args.vectors is None:
            ap.error("--part dictionary-vectors needs --vectors DIR")
        out = vectors_part(args, args.collection)
    elif args.part == "add-sequence":
        if args.index is None:
            ap.error("--part add-sequence needs --index DIR")
        out = add_sequence_part(args)
    elif args.part == "dictionary":
        out = bm25_part(args, "dictionary", 500, 200) if not args.smoke else bm25_part(args, "cisi", 20, 20)
    else:
        out = bm25_part(args, "scifact", 300, 300)
    out["command"] = "flock -x /work/bench.lock python scripts/bench_live_speed.py " + " ".join(sys.argv[1:])
    out["run_seconds"] = round(clock() - t, 1)
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
