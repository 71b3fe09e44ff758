"""dense-bin: sign bits, Hamming candidates and rescoring against brute force; build -> save -> open ->
search through the CLI and the Searcher; knob validation; a multiplier covering the collection = flat.

Brute-force references are numpy on the packed bits (XOR, unpack, count; ties by docno) and float64
rescoring. The round trip uses MiniLM from ../shared/models when present, else a tiny random BERT.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from braid.data.errors import IndexFormatError, OptionError

faiss = pytest.importorskip("faiss")

from braid.cli.main import main  # noqa: E402
from braid.index.dense import DenseIndex, DenseIndexConfig, pack_signs  # noqa: E402
from braid.retrieval import retrievers as registry  # noqa: E402
from braid.retrieval.retrievers.dense_bin import DenseBinRetriever, hamming_candidates, rescore_candidates  # noqa: E402

SHARED = Path(os.environ.get("BRAID_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # OpenMP threads only contend on the shared 2-core machine
    yield
    faiss.omp_set_num_threads(old)


def normalised(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True))


def brute_hamming(doc_codes: np.ndarray, query_codes: np.ndarray, m: int) -> np.ndarray:
    """Each query's m nearest documents by (Hamming distance, docno), from the packed bytes."""
    dist = np.unpackbits(query_codes[:, None, :] ^ doc_codes[None, :, :], axis=-1).sum(axis=-1)
    docnos = np.arange(doc_codes.shape[0])
    return np.stack([np.lexsort((docnos, d))[:m] for d in dist])


def brute_rescore(x: np.ndarray, q: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k of each row of candidates by float64 inner product, ties by docno."""
    docnos, scores = [], []
    for qi, cands in zip(q.astype(np.float64), candidates):
        s = x[cands].astype(np.float64) @ qi
        order = np.lexsort((cands, -s))[:k]
        docnos.append(cands[order])
        scores.append(s[order])
    return np.stack(docnos), np.stack(scores)


# -- tier 1: hand-built ---------------------------------------------------------------------------
def test_pack_signs_by_hand():
    x = np.array([[0.5, -1.0, 0.0, 2.0, -3.0, 4.0, -5.0, 6.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 0.1]], dtype=np.float32)
    # bits (> 0): 1 0 0 1 0 1 0 1 | 1 1 1 1 0 0 0 1 ; zero counts as negative
    assert pack_signs(x).tolist() == [[0b10010101, 0b11110001]]
    assert pack_signs(x).dtype == np.uint8


def test_hamming_and_rescoring_by_hand():
    # 4 documents of 8 dimensions; the query is all positive
    x = np.array(
        [
            [1, 1, 1, 1, 1, 1, 1, 1],  # distance 0, score 8
            [-1, 1, 1, 1, 1, 1, 1, 1],  # distance 1, score 6
            [1, 1, 1, 1, 1, 1, 1, -1],  # distance 1, score 6 (ties docno 1 on both)
            [-9, -9, 2, 2, 2, 2, 2, 2],  # distance 2, score -6
        ],
        dtype=np.float32,
    )
    binary = faiss.IndexBinaryFlat(8)
    binary.add(pack_signs(x))
    q = np.ones((1, 8), dtype=np.float32)
    assert hamming_candidates(binary, pack_signs(q), 3).tolist() == [[0, 1, 2]]
    hits = rescore_candidates(q, np.array([[3, 2, 1]]), lambda d: x[d], k=2)
    assert hits.docnos.tolist() == [[1, 2]] and hits.scores.tolist() == [[6.0, 6.0]]
    hits = rescore_candidates(q, np.array([[3, -1]]), lambda d: x[d], k=2)  # padding ignored
    assert hits.docnos.tolist() == [[3, -1]] and hits.scores[0, 0] == -6.0 and hits.scores[0, 1] == -np.inf


# -- tier 2: against brute force ------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    # 16 dimensions: only 17 Hamming distances, so the cut-off falls inside ties and tie-breaking is tested
    return {dim: (normalised(2000, dim, seed=1), normalised(30, dim, seed=2)) for dim in (16, 64)}


@pytest.mark.parametrize("dim", [16, 64])
@pytest.mark.parametrize("m", [1, 7, 40, 333, 2000])
def test_hamming_candidates_equal_brute_force(data, dim, m):
    x, q = data[dim]
    index = DenseIndex.build(x, DenseIndexConfig(kind="bin"))
    got = hamming_candidates(index.binary, pack_signs(q), m)
    np.testing.assert_array_equal(got, brute_hamming(pack_signs(x), pack_signs(q), m))


@pytest.mark.parametrize("dim", [16, 64])
@pytest.mark.parametrize("k,multiplier", [(1, 1), (10, 4), (10, 1), (25, 3)])
def test_retriever_equals_brute_force_rescoring_of_brute_force_candidates(data, dim, k, multiplier):
    x, q = data[dim]
    index = DenseIndex.build(x, DenseIndexConfig(kind="bin"))
    retriever = DenseBinRetriever(dense=_VectorsOnly(x), binary=index.binary)
    hits = retriever.search_vectors(q, k=k, rescore_multiplier=multiplier)
    candidates = brute_hamming(pack_signs(x), pack_signs(q), k * multiplier)
    docnos, scores = brute_rescore(x, q, candidates, k)
    np.testing.assert_array_equal(hits.docnos, docnos)
    np.testing.assert_allclose(hits.scores, scores, rtol=0, atol=1e-5)


def test_exclude_drops_the_self_hit_and_keeps_k(data):
    x, q = data[64]
    index = DenseIndex.build(x, DenseIndexConfig(kind="bin"))
    retriever = DenseBinRetriever(dense=_VectorsOnly(x), binary=index.binary)
    full = retriever.search_vectors(q, k=11, rescore_multiplier=4)
    exclude = full.docnos[:, 0].copy()
    got = retriever.search_vectors(q, k=10, rescore_multiplier=4, exclude=exclude)
    # candidates are 4 x (k + 1) = 44 either way, so the list is the full one without its first hit
    np.testing.assert_array_equal(got.docnos, full.docnos[:, 1:])


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_multiplier_covering_the_collection_equals_flat_search(data, metric):
    x, q = data[64]
    n = x.shape[0]
    index = DenseIndex.build(x, DenseIndexConfig(kind="bin", metric=metric))
    flat = DenseIndex.build(x, DenseIndexConfig(kind="flat", metric=metric))
    retriever = DenseBinRetriever(dense=_VectorsOnly(x), binary=index.binary, metric=metric)
    for k in (10, 100):
        got = retriever.search_vectors(q, k=k, rescore_multiplier=-(-n // k))
        want = flat.search(q, k=k)
        np.testing.assert_array_equal(got.docnos, want.docnos)
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-5)
    # the float part of a bin index is flat: same results as flat
    np.testing.assert_array_equal(index.search(q, k=10).docnos, flat.search(q, k=10).docnos)


class _VectorsOnly:
    """The part of DenseRetriever that dense-bin uses, over an array."""

    def __init__(self, x):
        self.x = x

    def doc_vectors(self, docnos):
        return self.x[np.asarray(docnos, dtype=np.int64)]


# -- the build option and persistence -------------------------------------------------------------
def test_bin_index_saves_and_loads_its_sign_bits(data, tmp_path):
    x, _ = data[64]
    index = DenseIndex.build(x, DenseIndexConfig(kind="bin"))
    info = index.save(tmp_path)
    assert info["binary_file"] == "dense.bin.faiss" and (tmp_path / "dense.bin.faiss").is_file()
    assert info["bytes_per_vector"] == 64 * 4 + 64 / 8
    again = DenseIndex.load(tmp_path, info)
    codes = faiss.rev_swig_ptr(again.binary.xb.data(), again.binary.ntotal * again.binary.code_size)
    np.testing.assert_array_equal(np.asarray(codes).reshape(-1, 8), pack_signs(x))
    (tmp_path / "dense.bin.faiss").unlink()
    with pytest.raises(IndexFormatError, match="dense.bin.faiss is missing"):
        DenseIndex.load(tmp_path, info)


def test_bin_needs_a_dimension_multiple_of_eight():
    with pytest.raises(OptionError, match="multiple of 8"):
        DenseIndex.build(normalised(50, 12, seed=0), DenseIndexConfig(kind="bin"))


# -- knobs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4", float("nan")])
def test_rescore_multiplier_is_validated(bad):
    with pytest.raises(OptionError, match="rescore_multiplier"):
        registry.check_knobs("dense-bin", {"rescore_multiplier": bad})
    with pytest.raises(OptionError, match="rescore_multiplier"):
        registry.split_knobs(["dense-bin"], {"rescore_multiplier": bad})


def test_rescore_multiplier_belongs_to_dense_bin_only():
    assert registry.check_knobs("dense-bin", {"rescore_multiplier": 8.0}) == {"rescore_multiplier": 8}
    with pytest.raises(OptionError, match="not an option of the dense retriever"):
        registry.check_knobs("dense", {"rescore_multiplier": 4})
    with pytest.raises(OptionError, match="none of the retrievers searched takes it"):
        registry.split_knobs(["bm25", "dense"], {"rescore_multiplier": 4})
    with pytest.raises(OptionError, match="not an option of the dense-bin retriever"):
        registry.check_knobs("dense-bin", {"nprobe": 4})


def test_spec():
    spec = registry.get("dense-bin")
    assert spec.component == "dense" and not spec.hybrid
    assert spec.thread_safe == registry.get("dense").thread_safe  # its encoder and FAISS searches are safe from several threads (issue 14)
    assert spec.why_not({"index": {"config": {"kind": "bin"}}}) is None
    assert "--dense-index bin" in spec.why_not({"index": {"config": {"kind": "flat"}}})
    assert "dense-bin" not in registry.hybrid_members(registry.RETRIEVERS)


# -- tier 3: build -> save -> open -> search through the CLI and the Searcher ------------------------
def _sibling(name: str):
    """A module of this folder (``--import-mode=importlib``: tests are not a package)."""
    spec = importlib.util.spec_from_file_location(f"_braid_dense_bin_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dense_model(tmp_path_factory) -> str:
    minilm = SHARED / "models" / "all-MiniLM-L6-v2"
    if minilm.is_dir():
        return str(minilm)
    pytest.importorskip("torch")
    return str(_sibling("test_sharded").make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-dense", mlm=False, seed=1))


@pytest.fixture(scope="module")
def bin_index(tmp_path_factory):
    toy_data = _sibling("conftest")
    root = tmp_path_factory.mktemp("dense-bin")
    toy = root / "toy"
    toy_data.write_jsonl(toy / "corpus.jsonl", toy_data.TOY_DOCS)
    toy_data.write_jsonl(toy / "queries.jsonl", toy_data.TOY_QUERIES)
    (toy / "qrels").mkdir()
    (toy / "qrels" / "test.tsv").write_text(toy_data.TOY_QRELS)
    model = _dense_model(tmp_path_factory)
    out = root / "indexes" / "toy"
    args = ["index", str(toy), "--out", str(out), "--retrievers", "bm25,dense", "--dense-model", model, "--dense-index", "bin", "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return toy, out, model


def test_round_trip_through_cli_and_searcher(bin_index):
    from braid.retrieval.searcher import Searcher

    _, out, _ = bin_index
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["components"]["dense"]["index"]["config"]["kind"] == "bin"
    assert (out / "dense" / "dense.bin.faiss").is_file() and (out / "vectors" / "dense" / "vectors.npy").is_file()

    searcher = Searcher(out)
    assert {"dense", "dense-bin"} <= set(searcher.available_retrievers())
    queries = ["why do cats purr", "dogs bark", "wolf habitat"]
    got = searcher.batch_search(queries, k=3, retriever="dense-bin", rescore_multiplier=1)
    # reference: brute-force Hamming top 3 of the stored vectors, rescored in float64
    x = np.load(out / "vectors" / "dense" / "vectors.npy")
    q = searcher.retriever("dense-bin").encode_queries(queries)
    docnos, scores = brute_rescore(x, q, brute_hamming(pack_signs(x), pack_signs(q), 3), 3)
    np.testing.assert_array_equal(got.hits.docnos, docnos)
    np.testing.assert_allclose(got.hits.scores, scores, atol=1e-5)
    # all six documents rescored = exact dense over the same index
    every = searcher.batch_search(queries, k=3, retriever="dense-bin", rescore_multiplier=2)
    exact = searcher.batch_search(queries, k=3, retriever="dense")
    assert every.doc_ids == exact.doc_ids

    runner = CliRunner()
    res = runner.invoke(main, ["search", str(out), "wolf habitat", "-r", "dense-bin", "--rescore-multiplier", "2", "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    from braid.encoders.base import RuntimeOptions, resolve_runtime

    # --runtime auto: the query encoder's runtime as auto resolves it here (ONNX on a CPU with onnxruntime)
    assert payload["recipe"] == {"retriever": "dense-bin", "rescore_multiplier": 2, "runtime": {"dense-bin": resolve_runtime(RuntimeOptions(), "query")}}
    assert [h["id"] for h in payload["hits"]] == exact.doc_ids[2]
    res = runner.invoke(main, ["search", str(out), "wolf", "-r", "dense-bin", "--rescore-multiplier", "0"])
    assert res.exit_code != 0 and "rescore_multiplier" in res.output and ">= 1" in res.output
    res = runner.invoke(main, ["search", str(out), "wolf", "-r", "dense", "--rescore-multiplier", "2"])
    assert res.exit_code != 0 and "rescore_multiplier" in res.output


def test_eval_and_prf_pipeline_over_dense_bin(bin_index, tmp_path):
    toy, out, _ = bin_index
    res = CliRunner().invoke(
        main, ["eval", str(toy), "--index-root", str(out.parent), "--runs-dir", str(tmp_path / "runs"), "-r", "dense-bin", "--json", "-q"]
    )
    assert res.exit_code == 0, res.output
    assert 0 < json.loads(res.stdout)["toy"]["ndcg@10"] <= 1
    pipeline = tmp_path / "bin-prf.toml"
    pipeline.write_text(
        'name = "bin-prf"\ndepth = 6\n[[retriever]]\nname = "dense-bin"\nprf = { method = "rocchio", fb_docs = 2 }\n'
        '[[retriever]]\nname = "bm25"\n[fusion]\nmethod = "rrf"\n'
    )
    res = CliRunner().invoke(main, ["search", str(out), "cats", "--pipeline", str(pipeline), "--rescore-multiplier", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)["hits"]) == 6


def test_defaults_and_refusals(bin_index, tmp_path):
    from braid.retrieval.searcher import Searcher

    toy, out, model = bin_index
    runner = CliRunner()
    dense_only = tmp_path / "dense-only"
    res = runner.invoke(main, ["index", str(toy), "--out", str(dense_only), "--retrievers", "dense", "--dense-model", model, "--dense-index", "bin", "-q"])
    assert res.exit_code == 0, res.output
    assert Searcher(dense_only).engine().name == "dense-bin"  # what a bin index searches by default
    assert Searcher(out).engine().name == "hybrid"  # bm25 + dense (exact): dense-bin does not join the hybrid
    flat = tmp_path / "flat"
    res = runner.invoke(main, ["index", str(toy), "--out", str(flat), "--retrievers", "dense", "--dense-model", model, "-q"])
    assert res.exit_code == 0, res.output
    assert Searcher(flat).available_retrievers() == ["dense"]
    res = runner.invoke(main, ["search", str(flat), "wolf", "-r", "dense-bin"])
    assert res.exit_code != 0 and "--dense-index bin" in res.output
