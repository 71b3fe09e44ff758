"""`braid train sparse` (braid.retrieval.train.sparse): the IDF-aware FLOPS penalty and the teacher's normalisation by hand,
pseudo-queries, the leakage rule, seeded resumption, and the command end to end with tiny randomly initialised models
on a synthetic collection (the model folder in Braid and in sentence-transformers; --install against a rebuild)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")
pytest.importorskip("datasets")
pytest.importorskip("faiss")

from braid.data.errors import OptionError
from braid.retrieval.train.sparse import config as sconfig
from braid.retrieval.train.sparse.queries import pseudo_queries, sentences
from braid.retrieval.train.sparse.teacher import combine_teachers, minmax_per_query, score_spread
from click.testing import CliRunner

WORDS = ["apple", "banana", "cherry", "fruit", "red", "green", "yellow", "sweet", "sour", "tree", "grows", "ripe", "seed", "leaf", "cell", "protein", "gene", "cancer", "study", "river", "lake", "water", "fish", "boat", "stone", "hill", "road", "city", "house"]
N_DOCS = 40
# tiny, quick settings: every run below is a few optimisation steps of a 2-layer, 32-wide model
FAST = dict(candidates=4, candidate_depth=8, teacher_depth=20, batch_size=4, max_length=24, encode_max_length=24, query_max_length=8,
            checkpoint_every=2, device="cpu", lr=1e-3, seed=5)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only waits on the shared 2-core machine
    yield
    torch.set_num_threads(before)


def _tiny_bert(root: Path, mlm: bool) -> Path:
    from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer

    root.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + WORDS
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(root)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    (BertForMaskedLM(cfg) if mlm else BertModel(cfg)).save_pretrained(root)
    if not mlm:
        (root / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]))
        (root / "1_Pooling").mkdir()
        (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    return root


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny SPLADE + dense models, a 40-document BEIR folder (train and test qrels) and an index with bm25 + sparse + dense."""
    from braid.retrieval.build.builder import BuildOptions, build_index

    root = tmp_path_factory.mktemp("train-sparse")
    mlm = _tiny_bert(root / "mlm", mlm=True)
    dense = _tiny_bert(root / "dense", mlm=False)
    rng = np.random.default_rng(0)
    ds = root / "toy"
    (ds / "qrels").mkdir(parents=True)
    docs = []
    for i in range(N_DOCS):
        title = " ".join(rng.choice(WORDS, size=3, replace=False))
        text = ". ".join(" ".join(rng.choice(WORDS, size=6)) for _ in range(2)) + "."
        docs.append({"_id": f"d{i}", "title": title, "text": text})
    _write_jsonl(ds / "corpus.jsonl", docs)
    queries, train, test = [], ["query-id\tcorpus-id\tscore"], ["query-id\tcorpus-id\tscore"]
    for i in range(24):
        target = int(rng.integers(N_DOCS))
        words = (docs[target]["title"] + " " + docs[target]["text"].replace(".", "")).split()
        queries.append({"_id": f"q{i}", "text": " ".join(rng.choice(words, size=3, replace=False))})
        (train if i < 16 else test).append(f"q{i}\td{target}\t1")
    _write_jsonl(ds / "queries.jsonl", queries)
    (ds / "qrels" / "train.tsv").write_text("\n".join(train) + "\n")
    (ds / "qrels" / "test.tsv").write_text("\n".join(test) + "\n")
    index = root / "index"
    opts = BuildOptions(retrievers=("bm25", "sparse", "dense"), sparse_model=str(mlm), dense_model=str(dense), runtime="torch", progress=False, max_length=24)
    build_index(ds, index, opts, log=lambda _m: None)
    return {"root": root, "mlm": mlm, "dense": dense, "dataset": ds, "index": index}


def _config(**kw):
    return sconfig.SparseTrainConfig(**{**FAST, **kw})


# ---------------------------------------------------------------------------- pure pieces, by hand
def test_idf_aware_flops_hand_worked():
    from braid.retrieval.train.sparse.loss import IdfAwareFlopsLoss, idf_penalty_weights
    from sentence_transformers.sparse_encoder.losses import FlopsLoss

    emb = torch.tensor([[1.0, 0.0, 2.0, 4.0], [3.0, 0.0, 0.0, 0.0]])
    idf = np.array([2.0, 0.1, 0.25, 4.0], dtype=np.float32)
    # p = 1 / max(idf, 0.5) = [0.5, 2, 2, 0.25]; mean over docs = [2, 0, 1, 2]
    assert idf_penalty_weights(idf, 0.5).tolist() == [0.5, 2.0, 2.0, 0.25]
    loss = IdfAwareFlopsLoss(None, idf, 0.5).compute_loss_from_embeddings(emb)
    assert float(loss) == pytest.approx(0.5 * 4 + 2 * 0 + 2 * 1 + 0.25 * 4)
    # with every IDF at 1 it is SPLADE's FLOPS: sum of squared means = 4 + 0 + 1 + 4
    flat = IdfAwareFlopsLoss(None, np.ones(4, np.float32), 0.5).compute_loss_from_embeddings(emb)
    assert float(flat) == pytest.approx(9.0) == pytest.approx(float(FlopsLoss(None).compute_loss_from_embeddings(emb)))
    with pytest.raises(ValueError, match="idf_floor"):
        idf_penalty_weights(idf, 0.0)


def test_teacher_normalisation_hand_worked():
    nan = np.nan
    bm25 = np.array([[10.0, 5.0, nan, 7.5], [1.0, 1.0, 1.0, 1.0]])
    dense = np.array([[0.2, 0.8, 0.5, 0.2], [0.3, nan, nan, 0.1]])
    # row 0: bm25 min 5 max 10 (the unlisted candidate counts as 5) -> [1, 0, 0, 0.5]; dense -> [0, 1, 0.5, 0]
    # row 1: bm25 all equal -> 0; dense min 0.1 max 0.3 -> [1, 0, 0, 0]
    np.testing.assert_allclose(minmax_per_query(bm25), [[1, 0, 0, 0.5], [0, 0, 0, 0]])
    np.testing.assert_allclose(minmax_per_query(dense), [[0, 1, 0.5, 0], [1, 0, 0, 0]])
    np.testing.assert_allclose(combine_teachers([bm25, dense], scale=10.0), [[5, 5, 2.5, 2.5], [5, 0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(combine_teachers([bm25, dense], weights=[3, 1], scale=4.0), [[3, 1, 0.5, 1.5], [1, 0, 0, 0]], rtol=1e-6)
    with pytest.raises(OptionError):
        combine_teachers([bm25], weights=[0.0])


def test_score_spread_hand_worked():
    nan = np.nan
    s = np.array([[3.0, 9.0, nan, 4.0], [2.0, nan, nan, nan], [5.0, 5.0, 5.0, nan], [nan, nan, nan, nan]])
    # row 0: 9 - 3; row 1: one listed -> fallback; row 2: all tie -> fallback; row 3: none listed -> fallback
    np.testing.assert_array_equal(score_spread(s, 30.0), np.array([6.0, 30.0, 30.0, 30.0], np.float32))
    with pytest.raises(OptionError):
        score_spread(np.zeros(3), 1.0)


def test_pseudo_queries_titles_and_sentences():
    assert sentences("One two three. Four five six seven! Eight nine ten eleven twelve") == ["Four five six seven!", "Eight nine ten eleven twelve"]
    titles = ["a short title here", "no", ""]
    texts = ["First sentence is here. Second one is longer than that.", "tiny", "only one sentence in this text"]
    q1, s1 = pseudo_queries(titles, texts, ["title", "sentence"], 10, seed=1)
    assert q1[0] == "a short title here" and s1.tolist()[0] == 0
    assert set(s1.tolist()) == {0, 2} and "only one sentence in this text" in q1
    q2, s2 = pseudo_queries(titles, texts, ["title", "sentence"], 10, seed=1)
    assert q1 == q2 and s1.tolist() == s2.tolist()  # seeded
    q3, _ = pseudo_queries(titles, texts, ["title", "sentence"], 2, seed=1)
    assert len(q3) == 2 and set(q3) <= set(q1)


def test_config_validation():
    with pytest.raises(OptionError, match="source"):
        sconfig.SparseTrainConfig(source="web")
    with pytest.raises(OptionError, match="candidates"):
        sconfig.SparseTrainConfig(candidates=40, candidate_depth=30)
    with pytest.raises(OptionError, match="pseudo_kinds"):
        sconfig.SparseTrainConfig(pseudo_kinds="title,paragraph")
    c = sconfig.SparseTrainConfig()
    assert sconfig.SparseTrainConfig.from_dict(c.to_dict()) == c


# ---------------------------------------------------------------------------- on the tiny index
def test_reported_split_is_refused(world, tmp_path):
    from braid.cli.train import train as cli
    from braid.retrieval.train.sparse.install import train_sparse_index

    with pytest.raises(OptionError, match="reported"):
        train_sparse_index(world["index"], world["dataset"], tmp_path / "m", _config(), split="test")
    res = CliRunner().invoke(cli, ["sparse", str(world["index"]), "--dataset", str(world["dataset"]), "--split", "TEST", "-o", str(tmp_path / "m")])
    assert res.exit_code != 0 and "reported" in res.output
    assert not (tmp_path / "m").exists()


def _examples(world, config):
    from braid.index.manifest import read_docids
    from braid.retrieval.searcher import Searcher
    from braid.retrieval.train.sparse.install import corpus_texts, mine_examples

    doc_ids = read_docids(world["index"])
    contents, titles, texts = corpus_texts(world["dataset"], doc_ids)
    queries, sources = pseudo_queries(titles, texts, config.pseudo_kind_list, 24, config.seed)
    ex = mine_examples(Searcher(world["index"]), config, queries, None, sources, lambda _m: None)
    return ex, contents


def test_teacher_scale_from_student(world):
    """Per-example scale = the spread of the untrained student's scores (IDF query . document vector, brute force) over
    the example's candidates; the normalised ensemble is the fixed-scale one divided by its scale."""
    from braid.encoders.sparse import IdfTable, SparseEncoder
    from braid.retrieval.searcher import Searcher

    fixed, _ = _examples(world, _config(source="corpus", teacher_scale=7.0, teacher_depth=N_DOCS))
    own, _ = _examples(world, _config(source="corpus", teacher_scale=7.0, teacher_depth=N_DOCS, teacher_scale_from="student"))
    np.testing.assert_array_equal(fixed.candidates, own.candidates)
    idf = IdfTable.load(world["index"] / "sparse" / "idf.npy")
    q = SparseEncoder(str(world["mlm"]), query_mode="idf", idf=idf, max_length=24).encode(list(own.queries), "query")
    fwd = Searcher(world["index"]).component("sparse").forward_vectors(np.arange(N_DOCS))
    dq, dd = np.zeros((len(own), len(idf.weights))), np.zeros((N_DOCS, len(idf.weights)))
    for i in range(len(own)):
        dq[i, q.row(i)[0]] = q.row(i)[1]
    for d in range(N_DOCS):
        dd[d, fwd.row(d)[0]] = fwd.row(d)[1]
    brute = np.take_along_axis(dq @ dd.T, own.candidates, axis=1)
    brute = np.where(brute > 0, brute, np.nan)  # a document sharing no term with the query is in no list
    spread = np.nanmax(brute, 1) - np.nanmin(brute, 1)
    spread = np.where(spread > 0, spread, 7.0)
    np.testing.assert_allclose(own.labels, fixed.labels / 7.0 * spread[:, None], rtol=1e-4, atol=1e-4)
    assert not np.allclose(spread, 7.0)


def _weights(model_dir: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "document_0_MLMTransformer" / "model.safetensors"))


def test_resume_equals_uninterrupted(world, tmp_path):
    from braid.encoders.sparse import IdfTable
    from braid.retrieval.train.sparse.loop import train_sparse

    config = _config(source="corpus", max_steps=4)
    ex, contents = _examples(world, config)
    assert ex.labels is not None and ex.labels.shape == ex.candidates.shape == (len(ex), 4)
    idf = IdfTable.load(world["index"] / "sparse" / "idf.npy").weights
    whole = train_sparse(world["mlm"], idf, ex, contents, tmp_path / "whole", config, tmp_path / "ck-whole")
    assert whole.steps == 4 and (tmp_path / "whole" / "braid_training.json").is_file()
    part = train_sparse(world["mlm"], idf, ex, contents, tmp_path / "part", config, tmp_path / "ck-part", stop_after_steps=2)
    assert part.steps == 2 and not (tmp_path / "part").exists()  # no model folder before the last step
    rest = train_sparse(world["mlm"], idf, ex, contents, tmp_path / "part", config, tmp_path / "ck-part")
    assert rest.resumed_at_step == 2 and rest.steps == 4
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)
    before = _weights_of_base(world["mlm"])
    assert any(not np.allclose(a[k], before[k]) for k in a if k in before)  # training changed the weights
    # a checkpoint directory of another run is refused, naming what differs
    with pytest.raises(OptionError, match="another training run"):
        train_sparse(world["mlm"], idf, ex, contents, tmp_path / "x", _config(source="corpus", max_steps=4, lr=2e-3), tmp_path / "ck-part")


def test_query_weights_train_and_are_what_sparse_if_reads(world, tmp_path):
    """--train-query-weights: the static query table moves from its IDF start (at its own learning rate) and the
    saved model's inference-free query side is the trained table, not the IDF it started from."""
    from braid.encoders.sparse import IdfTable, SparseEncoder
    from braid.retrieval.train.sparse.loop import _query_lr_mapping, build_student, train_sparse

    config = _config(source="corpus", max_steps=3, train_query_weights=True, query_lr=2.0)  # large steps: some would go below 0
    idf = IdfTable.load(world["index"] / "sparse" / "idf.npy").weights
    student = build_student(world["mlm"], idf, config)
    (pattern, lr), = _query_lr_mapping(student, config).items()
    names = [n for n, _ in student.named_parameters() if re.search(pattern, n)]
    assert len(names) == 1 and names[0].endswith("weight") and lr == 2.0
    assert _query_lr_mapping(student, _config(source="corpus")) == {}
    ex, contents = _examples(world, config)
    train_sparse(world["mlm"], idf, ex, contents, tmp_path / "qw", config, tmp_path / "ck-qw")
    trained = SparseEncoder(str(tmp_path / "qw"), query_mode="idf", max_length=24).idf.weights  # refuses weights < 0
    assert trained.shape == idf.shape and not np.allclose(trained, idf)
    assert trained.min() >= 0 and np.any((trained == 0) & (idf > 0))  # projected onto >= 0: some were clamped
    queried = set()
    tok = SparseEncoder(str(world["mlm"]), max_length=24).backbone.tokenizer
    for q in ex.queries:
        queried.update(int(t) for t in tok.encode([q], 24)[0].ids)
    moved = np.flatnonzero(~np.isclose(trained, idf))
    assert set(moved.tolist()) <= queried  # only tokens of training queries get a gradient


def _weights_of_base(model_dir: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_command_end_to_end_and_install(world, tmp_path):
    """Supervised run through the CLI with --install; the folder loads in Braid and sentence-transformers alike,
    and the installed index searches exactly as an index rebuilt from the model folder."""
    import shutil

    from braid.cli.train import train as cli
    from braid.encoders.sparse import SparseEncoder
    from braid.index.manifest import read_manifest
    from braid.retrieval.build.builder import BuildOptions, build_index
    from braid.retrieval.searcher import Searcher
    from sentence_transformers.sparse_encoder import SparseEncoder as STSparseEncoder

    index = tmp_path / "index"
    shutil.copytree(world["index"], index)
    model = tmp_path / "model"
    args = ["sparse", str(index), "--dataset", str(world["dataset"]), "-o", str(model), "--max-steps", "3", "--install", "--threads", "1", "-q", "--json"]
    for k, v in FAST.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)  # stdout is the JSON alone (the trainer's log lines go to stderr)
    assert summary["finished"] and summary["steps"] == 3 and summary["installed"]
    record = json.loads((model / "braid_training.json").read_text())
    assert record["trained_on"]["split"] == "train" and record["trained_on"]["dataset"]["qrels"] == "qrels/train.tsv"
    assert not (index.parent / f".{index.name}.sparse-train").exists()  # the default checkpoint directory is removed

    # the same document vectors from Braid's encoder and from sentence-transformers
    docs = [json.loads(line) for line in (world["dataset"] / "corpus.jsonl").read_text().splitlines()[:6]]
    texts = [f"{d['title']} {d['text']}" for d in docs]
    braid_enc = SparseEncoder(str(model), runtime="torch", max_length=24, query_mode="idf")
    mine = braid_enc.encode(texts)
    st = STSparseEncoder(str(model), device="cpu").encode_document(texts, convert_to_tensor=True).to_dense().numpy()
    dense_mine = np.zeros_like(st)
    for i in range(len(texts)):
        idx, w = mine.row(i)
        dense_mine[i, idx] = w
    np.testing.assert_allclose(dense_mine, st, rtol=1e-5, atol=1e-6)
    # its query side is the index's IDF table (the static embedding it was initialised from, frozen)
    idf = np.load(world["index"] / "sparse" / "idf.npy")
    np.testing.assert_allclose(braid_enc.idf.weights, idf)

    manifest = read_manifest(index)
    training = manifest["components"]["sparse"]["training"]
    assert training["split"] == "train" and training["source"] == "supervised" and training["model"] == str(model.resolve())
    # the installed index against a fresh build with the model folder
    rebuilt = tmp_path / "rebuilt"
    build_index(world["dataset"], rebuilt, BuildOptions(retrievers=("bm25", "sparse"), sparse_model=str(model), runtime="torch", progress=False, max_length=24), log=lambda _m: None)
    queries = [json.loads(line)["text"] for line in (world["dataset"] / "queries.jsonl").read_text().splitlines()]
    for retriever in ("sparse-if", "sparse"):
        a = Searcher(index, runtime="torch").batch_search(queries, k=10, retriever=retriever, exact=True)
        b = Searcher(rebuilt, runtime="torch").batch_search(queries, k=10, retriever=retriever, exact=True)
        assert a.doc_ids == b.doc_ids
        np.testing.assert_allclose(a.hits.scores, b.hits.scores, rtol=1e-6)
    # and the trained model changed the sparse component's results (the untrained index ranks otherwise)
    old = Searcher(world["index"], runtime="torch").batch_search(queries, k=10, retriever="sparse-if", exact=True)
    assert not np.allclose(old.hits.scores, a.hits.scores)


def test_exclude_source_keeps_the_pseudo_querys_document_out(world):
    """Corpus-only distillation with exclude_source: no example has the document its pseudo-query was cut from among
    its candidates (without it, the hybrid's top candidates hold it for most of them), and candidates stay distinct."""
    from braid.index.manifest import read_docids
    from braid.retrieval.train.sparse.install import corpus_texts

    kept, _ = _examples(world, _config(source="corpus", teacher_depth=N_DOCS))
    out, _ = _examples(world, _config(source="corpus", teacher_depth=N_DOCS, exclude_source=True))
    _, titles, texts = corpus_texts(world["dataset"], read_docids(world["index"]))
    queries, sources = pseudo_queries(titles, texts, _config().pseudo_kind_list, 24, _config().seed)
    assert list(out.queries) == queries
    assert not (out.candidates == sources[:, None]).any()
    assert (kept.candidates == sources[:, None]).any(axis=1).mean() > 0.5
    assert all(len(set(row)) == len(row) for row in out.candidates.tolist())
    with pytest.raises(OptionError, match="exclude_source"):
        _config(source="supervised", exclude_source=True)
    with pytest.raises(OptionError, match="exclude_source"):
        _config(source="corpus", loss="contrastive", exclude_source=True)


def test_more_candidates_than_documents_is_refused(world):
    """An example cannot hold more distinct documents than the index has (less the source with exclude_source)."""
    with pytest.raises(OptionError, match="--candidates.*at most the 39 documents"):
        _examples(world, _config(source="corpus", candidates=N_DOCS, candidate_depth=N_DOCS, exclude_source=True))
    with pytest.raises(OptionError, match="--candidates.*at most the 40 documents"):
        _examples(world, _config(source="corpus", candidates=N_DOCS + 1, candidate_depth=N_DOCS + 1))
