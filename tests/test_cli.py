"""The CLI through click's CliRunner."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from braid.cli.main import main


def test_index_search_eval(toy_dataset, tmp_path):
    runner = CliRunner()
    out = tmp_path / "indexes" / "toy"
    res = runner.invoke(main, ["index", str(toy_dataset), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["search", str(out), "wolf habitat", "-k", "2", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    assert payload["hits"][0]["id"] == "d3" and payload["hits"][0]["title"] == "Wolves"
    res = runner.invoke(main, ["search", str(out), "wolf", "-k", "1"])
    assert res.exit_code == 0 and "d3" in res.output
    res = runner.invoke(
        main,
        ["eval", str(toy_dataset), "--index-root", str(tmp_path / "indexes"), "--runs-dir", str(tmp_path / "runs"), "--json", "-q"],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    assert set(metrics) == {"toy"}
    # BM25 hits worked out from TOY_DOCS with the index's analyzer (stop words, Snowball stemmer: "cats"
    # and "cat" -> "cat", but "purring" -> "pur" and "wolves" -> "wolv"). q1 "why do cats purr" -> d1 (cat x2,
    # purr; rel 1), d5 (cat; rel 0), d4 (cat, longer than d5; rel 2); q2 "dogs bark" -> d2 (rel 1), its own
    # document q2 dropped but still judged; q3 "wolf habitat" -> d3 (rel 1). Linear gains, as trec_eval.
    log2_3 = math.log2(3)
    q1 = (1 + 2 / math.log2(4)) / (2 + 1 / log2_3)
    q2 = 1 / (1 + 1 / log2_3)
    assert metrics["toy"]["ndcg@10"] == pytest.approx((q1 + q2 + 1.0) / 3, abs=1e-9)
    assert (tmp_path / "runs" / "toy" / "bm25.test.trec").exists()
    per_query = json.loads((tmp_path / "runs" / "toy" / "bm25.test.metrics.json").read_text())["per_query"]
    # q2's own document (id "q2") is dropped by default, so its only relevant doc d2 is first
    assert per_query["q2"]["mrr@10"] == 1.0


def test_cli_errors_are_clear(toy_dataset, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["search", str(tmp_path / "nope"), "q"])
    assert res.exit_code != 0 and "no such index directory" in res.output
    out = tmp_path / "idx"
    assert runner.invoke(main, ["index", str(toy_dataset), "--out", str(out), "-q"]).exit_code == 0
    res = runner.invoke(main, ["index", str(toy_dataset), "--out", str(out), "-q"])
    assert res.exit_code != 0 and "--overwrite" in res.output
    res = runner.invoke(main, ["search", str(out), "q", "--retriever", "dense"])
    assert res.exit_code != 0 and "no 'dense' component" in res.output
    res = runner.invoke(main, ["search", str(out), "q", "--retriever", "bogus"])
    assert res.exit_code != 0 and "known retrievers" in res.output
    res = runner.invoke(main, ["index", str(toy_dataset), "--out", str(tmp_path / "x"), "--retrievers", "bm25,nope"])
    assert res.exit_code != 0 and "--retrievers" in res.output
    res = runner.invoke(main, ["search", str(out), "q", "-k", "0"])
    assert res.exit_code != 0 and "invalid value for k" in res.output
    res = runner.invoke(main, ["eval", str(toy_dataset), "--index-root", str(tmp_path), "--metrics", "ndcg@x"])
    assert res.exit_code != 0 and "--metrics" in res.output


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, braid, braid.cli.main, braid.retrieval.searcher, braid.data; print(sorted(m for m in ('torch','faiss','ray','jnius','transformers','numba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_dense_index_spec_parses_sub_quantizers(toy_dataset, tmp_path):
    from braid.cli.main import _parse_dense_index

    assert _parse_dense_index("flat") == {"kind": "flat"}
    assert _parse_dense_index("pq:96") == {"kind": "pq", "m": 96}
    res = CliRunner().invoke(main, ["index", str(toy_dataset), "--out", str(tmp_path / "x"), "--dense-index", "flat:8", "-q"])
    assert res.exit_code != 0 and "--dense-index" in res.output and "flat:8" in res.output
    assert not (tmp_path / "x").exists()
