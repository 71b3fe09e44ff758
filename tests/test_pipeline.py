"""Pipeline files: validation errors name the key and value; fusion pipelines run and record themselves."""

from __future__ import annotations

import pytest

from braid.data.errors import OptionError
from braid.retrieval.build.builder import BuildOptions, build_index
from braid.retrieval.pipeline.spec import pipeline_from_dict, read_pipeline
from braid.retrieval.searcher import Searcher


def _d(**over):
    d = {"name": "p", "retriever": [{"name": "bm25"}], "fusion": {"method": "linear", "norm": "minmax"}}
    d.update(over)
    return d


@pytest.mark.parametrize(
    "spec, where",
    [
        (_d(retriever=[{"name": "bm26"}]), "retriever[0].name"),
        (_d(retriever=[{"name": "bm25", "weight": "heavy"}]), "retriever[0].weight"),
        (_d(retriever=[{"name": "bm25", "weight": float("nan")}]), "retriever[0].weight"),
        (_d(retriever=[{"name": "bm25", "wieght": 1}]), "retriever[0]"),
        (_d(retriever=[]), "retriever"),
        (_d(fusion={"method": "borda"}), "fusion.method"),
        (_d(fusion={"method": "rrf", "rrf_k": -1}), "fusion.rrf_k"),
        (_d(rescore=[{"stage": "colbert"}]), "rescore[0].stage"),
        (_d(rescore=[{"stage": "dense", "weight": 2}]), "rescore[0].weight"),
        (_d(rescore=[{"stage": "cross-encoder"}]), "rescore[0].model"),
        (_d(retriever=[{"name": "bm25", "prf": {"method": "rocchio"}}]), "retriever[0].prf.method"),
        (_d(retriever=[{"name": "bm25", "prf": {"method": "rm3", "fb_docs": 0}}]), "prf.fb_docs"),
        (_d(extra=1), "extra"),
    ],
)
def test_bad_pipeline_names_the_key(spec, where):
    with pytest.raises(OptionError) as err:
        pipeline_from_dict(spec)
    assert where in str(err.value)


def test_toml_round_trip(tmp_path):
    p = pipeline_from_dict(
        {
            "name": "x",
            "depth": 500,
            "retriever": [
                {"name": "bm25", "weight": 0.5, "prf": {"method": "rm3", "fb_docs": 5}},
                {"name": "dense", "weight": 1.0},
            ],
            "fusion": {"method": "rrf", "rrf_k": 30},
            "rescore": [{"stage": "sparse", "top_n": 50, "weight": 0.25}],
        }
    )
    path = tmp_path / "x.toml"
    path.write_text(p.to_toml())
    again = read_pipeline(path)
    assert again.to_dict() == p.to_dict()
    assert again.components == {"bm25", "dense", "sparse"}
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(OptionError, match="not valid TOML"):
        read_pipeline(bad)


def test_bm25_pipeline_with_rm3_runs_and_is_recorded(toy_dataset, tmp_path):
    out = tmp_path / "idx"
    build_index(toy_dataset, out, BuildOptions(progress=False))
    searcher = Searcher(out)
    plain = searcher.batch_search(["cats purr"], k=3, retriever="bm25")
    path = tmp_path / "rm3.toml"
    path.write_text(
        'name = "rm3"\n[[retriever]]\nname = "bm25"\nprf = { method = "rm3", fb_docs = 2, fb_terms = 5, original_weight = 0.5 }\n'
    )
    res = searcher.batch_search(["cats purr"], k=3, retriever=str(path))
    assert res.retriever == "rm3"
    # feedback from d4/d1 (both about cats) keeps them on top; expansion can only add documents
    assert set(res.doc_ids[0][:2]) == set(plain.doc_ids[0][:2])
    with pytest.raises(OptionError, match="no 'dense' component"):
        searcher.batch_search(["x"], k=1, retriever="dense")


def test_exclude_self_drops_query_document(toy_dataset, tmp_path):
    out = tmp_path / "idx"
    build_index(toy_dataset, out, BuildOptions(progress=False))
    searcher = Searcher(out)
    kept = searcher.batch_search({"q2": "dogs bark"}, k=6, retriever="bm25")
    dropped = searcher.batch_search({"q2": "dogs bark"}, k=6, retriever="bm25", exclude_self=True)
    assert "q2" in kept.doc_ids[0] and "q2" not in dropped.doc_ids[0]
    assert dropped.doc_ids[0] == [d for d in kept.doc_ids[0] if d != "q2"]


def test_tune_refuses_report_split(toy_dataset, tmp_path):
    from braid.data.beir import BeirDataset
    from braid.retrieval.eval.tune import tune_pipeline

    out = tmp_path / "idx"
    build_index(toy_dataset, out, BuildOptions(progress=False))
    with pytest.raises(OptionError, match="would overfit"):
        tune_pipeline(Searcher(out), BeirDataset(toy_dataset), split="test", report_split="test")


def test_pipeline_depth_is_not_raised_by_k(toy_dataset, tmp_path):
    """A pipeline gives `depth` candidates per retriever whatever k is (under `braid eval`'s k = 1000 a depth-100
    pipeline stays depth 100); a step's own depth overrides the pipeline's."""
    out = tmp_path / "idx"
    build_index(toy_dataset, out, BuildOptions(progress=False))
    searcher = Searcher(out)
    query = "the large domesticated dogs and cats"
    plain = searcher.batch_search([query], k=6, retriever="bm25").doc_ids[0]
    assert len(plain) >= 4  # the query matches enough documents for the depths below to bind
    path = tmp_path / "d2.toml"
    path.write_text('name = "d2"\ndepth = 2\n[[retriever]]\nname = "bm25"\n[fusion]\nmethod = "linear"\nnorm = "none"\n')
    assert searcher.batch_search([query], k=6, retriever=str(path)).doc_ids[0] == plain[:2]
    assert searcher.batch_search([query], k=1, retriever=str(path)).doc_ids[0] == plain[:1]
    path.write_text('name = "d2"\ndepth = 2\n[[retriever]]\nname = "bm25"\ndepth = 3\n[fusion]\nmethod = "linear"\nnorm = "none"\n')
    assert searcher.batch_search([query], k=6, retriever=str(path)).doc_ids[0] == plain[:3]
