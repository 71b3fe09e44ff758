"""The live index against independent references: an index built from scratch on the live documents.

A hypothesis state machine runs random add / update / delete / compact / reopen sequences on a small
collection (tiny random BERTs, as test_sharded.py builds them, so encoding is real and fast) and
checks that every retriever in exact mode returns what a fresh build on the final live documents
returns. BM25 is the exception before compaction: tantivy keeps deleted documents in its statistics
(document frequencies, average length) until its segments merge, so only *which* documents can come
back is checked then; after ``compact`` its scores equal the fresh build's bit for bit, and so do
``sparse-if`` (IDF table recomputed) and the default hybrid pipeline.
Also here: the writer lock, orphan removal, filters against brute force, the masked kernels.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test  # noqa: E402

from braid.data.errors import DataError, OptionError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_sharded import WORDS, make_tiny_bert  # noqa: E402

CONTENT = [w for w in WORDS if w not in ("the", "a", "of", "and", "is", "on", "in")]
QUERIES = ["apple banana", "red fruit tree", "cell protein gene", "cancer study", "sweet cherry seed", "green leaf grows", "sour yellow"]
LANGS = ["en", "de", "fr"]


def make_doc(rng: random.Random, doc_id: str) -> dict:
    words = [rng.choice(CONTENT) for _ in range(rng.randint(3, 14))]
    return {"_id": doc_id, "title": rng.choice(CONTENT), "text": " ".join(words),
            "metadata": {"year": rng.randint(1990, 2024), "lang": rng.choice(LANGS), "date": f"20{rng.randint(10, 24)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"}}  # fmt: skip


def write_corpus(path: Path, docs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d) + "\n")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("live-models")
    return {"sparse": make_tiny_bert(root / "tiny-splade", mlm=True), "dense": make_tiny_bert(root / "tiny-dense", mlm=False, seed=1)}


def build_options(models, retrievers=("bm25", "sparse", "dense")):
    from braid.retrieval.build.builder import BuildOptions

    # batch_size 1: an encoding never depends on the other documents of its batch (padding), so the
    # live index and the fresh build hold bit-identical vectors
    return BuildOptions(retrievers=retrievers, progress=False, sparse_model=str(models["sparse"]), dense_model=str(models["dense"]),
                        max_length=48, chunk_size=64, batch_size=1)  # fmt: skip


def build(models, docs: list[dict], out: Path, retrievers=("bm25", "sparse", "dense")) -> Path:
    from braid.retrieval.build.builder import build_index

    corpus = write_corpus(out.parent / f"{out.name}.jsonl", docs)
    build_index(corpus, out, build_options(models, retrievers), log=lambda m: None)
    return out


def live_docs(index_dir: Path) -> list[dict]:
    """The live documents of an index in docno order, read back through its document store and metadata."""
    from braid.retrieval.context import IndexContext

    ctx = IndexContext.open(index_dir)
    live = np.zeros(ctx.num_docnos, bool)
    for _, docnos in ctx.segment_list():
        live[docnos] = True
    if ctx.deleted is not None:
        live &= ~ctx.deleted
    docnos = np.flatnonzero(live)
    rows = ctx.metadata.rows(docnos)
    out = []
    for stored, meta in zip(ctx.documents(docnos), rows):
        d = {"_id": stored["id"], "title": stored["title"], "text": stored["text"]}
        if meta:
            d["metadata"] = meta
        out.append(d)
    return out


def results(index_dir: Path, name: str, k: int = 8, **kw) -> list[list[tuple[str, float]]]:
    from braid.retrieval.searcher import Searcher

    s = Searcher(index_dir)
    knobs = {"exact": True} if name in ("sparse", "sparse-if") else {}
    res = s.batch_search(QUERIES, k=k, retriever=name, **knobs, **kw)
    return [[(d, float(sc)) for d, sc in zip(ids, res.hits.scores[i])] for i, ids in enumerate(res.doc_ids)]


def assert_same(got, want, what: str, rtol: float = 0.0) -> None:
    for qi, (g, w) in enumerate(zip(got, want)):
        assert [d for d, _ in g] == [d for d, _ in w], f"{what}, query {QUERIES[qi]!r}: {g} != {w}"
        if rtol == 0.0:
            assert [s for _, s in g] == [s for _, s in w], f"{what}, query {QUERIES[qi]!r}: scores {g} != {w}"
        else:
            np.testing.assert_allclose([s for _, s in g], [s for _, s in w], rtol=rtol, err_msg=what)


# --------------------------------------------------------------------------------------------------
# a worked sequence
# --------------------------------------------------------------------------------------------------
def test_add_update_delete_compact_equal_a_fresh_build(models, tmp_path):
    from braid.retrieval.live import Index
    from braid.retrieval.searcher import Searcher

    rng = random.Random(3)
    docs = [make_doc(rng, f"d{i}") for i in range(30)]
    index_dir = build(models, docs, tmp_path / "live")
    searcher = Searcher(index_dir)
    before = searcher.batch_search(QUERIES, k=5, retriever="sparse", exact=True).doc_ids
    index = Index(index_dir, batch_size=1, log=lambda m: None)
    r = index.add([make_doc(rng, f"n{i}") for i in range(5)] + [make_doc(rng, "d3")])  # d3: an update
    assert (r.generation, r.added, r.updated, r.num_docs) == (1, 5, 1, 35)
    # the searcher keeps its snapshot until it reloads
    assert searcher.batch_search(QUERIES, k=5, retriever="sparse", exact=True).doc_ids == before
    assert searcher.maybe_reload() and searcher.generation == 1 and searcher.num_docs == 35
    r = index.delete(["d1", "n2", "nope"])
    assert (r.deleted, r.not_found, r.num_docs) == (2, ("nope",), 33)
    assert searcher.maybe_reload()
    got = searcher.batch_search(QUERIES, k=40, retriever="bm25").doc_ids
    assert not any(d in ("d1", "n2") for row in got for d in row)
    ref = build(models, live_docs(index_dir), tmp_path / "fresh")
    for name in ("sparse", "dense"):
        assert_same(results(index_dir, name), results(ref, name), f"{name} before compaction")
    index.compact()
    for name in ("bm25", "sparse", "sparse-if", "dense", "hybrid"):
        assert_same(results(index_dir, name), results(ref, name), f"{name} after compaction")
    meta = json.loads((index_dir / "manifest.json").read_text())
    assert meta["generation"] == 3 and len(meta["live"]["segments"]) == 1 and meta["live"]["deleted"] is None


def test_bm25_statistics_include_deleted_documents_until_compaction(models, tmp_path):
    """Documented: tantivy counts deleted documents in document frequencies and the average length
    until it merges segments; compaction makes the scores those of the live documents alone."""
    from braid.retrieval.live import Index

    rng = random.Random(5)
    docs = [make_doc(rng, f"d{i}") for i in range(30)]
    docs += [{"_id": f"x{i}", "title": "apple", "text": "apple apple banana " * 5} for i in range(10)]
    index_dir = build(models, docs, tmp_path / "live", retrievers=("bm25",))
    index = Index(index_dir, log=lambda m: None)
    index.delete([f"x{i}" for i in range(10)])
    ref = build(models, live_docs(index_dir), tmp_path / "fresh", retrievers=("bm25",))
    got, want = results(index_dir, "bm25"), results(ref, "bm25")
    assert all(not d.startswith("x") for row in got for d, _ in row)
    assert got != want  # the deleted apple-heavy documents still lower apple's IDF
    index.compact()
    assert_same(results(index_dir, "bm25"), want, "bm25 after compaction")


# --------------------------------------------------------------------------------------------------
# the state machine
# --------------------------------------------------------------------------------------------------
class LiveIndexMachine(RuleBasedStateMachine):
    """Random operations on a live index, checked against a fresh build on the final live documents."""

    models: dict = {}
    root: Path = Path(".")

    @initialize(seed=st.integers(0, 10_000))
    def start(self, seed):
        from braid.retrieval.live import Index

        self.rng = random.Random(seed)
        self.dir = self.root / f"m{seed}-{time.monotonic_ns()}"
        self.expected = {f"d{i}": make_doc(self.rng, f"d{i}") for i in range(12)}
        build(self.models, list(self.expected.values()), self.dir / "live")
        # small tiers, so merges (flat and blocked segments) happen within a few steps
        self.index = Index(self.dir / "live", batch_size=1, log=lambda m: None,
                           merge_policy={"segments_per_tier": 3, "min_segment_docs": 4, "flat_max_docs": 6, "tier_factor": 2.0})  # fmt: skip
        self.counter = 0
        self.compacted = False

    def _new_id(self) -> str:
        self.counter += 1
        return f"n{self.counter}"

    @rule(n=st.integers(1, 8))
    def add(self, n):
        docs = [make_doc(self.rng, self._new_id()) for _ in range(n)]
        r = self.index.add(docs)
        for d in docs:
            self.expected[d["_id"]] = d
        assert r.num_docs == len(self.expected)
        assert r.segments == len(json.loads((self.dir / "live" / "manifest.json").read_text())["live"]["segments"])  # after any merge
        self.compacted = False

    @precondition(lambda self: len(self.expected) > 1)
    @rule(n=st.integers(1, 3))
    def update(self, n):
        ids = self.rng.sample(sorted(self.expected), min(n, len(self.expected)))
        docs = [make_doc(self.rng, i) for i in ids]
        r = self.index.add(docs)
        assert r.updated == len(ids)
        for d in docs:
            self.expected.pop(d["_id"])
            self.expected[d["_id"]] = d  # an update moves the document to the end (a new docno)
        self.compacted = False

    @precondition(lambda self: len(self.expected) > 3)
    @rule(n=st.integers(1, 4))
    def delete(self, n):
        ids = self.rng.sample(sorted(self.expected), min(n, len(self.expected) - 2))
        r = self.index.delete(ids + ["never-there"])
        assert r.deleted == len(ids) and r.not_found == ("never-there",)
        for i in ids:
            self.expected.pop(i)
        self.compacted = False

    @rule()
    def compact(self):
        self.index.compact()
        self.compacted = True

    @rule()
    def reopen(self):
        from braid.retrieval.live import Index

        self.index = Index(self.dir / "live", batch_size=1, log=lambda m: None)

    @invariant()
    def live_documents_are_the_expected_ones(self):
        if not hasattr(self, "index"):
            return
        got = live_docs(self.dir / "live")
        assert [d["_id"] for d in got] == list(self.expected)
        assert [(d["title"], d["text"], d.get("metadata")) for d in got] == [
            (e["title"], e["text"], e["metadata"]) for e in self.expected.values()
        ]

    def teardown(self):
        if not hasattr(self, "index"):
            return
        live = self.dir / "live"
        ref = build(self.models, list(self.expected.values()), self.dir / "fresh")
        for name in ("sparse", "dense"):
            assert_same(results(live, name), results(ref, name), name)
        flt = {"field": "year", "gte": 2005}
        assert_same(results(live, "sparse", filter=flt), results(ref, "sparse", filter=flt), "sparse filtered")
        if not self.compacted:
            self.index.compact()
        for name in ("bm25", "sparse-if", "hybrid"):
            assert_same(results(live, name), results(ref, name), f"{name} after compaction")


def test_state_machine(models, tmp_path):
    LiveIndexMachine.models = models
    LiveIndexMachine.root = tmp_path
    run_state_machine_as_test(LiveIndexMachine, settings=settings(
        max_examples=int(os.environ.get("BRAID_LIVE_EXAMPLES", "4")), stateful_step_count=6, deadline=None,
        suppress_health_check=list(HealthCheck), database=None,
        phases=[Phase.explicit, Phase.generate]))  # fmt: skip (no shrinking: each step re-encodes; a failure prints its steps)


# --------------------------------------------------------------------------------------------------
# filters
# --------------------------------------------------------------------------------------------------
FILTERS = [
    "year >= 2005",
    "lang = en",
    "lang in (de, fr) and year < 2010",
    "not lang = en or year > 2020",
    {"field": "date", "gte": "2015-01-01", "lt": "2020-06-30"},
    {"or": [{"field": "lang", "eq": "fr"}, {"not": {"field": "year", "lte": 2000}}]},
    "missing_field = 3",
]


@pytest.fixture(scope="module")
def filtered_index(models, tmp_path_factory):
    from braid.retrieval.live import Index

    root = tmp_path_factory.mktemp("filters")
    rng = random.Random(11)
    index_dir = build(models, [make_doc(rng, f"d{i}") for i in range(40)], root / "ix")
    index = Index(index_dir, batch_size=1, log=lambda m: None)
    index.add([make_doc(rng, f"n{i}") for i in range(10)])
    index.delete(["d2", "d7", "n3"])
    return index_dir


@pytest.mark.parametrize("flt", FILTERS, ids=str)
@pytest.mark.parametrize("name", ["bm25", "sparse", "dense"])
def test_filtered_top_k_is_the_top_k_of_the_matching_documents(filtered_index, name, flt):
    from braid.data.filters import parse_filter
    from braid.retrieval.searcher import Searcher

    s = Searcher(filtered_index)
    mask = s.context.filter_mask(flt)
    matching = {s.doc_ids[d] for d in np.flatnonzero(mask)}
    # brute force: the full ranking of the (unfiltered) index, restricted to the matching documents
    full = results(filtered_index, name, k=s.num_docs)
    want = [[(d, sc) for d, sc in row if d in matching][:5] for row in full]
    got = results(filtered_index, name, k=5, filter=parse_filter(flt))
    assert_same(got, want, f"{name} {flt}")


@pytest.mark.parametrize("max_fetch,factor,per_allowed", [(0, 2.0, 10), (8192, 2.0, 10**9), (8192, 0.1, 10**9), (8192, 2.0, 10)],
                         ids=["in-tantivy", "dropped", "fallback", "default-ratio"])  # fmt: skip
@pytest.mark.parametrize("flt", FILTERS, ids=str)
def test_bm25_filter_routes_agree(filtered_index, flt, max_fetch, factor, per_allowed, monkeypatch):
    """BM25 filters run unfiltered-then-dropped when the filter is wide enough, else inside tantivy; with
    the depth limit lowered, both routes (and the fallback from the first to the second when too few
    allowed documents come back) are taken, and each gives the brute-force top-k of the matches."""
    from braid.data.filters import parse_filter
    from braid.index import lexical
    from braid.retrieval.searcher import Searcher

    monkeypatch.setattr(lexical, "POSTFILTER_MAX_FETCH", max_fetch)
    monkeypatch.setattr(lexical, "POSTFILTER_FACTOR", factor)
    monkeypatch.setattr(lexical, "POSTFILTER_HITS_PER_ALLOWED", per_allowed)
    calls = []
    real = lexical.LexicalIndex._allow_query
    monkeypatch.setattr(lexical.LexicalIndex, "_allow_query", lambda self, allow: calls.append(1) or real(self, allow))
    s = Searcher(filtered_index)
    mask = s.context.filter_mask(flt)
    matching = {s.doc_ids[d] for d in np.flatnonzero(mask)}
    full = results(filtered_index, "bm25", k=s.num_docs)
    for k in (1, 5, 20):
        want = [[(d, sc) for d, sc in row if d in matching][:k] for row in full]
        assert_same(results(filtered_index, "bm25", k=k, filter=parse_filter(flt)), want, f"bm25 {flt} k={k}")
    if not matching:
        assert not calls  # nothing allowed: no search at all
    elif max_fetch == 0 or factor < 1:
        assert calls  # the docno-set clause inside tantivy (at once, or after too few allowed hits)
    elif per_allowed > 10**6:
        assert not calls  # a 50-document index: every filter is wide enough to drop hits instead


def test_filter_forms_agree_and_bad_filters_name_the_problem(filtered_index):
    from braid.data.filters import describe_filter, parse_filter
    from braid.retrieval.searcher import Searcher

    s = Searcher(filtered_index)
    a = s.context.filter_mask("year >= 2000 and (lang = en or lang = \"de\")")
    b = s.context.filter_mask({"and": [{"field": "year", "gte": 2000}, {"field": "lang", "in": ["en", "de"]}]})
    assert np.array_equal(a, b) and a.any() and not a.all()
    node = parse_filter("not (year < 2000 or lang != en)")
    assert parse_filter(describe_filter(node)) == node
    for bad, words in (("year >= ", "end of the filter"), ("lang ~ en", "an operator .* got .~"), ({"field": "x", "like": 1}, "an operator"),
                       ("year >= abc", "holds numbers"), ("date > 12", "holds dates")):  # fmt: skip
        with pytest.raises(OptionError, match=words):
            s.context.filter_mask(bad)


# --------------------------------------------------------------------------------------------------
# masked kernels, on hand-made vectors against brute force
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_postings", [None, 3])  # unpruned (blocked traversal) and pruned (forward scan)
def test_masked_blocked_search_is_exact_top_k_of_the_rest(n_postings):
    from braid.data.vectors import SparseVectors
    from braid.index.sparse import BlockedIndexConfig, BlockedSparseIndex, exact_search
    from braid.index.sparse.blocked import exclusion_bitset
    from braid.index.sparse.flat import FlatSparseIndex

    rng = np.random.default_rng(0)
    vocab = 50
    rows = [{int(t): float(w) for t, w in zip(rng.choice(vocab, 6, replace=False), rng.random(6) + 0.1)} for _ in range(300)]
    docs = SparseVectors.from_dicts(rows, vocab)
    queries = SparseVectors.from_dicts([{int(t): 1.0 for t in rng.choice(vocab, 4, replace=False)} for _ in range(12)], vocab)
    excluded = rng.random(300) < 0.4
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=n_postings))
    keep = np.flatnonzero(~excluded)
    ref = exact_search(docs.take(keep), queries, 10)
    for threads in (1, 2):
        hits = index.search(queries, k=10, exact=True, threads=threads, excluded=exclusion_bitset(excluded))
        flat = FlatSparseIndex.build(docs).search(queries, k=10, threads=threads, excluded=exclusion_bitset(excluded))
        for h in (hits, flat):
            valid = ref.docnos >= 0
            assert np.array_equal(h.docnos[valid], keep[ref.docnos[valid]])
            np.testing.assert_allclose(h.scores[valid], ref.scores[valid], rtol=2e-3)  # float16 forward weights
    # the unmasked search is unchanged by a masked one before it (the scratch is left clean)
    again = index.search(queries, k=10, exact=True, threads=1)
    assert np.array_equal(again.docnos, index.search(queries, k=10, exact=True, threads=1).docnos)
    assert np.array_equal(again.docnos, exact_search(docs, queries, 10).docnos)
    with pytest.raises(OptionError, match="bitset"):
        index.search(queries, k=3, excluded=np.zeros(3, np.uint64))


# --------------------------------------------------------------------------------------------------
# commits, the lock, orphans, bad input
# --------------------------------------------------------------------------------------------------
def test_second_writer_is_refused_and_a_stale_lock_taken_over(models, tmp_path):
    from braid.index.generations import IndexLockedError, writer_lock
    from braid.retrieval.live import Index

    index_dir = build(models, [make_doc(random.Random(1), f"d{i}") for i in range(8)], tmp_path / "ix", retrievers=("bm25",))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (index_dir / "write.lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "started": "then"}))
        with pytest.raises(IndexLockedError, match=f"pid {holder.pid}"):
            Index(index_dir, log=lambda m: None).delete(["d1"])
    finally:
        holder.kill()
        holder.wait()
    logs = []
    r = Index(index_dir, log=logs.append).delete(["d1"])  # the holder is dead now: its lock is stale
    assert r.deleted == 1 and any(f"stale writer lock of pid {holder.pid}" in m for m in logs)
    assert not (index_dir / "write.lock").exists()
    with writer_lock(index_dir, log=lambda m: None):
        with pytest.raises(IndexLockedError, match=f"pid {os.getpid()}"):
            Index(index_dir, log=lambda m: None).delete(["d2"])


def test_bad_records_name_the_file_and_line_and_change_nothing(models, tmp_path):
    from braid.retrieval.live import Index

    index_dir = build(models, [make_doc(random.Random(2), f"d{i}") for i in range(8)], tmp_path / "ix", retrievers=("bm25",))
    before = (index_dir / "manifest.json").read_text()
    corpus = write_corpus(tmp_path / "bad.jsonl", [{"_id": "a", "text": "fine"}, {"_id": "b", "text": 3}])
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2"):
        Index(index_dir, log=lambda m: None).add(corpus)
    with pytest.raises(DataError, match="line 2: field 'metadata' must be an object"):
        Index(index_dir, log=lambda m: None).add([{"_id": "a", "text": "x"}, {"_id": "b", "text": "y", "metadata": [1]}])
    assert (index_dir / "manifest.json").read_text() == before


def test_orphans_of_a_crashed_commit_are_removed_by_the_next(models, tmp_path):
    from braid.retrieval.live import Index

    index_dir = build(models, [make_doc(random.Random(4), f"d{i}") for i in range(8)], tmp_path / "ix", retrievers=("bm25",))
    index = Index(index_dir, log=lambda m: None)
    index.delete(["d1"])
    (index_dir / "segments" / "s000099").mkdir(parents=True)
    (index_dir / "bm25.g000099").mkdir()
    (index_dir / ".bm25.g000100.tmp-1").mkdir()
    with open(index_dir / "docids.txt", "a") as fh:
        fh.write("half-written\nhal")
    r = index.delete(["d2"])
    for gone in ("segments/s000099", "bm25.g000099", ".bm25.g000100.tmp-1"):
        assert not (index_dir / gone).exists(), gone
    assert r.num_docs == 6 and (index_dir / "docids.txt").read_text().splitlines()[-1] == "d7"
    index.delete(["d3"])
    index.delete(["d4"])
    kept = sorted(p.name for p in index_dir.iterdir() if p.name.startswith("bm25"))
    assert kept == ["bm25.g000003", "bm25.g000004"]  # the current generation and the one before


def test_cli_add_delete_compact_and_filtered_search(tmp_path):
    from click.testing import CliRunner

    from braid.cli.main import main
    from braid.index.generations import writer_lock

    rng = random.Random(6)
    corpus = write_corpus(tmp_path / "c.jsonl", [make_doc(rng, f"d{i}") for i in range(10)])
    runner = CliRunner()
    index_dir = tmp_path / "ix"
    assert runner.invoke(main, ["index", str(corpus), "--out", str(index_dir), "-q"]).exit_code == 0
    more = write_corpus(tmp_path / "more.jsonl", [{"_id": "z1", "title": "zebra", "text": "zebra stripes", "metadata": {"year": 2030}}])
    res = runner.invoke(main, ["add", str(index_dir), str(more), "--json", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["added"] == 1
    res = runner.invoke(main, ["search", str(index_dir), "zebra", "--filter", "year >= 2025", "--json"])
    assert res.exit_code == 0 and [h["id"] for h in json.loads(res.output)["hits"]] == ["z1"]
    res = runner.invoke(main, ["search", str(index_dir), "zebra", "--filter", "year >= 2031", "--json"])
    assert json.loads(res.output)["hits"] == []
    assert runner.invoke(main, ["search", str(index_dir), "zebra", "--filter", "year >>"]).exit_code == 2
    ids = tmp_path / "ids.txt"
    ids.write_text("z1\nd0\n\n")
    res = runner.invoke(main, ["delete", str(index_dir), "--ids", str(ids), "d9", "--json", "-q"])
    assert res.exit_code == 0 and json.loads(res.output)["deleted"] == 3
    assert runner.invoke(main, ["compact", str(index_dir), "-q"]).exit_code == 0
    with writer_lock(index_dir, log=lambda m: None):
        res = runner.invoke(main, ["delete", str(index_dir), "d1"])
        assert res.exit_code == 1 and f"pid {os.getpid()}" in res.output
    bad = write_corpus(tmp_path / "bad.jsonl", [{"_id": "q", "text": "ok"}, "{not json"])
    res = runner.invoke(main, ["add", str(index_dir), str(bad)])
    assert res.exit_code == 1 and "bad.jsonl, line 2" in res.output
