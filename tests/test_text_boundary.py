"""Text is validated and normalised once at the boundary: readers and the Searcher (issue 13 probes)."""

from __future__ import annotations

import gzip
import json

import pytest

from braid.data.corpus import iter_corpus
from braid.data.errors import DataError, OptionError
from braid.data.qrels import read_qrels
from braid.data.queries import read_queries
from braid.data.runs import read_run
from braid.data.text import is_blank, normalize_text, query_batch, text_problem
from braid.retrieval.build.builder import BuildOptions, build_index
from braid.retrieval.searcher import Searcher


def test_normalisation_rules():
    assert normalize_text("ｃａｔ ﬁsh x²") == "cat fish x2"
    assert normalize_text("a\x00b\x07c\td\ne") == "a b c\td\ne"
    assert text_problem("ok \ud800 bad").startswith("invalid Unicode: lone surrogate U+D800 at character 3")
    assert text_problem(3) == "expected a string, got int"
    assert is_blank("   ") and is_blank("\x00\x00") and is_blank("?!.") and not is_blank(" a ")


def _write(path, lines, *, gz=False, bom=False):
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if bom:
        data = b"\xef\xbb\xbf" + data
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def test_query_batch_one_rule_for_every_batch_entry_point():
    assert query_batch({"q1": "ｃａｔ", "q2": "dog"}) == (["q1", "q2"], ["cat", "dog"])
    assert query_batch(["a", "b"]) == (["0", "1"], ["a", "b"])
    assert query_batch(["a"], query_ids=["x"]) == (["x"], ["a"])
    with pytest.raises(OptionError, match="not one string"):
        query_batch("information")
    with pytest.raises(OptionError, match="one id per query"):
        query_batch(["a", "b"], query_ids=["x"])
    with pytest.raises(OptionError, match=r"queries\[1\].*lone surrogate"):
        query_batch(["fine", "bad \ud800"])
    with pytest.raises(OptionError, match=r"queries\[0\].*expected a string"):
        query_batch([3])


def test_bom_is_dropped_and_first_record_kept(tmp_path):
    p = _write(tmp_path / "corpus.jsonl", [json.dumps({"_id": "d1", "text": "one"}), json.dumps({"_id": "d2", "text": "two"})], bom=True)
    assert [d.doc_id for d in iter_corpus(p)] == ["d1", "d2"]
    q = _write(tmp_path / "qrels.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1"], bom=True)
    assert read_qrels(q) == {"q1": {"d1": 1}}


def test_truncated_and_fake_gzip_name_the_file(tmp_path):
    good = gzip.compress(b"".join(json.dumps({"_id": f"d{i}", "text": "x " * 50}).encode() + b"\n" for i in range(200)))
    trunc = tmp_path / "corpus.jsonl.gz"
    trunc.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="truncated compressed file") as err:
        list(iter_corpus(trunc))
    assert str(trunc) in str(err.value)
    fake = tmp_path / "plain.jsonl.gz"
    fake.write_text(json.dumps({"_id": "d1", "text": "x"}) + "\n")
    with pytest.raises(DataError, match="cannot decompress") as err:
        list(iter_corpus(fake))
    assert str(fake) in str(err.value)


def test_surrogates_and_controls_in_documents(tmp_path):
    p = tmp_path / "corpus.jsonl"
    p.write_text('{"_id": "d1", "text": "fine"}\n{"_id": "d2", "text": "bad \\ud800 text"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2.*lone surrogate"):
        list(iter_corpus(p))
    assert [d.doc_id for d in iter_corpus(p, skip_bad=True)] == ["d1"]
    p.write_text('{"_id": "d1", "text": "ｃａｔ\\u0000food"}\n', encoding="utf-8")
    assert next(iter(iter_corpus(p))).text == "cat food"


@pytest.mark.parametrize("grade, message", [("inf", "not an integer grade"), ("nan", "not an integer grade"), ("0.5", "not an integer grade"), ("x", "not a number")])
def test_bad_qrels_grades(tmp_path, grade, message):
    p = _write(tmp_path / "q.tsv", ["q1\td1\t1", f"q1\td2\t{grade}"])
    with pytest.raises(DataError, match=message) as err:
        read_qrels(p)
    assert "line 2" in str(err.value)
    assert read_qrels(p, skip_bad=True) == {"q1": {"d1": 1}}


def test_blank_queries_and_runs(tmp_path):
    q = _write(tmp_path / "queries.jsonl", [json.dumps({"_id": "1", "text": "good"}), json.dumps({"_id": "2", "text": "   "})])
    with pytest.raises(DataError, match="line 2.*empty text"):
        read_queries(q)
    assert read_queries(q, skip_bad=True) == {"1": "good"}
    r = _write(tmp_path / "run.trec", ["q1 Q0 d1 1 inf tag"])
    with pytest.raises(DataError, match="not finite"):
        read_run(r)


def test_searcher_boundary(tmp_path):
    corpus = _write(tmp_path / "corpus.jsonl", [json.dumps({"_id": f"d{i}", "text": t}) for i, t in enumerate(["cat food", "dog bone", "fish tank"])])
    build_index(corpus, tmp_path / "idx", BuildOptions(progress=False), log=lambda m: None)
    s = Searcher(tmp_path / "idx")
    assert [h["id"] for h in s.search("ｃａｔ", k=5)] == ["d0"]  # full-width matches plain
    assert s.search("   ", k=5) == [] and s.search("\x00", k=5) == []
    res = s.batch_search(["dog", "", "fish"], k=2)
    assert res.doc_ids == [["d1"], [], ["d2"]]
    assert s.batch_search(["cat"], k=10**9).hits.k == 3  # k bounded by the collection, not allocated
    with pytest.raises(OptionError, match=r"queries\[0\].*lone surrogate"):
        s.search("bad \ud800", k=3)
    with pytest.raises(OptionError, match="not one string"):
        s.batch_search("information", k=3)
