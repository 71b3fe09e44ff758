"""The Milvus backend against milvus-lite running embedded (a local .db file): load, search, hybrid rankers.

References are independent of Milvus: Braid's exact search over the same index, and hand-written RRF
and weighted fusion of the two exact lists.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
torch = pytest.importorskip("torch")
torch.set_num_threads(1)

_spec = importlib.util.spec_from_file_location("_braid_sharded_helpers_m", Path(__file__).with_name("test_sharded.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from braid.retrieval.build.builder import BuildOptions, build_index
    from braid.retrieval.scale.milvus import MilvusLoadConfig, load_index

    root = tmp_path_factory.mktemp("milvus")
    models = {"sparse": _helpers.make_tiny_bert(root / "tiny-splade", mlm=True), "dense": _helpers.make_tiny_bert(root / "tiny-dense", mlm=False, seed=1)}
    data, queries = _helpers.synthetic_corpus(root / "data", n_docs=80)
    options = BuildOptions(
        retrievers=("bm25", "sparse", "dense"), progress=False, sparse_model=str(models["sparse"]),
        dense_model=str(models["dense"]), max_length=48, chunk_size=64,
    )  # fmt: skip
    build_index(data, root / "index", options)
    uri = str(root / "milvus" / "braid.db")
    info = load_index(root / "index", uri, MilvusLoadConfig(collection="toy", batch_size=30), log=lambda m: None)
    return {"root": root, "data": data, "queries": queries, "index": root / "index", "uri": uri, "info": info}


@pytest.fixture(scope="module")
def searchers(setup):
    from braid.retrieval.scale.milvus import MilvusSearcher
    from braid.retrieval.searcher import Searcher

    return Searcher(setup["index"]), MilvusSearcher(setup["uri"], "toy")


def test_load_writes_every_document_with_its_text(setup):
    from pymilvus import MilvusClient

    assert setup["info"]["num_docs"] == 80 and set(setup["info"]["fields"]) == {"docno", "doc_id", "text", "metadata", "sparse", "dense"}
    client = MilvusClient(setup["uri"])
    rows = client.query("toy", filter="docno in [0, 41, 79]", output_fields=["docno", "doc_id", "text"])
    corpus = [json.loads(line) for line in (setup["data"] / "corpus.jsonl").read_text().splitlines()]
    for r in rows:
        d = corpus[r["docno"]]
        assert r["doc_id"] == d["_id"] and r["text"] == f"{d['title']} {d['text']}"


@pytest.mark.parametrize("retriever", ["sparse", "dense"])
def test_single_field_search_equals_braid_exact_search(searchers, setup, retriever):
    local, milvus = searchers
    knobs = {"exact": True} if retriever == "sparse" else {}
    for exclude_self in (False, True):
        a = local.batch_search(setup["queries"], k=10, retriever=retriever, exclude_self=exclude_self, **knobs)
        b = milvus.batch_search(setup["queries"], k=10, retriever=retriever, exclude_self=exclude_self)
        assert np.array_equal(a.hits.docnos, b.hits.docnos)
        assert np.allclose(a.hits.scores, b.hits.scores, rtol=1e-5, atol=1e-6)
        assert a.doc_ids == b.doc_ids


def _exact_lists(local, queries, depth):
    from braid.retrieval.retrievers.sparse import SparseRetriever  # noqa: F401  (the retrievers of the local index)

    s = local.batch_search(queries, k=depth, retriever="sparse", exact=True).hits
    d = local.batch_search(queries, k=depth, retriever="dense").hits
    return s, d


def test_hybrid_rrf_equals_reciprocal_rank_fusion_of_the_exact_lists(searchers, setup):
    local, milvus = searchers
    depth, k, rrf_k = 20, 8, 60
    s, d = _exact_lists(local, setup["queries"], depth)
    b = milvus.batch_search(setup["queries"], k=k, retriever="hybrid-rrf", depth=depth, rrf_k=rrf_k)
    for i in range(s.n_queries):
        fused: dict[int, float] = {}
        for lst in (s, d):
            docnos, _ = lst.row(i)
            for rank, doc in enumerate(docnos.tolist(), start=1):
                fused[doc] = fused.get(doc, 0.0) + 1.0 / (rrf_k + rank)
        docs, scores = b.hits.row(i)
        assert np.allclose(scores, [fused[x] for x in docs.tolist()], rtol=1e-5)
        # Milvus keeps the k best fused scores (ties at the cut may keep other members of the tie)
        kth = sorted(fused.values(), reverse=True)[k - 1]
        assert {x for x, v in fused.items() if v > kth + 1e-9} <= set(docs.tolist())


@pytest.mark.parametrize("norm_score", [False, True])
def test_hybrid_weighted_equals_weighted_sum_of_the_exact_lists(searchers, setup, norm_score):
    local, milvus = searchers
    depth, k, w = 20, 8, (0.3, 0.7)
    s, d = _exact_lists(local, setup["queries"], depth)
    b = milvus.batch_search(setup["queries"], k=k, retriever="hybrid-weighted", depth=depth, weights=w, norm_score=norm_score)
    # Milvus's normalisation of inner-product scores: 0.5 + arctan(score) / pi
    norm = (lambda x: 0.5 + math.atan(x) / math.pi) if norm_score else (lambda x: x)
    for i in range(s.n_queries):
        fused: dict[int, float] = {}
        for weight, lst in zip(w, (s, d)):
            for doc, score in zip(*[x.tolist() for x in lst.row(i)]):
                fused[doc] = fused.get(doc, 0.0) + weight * norm(score)
        docs, scores = b.hits.row(i)
        assert np.allclose(scores, [fused[x] for x in docs.tolist()], rtol=1e-5, atol=1e-6)
        kth = sorted(fused.values(), reverse=True)[k - 1]
        assert {x for x, v in fused.items() if v > kth + 1e-5} <= set(docs.tolist())


def test_braid_evaluation_works_on_milvus_results(searchers, setup):
    from braid.data.beir import BeirDataset
    from braid.retrieval.eval.evaluate import evaluate

    local, milvus = searchers
    ds = BeirDataset(setup["data"])
    qrels = ds.qrels("test")
    queries = ds.queries("test")
    a = local.batch_search(queries, k=20, retriever="dense", exclude_self=True)
    b = milvus.batch_search(queries, k=20, retriever="dense", exclude_self=True)
    ma, _ = evaluate(a.to_run(), qrels, ["ndcg@10", "recall@20"])
    mb, _ = evaluate(b.to_run(), qrels, ["ndcg@10", "recall@20"])
    assert mb == pytest.approx(ma, abs=1e-9)


def test_cli_load_search_eval(setup, tmp_path):
    from click.testing import CliRunner

    from braid.cli.scale import milvus_group

    uri = str(tmp_path / "cli.db")
    runner = CliRunner()
    res = runner.invoke(milvus_group, ["load", str(setup["index"]), "--milvus-uri", uri, "--collection", "cli", "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(milvus_group, ["load", str(setup["index"]), "--milvus-uri", uri, "--collection", "cli", "--quiet"])
    assert res.exit_code != 0 and "--overwrite" in res.output
    res = runner.invoke(milvus_group, ["search", "red apple tree", "--milvus-uri", uri, "--collection", "cli", "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)["hits"]
    assert len(hits) == 3 and hits[0]["rank"] == 1
    res = runner.invoke(milvus_group, ["eval", str(setup["data"]), "--milvus-uri", uri, "--collection", "cli", "-k", "20", "--retriever", "hybrid-rrf", "--json", "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    reported = json.loads(res.output.strip().splitlines()[-1])["data"]
    # the CLI reports Braid's evaluation of the library's Milvus search with the same options (k 20,
    # hybrid-rrf, depth 1000, self-hits dropped), and the run file it writes is that run
    from braid.data.beir import BeirDataset
    from braid.data.runs import read_run
    from braid.retrieval.eval.evaluate import evaluate
    from braid.retrieval.scale.milvus import MilvusSearcher

    ds = BeirDataset(setup["data"])
    want = MilvusSearcher(uri, "cli").batch_search(ds.queries("test"), k=20, retriever="hybrid-rrf", exclude_self=True, depth=1000)
    mean, _ = evaluate(want.to_run(), ds.qrels("test"), ["ndcg@10", "recall@100"])
    assert reported == pytest.approx(mean, abs=1e-12) and 0 < reported["ndcg@10"] < 1
    written = read_run(tmp_path / "runs" / "data" / "milvus-hybrid-rrf.test.trec")
    run = want.to_run()
    assert set(written) == set(run) and all(written[q] == pytest.approx(run[q], abs=1e-6) for q in run)  # 6 decimals
    res = runner.invoke(milvus_group, ["search", "x", "--milvus-uri", uri, "--collection", "missing"])
    assert res.exit_code != 0 and "no such collection" in res.output


def test_bad_options_are_refused(setup):
    from braid.data.errors import OptionError
    from braid.retrieval.scale.milvus import MilvusLoadConfig, connect

    with pytest.raises(OptionError):
        MilvusLoadConfig(collection="1bad")
    with pytest.raises(OptionError):
        MilvusLoadConfig(dense_index="DISKANN_X")
    with pytest.raises(OptionError, match="--milvus-uri"):
        connect(str(setup["root"] / "file.txt"))


def test_a_sharded_index_loads_into_one_collection(setup, searchers, tmp_path):
    from braid.retrieval.build.builder import BuildOptions
    from braid.retrieval.scale.distributed import ShardingConfig, build_sharded
    from braid.retrieval.scale.milvus import MilvusLoadConfig, MilvusSearcher, load_index

    manifest = json.loads((setup["index"] / "manifest.json").read_text())
    enc = {k: manifest["components"][k]["encoder"]["model"] for k in ("sparse", "dense")}
    options = BuildOptions(retrievers=("sparse", "dense"), progress=False, sparse_model=enc["sparse"], dense_model=enc["dense"], max_length=48, chunk_size=64)
    sharded = build_sharded(setup["data"], tmp_path / "sharded", options, ShardingConfig(shards=2, executor="local"), log=lambda m: None)
    assert len(sharded["shards"]) == 2
    uri = str(tmp_path / "sharded.db")
    info = load_index(tmp_path / "sharded", uri, MilvusLoadConfig(collection="sharded"), log=lambda m: None)
    assert info["num_docs"] == 80
    _, plain = searchers
    one = MilvusSearcher(uri, "sharded")
    for retriever in ("sparse", "dense", "hybrid-rrf"):
        a = plain.batch_search(setup["queries"], k=10, retriever=retriever)
        b = one.batch_search(setup["queries"], k=10, retriever=retriever)
        assert np.array_equal(a.hits.docnos, b.hits.docnos), retriever
        assert a.doc_ids == b.doc_ids
