"""The probe classes of docs/reliability.md that no other module covers, and the check that every row of
that table names a test that exists (so the suite fails when a probe regresses or its test is removed)."""

from __future__ import annotations

import json
import logging
import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from braid.cli.main import main
from braid.data.errors import OptionError

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
TEST_REF = re.compile(r"`(tests/test_[a-z0-9_]+\.py)::([a-z0-9_]+)`")


def test_every_row_of_the_reliability_table_names_a_test_that_exists():
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| ") and not line.startswith("| probe")]
    assert len(rows) >= 30, "the table lost its rows"
    for row in rows:
        refs = TEST_REF.findall(row)
        assert refs, f"no test named in row: {row[:100]}"
        for file, name in refs:
            source = (REPO / file).read_text(encoding="utf-8")
            assert re.search(rf"^def {name}\(", source, re.M), f"{file}::{name} (named in docs/reliability.md) does not exist"


def test_threads_must_be_a_positive_integer(toy_dataset, tmp_path):
    from braid.retrieval.build.builder import BuildOptions, build_index
    from braid.retrieval.searcher import Searcher

    build_index(toy_dataset, tmp_path / "idx", BuildOptions(progress=False), log=lambda m: None)
    s = Searcher(tmp_path / "idx")
    for bad in (-3, 0, 1.5, True):
        with pytest.raises(OptionError, match="threads"):
            s.batch_search(["cats"], threads=bad)
    assert s.batch_search(["cats"], threads=2).doc_ids[0][0] in {"d1", "d4"}


def test_eval_skip_bad_goes_past_bad_query_and_qrels_lines(toy_dataset, tmp_path):
    """`braid eval --skip-bad` skips (and counts) a bad queries line and a bad qrels line instead of stopping."""
    with open(toy_dataset / "queries.jsonl", "a") as fh:
        fh.write('{"_id": "q9", "text": \n')
    with open(toy_dataset / "qrels" / "test.tsv", "a") as fh:
        fh.write("q1\td2\tnot-a-grade\n")
    args = ["eval", str(toy_dataset), "--index-root", str(tmp_path / "ix"), "--runs-dir", str(tmp_path / "runs"), "--json", "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "test.tsv, line 7" in res.output  # qrels are read first
    res = CliRunner().invoke(main, [*args, "--skip-bad"])
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)) == {"toy"}
    record = json.loads((tmp_path / "runs" / "toy" / "bm25.test.metrics.json").read_text())
    assert record["skipped_lines"] == 2


def test_eval_reports_judgments_of_unknown_documents_and_queries(toy_dataset, tmp_path):
    with open(toy_dataset / "qrels" / "test.tsv", "a") as fh:
        fh.write("q1\tnot-a-doc\t1\nq-missing\td1\t1\n")
    res = CliRunner().invoke(main, ["eval", str(toy_dataset), "--index-root", str(tmp_path / "ix"), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "judges 1 documents not in the index and 1 queries not in the queries file" in res.output
    record = json.loads((tmp_path / "runs" / "toy" / "bm25.test.metrics.json").read_text())
    assert record["unknown_judgments"] == {"documents": 1, "queries": 1, "first": "document 'not-a-doc'"}


def test_eval_with_one_retriever_adds_only_its_component():
    from braid.retrieval.build.builder import BuildOptions
    from braid.retrieval.eval.experiment import components_needed

    options = BuildOptions()  # --retrievers defaults to bm25
    assert components_needed("dense", None, options, index_exists=True) == {"dense"}
    assert components_needed(None, None, options, index_exists=True) == {"bm25"}
    assert components_needed("dense", None, options, index_exists=False) == {"bm25", "dense"}


def test_faiss_loader_lines_are_quiet(caplog):
    pytest.importorskip("faiss")
    from braid.index.dense import _require_faiss

    _require_faiss()
    assert logging.getLogger("faiss.loader").getEffectiveLevel() >= logging.WARNING


def test_pyproject_license_is_an_spdx_string():
    """A TOML-table `project.license` makes setuptools print a deprecation block at every install."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert isinstance(project["license"], str) and project["license"] == "Apache-2.0"
    assert "hypothesis" in " ".join(project["optional-dependencies"]["dev"])  # the reader fuzz runs in CI
