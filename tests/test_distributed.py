"""The Ray path: Ray Data encoding, sharded builds as Ray tasks, and search through Ray actors.

Ray runs locally (2 CPUs, no dashboard) for this module only and is shut down at the end. The
models are the tiny random BERTs of test_sharded.py, so encoding is real but fast.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")
torch.set_num_threads(1)

_spec = importlib.util.spec_from_file_location("_braid_sharded_helpers", Path(__file__).with_name("test_sharded.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)


@pytest.fixture(scope="module")
def ray_local():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    import ray.data as ray_data

    ray_data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_local):
    from braid.retrieval.build.builder import BuildOptions, build_index
    from braid.retrieval.scale.distributed import ShardingConfig, build_sharded

    root = tmp_path_factory.mktemp("ray")
    models = {"sparse": _helpers.make_tiny_bert(root / "tiny-splade", mlm=True), "dense": _helpers.make_tiny_bert(root / "tiny-dense", mlm=False, seed=1)}
    data, queries = _helpers.synthetic_corpus(root / "data", n_docs=60)
    options = BuildOptions(
        retrievers=("bm25", "sparse", "dense"), progress=False, sparse_model=str(models["sparse"]),
        dense_model=str(models["dense"]), max_length=48, chunk_size=64,
    )  # fmt: skip
    build_index(data, root / "local", options)
    sharding = ShardingConfig(shards=2, executor="ray", encode_actors=2, cpus_per_actor=0.75, encode_batch_size=16)
    manifest = build_sharded(data, root / "ray-sharded", options, sharding, log=lambda m: None)
    return {"root": root, "data": data, "queries": queries, "options": options, "local": root / "local", "sharded": root / "ray-sharded", "manifest": manifest}


def _vectors(index_dir: Path, kind: str):
    from braid.retrieval.build.vectorcache import load_cached

    return load_cached(index_dir / "vectors" / kind)


def test_ray_build_encodes_what_the_local_build_encodes(setup):
    """Shards built by Ray tasks from Ray Data encodings hold the vectors an in-process build makes."""
    m = setup["manifest"]
    assert m["encode"]["actors"] == 2 and m["encode"]["num_docs"] == 60
    local_sparse = _vectors(setup["local"], "sparse").to_scipy().toarray()
    local_dense = np.asarray(_vectors(setup["local"], "dense"))
    sparse_rows, dense_rows = [], []
    for s in m["shards"]:
        shard = setup["sharded"] / s["path"]
        sparse_rows.append(_vectors(shard, "sparse").to_scipy().toarray())
        dense_rows.append(np.asarray(_vectors(shard, "dense")))
    # batching differs (Ray Data batches of 16, sorted by length inside the encoder): float rounding only
    assert np.allclose(np.vstack(sparse_rows), local_sparse, atol=1e-5)
    assert np.allclose(np.vstack(dense_rows), local_dense, atol=1e-6)


def test_ray_encode_output_matches_direct_encoding(setup, tmp_path):
    from braid.data.corpus import iter_corpus
    from braid.retrieval.scale.distributed import ShardingConfig, ray_encode, read_encoded, split_corpus
    from braid.retrieval.build.components import dense_encoder_from_options

    files, counts, doc_ids, _ = split_corpus(setup["data"] / "corpus.jsonl", tmp_path / "src", 3, False, False)
    out = tmp_path / "encoded"
    info = ray_encode(files, ["dense"], setup["options"], ShardingConfig(shards=3, encode_actors=1, encode_batch_size=7), out, log=lambda m: None)
    assert info["num_docs"] == 60
    texts = [d.contents for d in iter_corpus(setup["data"] / "corpus.jsonl")]
    direct = dense_encoder_from_options(setup["options"]).encode(texts, "document")
    got = read_encoded(out, "dense", 20, 40)
    assert got.shape == (20, direct.shape[1])
    assert np.allclose(got, direct[20:40], atol=1e-6)


def test_an_encoding_pool_larger_than_the_machine_is_refused(setup, tmp_path):
    from braid.data.errors import OptionError
    from braid.retrieval.scale.distributed import ShardingConfig, ray_encode, split_corpus

    files, *_ = split_corpus(setup["data"] / "corpus.jsonl", tmp_path / "src", 2, False, False)
    with pytest.raises(OptionError, match="--encode-actors"):
        ray_encode(files, ["dense"], setup["options"], ShardingConfig(encode_actors=3), tmp_path / "enc", log=lambda m: None)


def test_ray_actors_search_equals_in_process_and_unsharded(setup):
    from braid.retrieval.searcher import Searcher
    from braid.retrieval.scale.sharded import ShardedSearcher

    local = Searcher(setup["local"])
    inproc = ShardedSearcher(setup["sharded"], processes=0)
    with ShardedSearcher(setup["sharded"], ray_address="local") as actors:
        assert actors.executor == "ray"
        for retriever, knobs in (("bm25", {}), ("sparse", {"exact": True}), ("dense", {})):
            a = inproc.batch_search(setup["queries"], k=10, retriever=retriever, exclude_self=True, **knobs)
            b = actors.batch_search(setup["queries"], k=10, retriever=retriever, exclude_self=True, **knobs)
            assert np.array_equal(a.hits.docnos, b.hits.docnos) and np.array_equal(a.hits.scores, b.hits.scores)
            c = local.batch_search(setup["queries"], k=10, retriever=retriever, exclude_self=True, **knobs)
            overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(b.hits.docnos, c.hits.docnos)])
            assert overlap >= 0.95, retriever  # vectors encoded in other batches: equal up to rounding
            if retriever == "bm25":  # no encoding involved: equal up to float32 rounding of the statistics
                assert np.allclose(b.hits.scores, c.hits.scores, rtol=1e-6)
    inproc.close()


def test_cli_shard_on_ray(setup, tmp_path):
    from click.testing import CliRunner

    from braid.cli.scale import shard_cmd
    from braid.retrieval.scale.sharded import read_sharded_manifest

    out = tmp_path / "cli-sharded"
    res = CliRunner().invoke(shard_cmd, [str(setup["data"]), "--out", str(out), "--shards", "3", "--quiet"])
    assert res.exit_code == 0, res.output
    m = read_sharded_manifest(out)
    assert m["sharding"]["executor"] == "ray" and len(m["shards"]) == 3 and m["num_docs"] == 60
