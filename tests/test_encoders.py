"""Encoders: SPLADE pooling, inference-free queries, IDF tables, dense pooling, model resolution.

Mechanics run on a tiny randomly initialised BERT built here; numbers are checked against the
real models in /work/shared/models and the pre-encoded scifact vectors when they are present.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from braid.data.errors import BraidError, DataError, OptionError
from braid.encoders import resolve as R
from braid.encoders.base import RuntimeOptions, length_sorted_batches
from braid.encoders.sparse import (
    IdfTable,
    SparseEncoder,
    SparseEncoderConfig,
    compute_idf,
    dequantize_u8,
    prune_top_k,
    quantize_u8,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SHARED = Path("/work/shared")
SPLADE = SHARED / "models" / "splade-tiny"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
VECTORS = SHARED / "vectors" / "scifact"
SCIFACT = SHARED / "data" / "scifact"

WORDS = (
    "the a of and is on in apple banana cherry fruit red green yellow sweet sour tree grows "
    "ripe seed leaf cell protein gene cancer study"
).split()
TEXTS = [
    "the apple is red",
    "a banana is yellow and sweet",
    "cherry",
    "the green apple grows on a tree and the red cherry grows on a tree",
    "sour fruit",
    "gene protein cell cancer study of the seed",
    "leaf",
]


def make_tiny_bert(root: Path, *, mlm: bool = True, st_pooling: str | None = None, normalize: bool = False, seed: int = 0) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece vocabulary of WORDS, saved to ``root``."""
    from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer

    root.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##s", "##ed", "##ing"]
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})
    tok.save_pretrained(root)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(cfg) if mlm else BertModel(cfg)
    if mlm:
        # a random MLM bias around 0 gives few positive logits; shift it so vectors have some terms
        with torch.no_grad():
            model.cls.predictions.decoder.bias.add_(0.5)
    model.save_pretrained(root)
    if st_pooling is not None:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
            (root / "2_Normalize").mkdir(exist_ok=True)
        (root / "modules.json").write_text(json.dumps(modules))
        (root / "1_Pooling").mkdir(exist_ok=True)
        keys = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
                "lasttoken": "pooling_mode_lasttoken", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}
        pool_cfg = {"word_embedding_dimension": 32, **{v: (k == st_pooling) for k, v in keys.items()}}
        (root / "1_Pooling" / "config.json").write_text(json.dumps(pool_cfg))
        (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48, "do_lower_case": False}))
    return root


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-mlm") / "tiny-splade")


def splade_reference(model_dir: Path, texts: list[str], max_length: int = 256) -> np.ndarray:
    """SPLADE by the book, one text at a time (no padding): max_i log(1 + relu(logits_i)), float32 (n, V)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t, truncation=True, max_length=max_length, return_tensors="pt")
            logits = model(**enc).logits[0]
            out.append(torch.log1p(torch.relu(logits)).amax(dim=0).numpy())
    return np.stack(out)


def dense_rows(vecs) -> np.ndarray:
    import scipy.sparse as sp

    return sp.csr_matrix((vecs.data, vecs.indices, vecs.indptr), shape=(len(vecs.indptr) - 1, vecs.vocab_size)).toarray()


# ---------------------------------------------------------------------------------------------
# mechanics without a model
# ---------------------------------------------------------------------------------------------
def test_length_sorted_batches_cover_all_positions_longest_first():
    lengths = [3, 9, 1, 9, 4, 2, 7]
    batches = length_sorted_batches(lengths, 3)
    assert [b.tolist() for b in batches] == [[1, 3, 6], [4, 0, 5], [2]]


def test_runtime_options_validate():
    with pytest.raises(OptionError, match="batch_size"):
        RuntimeOptions(batch_size=0)
    with pytest.raises(OptionError, match="device"):
        RuntimeOptions(device="tpu")
    with pytest.raises(OptionError, match="precision"):
        RuntimeOptions(precision="int4")
    with pytest.raises(OptionError, match="runtime"):
        RuntimeOptions(runtime="tensorrt")
    with pytest.raises(OptionError, match="precision.*needs runtime='onnx'"):
        RuntimeOptions(precision="int8", runtime="torch")
    with pytest.raises(OptionError, match="precision.*needs runtime='torch'"):
        RuntimeOptions(precision="bf16", runtime="onnx")
    with pytest.raises(OptionError, match="device"):
        RuntimeOptions(device="cuda", runtime="onnx")
    assert RuntimeOptions.from_dict(RuntimeOptions(max_length=64).to_dict()) == RuntimeOptions(max_length=64)


def test_sparse_config_round_trip_and_validation():
    cfg = SparseEncoderConfig(top_k=5, quantization_step=0.1, query_mode="idf")
    assert SparseEncoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(OptionError, match="top_k"):
        SparseEncoderConfig(top_k=0)
    with pytest.raises(OptionError, match="query_mode"):
        SparseEncoderConfig(query_mode="bm25")
    with pytest.raises(OptionError, match="quantization_step"):
        SparseEncoderConfig(quantization_step=-1.0)
    with pytest.raises(OptionError, match="unknown|known keys"):
        SparseEncoderConfig.from_dict({"modle": "x"})


def test_prune_top_k_hand_worked():
    indptr = np.array([0, 4, 4, 6], dtype=np.int64)
    indices = np.array([1, 3, 5, 8, 2, 7], dtype=np.int32)
    data = np.array([0.5, 2.0, 0.5, 1.0, 3.0, 1.0], dtype=np.float32)
    p, i, d = prune_top_k(indptr, indices, data, 2)
    # row 0 keeps 3 (2.0) and 8 (1.0); row 1 empty; row 2 keeps both
    assert p.tolist() == [0, 2, 2, 4]
    assert i.tolist() == [3, 8, 2, 7]
    assert d.tolist() == [2.0, 1.0, 3.0, 1.0]
    p, i, d = prune_top_k(indptr, indices, data, 3)  # tie at 0.5 goes to the smaller term id (1)
    assert i[:3].tolist() == [1, 3, 8]
    # trailing empty rows, and quantization dropping entries that round to 0
    from braid.encoders.sparse import quantize_weights

    p, i, d = quantize_weights(np.array([0, 3, 3, 3], np.int64), np.array([1, 2, 3], np.int32),
                               np.array([0.04, 0.26, 0.5], np.float32), 0.1)
    assert p.tolist() == [0, 2, 2, 2] and i.tolist() == [2, 3]
    np.testing.assert_allclose(d, [0.3, 0.5])


def test_quantize_u8_round_trip():
    data = np.array([0.0, 0.1, 1.0, 2.55], dtype=np.float32)
    codes, scale = quantize_u8(data)
    assert codes.dtype == np.uint8 and codes.tolist() == [0, 10, 100, 255]
    assert math.isclose(scale, 0.01, rel_tol=1e-6)
    np.testing.assert_allclose(dequantize_u8(codes, scale), data, atol=scale / 2)


def test_importing_modules_loads_no_heavy_dependency():
    code = (
        "import sys, braid, braid.encoders, braid.encoders.sparse, braid.encoders.dense, braid.encoders.resolve, "
        "braid.index.dense, braid.retrieval.build.vectorcache\n"
        "heavy = [m for m in ('torch', 'transformers', 'faiss') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------------------------------------
# model resolution
# ---------------------------------------------------------------------------------------------
def test_resolve_errors_name_the_argument(tmp_path, monkeypatch):
    monkeypatch.delenv(R.MODEL_PATH_ENV, raising=False)
    with pytest.raises(BraidError, match=r"model='\./nope'.*no such model folder"):
        R.resolve_model("./nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BraidError, match="not a Hugging Face model folder"):
        R.resolve_model(str(empty), argument="--sparse-model")
    with pytest.raises(BraidError, match="--sparse-model"):
        R.resolve_model(str(empty), argument="--sparse-model")
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(BraidError, match="is a file"):
        R.resolve_model(str(f))
    with pytest.raises(BraidError, match="not a valid hub id"):
        R.resolve_model("not a model")
    with pytest.raises(BraidError):
        R.resolve_model("")


def test_resolve_search_path_by_last_component(tiny_mlm, tmp_path, monkeypatch):
    monkeypatch.setenv(R.MODEL_PATH_ENV, f"{tmp_path / 'missing'}:{tiny_mlm.parent}")
    ref = R.resolve_model("someone/tiny-splade")
    assert ref.source == "search_path" and ref.local_dir == tiny_mlm.resolve()
    assert ref.file("config.json") is not None and ref.file("idf.json") is None


def test_resolve_hub_id_offline_error_lists_what_was_tried(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv(R.MODEL_PATH_ENV, str(tmp_path / "models"))
    with pytest.raises(BraidError) as err:
        R.resolve_model("acme/no-such-model", argument="--dense-model")
    msg = str(err.value)
    assert "--dense-model='acme/no-such-model'" in msg
    assert str(tmp_path / "models") in msg and "BRAID_MODEL_PATH" in msg
    assert "HF_HUB_OFFLINE" in msg
    monkeypatch.delenv(R.MODEL_PATH_ENV)
    with pytest.raises(BraidError, match="BRAID_MODEL_PATH is not set"):
        R.resolve_model("acme/no-such-model")


def test_hub_id_loads_from_a_local_hugging_face_cache(tiny_mlm, tmp_path, monkeypatch):
    """The hub path, offline: an id whose files sit in the HF cache layout resolves and encodes."""
    import shutil

    import huggingface_hub.constants as hc

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-cache" / "models--acme--tiny-hub"
    snap = repo / "snapshots" / commit
    shutil.copytree(tiny_mlm, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv(R.MODEL_PATH_ENV, raising=False)
    ref = R.resolve_model("acme/tiny-hub")
    assert ref.source == "hub" and ref.local_dir is None and ref.location == "acme/tiny-hub"
    assert ref.file("tokenizer_config.json") is not None
    assert ref.file("idf.json") is None
    got = SparseEncoder("acme/tiny-hub", device="cpu").encode(TEXTS[:3])
    want = SparseEncoder(str(tiny_mlm), device="cpu").encode(TEXTS[:3])
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=1e-6)


def test_hub_id_downloads_through_hf_endpoint_from_a_local_server(tiny_mlm, tmp_path, monkeypatch):
    """The online hub path without the internet: HF_ENDPOINT points at an http.server on 127.0.0.1."""
    import huggingface_hub.constants as hc

    from tests.hub_support import HubServer

    with HubServer({"acme/tiny-http": tiny_mlm}) as hub:
        endpoint = hub.endpoint
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hc, "ENDPOINT", endpoint)
        monkeypatch.setattr(hc, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        import huggingface_hub.hf_api as hf_api

        # shared HfApi objects captured the real endpoint when made: point them here too
        monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
        try:
            import transformers.utils.hub as tf_hub

            if hasattr(tf_hub, "_hf_api"):
                monkeypatch.setattr(tf_hub, "_hf_api", None)  # rebuilt on demand with the patched endpoint
        except ImportError:  # pragma: no cover - older transformers
            pass
        monkeypatch.delenv(R.MODEL_PATH_ENV, raising=False)
        ref = R.resolve_model("acme/tiny-http")
        assert ref.source == "hub"
        got = SparseEncoder("acme/tiny-http", device="cpu").encode(TEXTS[:2])
        want = SparseEncoder(str(tiny_mlm), device="cpu").encode(TEXTS[:2])
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_allclose(got.data, want.data, rtol=1e-6)
        assert "model.safetensors" in hub.downloaded("acme/tiny-http")
        with pytest.raises(BraidError, match="acme/missing.*could not be fetched"):
            R.resolve_model("acme/missing")


# ---------------------------------------------------------------------------------------------
# sparse encoder on the tiny model
# ---------------------------------------------------------------------------------------------
def test_splade_pooling_matches_per_text_reference(tiny_mlm):
    enc = SparseEncoder(str(tiny_mlm), batch_size=3, device="cpu")
    vecs = enc.encode(TEXTS)
    assert vecs.vocab_size == enc.vocab_size == len(enc.vocabulary)
    assert vecs.indptr.dtype == np.int64 and vecs.indices.dtype == np.int32 and vecs.data.dtype == np.float32
    assert (vecs.data > 0).all()
    want = splade_reference(tiny_mlm, TEXTS)
    assert (want > 0).sum() > 3 * len(TEXTS)  # the test model produces real vectors
    np.testing.assert_allclose(dense_rows(vecs), want, atol=2e-6)


def test_packed_and_plain_heads_agree_and_batching_does_not_matter(tiny_mlm):
    from braid.encoders.sparse import _PackedSpladeHead, _PlainSpladeHead

    a = SparseEncoder(str(tiny_mlm), batch_size=2, device="cpu", runtime="torch")
    ref = dense_rows(a.encode(TEXTS))
    assert isinstance(a.backbone._torch_forward, _PackedSpladeHead)  # the fast path is the one in use
    b = SparseEncoder(str(tiny_mlm), batch_size=32, device="cpu", runtime="torch")
    old = _PackedSpladeHead.TOKENS_PER_STEP
    try:
        _PackedSpladeHead.TOKENS_PER_STEP = 5  # many small projection steps
        np.testing.assert_allclose(dense_rows(b.encode(TEXTS)), ref, atol=2e-6)
    finally:
        _PackedSpladeHead.TOKENS_PER_STEP = old
    c = SparseEncoder(str(tiny_mlm), batch_size=4, device="cpu", runtime="torch")
    c.backbone.model  # noqa: B018 - loads it (and splits its decoder off): the plain head gets a whole model
    c.backbone._torch_forward = _PlainSpladeHead(_reloaded_mlm(tiny_mlm))
    np.testing.assert_allclose(dense_rows(c.encode(TEXTS)), ref, atol=2e-6)
    single = np.vstack([dense_rows(a.encode([t])) for t in TEXTS])
    np.testing.assert_allclose(single, ref, atol=2e-6)


def test_tiled_vocabulary_projection_equals_the_whole_product():
    """The CPU head projects the vocabulary a tile at a time and adds the bias after the max: the weights of
    one product and a max (tiles that do not divide the vocabulary, an empty text), to float32 rounding (a
    one-column product may take a different BLAS routine; splade-tiny's 1,024-column tiles gave the same
    bits on scifact, docs/benchmarks/encoders.md)."""
    import torch
    import torch.nn.functional as F

    from braid.encoders.sparse import _PackedSpladeHead

    torch.manual_seed(0)
    decoder = torch.nn.Linear(16, 203)
    lengths = [5, 0, 9, 1]
    tokens = torch.randn(sum(lengths), 16)
    logits = F.linear(tokens, decoder.weight, decoder.bias)
    want = torch.full((len(lengths), 203), float("-inf"))
    at = 0
    for t, n in enumerate(lengths):
        if n:
            want[t] = logits[at : at + n].amax(dim=0)
        at += n
    for tile in (1, 7, 64, 203, 4096):
        head = _PackedSpladeHead(model=None, decoder=decoder)
        head.VOCAB_TILE = tile
        got = torch.zeros_like(want)
        with torch.inference_mode():
            head._project_tiled(tokens, lengths, got)
        assert torch.equal(torch.isinf(got), torch.isinf(want)), tile
        torch.testing.assert_close(got[1:].nan_to_num(), want[1:].nan_to_num(), rtol=1e-6, atol=1e-6)
        assert torch.isinf(got[1]).all()


def _reloaded_mlm(path: Path):
    from transformers import AutoModelForMaskedLM

    return AutoModelForMaskedLM.from_pretrained(path).eval()


@pytest.mark.parametrize("runtime,precision", [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")])
def test_splade_runtimes_match_the_reference(tiny_mlm, runtime, precision):
    enc = SparseEncoder(str(tiny_mlm), batch_size=3, device="cpu", runtime=runtime, precision=precision)
    assert enc.runtime == runtime
    want = splade_reference(tiny_mlm, TEXTS)
    atol = 2e-6 if precision == "fp32" else 0.05 * float(want.max())
    np.testing.assert_allclose(dense_rows(enc.encode(TEXTS)), want, atol=atol)
    single = np.vstack([dense_rows(enc.encode([t])) for t in TEXTS])  # the unpadded batch-of-one path
    np.testing.assert_allclose(single, want, atol=atol)
    if precision == "fp32":
        assert enc.describe()["precision"] == "fp32"
    else:
        assert enc.describe()["precision"] == "int8"  # int8 changes the vectors: part of what the cache compares


def test_onnx_threads_set_the_session_s_intra_op_threads(tiny_mlm):
    pytest.importorskip("onnxruntime")
    want = splade_reference(tiny_mlm, TEXTS)
    for threads, expect in ((None, 0), (1, 1), (2, 2)):  # 0: ONNX Runtime's default (one per core)
        enc = SparseEncoder(str(tiny_mlm), batch_size=3, device="cpu", runtime="onnx", threads=threads)
        np.testing.assert_allclose(dense_rows(enc.encode(TEXTS[:1], "query")), want[:1], atol=2e-6)
        np.testing.assert_allclose(dense_rows(enc.encode(TEXTS, "query")), want, atol=2e-6)
        assert enc.backbone.session.get_session_options().intra_op_num_threads == expect


def test_top_k_and_quantization_options(tiny_mlm):
    full = dense_rows(SparseEncoder(str(tiny_mlm), device="cpu").encode(TEXTS))
    pruned = dense_rows(SparseEncoder(str(tiny_mlm), device="cpu", top_k=3).encode(TEXTS))
    for row_full, row in zip(full, pruned):
        nz = np.flatnonzero(row_full)
        keep = nz[np.lexsort((nz, -row_full[nz]))][:3]
        expect = np.zeros_like(row_full)
        expect[keep] = row_full[keep]
        np.testing.assert_array_equal(row, expect)
    step = 0.05
    q = dense_rows(SparseEncoder(str(tiny_mlm), device="cpu", quantization_step=step).encode(TEXTS))
    expect = (np.round(full.astype(np.float64) / step) * step).astype(np.float32)
    np.testing.assert_allclose(q, expect, atol=1e-7)
    codes = q[q > 0] / step
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)


def test_sparse_encode_rejects_bad_input(tiny_mlm):
    enc = SparseEncoder(str(tiny_mlm), device="cpu")
    with pytest.raises(OptionError, match="texts"):
        enc.encode("just one string")
    with pytest.raises(OptionError, match="texts"):
        enc.encode(["ok", 3])
    with pytest.raises(OptionError, match="kind"):
        enc.encode(["ok"], kind="passage")
    empty = enc.encode([])
    assert len(empty.indptr) == 1 and len(empty.indices) == 0


def test_inference_free_queries_from_idf_json(tiny_mlm, tmp_path):
    import shutil

    folder = tmp_path / "with-idf"
    shutil.copytree(tiny_mlm, folder)
    (folder / "idf.json").write_text(json.dumps({"apple": 2.5, "red": 1.25, "the": 0.5, "[CLS]": 9.0, "no-such-token": 3.0}))
    enc = SparseEncoder(str(folder), query_mode="idf", device="cpu")
    vocab = enc.backbone.tokenizer.get_vocab()
    q = enc.encode(["the red apple , the RED apple", "banana"], kind="query")
    assert enc.backbone._session is None
    assert q.indptr.tolist() == [0, 3, 3]  # banana has no idf.json weight: empty query
    got = dict(zip(q.indices.tolist(), q.data.tolist()))
    assert got == {vocab["apple"]: 2.5, vocab["red"]: 1.25, vocab["the"]: 0.5}
    assert enc._model is None if hasattr(enc, "_model") else enc.backbone._model is None  # no forward pass
    assert enc.describe("query")["pooling"] == "inference-free-idf"
    # documents still go through the model
    assert len(enc.encode(["the red apple"], kind="document").indices) > 0


def test_inference_free_without_table_says_how_to_get_one(tiny_mlm):
    enc = SparseEncoder(str(tiny_mlm), query_mode="idf", device="cpu")
    with pytest.raises(BraidError, match="compute_idf"):
        enc.encode(["apple"], kind="query")


def test_compute_idf_hand_worked_and_saved_as_npy(tiny_mlm, tmp_path):
    enc = SparseEncoder(str(tiny_mlm), device="cpu", query_mode="idf")
    docs = ["apple apple red", "apple green", "banana"]
    table = compute_idf(docs, enc, batch_size=2)
    vocab = enc.backbone.tokenizer.get_vocab()
    n = 3

    def idf(df):
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    assert table.num_docs == 3 and table.weights.dtype == np.float32 and len(table.weights) == enc.vocab_size
    assert math.isclose(table.weights[vocab["apple"]], idf(2), rel_tol=1e-6)
    assert math.isclose(table.weights[vocab["red"]], idf(1), rel_tol=1e-6)
    assert math.isclose(table.weights[vocab["cherry"]], idf(0), rel_tol=1e-6)
    assert table.weights[vocab["[CLS]"]] == 0 and table.weights[vocab["[PAD]"]] == 0

    path = tmp_path / "idf" / "idf.npy"
    table.save(path)
    assert json.loads(path.with_suffix(".json").read_text())["num_docs"] == 3
    back = IdfTable.load(path)
    np.testing.assert_array_equal(back.weights, table.weights)
    enc.set_idf(path)
    q = enc.encode(["red apple apple"], kind="query")
    assert dict(zip(q.indices.tolist(), q.data.tolist())) == pytest.approx(
        {vocab["apple"]: idf(2), vocab["red"]: idf(1)}, rel=1e-6
    )
    with pytest.raises(OptionError, match=".npy"):
        table.save(tmp_path / "idf.pkl")
    path.with_suffix(".json").write_text("{broken")
    with pytest.raises(DataError, match="corrupted"):
        IdfTable.load(path)
    with pytest.raises(DataError, match="not found"):
        IdfTable.load(tmp_path / "nothing.npy")


def test_vocabulary_maps_ids_to_tokens(tiny_mlm, tmp_path):
    import shutil

    enc = SparseEncoder(str(tiny_mlm), device="cpu")
    vocab = enc.vocabulary
    # make_tiny_bert's WordPiece vocabulary, in id order
    assert vocab == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ed", "##ing"]
    # a document vector read through the vocabulary is the by-the-book SPLADE vector, term by term
    # (this random model's shifted MLM bias makes every one of the 34 terms positive, "cherry" included)
    v = enc.encode(["cherry"])
    ref = splade_reference(tiny_mlm, ["cherry"])[0]
    got = {vocab[i]: w for i, w in zip(v.indices.tolist(), v.data.tolist())}
    assert got == pytest.approx({vocab[i]: float(ref[i]) for i in np.flatnonzero(ref)}, rel=1e-6)
    assert got["cherry"] > 0
    # an inference-free query of one word is that word's term alone, weighted by its IDF
    folder = tmp_path / "with-idf"
    shutil.copytree(tiny_mlm, folder)
    (folder / "idf.json").write_text(json.dumps({"cherry": 1.5, "apple": 2.0}))
    q = SparseEncoder(str(folder), query_mode="idf", device="cpu").encode(["cherry"], kind="query")
    assert [vocab[i] for i in q.indices] == ["cherry"] and q.data.tolist() == [1.5]


def test_bf16_autocast_runs_close_to_fp32(tiny_mlm):
    ref = dense_rows(SparseEncoder(str(tiny_mlm), device="cpu").encode(TEXTS[:3]))
    got = dense_rows(SparseEncoder(str(tiny_mlm), device="cpu", precision="bf16").encode(TEXTS[:3]))
    np.testing.assert_allclose(got, ref, atol=0.1)


# ---------------------------------------------------------------------------------------------
# runtimes: ONNX export cache, thread safety, what is imported
# ---------------------------------------------------------------------------------------------
def test_auto_runtime_is_onnx_on_a_cpu_and_specs_parse():
    from braid.encoders.base import onnxruntime_available, parse_runtime, resolve_runtime

    if onnxruntime_available():
        assert resolve_runtime(RuntimeOptions(device="cpu")) == "onnx"  # queries
        assert resolve_runtime(RuntimeOptions(device="cpu"), "document", cpu_documents="torch") == "torch"
        assert resolve_runtime(RuntimeOptions(device="cpu", precision="int8"), "document", cpu_documents="torch") == "onnx"
    assert resolve_runtime(RuntimeOptions(device="cpu", runtime="torch")) == "torch"
    assert resolve_runtime(RuntimeOptions(precision="bf16")) == "torch"
    assert parse_runtime("onnx-int8") == ("onnx", "int8") and parse_runtime("auto") == ("auto", None)
    with pytest.raises(OptionError, match="runtime"):
        parse_runtime("onnx-fp16")


def test_onnx_graph_cached_outside_the_model_and_rebuilt_when_the_model_changes(tiny_mlm, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("BRAID_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    shutil.copytree(tiny_mlm, folder)
    before = sorted(p.name for p in folder.rglob("*"))
    a = SparseEncoder(str(folder), device="cpu", runtime="onnx")
    want = dense_rows(a.encode(TEXTS))
    path = a.backbone.graph_path
    assert path.is_file() and (tmp_path / "cache" / "onnx") in path.parents
    assert sorted(p.name for p in folder.rglob("*")) == before  # nothing written into the model folder
    meta = json.loads((path.parent / "meta.json").read_text())
    assert meta["head"] == "splade-max-log1p-relu" and meta["precision"] == "fp32"
    mtime = path.stat().st_mtime_ns
    b = SparseEncoder(str(folder), device="cpu", runtime="onnx")
    np.testing.assert_array_equal(dense_rows(b.encode(TEXTS)), want)
    assert b.backbone.graph_path == path and path.stat().st_mtime_ns == mtime  # reused, not exported again
    # new weights in the same folder: a new graph with the new model's vectors
    make_tiny_bert(folder, seed=1)
    c = SparseEncoder(str(folder), device="cpu", runtime="onnx")
    got = dense_rows(c.encode(TEXTS))
    assert c.backbone.graph_path != path
    np.testing.assert_allclose(got, splade_reference(folder, TEXTS), atol=2e-6)
    assert not np.allclose(got, want)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_concurrent_encodes_equal_serial_results(tiny_mlm, tmp_path, runtime):
    from concurrent.futures import ThreadPoolExecutor

    from braid.encoders.dense import DenseEncoder

    sparse = SparseEncoder(str(tiny_mlm), batch_size=2, device="cpu", runtime=runtime)
    folder = make_tiny_bert(tmp_path / "st", mlm=False, st_pooling="mean", normalize=True)
    dense = DenseEncoder(str(folder), batch_size=2, device="cpu", runtime=runtime)
    jobs = [TEXTS[i:] + TEXTS[:i] for i in range(len(TEXTS))] * 4  # different batches, one per call
    # fresh encoders: the first calls race to load the model, tokenizer and session
    with ThreadPoolExecutor(8) as pool:
        got_sparse = list(pool.map(lambda t: dense_rows(sparse.encode(t)), jobs))
        got_dense = list(pool.map(lambda t: dense.encode(t, "query"), jobs))
        got_single = list(pool.map(lambda t: dense_rows(sparse.encode([t], "query")), TEXTS * 4))
    for texts, s, d in zip(jobs, got_sparse, got_dense):
        np.testing.assert_allclose(s, dense_rows(sparse.encode(texts)), atol=1e-6)
        np.testing.assert_allclose(d, dense.encode(texts, "query"), atol=1e-6)
    for text, s in zip(TEXTS * 4, got_single):
        np.testing.assert_allclose(s, dense_rows(sparse.encode([text], "query")), atol=1e-6)


def _imports_after(code: str) -> set[str]:
    """Heavy modules a fresh interpreter has imported after running ``code``."""
    probe = code + "\nimport sys\nprint(','.join(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=os.environ.copy())
    return set(filter(None, (out.stdout.strip().splitlines() or [""])[-1].split(",")))


def test_inference_free_queries_import_neither_torch_nor_onnxruntime(tiny_mlm, tmp_path):
    import shutil

    folder = tmp_path / "with-idf"
    shutil.copytree(tiny_mlm, folder)
    (folder / "idf.json").write_text(json.dumps({"apple": 2.5, "red": 1.25}))
    code = (
        "from braid.encoders.sparse import SparseEncoder\n"
        f"q = SparseEncoder({str(folder)!r}, query_mode='idf').encode(['red apple'], 'query')\n"
        "assert len(q.indices) == 2"
    )
    assert _imports_after(code) == set()


def test_onnx_queries_from_a_cached_graph_do_not_import_torch(tiny_mlm):
    pytest.importorskip("onnxruntime")
    SparseEncoder(str(tiny_mlm), device="cpu", runtime="onnx").encode(["apple"], "query")  # exports, in this process
    code = (
        "from braid.encoders.sparse import SparseEncoder\n"
        f"q = SparseEncoder({str(tiny_mlm)!r}, device='cpu').encode(['red apple'], 'query')\n"
        "assert len(q.indices) > 0"
    )
    assert _imports_after(code) == {"onnxruntime"}


# ---------------------------------------------------------------------------------------------
# dense encoder on the tiny model
# ---------------------------------------------------------------------------------------------
def hidden_reference(model_dir: Path, texts: list[str], max_length: int) -> list[np.ndarray]:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return [model(**tok(t, truncation=True, max_length=max_length, return_tensors="pt")).last_hidden_state[0].numpy() for t in texts]


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "lasttoken", "mean_sqrt_len"])
def test_dense_pooling_read_from_sentence_transformers_files(tmp_path, pooling, runtime):
    from braid.encoders.dense import DenseEncoder

    folder = make_tiny_bert(tmp_path / f"st-{pooling}", mlm=False, st_pooling=pooling, normalize=(pooling == "mean"))
    enc = DenseEncoder(str(folder), batch_size=3, device="cpu", runtime=runtime)
    assert enc.runtime == runtime
    assert enc.config.pooling == pooling and enc.config.max_length == 48 and enc.dim == 32
    got = enc.encode(TEXTS)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (len(TEXTS), 32)
    hs = hidden_reference(folder, TEXTS, 48)
    ops = {
        "cls": lambda h: h[0],
        "mean": lambda h: h.mean(0),
        "max": lambda h: h.max(0),
        "lasttoken": lambda h: h[-1],
        "mean_sqrt_len": lambda h: h.sum(0) / math.sqrt(len(h)),
    }
    want = np.stack([ops[pooling](h) for h in hs])
    if pooling == "mean":
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_dense_matches_sentence_transformers_on_tiny_model(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from braid.encoders.dense import DenseEncoder

    folder = make_tiny_bert(tmp_path / "st-ref", mlm=False, st_pooling="mean", normalize=True)
    want = st.SentenceTransformer(str(folder), device="cpu").encode(TEXTS, batch_size=2, convert_to_numpy=True)
    got = DenseEncoder(str(folder), batch_size=3, device="cpu").encode(TEXTS)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.9999


def test_dense_plain_hf_model_falls_back_to_mean_without_normalisation(tmp_path):
    from braid.encoders.dense import DenseEncoder

    folder = make_tiny_bert(tmp_path / "plain", mlm=False)
    enc = DenseEncoder(str(folder), device="cpu", max_length=32)
    assert enc.config.pooling == "mean" and enc.config.normalize is False and enc.pipeline.source == "transformers"
    want = np.stack([h.mean(0) for h in hidden_reference(folder, TEXTS[:3], 32)])
    np.testing.assert_allclose(enc.encode(TEXTS[:3]), want, atol=2e-5)


def test_dense_prompts_and_prefixes(tmp_path):
    from braid.encoders.dense import DenseEncoder

    folder = make_tiny_bert(tmp_path / "prompted", mlm=False, st_pooling="mean", normalize=True)
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "sweet fruit ", "document": ""}}))
    enc = DenseEncoder(str(folder), device="cpu")
    assert enc.config.query_prefix == "sweet fruit "
    np.testing.assert_allclose(enc.encode(["apple"], "query"), enc.encode(["sweet fruit apple"], "document"), atol=1e-6)
    enc2 = DenseEncoder(str(folder), device="cpu", query_prefix="", document_prefix="red ")
    np.testing.assert_allclose(enc2.encode(["apple"], "document"), enc.encode(["red apple"], "document"), atol=1e-6)
    assert enc2.describe("document")["document_prefix"] == "red "


def test_dense_refuses_unsupported_pipeline_modules(tmp_path):
    from braid.encoders.dense import DenseEncoder

    folder = make_tiny_bert(tmp_path / "with-dense", mlm=False, st_pooling="mean")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(BraidError, match="Dense"):
        DenseEncoder(str(folder), device="cpu")


# ---------------------------------------------------------------------------------------------
# the real models (skipped when /work/shared is absent)
# ---------------------------------------------------------------------------------------------
def _scifact_slice(rows: list[int]) -> list[str]:
    from braid.data.corpus import iter_corpus

    ids = json.loads((VECTORS / "ids.json").read_text())["doc_ids"]
    wanted = {ids[r]: r for r in rows}
    found = {}
    for d in iter_corpus(SCIFACT / "corpus.jsonl"):
        if d.doc_id in wanted:
            found[d.doc_id] = d.title + " " + d.text
    return [found[ids[r]] for r in rows]


def _shortest_rows(k: int) -> list[int]:
    import scipy.sparse as sp

    m = sp.load_npz(VECTORS / "splade-tiny-docs.npz")
    nnz = np.diff(m.indptr)
    return sorted(np.argsort(nnz, kind="stable")[:k].tolist())


needs_real = pytest.mark.skipif(not (SPLADE.is_dir() and MINILM.is_dir() and VECTORS.is_dir()), reason="shared models/vectors absent")


@needs_real
@pytest.mark.slow
def test_splade_tiny_matches_pre_encoded_scifact_documents():
    import scipy.sparse as sp

    rows = _shortest_rows(6) + [0]
    texts = _scifact_slice(rows)
    ref = sp.load_npz(VECTORS / "splade-tiny-docs.npz").tocsr()[rows].toarray()
    got = dense_rows(SparseEncoder(str(SPLADE), batch_size=16, max_length=256, device="cpu").encode(texts))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert ((got > 1e-3) == (ref > 1e-3)).all()


@needs_real
@pytest.mark.slow
def test_splade_tiny_queries_and_inference_free_mode():
    import scipy.sparse as sp

    from braid.data.queries import read_queries

    query_ids = json.loads((VECTORS / "ids.json").read_text())["query_ids"]
    queries = read_queries(SCIFACT / "queries.jsonl")
    rows = [0, 1, 2, 3]
    texts = [queries[query_ids[r]] for r in rows]
    ref = sp.load_npz(VECTORS / "splade-tiny-queries.npz").tocsr()[rows].toarray()
    enc = SparseEncoder(str(SPLADE), device="cpu")
    np.testing.assert_allclose(dense_rows(enc.encode(texts, "query")), ref, atol=1e-4)

    docs = _scifact_slice(list(range(20)))
    enc_free = SparseEncoder(str(SPLADE), device="cpu", query_mode="idf")
    enc_free.set_idf(compute_idf(docs, enc_free))
    q = enc_free.encode(texts, "query")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(SPLADE)
    for i, t in enumerate(texts):
        ids = sorted(set(tok(t, add_special_tokens=False)["input_ids"]))
        w = enc_free.idf.weights[ids]
        lo, hi = q.indptr[i], q.indptr[i + 1]
        assert q.indices[lo:hi].tolist() == [x for x, wx in zip(ids, w) if wx > 0]
        np.testing.assert_allclose(q.data[lo:hi], w[w > 0])
    assert enc_free.backbone._model is None and enc_free.backbone._session is None  # never loaded for queries


@needs_real
@pytest.mark.slow
def test_minilm_matches_sentence_transformers_vectors():
    from braid.encoders.dense import DenseEncoder

    rows = _shortest_rows(5) + [1]
    texts = _scifact_slice(rows)
    ref = np.load(VECTORS / "minilm-docs.npy", mmap_mode="r")[rows]
    enc = DenseEncoder(str(MINILM), batch_size=16, device="cpu")
    assert enc.config.max_length == 256 and enc.config.pooling == "mean" and enc.config.normalize
    got = enc.encode(texts)
    cos = (got * ref).sum(1)
    assert cos.min() > 0.9999, cos


@needs_real
@pytest.mark.slow
def test_onnx_runtime_matches_torch_on_the_real_models():
    """fp32 ONNX vectors agree with torch (cosine >= 0.9999) on real documents and queries, batched and one at a time."""
    import scipy.sparse as sp

    from braid.data.queries import read_queries
    from braid.encoders.dense import DenseEncoder

    docs = _scifact_slice([0, 1, 2, 3, 4, 5])
    queries = list(read_queries(SCIFACT / "queries.jsonl").values())[:6]

    def as_dense(v):
        return v if isinstance(v, np.ndarray) else sp.csr_matrix((v.data, v.indices, v.indptr), shape=(len(v.indptr) - 1, v.vocab_size)).toarray()

    for cls, path in ((SparseEncoder, SPLADE), (DenseEncoder, MINILM)):
        torch_enc = cls(str(path), device="cpu", runtime="torch", batch_size=4)
        onnx_enc = cls(str(path), device="cpu", runtime="onnx", batch_size=4)
        for texts, kind in ((docs, "document"), (queries, "query")):
            want = as_dense(torch_enc.encode(texts, kind))
            for got in (as_dense(onnx_enc.encode(texts, kind)), np.vstack([as_dense(onnx_enc.encode([t], kind)) for t in texts])):
                cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
                assert cos.min() >= 0.9999, (cls.__name__, kind, cos)


# ---------------------------------------------------------------------------------------------
# the device pipeline (torch on a GPU), forced on the CPU
# ---------------------------------------------------------------------------------------------
def _pipeline(monkeypatch, mode: str, texts: int = 3) -> None:
    from braid.encoders import base

    monkeypatch.setattr(base, "PIPELINE", mode)
    monkeypatch.setattr(base, "PIPELINE_TEXTS", texts)


def test_device_pipeline_gives_the_serial_path_s_vectors(tiny_mlm, tmp_path, monkeypatch):
    from braid.encoders.dense import DenseEncoder

    texts = TEXTS * 3  # seven slices of three texts: batches span no slice boundary
    folder = make_tiny_bert(tmp_path / "st-mean", mlm=False, st_pooling="mean", normalize=True)
    out = {}
    for mode in ("off", "on"):
        _pipeline(monkeypatch, mode)
        sparse = SparseEncoder(str(tiny_mlm), batch_size=2, device="cpu", runtime="torch")
        dense = DenseEncoder(str(folder), batch_size=2, device="cpu", runtime="torch")
        seen: list[int] = []
        indptr, indices, data = sparse.encode_csr(texts, "document", on_batch=seen.append)
        assert sum(seen) == len(texts)
        out[mode] = (indptr, indices, data, dense.encode(texts))
    for a, b in zip(out["off"], out["on"]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(dense_rows(SparseEncoder(str(tiny_mlm), device="cpu", runtime="torch").encode(texts)),
                               splade_reference(tiny_mlm, texts), atol=2e-6)  # fmt: skip


def test_device_pipeline_raises_the_worker_s_error_and_stops_when_abandoned(tiny_mlm, monkeypatch):
    import threading

    _pipeline(monkeypatch, "on", texts=2)
    enc = SparseEncoder(str(tiny_mlm), batch_size=1, device="cpu", runtime="torch")
    backbone = enc.backbone
    calls = []
    real = backbone.tokenize

    def tokenize(texts):
        calls.append(len(texts))
        if len(calls) == 2:
            raise RuntimeError("tokenizer exploded on slice 2")
        return real(texts)

    monkeypatch.setattr(backbone, "tokenize", tokenize)
    with pytest.raises(RuntimeError, match="slice 2"):
        enc.encode(TEXTS)
    # a consumer that stops after one batch: the worker thread ends instead of filling the queue forever
    monkeypatch.setattr(backbone, "tokenize", real)
    gen = backbone.run_batches(TEXTS * 50, "document")
    positions, _ = next(gen)
    assert len(positions) == 1
    gen.close()
    assert not [t for t in threading.enumerate() if t.name == "braid-tokenize"]


def test_nonzero_output_equals_the_dense_rows(tiny_mlm):
    enc = SparseEncoder(str(tiny_mlm), batch_size=4, device="cpu", runtime="torch")
    for (pa, dense), (pb, (r, c, v)) in zip(enc.backbone.run_batches(TEXTS), enc.backbone.run_batches(TEXTS, nonzero=True)):
        np.testing.assert_array_equal(pa, pb)
        got = np.zeros_like(dense)
        got[r, c] = v
        np.testing.assert_array_equal(got, dense)
        assert np.all(v != 0) and np.all(np.diff(r * dense.shape[1] + c) > 0)  # row-major, each entry once
