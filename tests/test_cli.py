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
    assert res.exit_code != 0 and "invalid value for -k: 0 (a positive integer)" in res.output
    res = runner.invoke(main, ["eval", str(toy_dataset), "--index-root", str(tmp_path), "--metrics", "ndcg@x"])
    assert res.exit_code != 0 and "--metrics" in res.output


def test_import_is_light():
    import subprocess
    import sys

    heavy = "('torch','faiss','ray','jnius','transformers','numba','fastapi','uvicorn','pymilvus','mcp')"
    code = f"import sys, braid, braid.cli.main, braid.retrieval.searcher, braid.data; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_dense_index_spec_parses_sub_quantizers(toy_dataset, tmp_path):
    from braid.cli.common import parse_dense_index

    assert parse_dense_index("flat") == {"kind": "flat"}
    assert parse_dense_index("pq:96") == {"kind": "pq", "m": 96}
    res = CliRunner().invoke(main, ["index", str(toy_dataset), "--out", str(tmp_path / "x"), "--dense-index", "flat:8", "-q"])
    assert res.exit_code != 0 and "--dense-index" in res.output and "flat:8" in res.output
    assert not (tmp_path / "x").exists()
    assert parse_dense_index(None) == {}  # not given: the dense component's default (flat)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dense-index", "bogus"], "invalid value for --dense-index: 'bogus' (one of flat"),
        (["--dense-index", "pq:8"], "applies to the dense component, which is not built here (bm25)"),
        (["--dense-index", "flat"], "applies to the dense component"),
        (["--retrievers", "bm25,dense", "--dense-index", "bogus"], "invalid value for --dense-index: 'bogus'"),
    ],
)
def test_dense_index_is_refused_when_invalid_or_unused(toy_dataset, tmp_path, flags, message):
    """A dense index type is checked even when no dense component is built, and refused when it would be ignored."""
    res = CliRunner().invoke(main, ["index", str(toy_dataset), "--out", str(tmp_path / "x"), "-q", *flags])
    assert res.exit_code == 2 and message in _one_line_error(res)
    assert not (tmp_path / "x").exists()


def test_dense_index_options_are_checked_in_the_library():
    from braid.data.errors import OptionError
    from braid.retrieval.build.builder import BuildOptions

    with pytest.raises(OptionError, match="--dense-index: 'bogus'"):
        BuildOptions(dense_index={"kind": "bogus"})
    with pytest.raises(OptionError, match="--dense-index nbits: 99"):
        BuildOptions(retrievers=("dense",), dense_index={"kind": "pq", "nbits": 99})
    BuildOptions(dense_index={"kind": "pq", "m": 8})  # valid; refused only by a build without dense (check_applies)
    with pytest.raises(OptionError, match="not built here"):
        BuildOptions(dense_index={"kind": "pq", "m": 8}).check_applies(["bm25"])


# ------------------------------------------------------------------------------- error handling
def _one_line_error(res) -> str:
    """The message of a clean failure: one 'Error: ...' line, no traceback."""
    assert "Traceback" not in res.output, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, res.output
    return errors[0]


def test_usage_errors_exit_2(toy_dataset, tmp_path):
    """Click's usage errors and the library's OptionError (a bad option value) exit with status 2."""
    runner = CliRunner()
    res = runner.invoke(main, ["search"])
    assert res.exit_code == 2 and "Missing argument" in _one_line_error(res)
    res = runner.invoke(main, ["index", str(toy_dataset), "--out", str(tmp_path / "x"), "--bogus"])
    assert res.exit_code == 2 and "No such option" in _one_line_error(res)
    res = runner.invoke(main, ["index", str(toy_dataset), "--out", str(tmp_path / "x"), "--retrievers", "bm25,nope", "-q"])
    assert res.exit_code == 2 and "invalid value for --retrievers: 'nope'" in _one_line_error(res)
    res = runner.invoke(main, ["eval", str(toy_dataset), "--index-root", str(tmp_path), "--metrics", "ndcg@x", "-q"])
    assert res.exit_code == 2 and "invalid value for --metrics: 'ndcg@x'" in _one_line_error(res)
    res = runner.invoke(main, ["tune", str(toy_dataset), "-o", str(tmp_path / "p.toml"), "--split", "test", "--index-root", str(tmp_path / "ix")])
    assert res.exit_code == 2 and "invalid value for --split" in _one_line_error(res)
    assert not (tmp_path / "ix").exists()  # refused before building anything
    res = runner.invoke(main, ["shard", str(toy_dataset), "--out", str(tmp_path / "s"), "--shards", "0"])
    assert res.exit_code == 2 and "invalid value for --shards: 0 (a positive integer)" in _one_line_error(res)
    res = runner.invoke(main, ["milvus", "search", "q", "--milvus-uri", "x.db", "--collection", "c", "--weights", "1"])
    assert res.exit_code == 2 and "invalid value for --weights" in _one_line_error(res)
    res = runner.invoke(main, ["train", "jpq", str(tmp_path), "--dataset", str(toy_dataset), "--epochs", "0"])
    assert res.exit_code == 2 and "invalid value for --epochs: 0 (a positive integer)" in _one_line_error(res)
    res = runner.invoke(main, ["serve", str(tmp_path), "--timeout", "nan"])
    assert res.exit_code == 2 and "invalid value for --timeout: nan (a finite number > 0)" in _one_line_error(res)
    # --runtime: one option on every command that encodes, checked by the encoders' parse_runtime
    for args in (["index", str(toy_dataset), "--out", str(tmp_path / "x")], ["search", str(tmp_path), "q"], ["serve", str(tmp_path)],
                 ["eval", str(toy_dataset), "--index-root", str(tmp_path / "ix")], ["tune", str(toy_dataset), "-o", str(tmp_path / "p.toml")]):
        res = runner.invoke(main, [*args, "--runtime", "gpu"])
        assert res.exit_code == 2 and "invalid value for --runtime: 'gpu' (one of auto, torch, onnx, onnx-int8)" in _one_line_error(res), args
    assert not (tmp_path / "x").exists() and not (tmp_path / "ix").exists()


def test_failures_exit_1(toy_dataset, tmp_path):
    """Other library errors (bad data, an unusable index) exit with status 1, naming what failed."""
    runner = CliRunner()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "d1", "text": "wolf"}\nnot json\n')
    res = runner.invoke(main, ["index", str(bad), "--out", str(tmp_path / "x"), "-q"])
    assert res.exit_code == 1 and f"{bad}, line 2" in _one_line_error(res)
    res = runner.invoke(main, ["search", str(tmp_path / "nope"), "q"])
    assert res.exit_code == 1 and "no such index directory" in _one_line_error(res)
    res = runner.invoke(main, ["serve", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "no such index directory" in _one_line_error(res)
    res = runner.invoke(main, ["eval", str(tmp_path / "nope"), "--index-root", str(tmp_path), "-q"])
    assert res.exit_code == 1 and "nope" in _one_line_error(res)


def test_file_errors_exit_1(toy_dataset, tmp_path, monkeypatch):
    """A missing, unreadable or wrong-kind file ends any command with status 1 and 'PATH: reason'."""
    import braid.retrieval.build.builder as builder
    import braid.retrieval.eval.experiment as experiment
    import braid.retrieval.scale.distributed as distributed

    def raising(exc):
        def fail(*args, **kwargs):
            raise exc

        return fail

    runner = CliRunner()
    monkeypatch.setattr(builder, "build_index", raising(PermissionError(13, "Permission denied", "/data/corpus.jsonl")))
    res = runner.invoke(main, ["index", str(toy_dataset), "--out", str(tmp_path / "x"), "-q"])
    assert res.exit_code == 1 and _one_line_error(res) == "Error: /data/corpus.jsonl: Permission denied"
    monkeypatch.setattr(experiment, "evaluate_datasets", raising(FileNotFoundError(2, "No such file or directory", "/data/qrels/test.tsv")))
    res = runner.invoke(main, ["eval", str(toy_dataset), "-q"])
    assert res.exit_code == 1 and _one_line_error(res) == "Error: /data/qrels/test.tsv: No such file or directory"
    monkeypatch.setattr(distributed, "build_sharded", raising(IsADirectoryError(21, "Is a directory", "/data/out")))
    res = runner.invoke(main, ["shard", str(toy_dataset), "--out", str(tmp_path / "s"), "--executor", "local", "-q"])
    assert res.exit_code == 1 and _one_line_error(res) == "Error: /data/out: Is a directory"


def test_bugs_keep_their_traceback(toy_dataset, tmp_path, monkeypatch):
    """Only user errors are reported as one line: a bug in the library is not disguised as one."""
    import braid.retrieval.build.builder as builder

    def broken(*args, **kwargs):
        raise KeyError("internal")

    monkeypatch.setattr(builder, "build_index", broken)
    res = CliRunner().invoke(main, ["index", str(toy_dataset), "--out", str(tmp_path / "x"), "-q"])
    assert res.exit_code == 1 and isinstance(res.exception, KeyError)


def _commands(cmd, path=("braid",)):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, path + (name,))


def test_every_command_reports_errors_and_documents_the_exit_status():
    from braid.cli.common import BraidCommand, BraidGroup

    found = dict(_commands(main))
    assert {p[1] for p in found if len(p) == 2} == {"index", "search", "verify", "eval", "tune", "compare", "serve", "mcp", "train", "shard", "milvus", "add", "delete", "compact"}
    assert ("braid", "train", "jpq") in found and ("braid", "milvus", "eval") in found
    for path, cmd in found.items():
        assert isinstance(cmd, (BraidCommand, BraidGroup)), path
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    assert "Exit status: 0 on success; 2 when the command line is wrong" in " ".join(res.output.split())
    for name in ("index", "search", "eval", "tune", "serve", "mcp", "train", "shard", "milvus"):
        assert f"\n  {name} " in res.output


def test_a_broken_command_module_fails_loudly(monkeypatch):
    """A subcommand module that does not import must break `braid`, not silently remove its command."""
    import importlib
    import sys

    import braid.cli

    for name in ("braid.cli.main", "braid.cli.train"):
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(braid.cli, "train")
    monkeypatch.delattr(braid.cli, "main")
    monkeypatch.setitem(sys.modules, "braid.retrieval.train.jpq.config", None)  # as if its import raised
    with pytest.raises(ImportError, match="braid.retrieval.train.jpq.config"):
        importlib.import_module("braid.cli.main")


# ------------------------------------------------------------------------------- shared options
def test_build_options_arrive_as_one_object(toy_dataset, tmp_path, monkeypatch):
    """`index`, `shard` (and `eval`, `tune`) get the same build options as one BuildOptions."""
    import braid.retrieval.build.builder as builder
    import braid.retrieval.scale.distributed as distributed
    from braid.retrieval.build.builder import BuildOptions
    from braid.retrieval.scale.distributed import ShardingConfig

    seen = {}

    def build_index(source, out, build, log):
        seen["index"] = build
        return {"num_docs": 0, "components": {}}

    def build_sharded(source, out, build, sharding, log):
        seen["shard"] = (build, sharding)
        return {}

    monkeypatch.setattr(builder, "build_index", build_index)
    monkeypatch.setattr(distributed, "build_sharded", build_sharded)
    flags = ["--retrievers", "bm25, dense", "--dense-index", "pq:8", "--batch-size", "7", "--skip-bad", "--runtime", "onnx-int8", "-q"]
    runner = CliRunner()
    assert runner.invoke(main, ["index", str(toy_dataset), "--out", str(tmp_path / "x"), *flags]).exit_code == 0
    assert runner.invoke(main, ["shard", str(toy_dataset), "--out", str(tmp_path / "s"), "--shards", "3", "--executor", "local", *flags]).exit_code == 0
    build, sharding = seen["shard"]
    assert build == seen["index"]
    assert isinstance(build, BuildOptions) and build.retrievers == ("bm25", "dense")
    assert build.dense_index == {"kind": "pq", "m": 8} and build.batch_size == 7 and build.skip_bad and not build.progress
    assert build.runtime == "onnx-int8"
    assert sharding == ShardingConfig(shards=3, executor="local")


def test_option_groups_keep_their_order_and_values():
    import click

    from braid.cli.common import command, option_group

    @command("probe")
    @click.option("--first")
    @option_group("pair", click.option("--a", type=int, default=1), click.option("--b", default="x"), make=lambda v, rest: (v["a"], v["b"], rest["last"]))
    @click.option("--last", default="z")
    def probe(first, pair, last):
        click.echo(f"{first} {pair} {last}")

    assert [p.name for p in probe.params] == ["first", "a", "b", "last"]
    res = CliRunner().invoke(probe, ["--first", "f", "--b", "y", "--a", "5"])
    assert res.exit_code == 0 and res.output == "f (5, 'y', 'z') z\n"


# ------------------------------------------------------------------------------- the result table
def test_result_table_columns_follow_the_data_and_cuts_end_with_an_ellipsis():
    from braid.cli.common import display_width, format_hits

    hits = [
        {"rank": 1, "score": 12.5, "id": "d1", "title": "Short", "text": "one\nline   of\ttext"},
        {"rank": 2, "score": 3.25, "id": "a-much-longer-id", "title": "T" * 100, "text": "x" * 300},
        {"rank": 10, "score": -0.5, "id": "文書7", "title": "全角タイトル", "text": ""},
    ]
    lines = format_hits(hits, fields=True, title_width=20, text_width=30)
    rows = [line for line in lines if not line.startswith(" " * 4)]
    assert rows == [
        " 1  12.5000  d1                Short",
        " 2   3.2500  a-much-longer-id  " + "T" * 19 + "…",
        "10  -0.5000  文書7             全角タイトル",  # 文書 are two columns each: the id pads to 16 columns
    ]
    texts = [line for line in lines if line.startswith(" " * 4)]
    assert texts == [" " * 13 + "one line of text", " " * 13 + "x" * 29 + "…"]  # under the id; the empty text has no line
    assert display_width(rows[1]) == 2 + 2 + 7 + 2 + 16 + 2 + 20
    assert format_hits([]) == ["no hits"]
    assert format_hits(hits[:1], fields=False) == ["1  12.5000  d1"]  # one hit: a one-digit rank column
    long_id = format_hits([{"rank": 1, "score": 1.0, "id": "i" * 60}], fields=False, id_width=10)
    assert long_id == ["1  1.0000  " + "i" * 9 + "…"]


def test_search_table_aligns_ids_of_different_lengths(tmp_path):
    docs = [{"_id": "d" * n, "title": f"wolf title {n}", "text": "wolf " * 50} for n in (1, 7, 15)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    runner = CliRunner()
    assert runner.invoke(main, ["index", str(corpus), "--out", str(tmp_path / "i"), "-q"]).exit_code == 0
    res = runner.invoke(main, ["search", str(tmp_path / "i"), "wolf", "-k", "3"])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if "wolf title" in line]
    assert len(rows) == 3 and len({line.index("wolf title") for line in rows}) == 1  # one title column
    texts = [line for line in res.output.splitlines() if line.strip().startswith("wolf wolf")]
    assert texts and all(line.endswith("…") for line in texts)  # 250 characters cut to 160
