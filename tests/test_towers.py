"""The trainable dense tower (braid.encoders.towers) against the dense encoder it is a view of, on a tiny random BERT."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from braid.data.errors import OptionError  # noqa: E402
from braid.encoders.dense import DenseEncoder, write_pipeline  # noqa: E402

WORDS = "apple banana cherry grape lemon mango melon olive peach pear plum berry red green blue sweet sour fruit tree".split()
TEXTS = ["apple", "sweet red apple tree", "banana", " ".join(WORDS * 3), "sour green plum and pear", "mango melon"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(root, pooling: str = "mean", normalize: bool = True, padding_side: str = "right", prompts: dict | None = None):
    """A 1-layer, 16-wide random BERT with dropout, saved with sentence-transformers files by write_pipeline."""
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, padding_side=padding_side)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    root.mkdir(parents=True)
    BertModel(cfg).save_pretrained(str(root))
    tok.save_pretrained(str(root))
    write_pipeline(root, pooling, normalize, 24, prompts or {}, 16)
    return str(root)


@pytest.mark.parametrize(
    "pooling,padding_side", [("mean", "right"), ("cls", "right"), ("max", "right"), ("mean_sqrt_len", "right"), ("lasttoken", "right"), ("lasttoken", "left")]
)
def test_tower_in_eval_mode_encodes_as_the_encoder(tmp_path, pooling, padding_side):
    folder = _model(tmp_path / "m", pooling, normalize=pooling == "mean", padding_side=padding_side, prompts={"query": "fruit "})
    # right padding: length-sorted batches of 4 (other padding widths than the tower's one batch) give the same
    # vectors; left padding shifts BERT's absolute positions by the pad width, so there one batch of the same width
    encoder = DenseEncoder(folder, device="cpu", batch_size=4 if padding_side == "right" else len(TEXTS))
    assert encoder.config.pooling == pooling and encoder.config.max_length == 24 and encoder.config.query_prefix == "fruit "
    want = encoder.encode(TEXTS, "query")
    tower = encoder.tower("query")
    assert not tower.training and tower.prefix == "fruit " and tower.pooling == pooling and tower.dim == 16
    with torch.no_grad():
        got = tower(TEXTS)
    assert got.dtype == torch.float32 and tuple(got.shape) == (len(TEXTS), 16)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(tower.encode(TEXTS), want, rtol=0, atol=1e-6)
    # the document side has no prefix here
    with torch.no_grad():
        np.testing.assert_allclose(encoder.tower("document")(TEXTS).numpy(), encoder.encode(TEXTS, "document"), rtol=0, atol=1e-6)


def test_tower_trains_the_encoders_model(tmp_path):
    encoder = DenseEncoder(_model(tmp_path / "m"), device="cpu")
    tower = encoder.tower()
    assert {n for n, _ in tower.named_parameters()} == {f"model.{n}" for n, _ in encoder.backbone.model.named_parameters()}
    before = encoder.encode(TEXTS[:3], "query")
    tower.train()
    optimizer = torch.optim.SGD(tower.parameters(), lr=0.5)
    loss = -tower(TEXTS[:3])[:, 0].sum()
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in tower.parameters())
    optimizer.step()
    tower.eval()
    after = encoder.encode(TEXTS[:3], "query")  # the encoder sees what training changed
    assert not np.allclose(before, after, atol=1e-4)
    with pytest.raises(OptionError, match="at least one text"):
        tower([])
    with pytest.raises(OptionError, match="kind"):
        encoder.tower("passage")


def test_a_tower_pins_its_encoder_to_torch(tmp_path):
    """Queries on runtime='auto' run an exported ONNX graph of the model files; once the model is trained through
    a tower, that graph would be stale, so the tower moves its encoder onto torch, and refuses an explicit ONNX one."""
    pytest.importorskip("onnxruntime")
    folder = _model(tmp_path / "m")
    encoder = DenseEncoder(folder, device="cpu", runtime="auto")
    assert encoder.backbone.runtime_for("query") == "onnx"
    encoder.encode(TEXTS[:2], "query")  # loads the ONNX session
    tower = encoder.tower()
    assert encoder.backbone.runtime_for("query") == "torch" and encoder.runtime == "torch"
    tower.train()
    loss = -tower(TEXTS[:3])[:, 0].sum()
    loss.backward()
    torch.optim.SGD(tower.parameters(), lr=0.5).step()
    tower.eval()
    with torch.no_grad():
        np.testing.assert_allclose(encoder.encode(TEXTS[:3], "query"), tower(TEXTS[:3]).numpy(), rtol=0, atol=1e-6)
    for runtime, precision in (("onnx", "fp32"), ("auto", "int8")):
        with pytest.raises(OptionError, match="runtime"):
            DenseEncoder(folder, device="cpu", runtime=runtime, precision=precision).tower()


def test_save_writes_a_folder_that_reads_back_the_same(tmp_path):
    src = _model(tmp_path / "m", "cls", normalize=False)
    encoder = DenseEncoder(src, device="cpu", max_length=12, pooling="mean", normalize=True, query_prefix="q ", document_prefix="d ")
    encoder.save(tmp_path / "saved")
    again = DenseEncoder(str(tmp_path / "saved"), device="cpu")
    assert again.config.to_dict() == {**encoder.config.to_dict(), "model": str(tmp_path / "saved")}
    for kind in ("query", "document"):
        np.testing.assert_allclose(again.encode(TEXTS, kind), encoder.encode(TEXTS, kind), rtol=0, atol=1e-6)
    # no prefixes: no prompts file
    DenseEncoder(src, device="cpu").save(tmp_path / "plain")
    assert not (tmp_path / "plain" / "config_sentence_transformers.json").exists()
    with pytest.raises(OptionError, match="pooling"):
        write_pipeline(tmp_path, "weightedmean", False, 8, {}, 16)
