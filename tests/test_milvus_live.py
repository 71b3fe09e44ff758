"""Milvus takes the live index's operations: ``braid milvus add`` / ``delete`` / ``sync`` change the
index (one commit each) and bring the collection to its new generation by upserting the new docnos
and deleting the dead ones. References: the live Braid index's own exact search and its live
documents (the collection must hold exactly those, with the same vectors, so exact Milvus search
returns what exact Braid search returns)."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
torch = pytest.importorskip("torch")
torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).parent))
from test_live import QUERIES, build, make_doc, write_corpus  # noqa: E402
from test_sharded import make_tiny_bert  # noqa: E402


def _collection_rows(uri: str, name: str) -> dict[int, str]:
    from pymilvus import MilvusClient

    rows = MilvusClient(uri).query(name, filter="docno >= 0", output_fields=["docno", "doc_id"], limit=16384)
    return {int(r["docno"]): r["doc_id"] for r in rows}


def _assert_same_as_braid(index_dir: Path, uri: str, name: str) -> None:
    from braid.retrieval.scale.milvus import MilvusSearcher, live_docnos
    from braid.retrieval.searcher import Searcher

    local = Searcher(index_dir)
    live = live_docnos(local)
    assert _collection_rows(uri, name) == {int(d): local.doc_ids[d] for d in live}
    milvus = MilvusSearcher(uri, name)
    for retriever in ("sparse", "dense"):
        a = local.batch_search(QUERIES, k=8, retriever=retriever, **({"exact": True} if retriever == "sparse" else {}))
        b = milvus.batch_search(QUERIES, k=8, retriever=retriever)
        assert a.doc_ids == b.doc_ids, retriever
        assert np.allclose(a.hits.scores, b.hits.scores, rtol=1e-5, atol=1e-6), retriever


def test_milvus_add_delete_sync_follow_the_live_index(tmp_path):
    from click.testing import CliRunner

    from braid.cli.main import main
    from braid.retrieval.live import Index
    from braid.retrieval.scale.milvus import MilvusLoadConfig, load_index

    models = {"sparse": make_tiny_bert(tmp_path / "tiny-splade", mlm=True), "dense": make_tiny_bert(tmp_path / "tiny-dense", mlm=False, seed=1)}
    rng = random.Random(4)
    index_dir = build(models, [make_doc(rng, f"d{i}") for i in range(30)], tmp_path / "ix")
    # a live index with a deletion and a second segment before it is loaded: the load takes its live documents
    Index(index_dir, batch_size=1, log=lambda m: None).add([make_doc(rng, "e0"), make_doc(rng, "d5")])
    Index(index_dir, log=lambda m: None).delete(["d2"])
    uri, name = str(tmp_path / "m" / "braid.db"), "live"
    load_index(index_dir, uri, MilvusLoadConfig(collection=name, batch_size=7), log=lambda m: None)
    _assert_same_as_braid(index_dir, uri, name)

    runner = CliRunner()
    opts = ["--milvus-uri", uri, "--collection", name, "-q"]
    more = write_corpus(tmp_path / "more.jsonl", [make_doc(rng, "n1"), make_doc(rng, "n2"), make_doc(rng, "d7"), make_doc(rng, "e0")])
    res = runner.invoke(main, ["milvus", "add", str(index_dir), str(more), *opts])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (out["added"], out["updated"], out["upserted"], out["deleted"]) == (2, 2, 4, 4)  # every dead docno below the synced count: d2, the old d5 (both before the load), the old d7 and e0
    _assert_same_as_braid(index_dir, uri, name)

    res = runner.invoke(main, ["milvus", "delete", str(index_dir), "n1", "d9", "nope", *opts])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["deleted_ids"] == 2 and out["not_found"] == ["nope"] and out["upserted"] == 0
    _assert_same_as_braid(index_dir, uri, name)

    # compaction keeps docnos: the collection stays right, and a sync changes nothing it holds
    Index(index_dir, log=lambda m: None).compact()
    res = runner.invoke(main, ["milvus", "sync", str(index_dir), *opts])
    assert res.exit_code == 0 and json.loads(res.output)["upserted"] == 0
    _assert_same_as_braid(index_dir, uri, name)

    # refused before the index changes: a collection that is not there
    generation = json.loads((index_dir / "manifest.json").read_text())["generation"]
    res = runner.invoke(main, ["milvus", "delete", str(index_dir), "d1", "--milvus-uri", uri, "--collection", "other", "-q"])
    assert res.exit_code == 2 and "no such collection" in res.output
    assert json.loads((index_dir / "manifest.json").read_text())["generation"] == generation
