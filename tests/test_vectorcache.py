"""Resumable corpus encoding: chunked cache, resume after interruption, refusal of foreign caches."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from braid.data.errors import BraidError, OptionError
from braid.retrieval.build.vectorcache import chunk_path, encode_corpus, load_cached

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

WORDS = "the a of and is on apple banana cherry fruit red green yellow sweet sour tree grows ripe seed leaf".split()


def make_tiny_bert(root: Path, mlm: bool) -> Path:
    """A 2-layer, 32-wide random BERT over WORDS (a sentence-transformers folder when not ``mlm``)."""
    from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer

    root.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##s"]
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(root)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg) if mlm else BertModel(cfg)
    if mlm:
        with torch.no_grad():
            model.cls.predictions.decoder.bias.add_(0.5)
    model.save_pretrained(root)
    if not mlm:
        (root / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]))
        (root / "1_Pooling").mkdir()
        (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return make_tiny_bert(root / "splade", True), make_tiny_bert(root / "dense", False)


def corpus(n: int = 11) -> list[tuple[str, str]]:
    rng = np.random.default_rng(5)
    return [(f"d{i}", " ".join(rng.choice(WORDS, size=int(rng.integers(1, 12))))) for i in range(n)]


class Spy:
    """Wraps an encoder and records how many texts each encode call received."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.calls: list[int] = []

    def describe(self, kind):
        return self.encoder.describe(kind)

    def __getattr__(self, name):
        target = getattr(self.encoder, name)
        if name in ("encode_csr", "encode"):
            def wrapped(texts, kind="document", on_batch=None):
                self.calls.append(len(texts))
                return target(texts, kind, on_batch=on_batch)
            return wrapped
        return target


def test_sparse_cache_equals_direct_encoding(models, tmp_path):
    from braid.encoders.sparse import SparseEncoder

    enc = SparseEncoder(str(models[0]), device="cpu", batch_size=4)
    docs = corpus()
    got = encode_corpus(docs, enc, tmp_path / "c", "sparse", chunk_size=3, progress=False)
    want = enc.encode([t for _, t in docs])
    np.testing.assert_array_equal(np.asarray(got.indptr), want.indptr)
    np.testing.assert_array_equal(np.asarray(got.indices), want.indices)
    np.testing.assert_allclose(np.asarray(got.data), want.data, rtol=1e-6)  # other batches: other float rounding
    # a complete cache keeps each vector once: the chunks (for resuming) are gone, their text hashes recorded
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["cache.json", "complete.json", "data.npy", "indices.npy", "indptr.npy"]
    assert len(json.loads((tmp_path / "c" / "complete.json").read_text())["chunk_text_sha1"]) == 4
    meta = json.loads((tmp_path / "c" / "cache.json").read_text())
    assert meta["chunk_size"] == 3 and meta["encoder"]["model"] == str(models[0]) and meta["kind"] == "sparse"
    assert isinstance(np.load(tmp_path / "c" / "data.npy", mmap_mode="r"), np.memmap)


def test_resume_after_interruption_encodes_only_the_missing_chunks(models, tmp_path):
    from braid.encoders.sparse import SparseEncoder

    docs = corpus(11)
    enc = SparseEncoder(str(models[0]), device="cpu", batch_size=4)

    def interrupted():
        for i, item in enumerate(docs):
            if i == 7:  # chunks 0 and 1 (texts 0..5) are finished, chunk 2 is half read
                raise KeyboardInterrupt("simulated interruption")
            yield item

    spy = Spy(enc)
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(interrupted(), spy, tmp_path / "c", "sparse", chunk_size=3, progress=False)
    assert spy.calls == [3, 3]
    assert chunk_path(tmp_path / "c", 1).exists() and not chunk_path(tmp_path / "c", 2).exists()
    assert not (tmp_path / "c" / "complete.json").exists()
    with pytest.raises(Exception, match="complete"):
        load_cached(tmp_path / "c")

    spy2 = Spy(enc)
    seen = []
    got = encode_corpus(iter(docs), spy2, tmp_path / "c", "sparse", chunk_size=3, progress=False,
                        on_chunk=lambda i, n: seen.append((i, n)))
    assert spy2.calls == [3, 2]  # chunks 2 and 3 only; chunks 0 and 1 were read, not encoded
    assert seen == [(0, 3), (1, 6), (2, 9), (3, 11)]
    want = encode_corpus(docs, enc, tmp_path / "fresh", "sparse", chunk_size=3, progress=False)
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(np.asarray(getattr(got, name)), np.asarray(getattr(want, name)))

    # a complete cache is returned without reading the texts at all
    def must_not_be_read():
        raise AssertionError("texts were read")
        yield  # pragma: no cover

    spy3 = Spy(enc)
    again = encode_corpus(must_not_be_read(), spy3, tmp_path / "c", "sparse", chunk_size=3, progress=False)
    assert spy3.calls == [] and np.array_equal(np.asarray(again.data), np.asarray(want.data))


def test_foreign_cache_is_refused_with_the_differences(models, tmp_path):
    from braid.encoders.sparse import SparseEncoder

    docs = corpus(5)
    encode_corpus(docs, SparseEncoder(str(models[0]), device="cpu"), tmp_path / "c", "sparse", chunk_size=2, progress=False)
    with pytest.raises(BraidError, match=r"different encoder.*top_k: cache None, now 4"):
        encode_corpus(docs, SparseEncoder(str(models[0]), device="cpu", top_k=4), tmp_path / "c", "sparse", chunk_size=2, progress=False)
    with pytest.raises(BraidError, match="chunk_size: cache 2, now 3"):
        encode_corpus(docs, SparseEncoder(str(models[0]), device="cpu"), tmp_path / "c", "sparse", chunk_size=3, progress=False)


def test_changed_corpus_is_refused_on_resume(models, tmp_path):
    from braid.encoders.sparse import SparseEncoder

    enc = SparseEncoder(str(models[0]), device="cpu")
    docs = corpus(6)

    def first_chunk_only():
        yield from docs[:2]
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        encode_corpus(first_chunk_only(), enc, tmp_path / "c", "sparse", chunk_size=2, progress=False)
    changed = [("d0", "banana"), *docs[1:]]
    with pytest.raises(BraidError, match="chunk 0 differ"):
        encode_corpus(changed, enc, tmp_path / "c", "sparse", chunk_size=2, progress=False)


def test_dense_cache_equals_direct_encoding(models, tmp_path):
    from braid.encoders.dense import DenseEncoder

    enc = DenseEncoder(str(models[1]), device="cpu", batch_size=4)
    texts = [t for _, t in corpus(7)]
    got = encode_corpus(texts, enc, tmp_path / "d", "dense", chunk_size=4, progress=False)
    assert got.dtype == np.float32 and got.shape == (7, 32)
    np.testing.assert_allclose(np.asarray(got), enc.encode(texts), rtol=1e-5, atol=1e-6)
    with pytest.raises(OptionError, match="kind"):
        encode_corpus(texts, enc, tmp_path / "e", "sparse", progress=False)


def test_bad_arguments(models, tmp_path):
    from braid.encoders.sparse import SparseEncoder

    enc = SparseEncoder(str(models[0]), device="cpu")
    with pytest.raises(OptionError, match="kind"):
        encode_corpus(["a"], enc, tmp_path / "x", "bm25")
    with pytest.raises(OptionError, match="chunk_size"):
        encode_corpus(["a"], enc, tmp_path / "x", "sparse", chunk_size=0)
    with pytest.raises(OptionError, match="texts"):
        encode_corpus("just a string", enc, tmp_path / "x", "sparse")
    with pytest.raises(OptionError, match=r"texts\[1\]"):
        encode_corpus(["ok", 5], enc, tmp_path / "y", "sparse", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OptionError, match="cache_dir"):
        encode_corpus(["a"], enc, tmp_path / "file", "sparse")


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_progress_advances_per_batch_not_per_chunk(models, tmp_path, kind):
    """Encoders report each model batch; the cache's progress lines (no terminal: a log) follow them, so a
    chunk of 8 documents in batches of 2 moves the count 2 at a time, and a resumed run counts read-back chunks
    as done without claiming them in the rate."""
    import re

    from braid.encoders.dense import DenseEncoder
    from braid.encoders.sparse import SparseEncoder

    enc = (SparseEncoder if kind == "sparse" else DenseEncoder)(str(models[0 if kind == "sparse" else 1]), device="cpu", batch_size=2)
    texts = [t for _, t in corpus(11)]
    seen: list[int] = []
    call = enc.encode_csr if kind == "sparse" else enc.encode
    call(texts, "document", on_batch=seen.append)
    assert sum(seen) == 11 and max(seen) <= 2 and len(seen) == 6  # ceil(11 / 2) batches, each reported once

    lines: list[str] = []
    encode_corpus(corpus(11), enc, tmp_path / "c", kind, chunk_size=8, total=11, progress=False, log=lines.append, log_every=0)
    counts = [int(re.match(r"encoding \(\w+\): (\d+) / 11 documents, [\d.]+ documents/s", line).group(1)) for line in lines]
    # every batch reported (chunk of 8 = 4 batches of 2, chunk of 3 = 2 batches); the last count once
    assert counts == [2, 4, 6, 8, 10, 11], lines
    assert "left" in lines[0] and lines[-1].endswith("in all")

    # interrupted after the first chunk was written (a complete cache keeps no chunks: it is not resumed)
    def interrupted():
        for i, item in enumerate(corpus(11)):
            if i == 8:
                raise KeyboardInterrupt
            yield item

    with pytest.raises(KeyboardInterrupt):
        encode_corpus(interrupted(), enc, tmp_path / "r", kind, chunk_size=8, total=11, progress=False, log=lambda m: None, log_every=0)
    lines.clear()
    encode_corpus(corpus(11), enc, tmp_path / "r", kind, chunk_size=8, total=11, progress=False, log=lines.append, log_every=0)
    # the first chunk read back (8, claimed at 0 documents/s: nothing encoded yet in this run), then the rest per batch
    assert [line.split(",")[0] for line in lines] == [f"encoding ({kind}): {n} / 11 documents" for n in (8, 10, 11)]
    assert " 0.0 documents/s" in lines[0]
