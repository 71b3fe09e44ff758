"""Property-based tests of every reader: arbitrary bytes and arbitrary structures give either a result or the
project's own error naming the file, never another exception.

Readers: corpus (.jsonl, .jsonl.gz), queries (.jsonl, TSV), qrels, TREC runs, sparse vectors (JSONL, scipy
.npz), the index manifest, the sharded manifest and pipeline TOML files. Inputs are generated three ways:
random bytes; lines of random JSON values around the fields the reader expects (ids of every JSON type, text
with lone surrogates, NULs, BOMs, compatibility characters, huge and non-finite numbers), encoded as UTF-8 or
with surrogates passed through (invalid UTF-8), optionally gzipped or truncated; and known-hostile lines
(JSON nested 100,000 deep, integers of 5,000 digits) mixed in. Examples are few (``max_examples``) and have no
deadline, so the module stays fast on the shared machine.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from braid.data.errors import BraidError, DataError, IndexFormatError

# BRAID_FUZZ_EXAMPLES=2000 for a deeper local hunt; CI runs the default
SETTINGS = settings(max_examples=int(os.environ.get("BRAID_FUZZ_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WORK = Path(tempfile.mkdtemp(prefix="braid-fuzz-"))

TRICKY_TEXT = ["", " ", "\x00", "\ud800", "a\udfffb", "\ufeff", "ｃａｔ", "ﬁ", "\u0301", "\t\n\r", "\x85", "\u2028", "🦊", "a" * 300]
HOSTILE_LINES = [
    "[" * 100_000 + "]" * 100_000,
    '{"_id": ' + "7" * 5000 + "}",
    '{"_id": "d", "text": ' + "[" * 50_000 + "]" * 50_000 + "}",
    '{"id": "d", "vector": {"1": ' + "9" * 5000 + "}}",
    '{"id": "d", "vector": {"' + "9" * 30 + '": 1.0}}',
    '{"id": "d", "vector": {"1": 1e400}}',
    '{"_id": "d", "text": "\\ud800"}',
    '{"_id": "\\udc00", "text": "x"}',
    "\ufeff{}",
    "NaN",
    '{"_id": 1e999, "text": "x"}',
]

text = st.one_of(st.sampled_from(TRICKY_TEXT), st.text(max_size=20))
numbers = st.one_of(
    st.integers(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([10**30, -1, 0, 2**63])
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8)


def _dump(obj) -> str:
    return json.dumps(obj, allow_nan=True, ensure_ascii=False)


def _encode(lines: list[str], passthrough: bool) -> bytes:
    body = "\n".join(lines) + "\n"
    return body.encode("utf-8", "surrogatepass" if passthrough else "replace")  # surrogatepass: invalid UTF-8


@st.composite
def files(draw, line) -> bytes:
    """The bytes of a line-oriented file: generated lines (and hostile ones), as valid or invalid UTF-8."""
    lines = draw(st.lists(st.one_of(line, st.sampled_from(HOSTILE_LINES)), max_size=6))
    data = _encode(lines, draw(st.booleans()))
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


def _write(name: str, data: bytes, gz: bool = False, truncate: int | None = None) -> Path:
    path = WORK / (name + (".gz" if gz else ""))
    if gz:
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as fh:
            fh.write(data)
        data = buf.getvalue()
    if truncate is not None and data:
        data = data[: truncate % len(data)]
    path.write_bytes(data)
    return path


def _check(read, path: Path, errors=(DataError,)):
    """``read(path)`` returns, or raises one of ``errors`` whose message names ``path``."""
    try:
        return read(path)
    except errors as exc:
        assert str(path) in str(exc), f"{type(exc).__name__} does not name the file: {exc}"
        return None
    except BraidError as exc:  # the project's, but not the kind this reader documents
        pytest.fail(f"{type(exc).__name__} instead of {errors}: {exc}")


gz_options = st.tuples(st.booleans(), st.none() | st.integers(min_value=0, max_value=10**6))


# ---------------------------------------------------------------------------------------- corpus
doc_line = st.one_of(
    st.builds(lambda i, t, x: _dump({"_id": i, "title": t, "text": x}), st.one_of(text, numbers, json_values), st.one_of(text, json_values), st.one_of(text, json_values)),
    st.builds(_dump, json_values),
    text,
)


@SETTINGS
@given(data=st.one_of(files(doc_line), st.binary(max_size=200)), gz=gz_options, skip_bad=st.booleans(), allow_empty=st.booleans())
@example(data=b'{"_id": "a", "text": "x"}\n' * 3, gz=(True, 30), skip_bad=False, allow_empty=False)
def test_corpus_reader(data, gz, skip_bad, allow_empty):
    from braid.data.corpus import count_corpus, iter_corpus

    path = _write("corpus.jsonl", data, *gz)
    _check(count_corpus, path)  # the progress bar's count reads the file first
    docs = _check(lambda p: list(iter_corpus(p, skip_bad=skip_bad, allow_empty=allow_empty)), path)
    for doc in docs or []:
        assert doc.doc_id and doc.doc_id == doc.doc_id.strip()
        (doc.title + doc.text + doc.doc_id).encode("utf-8")  # only valid Unicode gets through


# --------------------------------------------------------------------------------------- queries
query_line = st.one_of(st.builds(lambda i, t: _dump({"_id": i, "text": t}), st.one_of(text, numbers, json_values), st.one_of(text, json_values)), st.builds(_dump, json_values), text)
tsv_line = st.builds(lambda a, b, extra: "\t".join([a, b, *extra]), text, text, st.lists(text, max_size=2))


@SETTINGS
@given(data=st.one_of(files(query_line), files(tsv_line), st.binary(max_size=200)), suffix=st.sampled_from(["queries.jsonl", "queries.tsv"]), gz=gz_options, skip_bad=st.booleans())
def test_queries_reader(data, suffix, gz, skip_bad):
    from braid.data.queries import read_queries

    path = _write(suffix, data, *gz)
    queries = _check(lambda p: read_queries(p, skip_bad=skip_bad), path)
    for qid, q in (queries or {}).items():
        assert qid and q.strip() and any(c.isalnum() for c in q)
        q.encode("utf-8")


# ----------------------------------------------------------------------------------------- qrels
cell = st.one_of(text, numbers.map(str), st.sampled_from(["inf", "-inf", "nan", "1e400", "0.5", "2.0", "1_0", "query-id"]))
qrels_line = st.builds(lambda cells, sep: sep.join(cells), st.lists(cell, min_size=1, max_size=5), st.sampled_from(["\t", " ", "  "]))


@SETTINGS
@given(data=st.one_of(files(qrels_line), st.binary(max_size=200)), gz=gz_options, skip_bad=st.booleans())
def test_qrels_reader(data, gz, skip_bad):
    from braid.data.qrels import read_qrels

    path = _write("qrels.tsv", data, *gz)
    qrels = _check(lambda p: read_qrels(p, skip_bad=skip_bad), path)
    for judged in (qrels or {}).values():
        assert all(isinstance(g, int) and not isinstance(g, bool) for g in judged.values())


# ------------------------------------------------------------------------------------------ runs
run_line = st.builds(lambda cells: " ".join(cells), st.lists(st.one_of(cell, st.just("Q0")), min_size=1, max_size=7))


@SETTINGS
@given(data=st.one_of(files(run_line), st.binary(max_size=200)), gz=gz_options)
def test_run_reader(data, gz):
    from braid.data.runs import read_run

    path = _write("run.trec", data, *gz)
    run = _check(read_run, path)
    for hits in (run or {}).values():
        assert all(math.isfinite(s) for s in hits.values())


# ------------------------------------------------------------------------------- sparse vectors
vector_line = st.one_of(
    st.builds(
        lambda i, v: _dump({"id": i, "vector": v}),
        st.one_of(text, numbers, json_values),
        st.one_of(st.dictionaries(st.one_of(text, st.integers(-5, 40).map(str), numbers.map(str)), st.one_of(numbers, json_values), max_size=4), json_values),
    ),
    st.builds(_dump, json_values),
)


@SETTINGS
@given(data=st.one_of(files(vector_line), st.binary(max_size=200)), gz=gz_options, vocab=st.sampled_from([None, "dict"]), vocab_size=st.none() | st.integers(1, 50))
def test_vectors_jsonl_reader(data, gz, vocab, vocab_size):
    from braid.data.vectors import read_vectors_jsonl

    path = _write("vectors.jsonl", data, *gz)
    table = {str(i): i for i in range(30)} | {"cat": 30, "ｃａｔ": 31} if vocab else None
    got = _check(lambda p: read_vectors_jsonl(p, vocab=table, vocab_size=vocab_size), path)
    if got is not None:
        ids, vectors = got
        assert len(ids) == vectors.n_rows
        vectors.validate("fuzz")


def test_vectors_jsonl_reader_refuses_a_bad_vocab_size_as_an_option():
    from braid.data.errors import OptionError
    from braid.data.vectors import read_vectors_jsonl

    path = _write("vectors.jsonl", b'{"id": "a", "vector": {"1": 1.0}}\n')
    with pytest.raises(OptionError, match="vocab_size"):
        read_vectors_jsonl(path, vocab_size=0)


vocab_json = st.builds(
    lambda v: _dump({"model": {"vocab": v}}),
    st.one_of(json_values, st.dictionaries(text, numbers, max_size=4), st.lists(st.one_of(json_values, st.lists(st.one_of(text, numbers), max_size=2)), max_size=4)),
)


@SETTINGS
@given(data=st.one_of(vocab_json.map(lambda s: s.encode("utf-8", "surrogatepass")), st.builds(_dump, json_values).map(lambda s: s.encode("utf-8", "surrogatepass")), files(text), st.binary(max_size=200)), suffix=st.sampled_from(["tokenizer.json", "vocab.txt"]))
def test_vocabulary_reader(data, suffix):
    from braid.data.vectors import load_vocab

    vocab = _check(load_vocab, _write(suffix, data))
    if vocab is not None:
        assert vocab and all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items())
        assert len(set(vocab.values())) == len(vocab)


arrays = st.one_of(
    st.lists(st.integers(-(2**40), 2**40), max_size=6).map(lambda x: np.array(x, dtype=np.int64)),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=6).map(lambda x: np.array(x, dtype=np.float32)),
    st.sampled_from([np.array([]), np.array("csr"), np.array("coo"), np.array(["a", "b"]), np.zeros((2, 2)), np.array([3, 4]), np.array([-1, 5])]),
)


@SETTINGS
@given(
    parts=st.dictionaries(st.sampled_from(["indptr", "indices", "data", "shape", "format", "row", "col", "offsets"]), arrays, max_size=6),
    raw=st.none() | st.binary(max_size=300),
    vocab_size=st.none() | st.integers(0, 50),
)
@example(parts={"indptr": np.array([0, 1]), "indices": np.array([3]), "data": np.array([1.0], dtype=np.float32), "shape": np.array([1, 10]), "format": np.array("csr")}, raw=None, vocab_size=None)
def test_vectors_npz_reader(parts, raw, vocab_size):
    from braid.data.vectors import read_vectors_npz

    path = WORK / "vectors.npz"
    if raw is not None:
        path.write_bytes(raw)
    else:
        np.savez(path, **parts)
    got = _check(lambda p: read_vectors_npz(p, vocab_size=vocab_size), path)
    if got is not None:
        got.validate("fuzz")


# ------------------------------------------------------------------------------------ manifests
def _good_manifest() -> dict:
    from braid.index.manifest import new_manifest

    m = new_manifest(3, source="x")
    m["components"] = {"bm25": {"num_docs": 3}}
    return m


@st.composite
def manifests(draw) -> bytes:
    """A valid manifest with random fields replaced, deleted or added; or any JSON; or any bytes."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return _dump(draw(json_values)).encode("utf-8", "surrogatepass")
    m = _good_manifest()
    keys = list(m) + ["checksums", "corpus", "skipped_records", "shard", "unknown"]
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(keys))
        if draw(st.booleans()):
            m.pop(key, None)
        else:
            m[key] = draw(json_values)
    if draw(st.booleans()):
        m["components"] = draw(st.dictionaries(text, json_values, max_size=3))
    return _dump(m).encode("utf-8", "surrogatepass")


@SETTINGS
@given(data=manifests())
@example(data=("[" * 100_000).encode())
@example(data=('{"format": "braid-index", "format_version": ' + "9" * 5000 + "}").encode())
def test_manifest_reader(data):
    from braid.index.manifest import load_manifest, read_manifest, verify_index

    index = WORK / "index"
    index.mkdir(exist_ok=True)
    (index / "docids.txt").write_text("a\nb\nc\n")
    (index / "bm25").mkdir(exist_ok=True)
    (index / "manifest.json").write_bytes(data)
    manifest = None
    for read in (load_manifest, read_manifest, verify_index):
        try:
            manifest = read(index)
        except IndexFormatError as exc:
            assert str(index) in str(exc)
    if isinstance(manifest, dict):
        assert isinstance(manifest["components"], dict) and all(isinstance(v, dict) for v in manifest["components"].values())


@SETTINGS
@given(data=st.one_of(st.binary(max_size=200), st.builds(lambda v: _dump(v).encode("utf-8", "surrogatepass"), json_values), st.builds(
    lambda shards, n, comps: _dump({"format": "braid-sharded-index", "format_version": 1, "shards": shards, "num_docs": n, "components": comps}).encode("utf-8", "surrogatepass"),
    st.one_of(json_values, st.lists(st.fixed_dictionaries({"path": st.one_of(text, json_values), "offset": numbers, "num_docs": numbers}), max_size=3)),
    numbers,
    json_values,
)))
@example(data=("[" * 100_000).encode())
def test_sharded_manifest_reader(data):
    from braid.retrieval.scale.sharded import read_sharded_manifest

    root = WORK / "sharded"
    root.mkdir(exist_ok=True)
    (root / "sharded.json").write_bytes(data)
    try:
        read_sharded_manifest(root)
    except IndexFormatError as exc:
        assert str(root) in str(exc)


# ------------------------------------------------------------------------------ pipeline TOML
toml_value = st.one_of(
    st.sampled_from(['"bm25"', '"sparse"', '"rrf"', '"linear"', "1", "-3", "1e400", "nan", "inf", "true", "[]", '{a = 1}', '"\\ud800"', "1979-05-27"]),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
toml_line = st.one_of(
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(["name", "depth", "retrievers", "fusion", "method", "weight", "k", "norm", "prf", "query_cut", "bogus"]), toml_value),
    st.sampled_from(["[fusion]", "[[retriever]]", "[[rescore]]", "[prf]", "[[retriever.prf]]", "x = ", "= 1"]),
    text,
)


@SETTINGS
@given(data=st.one_of(files(toml_line), st.binary(max_size=200)))
def test_pipeline_reader(data):
    from braid.retrieval.pipeline.spec import read_pipeline

    path = _write("pipeline.toml", data)
    try:
        read_pipeline(path)
    except BraidError as exc:
        assert str(path) in str(exc), f"{type(exc).__name__} does not name the file: {exc}"
