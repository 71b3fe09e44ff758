"""The fusion explanation: per list rank, normalised score and contribution, summing to the fused score.

Against the fusion kernel itself (every method and normalisation on seeded runs), a brute-force lookup of
ranks and scores, a hand-worked two-list example, and end to end on a small bm25 + sparse + dense index
(tiny random models) for the default pipeline ``hybrid``, RRF and a single retriever.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from braid.data.errors import OptionError
from braid.index.hits import Hits
from braid.retrieval.pipeline.fusion import FUSION_METHODS, explain, fuse, normalize_scores
from tests.test_fusion import random_runs

CASES = [
    ("linear", {"norm": "minmax"}),
    ("linear", {"norm": "zscore"}),
    ("linear", {"norm": "zscore", "missing": "zero"}),
    ("linear", {"norm": "none", "depth": 12}),
    ("combsum", {"norm": "max"}),
    ("combsum", {"norm": "sum"}),
    ("combmnz", {"norm": "minmax"}),
    ("combmnz", {"norm": "zscore", "missing": "min"}),
    ("combmax", {"norm": "minmax"}),
    ("rrf", {"rrf_k": 60}),
    ("rrf", {"rrf_k": 5, "depth": [10, 20, 30]}),
]


@pytest.mark.parametrize("method,params", CASES)
@pytest.mark.parametrize("seed", [0, 3])
def test_contributions_sum_to_the_fused_score_of_the_kernel(method, params, seed):
    runs = random_runs(seed, negative=seed == 3)
    weights = [0.75, 0.75, 1.0]
    fused = fuse(runs, method, k=25, weights=weights, **params)
    ex = explain(runs, method, fused.docnos, weights, **params)
    valid = fused.docnos >= 0
    np.testing.assert_allclose(ex.contributions.sum(axis=0)[valid], ex.fused[valid], rtol=0, atol=0)
    # the kernel returns float32: the decomposition equals it to float32 rounding
    np.testing.assert_allclose(ex.fused[valid], fused.scores[valid].astype(np.float64), rtol=2e-6, atol=2e-6)
    assert np.all(np.isnan(ex.fused[~valid]))


@pytest.mark.parametrize("seed", [1, 2])
def test_ranks_scores_and_normalised_scores_against_a_lookup(seed):
    runs = random_runs(seed)
    fused = fuse(runs, "linear", k=30, norm="zscore")
    ex = explain(runs, "linear", fused.docnos, norm="zscore")
    for r, h in enumerate(runs):
        normed = normalize_scores(h, "zscore")
        for q in range(h.n_queries):
            row = [int(d) for d in h.docnos[q] if d >= 0]
            for j, d in enumerate(fused.docnos[q]):
                if d < 0:
                    continue
                if d in row:
                    i = row.index(d)
                    assert ex.ranks[r, q, j] == i + 1
                    assert ex.scores[r, q, j] == pytest.approx(float(h.scores[q, i]))
                    assert ex.normalized[r, q, j] == pytest.approx(normed[q, i])
                else:
                    assert ex.ranks[r, q, j] == 0 and np.isnan(ex.scores[r, q, j]) and np.isnan(ex.normalized[r, q, j])
                    # absent: counted as the list's minimum normalised score (missing="min")
                    assert ex.contributions[r, q, j] == pytest.approx(np.nanmin(normed[q]))


def test_hand_worked_two_lists():
    # list A: d1 10, d2 6, d3 2 -> minmax 1, .5, 0 ; list B (weight .5): d2 4, d4 0 -> 1, 0
    a = Hits.from_lists([(np.array([1, 2, 3]), np.array([10.0, 6.0, 2.0]))], 3)
    b = Hits.from_lists([(np.array([2, 4]), np.array([4.0, 0.0]))], 3)
    fused = fuse([a, b], "linear", k=4, weights=[1.0, 0.5], norm="minmax")
    ex = explain([a, b], "linear", fused.docnos, [1.0, 0.5], norm="minmax")
    got = {int(d): (ex.contributions[0, 0, j], ex.contributions[1, 0, j], ex.fused[0, j]) for j, d in enumerate(fused.docnos[0])}
    assert got == {1: (1.0, 0.0, 1.0), 2: (0.5, 0.5, 1.0), 3: (0.0, 0.0, 0.0), 4: (0.0, 0.0, 0.0)}
    assert [int(x) for x in ex.ranks[:, 0, list(fused.docnos[0]).index(2)]] == [2, 1]
    rrf = explain([a, b], "rrf", np.array([[2, 4]]), rrf_k=1)
    np.testing.assert_allclose(rrf.contributions[:, 0, :], [[1 / 3, 0.0], [1 / 2, 1 / 3]])
    mnz = explain([a, b], "combmnz", np.array([[2]]), norm="minmax")
    assert mnz.fused[0, 0] == pytest.approx(2 * (0.5 + 1.0))


def test_explain_validates_like_fuse():
    a = random_runs(0, n_runs=1)[0]
    with pytest.raises(OptionError, match="method"):
        explain([a], "borda", a.docnos)
    with pytest.raises(OptionError, match="not an option of fusion method 'rrf'"):
        explain([a], "rrf", a.docnos, norm="minmax")
    with pytest.raises(OptionError, match="docnos"):
        explain([a], "linear", a.docnos[0])
    assert set(FUSION_METHODS) == {m for m, _ in CASES}


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def hybrid_index(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("faiss")
    from braid.retrieval.build.builder import BuildOptions, build_index
    from tests.test_sharded import make_tiny_bert, synthetic_corpus

    root = tmp_path_factory.mktemp("explain")
    data, queries = synthetic_corpus(root / "data", n_docs=60)
    options = BuildOptions(
        retrievers=("bm25", "sparse", "dense"), progress=False, sparse_model=str(make_tiny_bert(root / "splade", mlm=True)),
        dense_model=str(make_tiny_bert(root / "dense", mlm=False, seed=1)), max_length=48, chunk_size=64,
    )  # fmt: skip
    build_index(data, root / "index", options)
    return root / "index", queries


def test_default_pipeline_explanation_is_exact_and_matches_search(hybrid_index):
    from braid.retrieval.searcher import Searcher

    index, queries = hybrid_index
    searcher = Searcher(index)
    for query in list(queries.values())[:4]:
        got = searcher.explain(query, k=10, fields=True)
        plain = searcher.search(query, k=10)
        assert got["retriever"] == "hybrid" and got["fusion"]["method"] == "linear" and got["fusion"]["norm"] == "zscore"
        assert [(h["id"], h["score"]) for h in got["hits"]] == [(h["id"], h["score"]) for h in plain]
        json.dumps(got, allow_nan=False)  # plain JSON: no NaN anywhere
        lists = {entry["name"]: entry for entry in got["lists"]}
        assert set(lists) == {"bm25", "sparse", "dense"}
        own = {name: searcher.search(query, k=1000, retriever=name) for name in lists}  # at the pipeline's depth
        for name, entry in lists.items():  # each list is that retriever's own ranking
            assert [(h["id"], h["score"]) for h in entry["hits"]] == [(h["id"], h["score"]) for h in own[name][:10]], name
        for hit in got["hits"]:
            parts = hit["explain"]["retrievers"]
            total = sum(p["contribution"] for p in parts)
            assert total == pytest.approx(hit["explain"]["fused_score"], abs=1e-12)
            assert hit["explain"]["fused_score"] == pytest.approx(hit["score"], rel=2e-6, abs=2e-6)
            assert sum(p["share"] for p in parts) == pytest.approx(1.0)
            for p in parts:
                ranks = [h["id"] for h in own[p["name"]]]
                if p["rank"] is None:
                    assert hit["id"] not in ranks and p["fill"] is not None
                    assert p["contribution"] == pytest.approx(p["weight"] * p["fill"])
                else:
                    assert ranks.index(hit["id"]) + 1 == p["rank"]
                    assert p["contribution"] == pytest.approx(p["weight"] * p["normalized"])


def test_rrf_and_single_retriever_explanations(hybrid_index):
    from braid.retrieval.searcher import Searcher

    index, queries = hybrid_index
    searcher = Searcher(index)
    query = next(iter(queries.values()))
    got = searcher.explain(query, k=5, retriever="hybrid-rrf")
    for hit in got["hits"]:
        parts = hit["explain"]["retrievers"]
        assert sum(p["contribution"] for p in parts) == pytest.approx(hit["score"], rel=2e-6)
        for p in parts:
            assert p["contribution"] == (pytest.approx(1 / (60 + p["rank"])) if p["rank"] else 0.0)
    single = searcher.explain(query, k=5, retriever="bm25")
    assert single["fusion"]["method"] is None and [e["name"] for e in single["lists"]] == ["bm25"]
    for hit in single["hits"]:
        (part,) = hit["explain"]["retrievers"]
        assert part["rank"] == hit["rank"] and part["contribution"] == pytest.approx(hit["score"]) and part["share"] == pytest.approx(1.0)
    assert searcher.explain("   ", k=5)["hits"] == []
