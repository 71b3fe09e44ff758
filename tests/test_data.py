"""Readers with good and bad input: every error names the file and line."""

from __future__ import annotations

import gzip
import json

import pytest

from braid.data import DataError, read_qrels, read_queries
from braid.data.beir import BeirDataset
from braid.data.corpus import ReadStats, iter_corpus
from tests.conftest import write_jsonl


def test_corpus_reads_fields_and_ignores_extra(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"_id": "a", "title": "T", "text": "body", "metadata": {"x": 1}},
        {"_id": 7, "text": "no title"},
    ])
    docs = list(iter_corpus(path))
    assert [d.doc_id for d in docs] == ["a", "7"]
    assert docs[0].contents == "T body"
    assert docs[1].title == "" and docs[1].contents == "no title"


def test_corpus_gzip(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"_id": "x", "title": "", "text": "zipped"}) + "\n")
    assert [d.text for d in iter_corpus(path)] == ["zipped"]


@pytest.mark.parametrize(
    "lines, message, line_no",
    [
        (['{"_id": "a", "text": "ok"}', '{"_id": "b", "text": '], "malformed JSON", 2),
        (['{"title": "t", "text": "no id"}'], "missing field '_id'", 1),
        (['{"_id": "a", "text": "x"}', '{"_id": "a", "text": "y"}'], "duplicate document id 'a'", 2),
        (['{"_id": "a", "title": "", "text": "  "}'], "empty title and text", 1),
        (['[1, 2]'], "expected a JSON object", 1),
        (['{"_id": "a b", "text": "x"}'], "contains whitespace", 1),
        (['{"_id": "a", "text": 5}'], "must be a string", 1),
    ],
)
def test_corpus_errors_name_file_and_line(tmp_path, lines, message, line_no):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError) as err:
        list(iter_corpus(path))
    assert message in str(err.value)
    assert f"bad.jsonl, line {line_no}" in str(err.value)


def test_corpus_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1.jsonl, line 2: invalid UTF-8"):
        list(iter_corpus(path))


def test_corpus_skip_bad_counts(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b'{"_id": "a", "text": "ok"}\n{broken\n{"_id": "a", "text": "dup"}\n'
        b'{"_id": "c", "text": ""}\n{"_id": "d", "text": "caf\xe9"}\n{"_id": "e", "text": "fine"}\n'
    )
    stats = ReadStats()
    docs = list(iter_corpus(path, skip_bad=True, stats=stats))
    assert [d.doc_id for d in docs] == ["a", "e"]
    assert stats.read == 2 and stats.skipped == 4


def test_missing_file():
    with pytest.raises(DataError, match="file not found"):
        list(iter_corpus("/nonexistent/corpus.jsonl"))


def test_queries_jsonl_and_tsv(tmp_path):
    jl = write_jsonl(tmp_path / "q.jsonl", [{"_id": "1", "text": "first"}, {"_id": "2", "text": "second"}])
    assert read_queries(jl) == {"1": "first", "2": "second"}
    tsv = tmp_path / "topics.tsv"
    tsv.write_text("1\tfirst query\n2\tsecond\n")
    assert read_queries(tsv) == {"1": "first query", "2": "second"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\tok\n2\n")
    with pytest.raises(DataError, match=r"bad.tsv, line 2"):
        read_queries(bad)
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"_id": "1", "text": "a"}, {"_id": "1", "text": "b"}])
    with pytest.raises(DataError, match=r"dup.jsonl, line 2: duplicate query id"):
        read_queries(dup)


def test_qrels_beir_and_trec_several_judgments(tmp_path):
    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq1\td3\t0\nq2\td1\t1\n")
    assert read_qrels(beir) == {"q1": {"d1": 1, "d2": 2, "d3": 0}, "q2": {"d1": 1}}
    trec = tmp_path / "qrels.txt"
    trec.write_text("q1 0 d1 1\nq1 0 d2 2\n")
    assert read_qrels(trec) == {"q1": {"d1": 1, "d2": 2}}
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\td1\tvery\n")
    with pytest.raises(DataError, match=r"bad.tsv, line 1: relevance 'very'"):
        read_qrels(bad)
    conflict = tmp_path / "conflict.tsv"
    conflict.write_text("q1\td1\t1\nq1\td1\t2\n")
    with pytest.raises(DataError, match="twice with different grades"):
        read_qrels(conflict)


def test_beir_dataset(toy_dataset):
    ds = BeirDataset(toy_dataset)
    assert ds.name == "toy" and ds.splits() == ["test"]
    assert set(ds.queries("test")) == {"q1", "q2", "q3"}
    with pytest.raises(DataError, match="no qrels for split 'train'"):
        ds.qrels("train")


def test_shared_collections_read(shared):
    for name, n in [("adi", 82), ("cranfield", 1400)]:
        path = shared / "data" / name / "corpus.jsonl"
        stats = ReadStats()
        docs = list(iter_corpus(path, skip_bad=True, stats=stats))
        # cranfield holds two empty documents in the original collection
        assert len(docs) + stats.skipped == n


@pytest.mark.parametrize(
    "check, value, kwargs, allowed",
    [
        ("check_positive_int", 0, {}, "a positive integer"),
        ("check_positive_int", True, {}, "a positive integer"),  # a bool is never a count
        ("check_positive_int", 2.0, {}, "a positive integer"),
        ("check_positive_int", -1, {"allow_none": True}, "None or a positive integer"),
        ("check_nonneg_int", -1, {}, "an integer >= 0"),
        ("check_int", 1, {"low": 2}, "an integer >= 2"),
        ("check_nonneg_int", "3", {"allow_none": True, "hint": "0: here"}, "None or an integer >= 0; 0: here"),
        ("check_finite", float("nan"), {}, "a finite number"),
        ("check_finite", float("inf"), {"low": 0}, "a finite number >= 0"),
        ("check_finite", 0, {"low": 0, "low_open": True}, "a finite number > 0"),
        ("check_finite", -0.5, {"low": 0, "allow_none": True}, "None or a finite number >= 0"),
    ],
)
def test_value_checks_name_the_value_and_what_is_allowed(check, value, kwargs, allowed):
    from braid.data import errors

    with pytest.raises(errors.OptionError) as info:
        getattr(errors, check)("--n", value, **kwargs)
    assert str(info.value) == f"invalid value for --n: {value!r} ({allowed})"
    assert info.value.name == "--n"


def test_value_checks_return_the_canonical_type():
    import numpy as np

    from braid.data.errors import check_finite, check_nonneg_int, check_positive_int

    assert check_positive_int("k", np.int64(3)) == 3 and type(check_positive_int("k", np.int64(3))) is int
    assert check_positive_int("k", None, allow_none=True) is None
    assert check_nonneg_int("n", 0) == 0
    assert check_finite("w", np.float32(0.5), low=0) == 0.5 and type(check_finite("w", 1)) is float
