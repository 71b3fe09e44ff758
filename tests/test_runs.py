"""TREC run round trip and the deterministic tie-break."""

from __future__ import annotations

import pytest

from braid.data import DataError, read_run, write_run


def test_round_trip_and_tie_break(tmp_path):
    run = {"q1": {"b": 1.0, "a": 1.0, "c": 2.5}, "q2": {"z": 0.1}}
    path = tmp_path / "out" / "run.trec"
    write_run(run, path, tag="sys")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 c 1 2.500000 sys"
    assert lines[1] == "q1 Q0 a 2 1.000000 sys"  # equal scores: ascending doc id
    assert lines[2] == "q1 Q0 b 3 1.000000 sys"
    assert read_run(path) == {"q1": {"c": 2.5, "a": 1.0, "b": 1.0}, "q2": {"z": 0.1}}


def test_bad_runs(tmp_path):
    path = tmp_path / "bad.trec"
    path.write_text("q1 Q0 d1 1 0.5\n")
    with pytest.raises(DataError, match=r"bad.trec, line 1: expected 6 columns"):
        read_run(path)
    with pytest.raises(DataError, match="non-finite"):
        write_run({"q": {"d": float("nan")}}, tmp_path / "nan.trec")
    assert not (tmp_path / "nan.trec").exists()
