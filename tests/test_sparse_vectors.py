"""SparseVectors, its validation, and the JSONL / npz readers: every refusal names the row or the file and line."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import scipy.sparse as sp

from braid.data.errors import DataError
from braid.data.vectors import SparseVectors, load_vocab, read_vectors_jsonl, read_vectors_npz


def _csr(indptr, indices, data, vocab_size=10):
    return SparseVectors(np.array(indptr), np.array(indices), np.array(data, dtype=np.float32), vocab_size)


def test_from_dicts_scipy_round_trip_and_rows():
    v = SparseVectors.from_dicts([{3: 0.5, 1: 2.0}, {}, {9: 1.0}], vocab_size=10)
    assert v.n_rows == 3 and v.nnz == 3
    assert v.indptr.dtype == np.int64 and v.indices.dtype == np.int32 and v.data.dtype == np.float32
    terms, weights = v.row(0)
    assert terms.tolist() == [1, 3] and weights.tolist() == [2.0, 0.5]
    assert v.row(1)[0].size == 0
    m = v.to_scipy()
    assert m.shape == (3, 10)
    assert m.toarray()[0, 1] == 2.0 and m.toarray()[2, 9] == 1.0
    back = SparseVectors.from_scipy(m)
    assert np.array_equal(back.indices, v.indices) and np.array_equal(back.data, v.data)
    taken = v.take(np.array([2, 0]))
    assert taken.row(0)[0].tolist() == [9] and taken.row(1)[0].tolist() == [1, 3]


def test_from_scipy_sorts_unsorted_rows():
    m = sp.csr_matrix((np.array([1.0, 2.0, 3.0], np.float32), np.array([5, 2, 7]), np.array([0, 2, 3])), shape=(2, 8))
    m.has_sorted_indices = False
    v = SparseVectors.from_scipy(m)
    assert v.row(0)[0].tolist() == [2, 5] and v.row(0)[1].tolist() == [2.0, 1.0]
    v.validate()


@pytest.mark.parametrize(
    "indptr, indices, data, message",
    [
        ([0, 2, 4], [1, 2, 5, 3], [1, 1, 1, 1], "row 1: term ids are not strictly increasing"),
        ([0, 2, 4], [1, 2, 3, 3], [1, 1, 1, 1], "row 1: term ids are not strictly increasing"),
        ([0, 1, 2], [1, 12], [1, 1], "row 1: term id out of range"),
        ([0, 1, 2], [1, 2], [1, -0.5], "row 1: weight is negative"),
        ([0, 1, 2], [1, 2], [np.nan, 1], "row 0: weight is not finite"),
        ([0, 1, 2], [1, 2], [1, np.inf], "row 1: weight is not finite"),
    ],
)
def test_validate_names_the_row(indptr, indices, data, message):
    v = SparseVectors(np.array(indptr), np.array(indices, dtype=np.int32), np.array(data, dtype=np.float32), 10)
    with pytest.raises(DataError, match=message):
        v.validate("docs")


def test_structure_errors():
    with pytest.raises(DataError, match="must start at 0 and end at nnz"):
        _csr([0, 3], [1, 2], [1, 1])
    with pytest.raises(DataError, match="differ in length"):
        _csr([0, 2], [1, 2], [1])
    with pytest.raises(DataError, match="decreases at row 1"):
        _csr([0, 2, 1, 2], [1, 2], [1, 1])
    with pytest.raises(DataError, match="row 1: term id out of range"):
        SparseVectors(np.array([0, 1, 2]), np.array([1, -3], dtype=np.int64), np.ones(2, np.float32), 10)
    with pytest.raises(DataError, match="vocab_size"):
        _csr([0, 1], [1], [1], vocab_size=0)


def _write_jsonl(path, lines, compress=False):
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as fh:
        for line in lines:
            fh.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def test_read_jsonl_with_vocab_and_integer_tokens(tmp_path):
    path = tmp_path / "v.jsonl"
    _write_jsonl(path, [{"id": "d1", "vector": {"cat": 1.5, "a": 0.25}}, "", {"id": 7, "vector": {}}])
    ids, v = read_vectors_jsonl(path, vocab={"a": 0, "cat": 3, "dog": 4})
    assert ids == ["d1", "7"] and v.vocab_size == 5
    assert v.row(0)[0].tolist() == [0, 3] and v.row(0)[1].tolist() == [0.25, 1.5]
    gz = tmp_path / "n.jsonl.gz"
    _write_jsonl(gz, [{"id": "q", "vector": {"12": 2, "3": 1.0}}], compress=True)
    ids, v = read_vectors_jsonl(gz)
    assert ids == ["q"] and v.vocab_size == 13 and v.row(0)[0].tolist() == [3, 12]


def test_load_vocab_files(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\nhello\nworld\n", encoding="utf-8")
    assert load_vocab(tmp_path / "vocab.txt") == {"[PAD]": 0, "hello": 1, "world": 2}
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"x": 0, "y": 5}}}), encoding="utf-8")
    assert load_vocab(tmp_path / "tokenizer.json") == {"x": 0, "y": 5}
    path = tmp_path / "v.jsonl"
    _write_jsonl(path, [{"id": "a", "vector": {"world": 1.0}}])
    ids, v = read_vectors_jsonl(path, vocab=tmp_path / "vocab.txt")
    assert v.vocab_size == 3 and v.row(0)[0].tolist() == [2]


@pytest.mark.parametrize(
    "line, vocab, vocab_size, message",
    [
        ("{not json", None, None, "line 2: malformed JSON"),
        ("[" * 100_000, None, None, r"line 2: malformed JSON \(nested too deeply\)"),
        ('{"id": "b", "vector": {"1": ' + "9" * 400 + "}}", None, None, "line 2: weight of '1' overflows float32: an integer of 400 digits"),
        ('{"id": "b", "vector": {"' + "9" * 12 + '": 1.0}}', None, None, "line 2: term id 999999999999 is beyond the largest vocabulary"),
        ('{"id": "\\ud800", "vector": {}}', None, None, "line 2: field 'id' .* lone surrogate"),
        ('{"id": "a b", "vector": {}}', None, None, "line 2: field 'id' .* whitespace"),
        ('["a"]', None, None, "line 2: expected a JSON object"),
        ({"vector": {"1": 1.0}}, None, None, 'line 2: missing "id"'),
        ({"id": "b"}, None, None, 'line 2: missing or non-object "vector"'),
        ({"id": "b", "vector": {"1": "x"}}, None, None, "line 2: weight of '1' is not a number"),
        ({"id": "b", "vector": {"1": -1.0}}, None, None, "line 2: weight of '1' is negative"),
        ('{"id": "b", "vector": {"1": NaN}}', None, None, "line 2: weight of '1' is not finite"),
        ({"id": "b", "vector": {"word": 1.0}}, None, None, "line 2: token 'word' is not an integer term id"),
        ({"id": "b", "vector": {"zebra": 1.0}}, {"1": 0, "b": 1}, None, "line 2: token 'zebra' is not in the vocabulary"),
        ({"id": "b", "vector": {"9": 1.0}}, None, 5, r"line 2: term id 9 \(token '9'\) >= vocab_size 5"),
        ({"id": "b", "vector": {"1": 1.0, "01": 2.0}}, None, None, "line 2: token '01' maps to term id 1"),
        ({"id": "a", "vector": {"1": 1.0}}, None, None, "line 2: duplicate id 'a'"),
        ({"id": "b", "vector": {"1": 1e300}}, None, None, "line 2: weight of '1' overflows float32"),
    ],
)
def test_read_jsonl_errors_name_file_and_line(tmp_path, line, vocab, vocab_size, message):
    path = tmp_path / "bad.jsonl"
    _write_jsonl(path, [{"id": "a", "vector": {"1": 1.0}}, line])
    with pytest.raises(DataError, match=message) as info:
        read_vectors_jsonl(path, vocab=vocab, vocab_size=vocab_size)
    assert "bad.jsonl" in str(info.value)


def test_read_npz(tmp_path):
    m = sp.random(20, 50, density=0.2, format="csr", dtype=np.float32, random_state=np.random.RandomState(0))
    sp.save_npz(tmp_path / "ok.npz", m)
    v = read_vectors_npz(tmp_path / "ok.npz")
    assert v.n_rows == 20 and v.vocab_size == 50
    assert np.allclose(v.to_scipy().toarray(), m.toarray())
    # a CSC file is converted
    sp.save_npz(tmp_path / "csc.npz", m.tocsc())
    assert np.allclose(read_vectors_npz(tmp_path / "csc.npz").to_scipy().toarray(), m.toarray())


def test_read_npz_errors(tmp_path):
    neg = sp.csr_matrix(np.array([[0, 1.0], [-2.0, 0]], dtype=np.float32))
    sp.save_npz(tmp_path / "neg.npz", neg)
    with pytest.raises(DataError, match=r"neg.npz: vectors: row 1: weight is negative"):
        read_vectors_npz(tmp_path / "neg.npz")
    dup = sp.csr_matrix((np.array([1.0, 2.0], np.float32), np.array([3, 3]), np.array([0, 2])), shape=(1, 5))
    sp.save_npz(tmp_path / "dup.npz", dup, compressed=False)
    with pytest.raises(DataError, match="row 0: term ids are not strictly increasing"):
        read_vectors_npz(tmp_path / "dup.npz")
    wide = sp.csr_matrix(np.array([[0, 0, 0, 1.0]], dtype=np.float32))
    sp.save_npz(tmp_path / "wide.npz", wide)
    with pytest.raises(DataError, match="term ids up to 3 but vocab_size is 2"):
        read_vectors_npz(tmp_path / "wide.npz", vocab_size=2)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="junk.npz: not a scipy sparse .npz"):
        read_vectors_npz(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="no such file"):
        read_vectors_npz(tmp_path / "missing.npz")


def test_concat_is_the_rows_one_after_the_other():
    from braid.data.vectors import SparseVectors

    a = SparseVectors.from_rows([(np.array([1, 3], np.int32), np.array([0.5, 2.0], np.float32)), (np.array([], np.int32), np.array([], np.float32))], 5)
    b = SparseVectors.from_rows([(np.array([0, 4], np.int32), np.array([1.0, 3.0], np.float32))], 5)
    sub = a.take(np.array([1, 0]))  # a batch whose arrays start past offset 0 is handled by indptr, not position
    got = SparseVectors.concat([a, b, sub], 5)
    want = [a.row(0), a.row(1), b.row(0), sub.row(0), sub.row(1)]
    assert got.n_rows == 5 and got.vocab_size == 5
    for i, (idx, w) in enumerate(want):
        np.testing.assert_array_equal(got.row(i)[0], idx)
        np.testing.assert_array_equal(got.row(i)[1], w)
    assert SparseVectors.concat([], 7).n_rows == 0
