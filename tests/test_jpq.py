"""JPQ training (braid.retrieval.train.jpq), its query tower (braid.encoders.towers) and the leakage rule, with a tiny
randomly initialised bi-encoder on synthetic data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from braid.data.errors import BraidError, OptionError  # noqa: E402
from braid.index import pq as pqmod  # noqa: E402
from braid.index.dense import DenseIndex, DenseIndexConfig  # noqa: E402
from braid.encoders.towers import query_tower  # noqa: E402
from braid.retrieval.train import jpq  # noqa: E402

WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon "
    "phi chi psi omega red green blue cyan magenta yellow black white orange purple brown pink grey olive navy teal"
).split()
N_DOCS = 260  # OPQ trains its rotation with an 8-bit PQ (256 centroids), whatever nbits
N_QUERIES = 48
FAST = dict(batch_size=8, negatives=6, negative_depth=24, max_length=16, lr=2e-3, centroid_lr=2e-2, seed=3, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models and indexes: on a busy 2-core machine a second thread only adds waiting (25x measured)
    before = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before[0])
    torch.set_num_threads(before[1])


def _write_tiny_model(root: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=32
    )
    torch.manual_seed(0)
    model = BertModel(config)
    root.mkdir(parents=True)
    model.save_pretrained(str(root))
    tokenizer.save_pretrained(str(root))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 16, "pooling_mode_mean_tokens": True}))
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model folder, a synthetic corpus encoded with it, a PQ index over it, training pairs."""
    from braid.encoders.dense import DenseEncoder

    root = tmp_path_factory.mktemp("jpq")
    model_dir = _write_tiny_model(root / "tiny-model")
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, size=6, replace=False)) for _ in range(N_DOCS)]
    doc_ids = [f"d{i}" for i in range(N_DOCS)]
    vectors = DenseEncoder(str(model_dir), device="cpu", max_length=16).encode_documents(docs)
    queries, qrels = {}, {}
    for i in range(N_QUERIES):
        target = int(rng.integers(N_DOCS))
        words = docs[target].split()
        queries[f"q{i}"] = " ".join(rng.choice(words, size=2, replace=False))
        qrels[f"q{i}"] = {doc_ids[target]: 1}
        if i % 5 == 0:  # a few queries with two relevant documents
            qrels[f"q{i}"][doc_ids[(target + 1) % N_DOCS]] = 1
    data = jpq.make_training_set(queries, qrels, doc_ids)
    return {"root": root, "model": str(model_dir), "docs": docs, "doc_ids": doc_ids, "vectors": vectors, "queries": queries, "qrels": qrels, "data": data}


def _pq_index(world, kind: str = "pq") -> DenseIndex:
    return DenseIndex.build(world["vectors"], DenseIndexConfig(kind=kind, m=4, nbits=4), threads=1)


# ---------------------------------------------------------------------------- pure pieces
def test_training_set_hand_worked():
    queries = {"a": "x y", "b": "z", "c": "", "d": "w"}
    qrels = {"a": {"D2": 1, "D0": 2, "D9": 1}, "b": {"D1": 0}, "c": {"D1": 1}, "d": {"D1": 1}, "e": {"D0": 1}}
    data = jpq.make_training_set(queries, qrels, ["D0", "D1", "D2"])
    # b: only a non-relevant judgment; c: empty text; e: no text; D9: not in the index
    assert data.query_ids == ("a", "d") and data.skipped == 3
    assert data.pos_ptr.tolist() == [0, 2, 3] and data.pos_docnos.tolist() == [0, 2, 1]
    assert data.pair_query.tolist() == [0, 0, 1] and data.pair_docno.tolist() == [0, 2, 1]
    with pytest.raises(BraidError, match="no training query"):
        jpq.make_training_set({"a": "x"}, {"a": {"D9": 1}}, ["D0"])


def test_batch_loss_hand_worked():
    # m=2 sub-spaces of 1 dim, 2 centroids each; doc0 = [1, 2], doc1 = [0, 0], doc2 = [1, 0]
    centroids = torch.tensor([[[1.0], [0.0]], [[0.0], [2.0]]], requires_grad=True)
    codes = torch.tensor([[0, 1], [1, 0], [0, 0]])
    q = torch.tensor([[1.0, 1.0]])
    # scores 3, 0, 1 -> loss = -log(e^3 / (e^3 + e^0 + e^1))
    loss = jpq.batch_loss(q, centroids, codes, None, np.array([0]), np.array([0, 1, 2]), np.zeros((1, 3), bool), 1.0)
    assert float(loss.detach()) == pytest.approx(-np.log(np.exp(3) / (np.exp(3) + 1 + np.exp(1))), rel=1e-5)
    # doc2 masked (another relevant document): softmax over {doc0, doc1}
    masked = np.array([[False, False, True]])
    loss = jpq.batch_loss(q, centroids, codes, None, np.array([0]), np.array([0, 1, 2]), masked, 1.0)
    assert float(loss.detach()) == pytest.approx(np.log(1 + np.exp(-3)), rel=1e-5)
    loss.backward()  # gradients reach the centroids used by the candidates
    assert centroids.grad is not None and float(centroids.grad.abs().sum()) > 0
    # with a rotation R the query is scored as q @ R.T
    rot = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    q2 = torch.tensor([[2.0, 0.5]])  # rotated: [0.5, 2] -> scores 4.5, 0, 0.5
    loss = jpq.batch_loss(q2, centroids, codes, rot, np.array([0]), np.array([0, 1, 2]), np.zeros((1, 3), bool), 1.0)
    assert float(loss.detach()) == pytest.approx(-np.log(np.exp(4.5) / (np.exp(4.5) + 1 + np.exp(0.5))), rel=1e-5)


def test_config_validation():
    assert jpq.JPQConfig.from_dict(jpq.JPQConfig(epochs=2).to_dict()) == jpq.JPQConfig(epochs=2)
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"temperature": 0.0}, {"negatives": 50, "negative_depth": 10}, {"device": "tpu"}, {"warmup": 1.0}):
        with pytest.raises(OptionError):
            jpq.JPQConfig(**bad)
    with pytest.raises(OptionError, match="known keys"):
        jpq.JPQConfig.from_dict({"epoch": 1})


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize("kind", ["pq", "opq"])
def test_training_lowers_the_loss_and_keeps_the_codes(world, kind):
    index = _pq_index(world, kind)
    codes_before = pqmod.get_codes(index.index)
    base = pqmod.get_codebooks(index.index)
    config = jpq.JPQConfig(epochs=4, **FAST)
    tower = query_tower(world["model"], config.max_length, "cpu")
    loss_before = jpq.ranking_loss(tower, base, index.index, world["data"], config)
    result = jpq.train_jpq(tower, index.index, world["data"], config)
    loss_after = jpq.ranking_loss(result.tower, result.centroids, index.index, world["data"], config)
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after, result.epoch_losses)
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert len(result.history) == 4 * int(np.ceil(world["data"].n_pairs / 8))
    # the document side is frozen: the index's codes and centroids are those it was built with
    np.testing.assert_array_equal(pqmod.get_codes(index.index), codes_before)
    np.testing.assert_array_equal(pqmod.get_codebooks(index.index), base)
    np.testing.assert_array_equal(result.base_centroids, base)
    assert result.centroids.shape == base.shape and not np.allclose(result.centroids, base)


def test_resumed_training_equals_uninterrupted(world, tmp_path):
    index = _pq_index(world)
    config = jpq.JPQConfig(epochs=2, checkpoint_every=3, **FAST)
    straight = jpq.train_jpq(world["model"], index.index, world["data"], config, checkpoint_dir=tmp_path / "a")
    part = jpq.train_jpq(world["model"], index.index, world["data"], config, checkpoint_dir=tmp_path / "b", stop_after_steps=4)
    assert len(part.history) == 4
    state = json.loads((tmp_path / "b" / "latest" / "state.json").read_text())
    assert state["step"] == 3  # checkpoints every 3 steps: step 4 was lost with the "crash"
    # the optimizer state is plain tensors: it loads without unpickling objects
    torch.load(tmp_path / "b" / "latest" / "optimizer.pt", weights_only=True)
    resumed = jpq.train_jpq(world["model"], index.index, world["data"], config, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_at_step == 3
    assert [h["step"] for h in resumed.history] == [h["step"] for h in straight.history]
    np.testing.assert_allclose([h["loss"] for h in resumed.history], [h["loss"] for h in straight.history], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed.centroids, straight.centroids, atol=1e-6)
    a = straight.tower.model.state_dict()
    b = resumed.tower.model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)
    # a finished checkpoint re-run does no step and gives the same result
    again = jpq.train_jpq(world["model"], index.index, world["data"], config, checkpoint_dir=tmp_path / "a")
    assert again.resumed_at_step == len(straight.history)
    np.testing.assert_array_equal(again.centroids, straight.centroids)
    # a checkpoint of another run is refused, naming what differs
    with pytest.raises(OptionError, match="config.lr"):
        jpq.train_jpq(world["model"], index.index, world["data"], jpq.JPQConfig(**{**FAST, "lr": 1e-4}), checkpoint_dir=tmp_path / "a")


def test_centroids_only_leaves_the_encoder_alone(world):
    index = _pq_index(world)
    config = jpq.JPQConfig(epochs=2, **{**FAST, "lr": 0.0})
    tower = query_tower(world["model"], config.max_length, "cpu")
    before = {k: v.clone() for k, v in tower.model.state_dict().items()}
    loss_before = jpq.ranking_loss(tower, pqmod.get_codebooks(index.index), index.index, world["data"], config)
    result = jpq.train_jpq(tower, index.index, world["data"], config)
    for k, v in result.tower.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert jpq.ranking_loss(result.tower, result.centroids, index.index, world["data"], config) < loss_before


def test_flat_index_is_refused(world):
    flat = DenseIndex.build(world["vectors"], DenseIndexConfig(kind="flat"))
    with pytest.raises(OptionError, match="IndexPQ"):
        jpq.train_jpq(world["model"], flat.index, world["data"], jpq.JPQConfig(**FAST))


# ---------------------------------------------------------------------------- index directory
def _index_dir(world, tmp_path: Path, kind: str = "pq") -> tuple[Path, Path]:
    from braid.encoders.dense import DenseEncoder
    from braid.index.manifest import new_manifest, write_docids, write_manifest

    idx = tmp_path / "idx"
    (idx / "dense").mkdir(parents=True)
    write_docids(idx, world["doc_ids"])
    if kind == "flat":
        dense = DenseIndex.build(world["vectors"], DenseIndexConfig(kind="flat"))
    else:
        dense = _pq_index(world, kind)
    enc = DenseEncoder(world["model"], device="cpu", max_length=16)
    manifest = new_manifest(N_DOCS)
    manifest["components"]["dense"] = {"index": dense.save(idx / "dense"), "encoder": {**enc.describe("document"), "model": enc.name}}
    write_manifest(idx, manifest)
    ds = tmp_path / "ds"
    (ds / "qrels").mkdir(parents=True)
    with open(ds / "queries.jsonl", "w") as fh:
        for qid, text in world["queries"].items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, docs in world["qrels"].items() for d, r in docs.items()]
    (ds / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    (ds / "qrels" / "test.tsv").write_text("\n".join(lines[:6]) + "\n")
    return idx, ds


def test_save_load_round_trip(world, tmp_path):
    from braid.index.manifest import read_manifest

    idx, ds = _index_dir(world, tmp_path, "opq")
    before = read_manifest(idx)["components"]["dense"]
    original = DenseIndex.load(idx / "dense", before["index"])
    codes = pqmod.get_codes(original.index)
    config = jpq.JPQConfig(epochs=2, **FAST)
    summary = jpq.train_jpq_index(idx, ds, "train", config)
    assert summary["pairs"] == world["data"].n_pairs
    assert summary["steps"] == 2 * int(np.ceil(world["data"].n_pairs / 8)) and len(summary["epoch_losses"]) == 2
    assert not jpq.default_checkpoint_dir(idx).exists()  # the default checkpoint goes once installed
    # what it was trained on is recorded, in the manifest and in jpq.json
    qrels_sha256 = hashlib.sha256((ds / "qrels" / "train.tsv").read_bytes()).hexdigest()
    trained_on = {"name": "ds", "path": str(ds.resolve()), "qrels": "qrels/train.tsv", "qrels_sha256": qrels_sha256}
    entry = summary["dense"]["jpq"]
    assert entry["dataset"] == trained_on and entry["split"] == "train"
    record = json.loads((idx / "dense" / "jpq" / "jpq.json").read_text())
    assert record["dataset"] == trained_on and record["split"] == "train"

    info = read_manifest(idx)["components"]["dense"]
    assert jpq.is_jpq(info) and not jpq.is_jpq(before)
    assert info["index"] == before["index"] and info["encoder"] == before["encoder"]
    # the reference: the same seeded training, run directly on the original index
    reference = jpq.train_jpq(world["model"], original.index, world["data"], config)
    loaded = DenseIndex.load(idx / "dense", info["index"])
    np.testing.assert_array_equal(pqmod.get_codes(loaded.index), codes)  # codes untouched
    np.testing.assert_allclose(pqmod.get_codebooks(loaded.index), reference.centroids, atol=1e-6)
    np.testing.assert_array_equal(np.load(idx / "dense" / info["jpq"]["centroids"]), pqmod.get_codebooks(loaded.index))
    np.testing.assert_array_equal(np.load(idx / "dense" / info["jpq"]["base_centroids"]), pqmod.get_codebooks(original.index))

    encoder = jpq.open_jpq_query_encoder(idx, info, device="cpu")
    texts = list(world["queries"].values())[:10]
    qv = encoder.encode_queries(texts)
    np.testing.assert_allclose(qv, reference.encode_queries(texts), atol=1e-5)
    # plain FAISS search of the saved index = brute-force ADC with the trained centroids
    hits = loaded.search(qv, k=5)
    expected = pqmod.adc_scores(qv, codes, reference.centroids, pqmod.get_rotation(loaded.index))
    np.testing.assert_allclose(hits.scores, -np.sort(-expected, axis=1)[:, :5], atol=1e-4)

    # training again starts from the base encoder and centroids, not from the trained ones
    jpq.train_jpq_index(idx, ds, "train", config)
    again = read_manifest(idx)["components"]["dense"]
    np.testing.assert_allclose(pqmod.get_codebooks(DenseIndex.load(idx / "dense", again["index"]).index), reference.centroids, atol=1e-6)


def test_saved_query_encoder_encodes_as_the_training_tower(world, tmp_path):
    """The query encoder saved into the index = the trained tower in eval mode, through DenseEncoder, to 1e-6."""
    from braid.encoders.dense import DenseEncoder
    from braid.index.manifest import read_manifest

    idx, _ = _index_dir(world, tmp_path)
    index = DenseIndex.load(idx / "dense", read_manifest(idx)["components"]["dense"]["index"]).index
    result = jpq.train_jpq(world["model"], index, world["data"], jpq.JPQConfig(epochs=1, **FAST), query_prefix="find ")
    info = jpq.install_jpq(idx, result, world["model"])
    assert info["jpq"]["query_prefix"] == "find " and info["jpq"]["dataset"] is None and info["jpq"]["split"] is None
    # texts of different lengths (padding), one beyond max_length (truncation)
    texts = ["alpha", "red green blue", " ".join(WORDS[:30]), "omega psi", "teal navy olive grey pink brown"]
    tower = result.tower
    tower.eval()
    with torch.no_grad():
        through_tower = tower(texts).numpy()
    assert through_tower.shape == (len(texts), 16) and through_tower.dtype == np.float32
    saved = jpq.open_jpq_query_encoder(idx, info, device="cpu")
    np.testing.assert_allclose(saved.encode_queries(texts), through_tower, rtol=0, atol=1e-6)
    # the folder alone says the same: a plain DenseEncoder reads pooling, normalisation, length and prefix from it
    plain = DenseEncoder(str(idx / "dense" / info["jpq"]["query_encoder"]), device="cpu")
    np.testing.assert_allclose(plain.encode_queries(texts), through_tower, rtol=0, atol=1e-6)
    np.testing.assert_allclose(tower.encode(texts), through_tower, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.encode_queries(texts), through_tower, rtol=0, atol=1e-6)
    # it did train, and with the prefix: the base model's vectors are others
    base = DenseEncoder(world["model"], device="cpu", max_length=16, query_prefix="find ")
    assert not np.allclose(base.encode_queries(texts), through_tower, atol=1e-3)
    # train mode (dropout) is not what is saved; encode() stays eval-mode and leaves the mode as it was
    tower.train()
    with torch.no_grad():
        assert not np.allclose(tower(texts).numpy(), through_tower, atol=1e-4)
    np.testing.assert_allclose(tower.encode(texts), through_tower, rtol=0, atol=1e-6)
    assert tower.training
    tower.eval()


def test_a_tower_of_another_max_length_is_refused(world):
    index = _pq_index(world)
    tower = query_tower(world["model"], 12, "cpu")
    with pytest.raises(OptionError, match="max_length"):
        jpq.train_jpq(tower, index.index, world["data"], jpq.JPQConfig(**FAST))


def test_training_on_the_reported_split_is_refused(world, tmp_path):
    from braid.index.manifest import read_manifest

    idx, ds = _index_dir(world, tmp_path)
    before = read_manifest(idx)
    with pytest.raises(OptionError, match="would overfit"):
        jpq.train_jpq_index(idx, ds, "test", jpq.JPQConfig(**FAST))
    with pytest.raises(OptionError, match="would overfit"):
        jpq.training_set_from_dataset(ds, "test", world["doc_ids"])
    # another reported split moves the rule with it
    with pytest.raises(OptionError, match="would overfit"):
        jpq.training_set_from_dataset(ds, "train", world["doc_ids"], report_split="train")
    assert jpq.training_set_from_dataset(ds, "test", world["doc_ids"], report_split="dev").n_pairs > 0
    assert read_manifest(idx) == before and not jpq.default_checkpoint_dir(idx).exists()


def test_cli_train_jpq(world, tmp_path):
    from click.testing import CliRunner

    from braid.cli.train import train
    from braid.index.manifest import read_manifest

    idx, ds = _index_dir(world, tmp_path, "pq")
    ck = tmp_path / "ck"
    args = ["jpq", str(idx), "--dataset", str(ds), "--epochs", "1", "--batch-size", "8", "--negatives", "6", "--negative-depth", "24",
            "--max-length", "16", "--device", "cpu", "--checkpoint-dir", str(ck), "--quiet"]
    result = CliRunner().invoke(train, args)
    assert result.exit_code == 0, result.output
    assert "jpq" in result.output and jpq.is_jpq(read_manifest(idx)["components"]["dense"])
    assert (ck / "latest" / "state.json").is_file()  # an explicit checkpoint directory is kept

    flat_idx, _ = _index_dir(world, tmp_path / "flat", "flat")
    result = CliRunner().invoke(train, ["jpq", str(flat_idx), "--dataset", str(ds), "--quiet"])
    assert result.exit_code != 0 and "pq or opq" in result.output
    result = CliRunner().invoke(train, ["jpq", str(idx), "--dataset", str(ds), "--split", "dev", "--quiet"])
    assert result.exit_code != 0 and "no qrels for split" in result.output
    result = CliRunner().invoke(train, ["jpq", str(idx), "--dataset", str(ds), "--split", "test", "--quiet"])
    assert result.exit_code != 0 and "would overfit" in result.output and "'test'" in result.output
