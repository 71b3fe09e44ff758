"""Golden runs (braid.retrieval.eval.golden and ``braid eval --reproduce``) on the toy collection.

The expected figures are first measured by ``braid eval`` itself, then written into a 2CR-style
YAML file and a flat JSON file; reproducing them must say OK, and a wrong figure must say differs.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from braid.cli.compare import run_braid
from braid.cli.main import main
from braid.data.errors import DataError
from braid.retrieval.eval.golden import format_outcomes, read_golden, reproduce

EVAL = "braid eval $DATA/$DATASET --index-root $INDEX_ROOT --runs-dir $RUNS --retriever bm25 --json -q"
INDEX = "braid index $DATA/$DATASET --out $INDEX_ROOT/$DATASET --retrievers bm25 -q"


@pytest.fixture()
def measured(toy_dataset, tmp_path):
    res = CliRunner().invoke(main, ["eval", str(toy_dataset), "--retriever", "bm25", "--index-root", str(tmp_path / "m"), "--runs-dir", str(tmp_path / "r"), "--json", "-q"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["toy"]


def golden_yaml(path, figures, index=True):
    yaml = pytest.importorskip("yaml")
    spec = {
        "indexes": {"bm25": {"command": INDEX}},
        "conditions": [
            {"name": "bm25", "command": EVAL, "datasets": [{"dataset": "toy", **({"index": "bm25"} if index else {}), **figures}]},
        ],
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def test_reproduce_2cr_yaml_ok_and_differs(toy_dataset, tmp_path, measured):
    shared = toy_dataset.parent.parent / "shared-root"
    (shared / "data").mkdir(parents=True)
    (shared / "data" / "toy").symlink_to(toy_dataset)
    good = {"ndcg@10": round(measured["ndcg@10"], 4), "recall@100": round(measured["recall@100"], 4)}
    path = golden_yaml(tmp_path / "2cr.yaml", good)
    outcomes = reproduce(path, run_braid, shared=shared, work_dir=tmp_path / "work")
    assert [o.status for o in outcomes] == ["OK"]
    assert outcomes[0].measured["ndcg@10"] == pytest.approx(measured["ndcg@10"])
    assert (tmp_path / "work" / "indexes" / "bm25" / "toy" / "manifest.json").exists()
    table = format_outcomes(outcomes)
    assert f"ndcg@10 {good['ndcg@10']:.4f} / {measured['ndcg@10']:.4f}" in table and table.endswith("1 of 1 rows reproduced")

    bad = golden_yaml(tmp_path / "bad.yaml", {**good, "ndcg@10": good["ndcg@10"] + 0.01})
    (outcome,) = reproduce(bad, run_braid, shared=shared)
    assert not outcome.ok and outcome.status.startswith("differs (ndcg@10 -0.0100")


def test_cli_reproduce_flat_json(toy_dataset, tmp_path, measured, monkeypatch):
    monkeypatch.setenv("BRAID_SHARED", str(tmp_path / "shared"))
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "toy").symlink_to(toy_dataset)
    rows = [
        {"command": EVAL.replace("$DATASET", "toy"), "expected": {"ndcg@10": measured["ndcg@10"]}, "name": "bm25-ok"},
        {"command": EVAL.replace("$DATASET", "toy"), "expected": {"map": measured["map"] + 0.5}, "name": "bm25-off"},
        {"command": "braid eval $DATA/missing --json -q", "expected": {"map": 0.1}, "name": "broken"},
    ]
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(rows))
    res = CliRunner().invoke(main, ["eval", "--reproduce", str(path)])
    assert res.exit_code == 1, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["condition", "dataset", "expected", "/", "measured", "status"]
    assert lines[2].startswith("bm25-ok") and lines[2].endswith("OK")
    assert lines[3].startswith("bm25-off") and "differs (map -0.5000)" in lines[3]
    assert lines[4].startswith("broken") and "failed:" in lines[4] and "missing" in lines[4]
    assert lines[-1] == "1 of 3 rows reproduced; 2 differ or failed"
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(rows[:1]))
    res = CliRunner().invoke(main, ["eval", "--reproduce", str(ok)])
    assert res.exit_code == 0 and res.stdout.rstrip().endswith("1 of 1 rows reproduced")


def test_bad_golden_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"command": "braid eval x"}]))
    with pytest.raises(DataError, match=r"row 0: needs 'command'"):
        read_golden(bad)
    bad.write_text(json.dumps({"conditions": [{"name": "c", "command": "braid eval x", "datasets": [{"dataset": "d", "index": "nope", "map": 1}]}]}))
    with pytest.raises(DataError, match=r"index recipe 'nope' is not in 'indexes'"):
        read_golden(bad)
    bad.write_text(json.dumps([{"command": "braid eval x", "expected": {"map": "high"}}]))
    with pytest.raises(DataError, match=r"expected figure 'map' must be a number"):
        read_golden(bad)
    res = CliRunner().invoke(main, ["eval", "--reproduce", str(bad)])
    assert res.exit_code != 0 and "must be a number" in res.output
