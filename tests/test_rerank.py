"""Reranking: rescore() against hand-worked orders; the cross-encoder against the model's own scores.

The cross-encoder is a tiny randomly initialised BertForSequenceClassification with a WordPiece
vocabulary, saved to tmp_path (no real cross-encoder weights are available offline).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from braid.data.errors import BraidError, DataError, OptionError
from braid.index.hits import Hits
from braid.retrieval.pipeline.rerank import CrossEncoderReranker, rescore

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = "cats dogs purr bark wolf wolves habitat why do are the a is of and sound small large lion".split()
DOCS = {
    0: "cats purr",
    1: "dogs bark a sound",
    2: "the wolf habitat is large",
    3: "a lion is a large cat",
    4: "why do cats purr and dogs bark",
    5: "small wolves and the habitat of wolves and dogs and cats " * 8,  # longer than max_length
    6: "sound of a lion",
}


def test_rescore_hand_worked():
    h = Hits.from_lists([([10, 11, 12, 13], [4.0, 3.0, 2.0, 1.0]), ([20], [1.0]), ([], [])], 5)
    new = {10: 0.5, 11: 2.0, 12: 2.0, 20: -3.0}
    out = rescore(h, lambda i, d: np.array([new[int(x)] for x in d]), top_n=3)
    # top 3 re-sorted: 11 (2.0), 12 (2.0, tie -> docno), 10 (0.5); 13 stays below with 0.5 - 1.
    assert out.docnos.tolist() == [[11, 12, 10, 13, -1], [20, -1, -1, -1, -1], [-1] * 5]
    assert out.scores[0, :4].tolist() == [2.0, 2.0, 0.5, -0.5]
    assert out.scores[1, 0] == -3.0 and np.isneginf(out.scores[1, 1:]).all() and np.isneginf(out.scores[2]).all()
    full = rescore(h, lambda i, d: -d.astype(np.float64))
    assert full.docnos[0].tolist() == [10, 11, 12, 13, -1]
    with pytest.raises(DataError):
        rescore(h, lambda i, d: np.zeros(len(d) + 1))
    with pytest.raises(OptionError, match="top_n"):
        rescore(h, lambda i, d: np.zeros(len(d)), top_n=0)


@pytest.fixture(scope="module", params=[1, 2], ids=["one-logit", "two-logits"])
def tiny_cross_encoder(request, tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp(f"ce{request.param}")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["cat"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizer(vocab_file=str(path / "vocab.txt"), model_max_length=24)
    tok.save_pretrained(path)
    torch.manual_seed(request.param)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=request.param,
    )
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(path)
    return path, request.param


def reference_scores(path, n_labels, pairs):
    """One pair at a time, no padding, straight through transformers."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = []
    with torch.inference_mode():
        for q, d in pairs:
            logits = model(**tok(q, d, truncation=True, max_length=24, return_tensors="pt")).logits[0]
            out.append(float(logits[0] if n_labels == 1 else logits[1]))
    return np.array(out)


def test_cross_encoder_orders_by_its_own_scores(tiny_cross_encoder):
    path, n_labels = tiny_cross_encoder
    queries = ["why do cats purr", "wolf habitat", "lion sound"]
    cands = Hits.from_lists(
        [([0, 1, 2, 3, 4, 5], [6, 5, 4, 3, 2, 1.0]), ([2, 5, 1], [3, 2, 1.0]), ([6], [1.0])], 6
    )
    reranker = CrossEncoderReranker(str(path), batch_size=3, max_length=512, device="cpu")
    assert reranker.max_length == 24  # capped at the tokenizer's model_max_length
    out = reranker.rerank(queries, cands, DOCS.__getitem__, top_n=4)
    changed = False
    for i, q in enumerate(queries):
        docnos = cands.row(i)[0]
        head, rest = docnos[:4], docnos[4:]
        ref = reference_scores(path, n_labels, [(q, DOCS[int(d)]) for d in head])
        order = np.lexsort((head, -ref.astype(np.float32)))
        got_d, got_s = out.row(i)
        assert got_d[: len(head)].tolist() == head[order].tolist()
        np.testing.assert_allclose(got_s[: len(head)], ref[order], rtol=1e-4, atol=1e-5)
        assert got_d[len(head) :].tolist() == rest.tolist()  # the tail keeps its order, below the head
        assert np.array_equal(np.lexsort((got_d, -got_s)), np.arange(len(got_d)))  # (-score, docno) order
        changed = changed or head[order].tolist() != head.tolist()
    assert changed, "the model's order equals the input order everywhere: the test would not see a bug"
    # score() on its own, with padding across a batch, equals the one-at-a-time reference.
    pairs = [(queries[0], DOCS[d]) for d in range(7)]
    np.testing.assert_allclose(
        reranker.score([p[0] for p in pairs], [p[1] for p in pairs]), reference_scores(path, n_labels, pairs),
        rtol=1e-4, atol=1e-5,
    )


def test_cross_encoder_validation(tmp_path, tiny_cross_encoder):
    path, _ = tiny_cross_encoder
    with pytest.raises(OptionError, match="batch_size"):
        CrossEncoderReranker(str(path), batch_size=0)
    with pytest.raises(BraidError):
        CrossEncoderReranker(str(tmp_path / "missing-model"))
    reranker = CrossEncoderReranker(str(path), device="cpu")
    with pytest.raises(OptionError, match="queries"):
        reranker.rerank(["one"], Hits.empty(2, 3), DOCS.__getitem__)
