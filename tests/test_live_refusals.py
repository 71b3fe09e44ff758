"""The rows of docs/live-index.md's backend table that refuse: each refusal is an OptionError that
names the index and says why and what to do, raised before anything is written (the index, its
files and its generation are unchanged)."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from braid.data.errors import OptionError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))


def _docs(n: int, seed: int = 3) -> list[dict]:
    from test_live import make_doc

    rng = random.Random(seed)
    return [make_doc(rng, f"d{i}") for i in range(n)]


def _snapshot(index_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(index_dir)): p.stat().st_size for p in sorted(index_dir.rglob("*")) if p.is_file()}


def _refused_everywhere(index_dir: Path, words: str) -> None:
    from braid.retrieval.live import Index

    before = _snapshot(index_dir)
    for op in (lambda ix: ix.add(_docs(2, seed=9)), lambda ix: ix.delete(["d1"]), lambda ix: ix.compact()):
        with pytest.raises(OptionError, match=words):
            op(Index(index_dir, log=lambda m: None))
    assert _snapshot(index_dir) == before


@pytest.fixture(scope="module")
def tiny_dense(tmp_path_factory):
    pytest.importorskip("torch")
    from test_sharded import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("refusal-models") / "tiny-dense", mlm=False, seed=1)


def test_dense_bin_refuses_live_operations_and_filters(tiny_dense, tmp_path):
    from test_live import write_corpus

    from braid.retrieval.build.builder import BuildOptions, build_index
    from braid.retrieval.searcher import Searcher

    corpus = write_corpus(tmp_path / "c.jsonl", _docs(12))
    index_dir = tmp_path / "ix"
    build_index(corpus, index_dir, BuildOptions(retrievers=("bm25", "dense"), progress=False, dense_model=str(tiny_dense),
                                                dense_index={"kind": "bin"}, max_length=48, batch_size=4), log=lambda m: None)  # fmt: skip
    _refused_everywhere(index_dir, r"dense index of kind bin cannot be updated in place; rebuild it")
    with pytest.raises(OptionError, match="dense-bin does not take filters"):
        Searcher(index_dir).search("apple", k=3, retriever="dense-bin", filter="year >= 2000")


def test_jpq_dense_refuses_live_operations(tiny_dense, tmp_path):
    """A JPQ-trained dense component (``components.dense.jpq``, what ``braid train jpq`` installs):
    its PQ centroids were trained jointly with the query tower, so new documents cannot be coded
    without that training. The index here is a flat dense build whose manifest carries the ``jpq``
    entry, which is what the refusal reads."""
    from test_live import write_corpus

    from braid.index.manifest import MANIFEST
    from braid.retrieval.build.builder import BuildOptions, build_index

    corpus = write_corpus(tmp_path / "c.jsonl", _docs(12))
    index_dir = tmp_path / "ix"
    build_index(corpus, index_dir, BuildOptions(retrievers=("dense",), progress=False, dense_model=str(tiny_dense), max_length=48, batch_size=4),
                log=lambda m: None)  # fmt: skip
    path = index_dir / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["components"]["dense"]["jpq"] = {"trained_on": "test"}
    path.write_text(json.dumps(manifest))
    _refused_everywhere(index_dir, r"dense index of kind jpq cannot be updated in place; rebuild it")


def test_pyserini_component_refuses_live_operations(tmp_path):
    """An index with the Lucene reference component: only bm25, sparse and dense are live. (The
    component is recorded in the manifest as a pyserini build records it; Java is not needed to refuse.)"""
    from test_live import write_corpus

    from braid.index.manifest import MANIFEST
    from braid.retrieval.build.builder import BuildOptions, build_index

    corpus = write_corpus(tmp_path / "c.jsonl", _docs(8))
    index_dir = tmp_path / "ix"
    build_index(corpus, index_dir, BuildOptions(progress=False), log=lambda m: None)
    path = index_dir / MANIFEST
    manifest = json.loads(path.read_text())
    (index_dir / "pyserini").mkdir()
    manifest["components"]["pyserini"] = {"path": "pyserini", "num_docs": 8, "k1": 0.9, "b": 0.4}
    path.write_text(json.dumps(manifest))
    _refused_everywhere(index_dir, r"components pyserini cannot be updated in place \(only bm25, sparse, dense\); rebuild the index without them")


def test_sharded_index_and_its_shards_refuse_live_operations(tmp_path):
    from click.testing import CliRunner
    from test_live import write_corpus

    from braid.cli.main import main
    from braid.retrieval.build.builder import BuildOptions
    from braid.retrieval.live import Index
    from braid.retrieval.scale.distributed import ShardingConfig, build_sharded
    from braid.retrieval.scale.sharded import read_sharded_manifest

    corpus = write_corpus(tmp_path / "c.jsonl", _docs(30))
    sharded = tmp_path / "sharded"
    build_sharded(corpus, sharded, BuildOptions(progress=False), ShardingConfig(shards=2, executor="local"), log=lambda m: None)
    before = _snapshot(sharded)
    with pytest.raises(OptionError, match=r"a sharded index \(braid shard\) cannot be changed in place .* run braid shard again"):
        Index(sharded)
    shard = sharded / read_sharded_manifest(sharded)["shards"][1]["path"]
    with pytest.raises(OptionError, match="not one shard of a sharded index"):
        Index(shard)
    more = write_corpus(tmp_path / "more.jsonl", _docs(1, seed=5))
    runner = CliRunner()
    for args in (["add", str(sharded), str(more)], ["delete", str(sharded), "d1"], ["compact", str(sharded)], ["delete", str(shard), "d20"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 2 and "cannot be changed in place" in res.output, (args, res.output)
    assert _snapshot(sharded) == before
