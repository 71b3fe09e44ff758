"""The pipeline runner on its own: it sequences the library's fusion, PRF and rescoring functions.

Retrievers are stand-ins with fixed lists, so every expected value is worked out from the fusion,
PRF and interpolation formulas (or by calling the library function the runner must call).
"""

from __future__ import annotations

import numpy as np
import pytest

from braid.data.errors import OptionError
from braid.index.hits import Hits
from braid.retrieval import retrievers as registry
from braid.retrieval.pipeline.fusion import fuse
from braid.retrieval.pipeline.runner import PipelineRunner
from braid.retrieval.pipeline.spec import pipeline_from_dict

F32 = np.float32


def _hits(rows, k):
    return Hits.from_lists([(np.array(d, np.int64), np.array(s, F32)) for d, s in rows], k)


class FakeLexical:
    """bm25 stand-in: fixed list per query; records the knobs and term queries it was given."""

    name = "bm25"

    def __init__(self, rows):
        self.rows = rows
        self.calls = []

    def search(self, queries, k, threads=1, exclude=None, **knobs):
        self.calls.append(knobs)
        return _hits(self.rows, k)


class FakeDense:
    """dense stand-in over explicit document vectors: exact inner-product search, records query vectors."""

    name = "dense"

    def __init__(self, docs, queries):
        self.docs = np.asarray(docs, F32)
        self.q = {t: np.asarray(v, F32) for t, v in queries.items()}
        self.searched = []
        self.knobs = []

    def encode_queries(self, texts):
        return np.stack([self.q[t] for t in texts])

    def feedback_vectors(self, docnos):
        return self.docs[np.asarray(docnos)]

    def search_vectors(self, vectors, k, threads=1, exclude=None, **knobs):
        self.searched.append(np.array(vectors))
        self.knobs.append(knobs)
        scores = vectors @ self.docs.T
        return Hits.from_lists([(np.arange(len(self.docs)), s) for s in scores], k)

    def search(self, queries, k, threads=1, exclude=None, **knobs):
        return self.search_vectors(self.encode_queries(queries), k, threads, exclude, **knobs)

    def score_candidates(self, queries, docnos):
        q = self.encode_queries(queries)
        out = np.full(docnos.shape, -np.inf, F32)
        for i in range(docnos.shape[0]):
            valid = docnos[i] >= 0
            out[i, valid] = self.docs[docnos[i][valid]] @ q[i]
        return out


class FakeSearcher:
    def __init__(self, retrievers, components=None):
        self._r = retrievers
        self.components = components or {name: {"index": {"config": {"kind": "flat"}}} for name in retrievers}
        self.index_dir = "fake"

    def retriever(self, name):
        return self._r[name]

    def available_retrievers(self):
        return list(self._r)


DOCS = [[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]]
QUERIES = {"q": [1, 0.2]}


def _pipeline(**over):
    d = {"name": "t", "depth": 4, "retriever": [{"name": "bm25", "weight": 0.5}, {"name": "dense", "weight": 1.0}],
         "fusion": {"method": "linear", "norm": "minmax"}}
    d.update(over)
    return pipeline_from_dict(d)


def test_fusion_only_equals_fuse_of_the_first_lists():
    bm25 = FakeLexical([([1, 2, 0], [3.0, 2.0, 1.0])])
    dense = FakeDense(DOCS, QUERIES)
    runner = PipelineRunner(_pipeline(), FakeSearcher({"bm25": bm25, "dense": dense}))
    got = runner.search(["q"], k=3)
    want = fuse([_hits([([1, 2, 0], [3.0, 2.0, 1.0])], 4), dense.search(["q"], 4)], "linear", k=4, weights=[0.5, 1.0], norm="minmax")
    np.testing.assert_array_equal(got.docnos, want.docnos[:, :3])
    np.testing.assert_allclose(got.scores, want.scores[:, :3])
    # hand-worked: dense scores q.d = [1.0, 0.2, 0.76, 0.92] -> minmax [1, 0, .7, .9]; bm25 minmax d1 1, d2 .5, d0 0
    # fused: d0 .5*0 + 1 = 1.0, d1 .5 + 0 = .5, d2 .25 + .7 = .95, d3 (absent from bm25: min 0) + .9 = .9
    assert got.docnos[0].tolist() == [0, 2, 3]
    np.testing.assert_allclose(got.scores[0], [1.0, 0.95, 0.9], rtol=1e-6)


def test_single_list_is_returned_unnormalised():
    dense = FakeDense(DOCS, QUERIES)
    runner = PipelineRunner(_pipeline(retriever=[{"name": "dense"}]), FakeSearcher({"dense": dense}))
    got = runner.search(["q"], k=2)
    assert got.docnos[0].tolist() == [0, 3]
    np.testing.assert_allclose(got.scores[0], [1.0, 0.92], rtol=1e-6)


def test_prf_gets_the_fused_feedback_and_is_fused_again():
    # bm25 puts doc 1 first, so the fused feedback differs from dense's own ranking.
    bm25 = FakeLexical([([1, 3], [5.0, 1.0])])
    dense = FakeDense(DOCS, QUERIES)
    prf = {"method": "rocchio", "fb_docs": 2, "alpha": 0.4, "beta": 0.6}
    p = _pipeline(retriever=[{"name": "bm25", "weight": 1.0}, {"name": "dense", "weight": 1.0, "prf": prf}])
    runner = PipelineRunner(p, FakeSearcher({"bm25": bm25, "dense": dense}))
    got = runner.search(["q"], k=4)
    first_dense = _hits([(np.arange(4), np.array(DOCS, F32) @ np.array(QUERIES["q"], F32))], 4)
    first_bm25 = _hits([([1, 3], [5.0, 1.0])], 4)
    feedback = fuse([first_bm25, first_dense], "linear", k=2, weights=[1.0, 1.0], norm="minmax")
    # bm25 minmax: d1 1, d3 0 (others min 0); dense minmax [1, 0, .7, .9] -> d0 1, d1 1, d3 .9: top 2 = d0, d1 (tie by docno)
    assert feedback.docnos[0].tolist() == [0, 1]
    new_q = 0.4 * np.array(QUERIES["q"]) + 0.6 * np.mean([DOCS[0], DOCS[1]], axis=0)
    np.testing.assert_allclose(dense.searched[-1][0], new_q, rtol=1e-6)
    second_dense = _hits([(np.arange(4), np.array(DOCS, F32) @ new_q.astype(F32))], 4)
    want = fuse([first_bm25, second_dense], "linear", k=4, weights=[1.0, 1.0], norm="minmax")
    np.testing.assert_array_equal(got.docnos, want.docnos)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)


def test_rescore_interpolates_the_head_above_the_tail():
    bm25 = FakeLexical([([0, 1, 2, 3], [4.0, 3.0, 2.0, 1.0])])
    dense = FakeDense(DOCS, {"q": [0, 1]})  # dense scores [0, 1, .8, .6]
    p = _pipeline(retriever=[{"name": "bm25"}], rescore=[{"stage": "dense", "top_n": 3, "weight": 0.5}])
    searcher = FakeSearcher({"bm25": bm25, "dense": dense}, components={"bm25": {}, "dense": {}})
    got = runner_search = PipelineRunner(p, searcher).search(["q"], k=4)
    del runner_search
    # head d0,d1,d2: old minmax [1, .5, 0], new minmax of [0, 1, .8] = [0, 1, .8]; mixed .5/.75/.4 (+2);
    # tail d3 alone -> 0
    assert got.docnos[0].tolist() == [1, 0, 2, 3]
    np.testing.assert_allclose(got.scores[0], [2.75, 2.5, 2.4, 0.0], rtol=1e-6)


def test_knobs_go_to_the_retrievers_that_take_them():
    bm25 = FakeLexical([([0], [1.0])])
    dense = FakeDense(DOCS, QUERIES)
    comps = {"bm25": {}, "dense": {"index": {"config": {"kind": "ivf"}}}}
    runner = PipelineRunner(_pipeline(), FakeSearcher({"bm25": bm25, "dense": dense}, comps))
    runner.search(["q"], k=2, nprobe=3)
    assert bm25.calls[-1] == {} and dense.knobs[-1] == {"nprobe": 3}
    with pytest.raises(OptionError, match="query-cut"):
        runner.search(["q"], k=2, query_cut=5)  # neither bm25 nor dense takes it
    with pytest.raises(OptionError, match="nprobe"):
        runner.search(["q"], k=2, nprobe=0)
    flat = PipelineRunner(_pipeline(), FakeSearcher({"bm25": bm25, "dense": dense}))
    with pytest.raises(OptionError, match="IVF"):
        flat.search(["q"], k=2, nprobe=3)  # would be silently ignored by a flat index


# ---------------------------------------------------------------------------------- the registry
def test_registry_specs_are_consistent():
    for name, spec in registry.RETRIEVERS.items():
        assert spec.name == name
        from braid.retrieval.pipeline.prf import PRF_STAGES

        assert set(spec.prf.values()) <= set(PRF_STAGES), name
        if spec.stands_in_for is not None:
            assert spec.stands_in_for in registry.RETRIEVERS


def test_hybrid_members_and_default():
    assert registry.hybrid_members(["bm25", "sparse", "sparse-if", "dense", "pyserini"]) == ["bm25", "sparse", "dense"]
    assert registry.hybrid_members(["bm25", "sparse-if", "dense"]) == ["bm25", "sparse-if", "dense"]
    one = {"components": {"bm25": {}}}
    assert registry.default_name(one) == "bm25"
    both = {"components": {"bm25": {}, "dense": {}}}
    assert registry.default_name(both) == "hybrid"
    vectors_only = {"components": {"sparse": {"encoder": {"idf": True}}}}
    assert registry.available(vectors_only) == ["sparse-if"]


@pytest.mark.parametrize(
    "retriever, knobs, message",
    [
        ("sparse", {"heap_factor": 0}, "0 < heap_factor <= 2"),
        ("sparse", {"heap_factor": 2.5}, "0 < heap_factor <= 2"),
        ("sparse", {"heap_factor": float("nan")}, "heap_factor"),
        ("sparse", {"query_cut": 0}, "an integer >= 1"),
        ("sparse", {"query_cut": 2.5}, "an integer >= 1"),
        ("sparse", {"exact": "yes"}, "true or false"),
        ("bm25", {"query_cut": 3}, "not an option of the bm25 retriever"),
        ("dense", {"ef_search": True}, "an integer >= 1"),
    ],
)
def test_knob_validation_names_the_knob(retriever, knobs, message):
    with pytest.raises(OptionError) as err:
        registry.check_knobs(retriever, knobs)
    assert message in str(err.value)


def test_knobs_are_converted_and_range_is_inclusive():
    assert registry.check_knobs("sparse", {"heap_factor": 2, "query_cut": 3.0}) == {"heap_factor": 2.0, "query_cut": 3}
    assert registry.check_knobs("dense", {"ef_search": 64}, {"index": {"config": {"kind": "hnsw"}}}) == {"ef_search": 64}
    with pytest.raises(OptionError, match="HNSW"):
        registry.check_knobs("dense", {"ef_search": 64}, {"index": {"config": {"kind": "flat"}}})
