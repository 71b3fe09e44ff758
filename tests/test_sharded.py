"""Sharded search: the exact merge, BM25 collection statistics, and sharded == unsharded on seeded data.

Everything here runs without Ray (``executor="local"``, in-process or spawned local processes); the
Ray path is in test_distributed.py. Models are tiny random BERTs built in the test (a 2-layer MLM
for SPLADE, a 2-layer encoder with mean pooling + normalisation for dense), so the tests need no
weights and no network.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny models: threads only contend on the shared 2-core machine

from braid.data.errors import IndexFormatError, OptionError
from braid.index.hits import Hits
from braid.retrieval.scale.sharded import bm25_padding, merge_topk, read_sharded_manifest, tantivy_idf

WORDS = (
    "the a of and is on in apple banana cherry fruit red green yellow sweet sour tree grows "
    "ripe seed leaf cell protein gene cancer study"
).split()


# --------------------------------------------------------------------------------------------------
# Fixtures: tiny models and a seeded corpus whose shards have very different average lengths
# --------------------------------------------------------------------------------------------------
def make_tiny_bert(root: Path, mlm: bool, seed: int = 0) -> Path:
    """A 2-layer, 32-wide random BERT over WORDS; the dense one has sentence-transformers mean pooling + normalize."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer

    root.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##s", "##ed", "##ing"]
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(root)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(seed)
    model = BertForMaskedLM(cfg) if mlm else BertModel(cfg)
    if mlm:
        with torch.no_grad():
            model.cls.predictions.decoder.bias.add_(0.5)  # some positive logits, so vectors have terms
    model.save_pretrained(root)
    if not mlm:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        (root / "modules.json").write_text(json.dumps(modules))
        (root / "1_Pooling").mkdir(exist_ok=True)
        (root / "2_Normalize").mkdir(exist_ok=True)
        (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
        (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48, "do_lower_case": False}))
    return root


def synthetic_corpus(root: Path, n_docs: int = 120, seed: int = 7) -> tuple[Path, dict[str, str]]:
    """A BEIR folder: the first third short documents, the middle third long, the rest medium
    (so contiguous shards have very different average lengths); query ids q0.. and a few equal to doc ids."""
    rng = random.Random(seed)
    content = [w for w in WORDS if w not in ("the", "a", "of", "and", "is", "on", "in")]
    docs = []
    for i in range(n_docs):
        lo, hi = ((2, 5), (20, 40), (8, 14))[min(3 * i // n_docs, 2)]
        words = [rng.choice(content) for _ in range(rng.randint(lo, hi))]
        docs.append({"_id": f"d{i}", "title": rng.choice(content), "text": " ".join(words)})
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w") as fh:
        for d in docs:
            fh.write(json.dumps(d) + "\n")
    queries = {f"q{j}": " ".join(rng.choice(content) for _ in range(rng.randint(1, 4))) for j in range(24)}
    for i in (5, n_docs // 2, n_docs - 20):  # BEIR self-hits: a query whose id is a document id
        queries[f"d{i}"] = docs[i]["text"]
    with open(root / "queries.jsonl", "w") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{j}\td{(7 * j) % n_docs}\t1\n" for j in range(24)))
    return root, queries


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"sparse": make_tiny_bert(root / "tiny-splade", mlm=True), "dense": make_tiny_bert(root / "tiny-dense", mlm=False, seed=1)}


@pytest.fixture(scope="module")
def built(tmp_path_factory, models):
    """An unsharded index and a 3-shard index (local executor) of the same seeded corpus."""
    from braid.retrieval.build.builder import BuildOptions, build_index
    from braid.retrieval.scale.distributed import ShardingConfig, build_sharded

    root = tmp_path_factory.mktemp("sharded")
    data, queries = synthetic_corpus(root / "data")
    options = BuildOptions(
        retrievers=("bm25", "sparse", "dense"), progress=False, sparse_model=str(models["sparse"]),
        dense_model=str(models["dense"]), max_length=48, chunk_size=64,
    )  # fmt: skip
    build_index(data, root / "local", options)
    manifest = build_sharded(data, root / "sharded", options, ShardingConfig(shards=3, executor="local"), log=lambda m: None)
    return {"data": data, "queries": queries, "local": root / "local", "sharded": root / "sharded", "manifest": manifest, "options": options}


class ExactSparse:
    """Forces exact sparse search inside pipelines (the pipeline TOML has no `exact` key)."""

    def __init__(self, inner):
        self.inner, self.name, self.index = inner, inner.name, inner.index

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def search(self, queries, k, threads=1, exclude=None, **knobs):
        return self.search_vectors(self.inner.encode_queries(queries), k, threads=threads, exclude=exclude)

    def search_vectors(self, vectors, k, threads=1, exclude=None, **knobs):
        return self.inner.search_vectors(vectors, k=k, threads=threads, exclude=exclude, exact=True)


def exact_sparse(searcher):
    for name in ("sparse", "sparse-if"):
        searcher._retrievers[name] = ExactSparse(searcher.retriever(name))
    return searcher


# --------------------------------------------------------------------------------------------------
# Tier 1-2: the merge, tantivy's IDF, the padding search
# --------------------------------------------------------------------------------------------------
def test_merge_topk_equals_brute_force_on_seeded_lists():
    rng = np.random.default_rng(0)
    n_q, k = 7, 6
    sizes = [5, 9, 3, 8]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # scores on a coarse grid: many ties across shards, which must break by global docno
    full = rng.integers(0, 6, size=(n_q, sum(sizes))).astype(np.float32)
    full[rng.random(full.shape) < 0.25] = -np.inf  # documents that do not match
    parts = []
    for off, n in zip(offsets, sizes):
        rows = []
        for q in range(n_q):
            s = full[q, off : off + n]
            keep = np.isfinite(s)
            rows.append((np.flatnonzero(keep), s[keep]))
        parts.append(Hits.from_lists(rows, k))  # each shard's own top-k, local docnos
    merged = merge_topk([(h.docnos, h.scores) for h in parts], offsets, k)
    for q in range(n_q):
        valid = np.flatnonzero(np.isfinite(full[q]))
        expect = sorted(valid.tolist(), key=lambda d: (-full[q, d], d))[:k]
        got = merged.docnos[q][merged.docnos[q] >= 0].tolist()
        assert got == expect
        assert np.array_equal(merged.scores[q, : len(expect)], full[q, expect])
        assert np.all(merged.docnos[q, len(expect) :] == -1) and np.all(np.isneginf(merged.scores[q, len(expect) :]))


def test_merge_topk_rejects_bad_input():
    h = Hits.empty(2, 3)
    with pytest.raises(OptionError):
        merge_topk([(h.docnos, h.scores)], [0], 0)
    with pytest.raises(OptionError):
        merge_topk([(h.docnos, h.scores)], [0, 5], 3)
    with pytest.raises(OptionError):
        merge_topk([(h.docnos, h.scores), (Hits.empty(3, 3).docnos, Hits.empty(3, 3).scores)], [0, 5], 3)


def test_tantivy_idf_hand_values():
    # tantivy's own unit test: idf(1, 2) = ln(1 + 1.5 / 1.5) = ln 2
    assert tantivy_idf(1, 2) == pytest.approx(0.6931472, abs=1e-7)
    assert tantivy_idf(np.array([0, 10]), 10).tolist() == pytest.approx([np.log(1 + 10.5 / 0.5), np.log(1 + 0.5 / 10.5)], rel=1e-5)
    assert tantivy_idf(np.array([[1], [2]]), np.array([[4], [8]])).dtype == np.float32


@pytest.mark.parametrize("seed", range(5))
def test_bm25_padding_gives_the_collection_average_in_float32(seed):
    rng = np.random.default_rng(seed)
    n_docs = int(rng.integers(1_000, 3_000_000))
    avg = float(rng.uniform(5, 300))
    total = int(n_docs * avg)
    shard_docs = int(rng.integers(10, n_docs // 2))
    shard_tokens = int(shard_docs * avg * rng.uniform(0.7, 1.3))
    m, p = bm25_padding(shard_docs, shard_tokens, n_docs, total)
    assert m >= 0 and p >= 0
    assert np.float32(shard_tokens + p) / np.float32(shard_docs + m) == np.float32(total) / np.float32(n_docs)


def test_bm25_padding_is_zero_when_the_shard_already_has_the_average():
    assert bm25_padding(10, 50, 100, 500) == (0, 0)


# --------------------------------------------------------------------------------------------------
# Tier 2: sharded == unsharded on a seeded corpus
# --------------------------------------------------------------------------------------------------
def _searchers(built, processes=0):
    from braid.retrieval.searcher import Searcher
    from braid.retrieval.scale.sharded import ShardedSearcher

    return Searcher(built["local"]), ShardedSearcher(built["sharded"], processes=processes)


def test_sharded_manifest_and_shards_are_ordinary_indexes(built):
    from braid.index.manifest import read_docids, read_manifest

    m = read_sharded_manifest(built["sharded"])
    assert [s["num_docs"] for s in m["shards"]] == [40, 40, 40]
    ids = [d for s in m["shards"] for d in read_docids(built["sharded"] / s["path"])]
    assert ids == read_docids(built["local"])  # contiguous shards: global docno = corpus order
    for s in m["shards"]:
        shard = read_manifest(built["sharded"] / s["path"])
        assert set(shard["components"]) == {"bm25", "sparse", "dense"}
    # the padding gives every shard's tantivy average the collection's, bit for bit
    stats = m["bm25"]
    target = np.float32(stats["total_tokens"]) / np.float32(stats["num_docs"])
    for s in stats["shards"]:
        assert np.float32(s["tokens"] + s["pad_tokens"]) / np.float32(s["tantivy_docs"]) == target
    assert any(s["pad_docs"] > 0 for s in stats["shards"])  # the corpus was made so that shards differ


def test_braid_verify_checks_every_shard(built, tmp_path):
    """Shards written by the sharded build (padded BM25, the global IDF copied in) carry checksums that
    match; a flipped byte in one shard is reported under that shard's directory."""
    import shutil

    from click.testing import CliRunner

    from braid.cli.main import main
    from braid.retrieval.scale.sharded import verify_index_dir

    problems, files = verify_index_dir(built["sharded"])
    assert problems == [] and files > 3 * 10
    copy = Path(shutil.copytree(built["sharded"], tmp_path / "sharded"))
    target = sorted((copy / "shard-00001" / "dense").glob("*.faiss"))[0]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    problems, _ = verify_index_dir(copy)
    assert [(p.kind, p.path) for p in problems] == [("checksum", f"shard-00001/dense/{target.name}")]
    res = CliRunner().invoke(main, ["verify", str(copy)])
    assert res.exit_code == 1 and f"shard-00001/dense/{target.name}" in res.output


@pytest.mark.parametrize("retriever", ["sparse", "sparse-if", "dense"])
def test_exact_retrievers_equal_unsharded(built, retriever):
    local, sharded = _searchers(built)
    knobs = {"exact": True} if retriever.startswith("sparse") else {}
    for exclude_self in (False, True):
        a = local.batch_search(built["queries"], k=15, retriever=retriever, exclude_self=exclude_self, **knobs)
        b = sharded.batch_search(built["queries"], k=15, retriever=retriever, exclude_self=exclude_self, **knobs)
        assert np.array_equal(a.hits.docnos, b.hits.docnos)
        if retriever == "dense":  # BLAS may block the products of a smaller matrix differently: last-ulp differences
            assert np.allclose(a.hits.scores, b.hits.scores, rtol=1e-6, atol=1e-7)
        else:  # float16 forward weights summed in the same order: bitwise equal
            assert np.array_equal(a.hits.scores, b.hits.scores)
        assert a.doc_ids == b.doc_ids
    sharded.close()


def test_dense_equals_brute_force(built):
    """Independent reference: numpy inner products over the encoded vectors."""
    _, sharded = _searchers(built)
    texts = list(built["queries"].values())
    retriever = sharded.retriever("dense")
    q = retriever.encode_queries(texts)
    docs = np.concatenate([np.load(built["sharded"] / s["path"] / "vectors" / "dense" / "vectors.npy") for s in sharded.sharded["shards"]])
    scores = q @ docs.T
    hits = retriever.search_vectors(q, k=10)
    for i in range(len(texts)):
        assert np.allclose(hits.scores[i], np.sort(scores[i])[::-1][:10], rtol=1e-5, atol=1e-6)
        assert np.allclose(scores[i, hits.docnos[i]], hits.scores[i], rtol=1e-5, atol=1e-6)
    sharded.close()


def test_bm25_equals_unsharded_up_to_float32_rounding(built):
    """Every matching document, same scores within 1e-6 relative, same order except among near-equal scores."""
    local, sharded = _searchers(built)
    n = local.num_docs
    for exclude_self in (False, True):
        a = local.batch_search(built["queries"], k=n, retriever="bm25", exclude_self=exclude_self)
        b = sharded.batch_search(built["queries"], k=n, retriever="bm25", exclude_self=exclude_self)
        for i in range(a.hits.n_queries):
            da, sa = a.hits.row(i)
            db, sb = b.hits.row(i)
            assert sorted(da.tolist()) == sorted(db.tolist())
            ref = dict(zip(da.tolist(), sa.tolist()))
            ref_b = np.array([ref[d] for d in db.tolist()])
            assert np.allclose(sb, ref_b, rtol=1e-6, atol=0)
            # the sharded order is the unsharded order up to swaps of scores within float32 rounding
            assert np.all(np.diff(ref_b) <= 1e-6 * np.abs(ref_b[1:]))
    sharded.close()


def test_bm25_global_statistics_matter(built):
    """Without the collection statistics (each shard searched alone) the scores differ: the test can fail."""
    from braid.retrieval.searcher import Searcher

    local = Searcher(built["local"])
    shard0 = Searcher(built["sharded"] / "shard-00000")
    q = list(built["queries"].values())
    a = local.batch_search(q, k=local.num_docs, retriever="bm25")
    b = shard0.batch_search(q, k=shard0.num_docs, retriever="bm25")
    diffs = []
    for i in range(len(q)):
        ref = dict(zip(*[x.tolist() for x in a.hits.row(i)]))
        for d, s in zip(*[x.tolist() for x in b.hits.row(i)]):
            diffs.append(abs(s - ref[d]) / abs(ref[d]))
    assert max(diffs) > 1e-3


def test_fused_pipelines_equal_unsharded(built, tmp_path):
    """Fuse after the merge: pipelines of exact retrievers give the unsharded results, PRF included."""
    local, sharded = _searchers(built)
    exact_sparse(local)
    exact_sparse(sharded)
    toml = tmp_path / "sd.toml"
    toml.write_text(
        'name = "sd"\ndepth = 50\n'
        '[[retriever]]\nname = "sparse"\nprf = { method = "rocchio", fb_docs = 3, alpha = 1.0, beta = 0.5 }\n'
        '[[retriever]]\nname = "dense"\nweight = 0.7\nprf = { method = "rocchio", fb_docs = 3, alpha = 0.5, beta = 0.5 }\n'
        "[fusion]\nmethod = \"linear\"\nnorm = \"minmax\"\n"
        "[[rescore]]\nstage = \"dense\"\ntop_n = 10\nweight = 0.5\n"
    )
    rrf = tmp_path / "rrf.toml"
    rrf.write_text('name = "rrf"\ndepth = 40\n[[retriever]]\nname = "sparse-if"\n[[retriever]]\nname = "dense"\n[fusion]\nmethod = "rrf"\nrrf_k = 60\n')
    for pipeline in (toml, rrf):
        a = local.batch_search(built["queries"], k=12, retriever=pipeline, exclude_self=True)
        b = sharded.batch_search(built["queries"], k=12, retriever=pipeline, exclude_self=True)
        assert np.array_equal(a.hits.docnos, b.hits.docnos), pipeline.name
        assert np.allclose(a.hits.scores, b.hits.scores, rtol=1e-5, atol=1e-6), pipeline.name  # dense rounding, min-max scaled
    sharded.close()


def test_builtin_hybrid_with_bm25_runs_and_agrees(built):
    local, sharded = _searchers(built)
    exact_sparse(local)
    exact_sparse(sharded)
    a = local.batch_search(built["queries"], k=10, retriever="hybrid-prf", exclude_self=True)
    b = sharded.batch_search(built["queries"], k=10, retriever="hybrid-prf", exclude_self=True)
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a.hits.docnos, b.hits.docnos)])
    assert overlap >= 0.95
    assert sharded.search(list(built["queries"].values())[0], k=3, retriever="bm25", fields=True)[0]["text"]
    sharded.close()


def test_global_idf_equals_compute_idf_over_the_whole_corpus(built):
    from braid.data.corpus import iter_corpus
    from braid.encoders.sparse import IdfTable, compute_idf
    from braid.retrieval.build.components import sparse_encoder_from_options

    encoder = sparse_encoder_from_options(built["options"])
    texts = [d.contents for d in iter_corpus(built["data"] / "corpus.jsonl")]
    ref = compute_idf(texts, encoder, max_length=built["options"].max_length)
    table = IdfTable.load(built["sharded"] / "sparse" / "idf.npy")
    assert table.num_docs == len(texts)
    assert np.array_equal(table.weights, ref.weights)
    for s in ("shard-00000", "shard-00002"):
        assert np.array_equal(IdfTable.load(built["sharded"] / s / "sparse" / "idf.npy").weights, ref.weights)


def test_local_processes_equal_in_process(built):
    _, inproc = _searchers(built)
    from braid.retrieval.scale.sharded import ShardedSearcher

    with ShardedSearcher(built["sharded"], processes=2) as procs:
        assert procs.executor == "processes"
        for retriever, knobs in (("bm25", {}), ("sparse", {"exact": True}), ("dense", {})):
            a = inproc.batch_search(built["queries"], k=10, retriever=retriever, exclude_self=True, **knobs)
            b = procs.batch_search(built["queries"], k=10, retriever=retriever, exclude_self=True, **knobs)
            assert np.array_equal(a.hits.docnos, b.hits.docnos)
            # another process may run numba kernels compiled at another time (its on-disk cache): last-ulp differences
            assert np.allclose(a.hits.scores, b.hits.scores, rtol=1e-6, atol=0)
        assert procs.documents([0, 119, 40]) == inproc.documents([0, 119, 40])
        # a failing worker call raises in the driver and leaves the pool usable
        from braid.data.errors import BraidError

        with pytest.raises(BraidError, match="docnos"):
            procs.pool.call("sparse_forward", [(np.array([10**6]),)] * procs.n_shards)
        again = procs.batch_search(built["queries"], k=10, retriever="bm25")
        assert np.array_equal(again.hits.docnos, inproc.batch_search(built["queries"], k=10, retriever="bm25").hits.docnos)
    inproc.close()


# --------------------------------------------------------------------------------------------------
# Validation and the CLI
# --------------------------------------------------------------------------------------------------
def test_bad_sharded_directories_do_not_open(built, tmp_path):
    import shutil

    from braid.retrieval.scale.sharded import ShardedSearcher

    with pytest.raises(IndexFormatError, match="not a sharded"):
        read_sharded_manifest(built["local"])
    copy = tmp_path / "copy"
    shutil.copytree(built["sharded"], copy)
    m = json.loads((copy / "sharded.json").read_text())
    (copy / "sharded.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="version 99"):
        ShardedSearcher(copy, processes=0)
    (copy / "sharded.json").write_text(json.dumps(m))
    shutil.rmtree(copy / "shard-00001")
    with pytest.raises(IndexFormatError, match="shard 1"):
        ShardedSearcher(copy, processes=0)
    with pytest.raises(OptionError):
        ShardedSearcher(built["sharded"], processes=-1)


def test_build_options_are_validated(built, tmp_path):
    from braid.retrieval.build.builder import BuildOptions
    from braid.retrieval.scale.distributed import ShardingConfig, build_sharded

    with pytest.raises(OptionError, match="--shards"):
        ShardingConfig(shards=0)
    with pytest.raises(OptionError, match="--executor"):
        ShardingConfig(executor="spark")
    with pytest.raises(OptionError, match="--retrievers"):
        build_sharded(built["data"], tmp_path / "x", BuildOptions(retrievers=("pyserini",)), ShardingConfig(executor="local"))
    with pytest.raises(OptionError, match="--shards"):
        build_sharded(built["data"], tmp_path / "x", BuildOptions(progress=False), ShardingConfig(shards=1000, executor="local"))
    with pytest.raises(OptionError, match="--out"):
        build_sharded(built["data"], built["sharded"], BuildOptions(progress=False), ShardingConfig(executor="local"))
    assert ShardingConfig.from_dict(ShardingConfig(shards=3).to_dict()) == ShardingConfig(shards=3)


def test_cli_shard_builds_a_searchable_bm25_index(toy_dataset, tmp_path):
    from click.testing import CliRunner

    from braid.cli.scale import shard_cmd
    from braid.retrieval.searcher import Searcher
    from braid.retrieval.scale.sharded import ShardedSearcher, open_searcher

    out = tmp_path / "toy-sharded"
    res = CliRunner().invoke(shard_cmd, [str(toy_dataset), "--out", str(out), "--shards", "2", "--executor", "local", "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["num_docs"] == 6
    local = tmp_path / "toy-local"
    from braid.retrieval.build.builder import BuildOptions, build_index

    build_index(toy_dataset, local, BuildOptions(progress=False))
    with open_searcher(out, processes=0) as s:
        assert isinstance(s, ShardedSearcher)
        got = s.search("why do cats purr", k=3)
    ref = Searcher(local).search("why do cats purr", k=3)
    assert [h["id"] for h in got] == [h["id"] for h in ref]
    assert [h["score"] for h in got] == pytest.approx([h["score"] for h in ref], rel=1e-6)
    res = CliRunner().invoke(shard_cmd, [str(toy_dataset), "--out", str(out), "--shards", "2", "--executor", "local", "--quiet"])
    assert res.exit_code != 0 and "--overwrite" in res.output
