"""Metadata filters in the Milvus backend: a Braid filter becomes a Milvus expression over the
collection's typed ``metadata`` field, with Braid's meaning. References: hand-written expressions,
and Braid's own filter masks over the same live index (the documents an exhaustive filtered Milvus
search returns must be exactly the live documents the mask lets through, and the filtered top-k the
exact Braid top-k among them)."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from braid.data.errors import OptionError  # noqa: E402
from braid.retrieval.scale.milvus import milvus_filter  # noqa: E402

KINDS = {"year": "number", "lang": "keyword", "date": "date", "flag": "keyword"}


def test_expressions_are_hand_worked():
    f = milvus_filter
    assert f({"field": "year", "gte": 2000}, KINDS) == '(exists metadata["year"] and metadata["year"] >= 2000.0)'
    assert f("lang in (en, de)", KINDS) == '(exists metadata["lang"] and (metadata["lang"] == "en" or metadata["lang"] == "de"))'
    assert f({"not": {"field": "lang", "eq": "en"}}, KINDS) == '(not (exists metadata["lang"] and metadata["lang"] == "en"))'
    assert f({"field": "date", "lt": "2020-02-01"}, KINDS) == '(exists metadata["date"] and metadata["date"] < "2020-02-01T00:00:00.000000")'
    assert f({"field": "flag", "eq": True}, KINDS) == '(exists metadata["flag"] and metadata["flag"] == "true")'  # keywords: JSON text
    assert f({"field": "nowhere", "eq": 1}, KINDS) == "docno < 0"  # no document has the field
    assert f({"or": [{"field": "year", "lt": 1995}, {"field": "lang", "ne": 'say "hi"'}]}, KINDS) == (
        '((exists metadata["year"] and metadata["year"] < 1995.0) or (exists metadata["lang"] and metadata["lang"] != "say \\"hi\\""))'
    )


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"field": "year", "eq": "2000"}, "holds numbers"),
        ({"field": "date", "gte": "last week"}, "holds dates"),
        ({"field": "lang", "lt": 3}, "holds keywords"),
        ({"field": "shared", "eq": 1}, "typed differently"),
        ("year >=", "filter"),
    ],
)
def test_bad_filters_are_refused_by_name(spec, match):
    with pytest.raises(OptionError, match=match):
        milvus_filter(spec, {**KINDS, "shared": "mixed"})


pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

FILTERS = [
    "year >= 2005",
    "year >= 2000 and year < 2010 and lang in (en, de)",
    "not lang = en",
    "not rare = x",  # most documents lack the field: not selects them
    "rare = x or date < 2015-01-01",
    {"field": "date", "gte": "2018-03-10", "lte": "2022-06-30"},
    {"field": "lang", "in": ["en"]},
    "nowhere = 1",
]


def _docs(rng: random.Random, prefix: str, n: int) -> list[dict]:
    from test_live import make_doc

    out = []
    for i in range(n):
        d = make_doc(rng, f"{prefix}{i}")
        if i % 5 == 0:
            d["metadata"]["rare"] = rng.choice(["x", "y"])
        out.append(d)
    return out


def _check(index_dir: Path, uri: str, name: str) -> None:
    from braid.retrieval.scale.milvus import MilvusSearcher, live_docnos
    from braid.retrieval.searcher import Searcher
    from test_live import QUERIES

    local = Searcher(index_dir)
    live = np.zeros(local.context.num_docnos, bool)
    live[live_docnos(local)] = True
    milvus = MilvusSearcher(uri, name)
    everything = int(live.sum()) + 5
    for spec in FILTERS:
        want = set(np.flatnonzero(local.context.filter_mask(spec) & live).tolist())
        got = milvus.batch_search(QUERIES[:2], k=everything, retriever="dense", filter=spec)
        for row in got.hits.docnos:
            assert set(int(d) for d in row if d >= 0) == want, spec
        a = local.batch_search(QUERIES, k=5, retriever="dense", filter=spec)
        b = milvus.batch_search(QUERIES, k=5, retriever="dense", filter=spec)
        assert a.doc_ids == b.doc_ids, spec
        h = milvus.batch_search(QUERIES, k=5, retriever="hybrid-rrf", filter=spec)
        assert all(set(int(d) for d in row if d >= 0) <= want for row in h.hits.docnos), spec


def test_filtered_milvus_search_selects_what_braid_selects(tmp_path):
    from click.testing import CliRunner

    from braid.cli.main import main
    from braid.retrieval.live import Index
    from braid.retrieval.scale.milvus import MilvusLoadConfig, MilvusSearcher, load_index
    from test_live import build, write_corpus
    from test_sharded import make_tiny_bert

    models = {"sparse": make_tiny_bert(tmp_path / "tiny-splade", mlm=True), "dense": make_tiny_bert(tmp_path / "tiny-dense", mlm=False, seed=1)}
    rng = random.Random(12)
    index_dir = build(models, _docs(rng, "d", 40), tmp_path / "ix")
    Index(index_dir, log=lambda m: None).delete(["d3", "d10"])
    uri, name = str(tmp_path / "m" / "braid.db"), "filtered"
    info = load_index(index_dir, uri, MilvusLoadConfig(collection=name), log=lambda m: None)
    assert info["metadata_kinds"] == {"year": "number", "lang": "keyword", "date": "date", "rare": "keyword"}
    _check(index_dir, uri, name)

    # an add that changes a field's type (year gets a string): the sync rewrites every row in the new types
    new = _docs(rng, "n", 4)
    new[0]["metadata"]["year"] = "unknown"
    more = write_corpus(tmp_path / "more.jsonl", new)
    runner = CliRunner()
    res = runner.invoke(main, ["milvus", "add", str(index_dir), str(more), "--milvus-uri", uri, "--collection", name, "-q"])
    assert res.exit_code == 0, res.output
    milvus = MilvusSearcher(uri, name)
    assert milvus.meta["metadata_kinds"]["year"] == "keyword"
    with pytest.raises(OptionError, match="holds keywords"):
        milvus.batch_search(["apple"], k=3, retriever="dense", filter="year >= 2005")
    hits = milvus.batch_search(["apple"], k=50, retriever="dense", filter='year = unknown')
    assert hits.doc_ids == [["n0"]]

    # the CLI takes --filter for search and eval
    res = runner.invoke(main, ["milvus", "search", "apple banana", "--milvus-uri", uri, "--collection", name, "-r", "dense", "--filter", "lang = de", "--json"])
    assert res.exit_code == 0, res.output
    import json

    got = [h["id"] for h in json.loads(res.output)["hits"]]
    local = MilvusSearcher(uri, name).batch_search(["apple banana"], k=10, retriever="dense", filter={"field": "lang", "eq": "de"})
    assert got and got == local.doc_ids[0]
    res = runner.invoke(main, ["milvus", "search", "apple", "--milvus-uri", uri, "--collection", name, "--filter", "year >="])
    assert res.exit_code == 2 and "--filter" in res.output
