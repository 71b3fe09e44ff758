"""Golden end-to-end numbers on the shared collections (tier 3): tests/golden/2cr.yaml, command -> scores.

Each (condition, dataset) pair of the YAML file runs its ``braid eval`` command through click's
CliRunner (the CLI is the interface these numbers belong to, so the test never imports the library)
and must reproduce nDCG@10 and Recall@100 to 1e-4. Indexes are built by the file's own ``braid index``
commands, once per test session and (index, dataset). Skipped when the shared collections are absent
(``../shared`` from the repository root, or ``BRAID_SHARED``); the learned conditions also need the
real models in ``shared/models`` and, for scifact, the pre-encoded vectors in ``shared/vectors``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from string import Template

import pytest
import yaml
from click.testing import CliRunner

from braid.cli.main import main

GOLDEN = Path(__file__).parent / "golden" / "2cr.yaml"
TOLERANCE = 1e-4
METRICS = ("ndcg@10", "recall@100")
SPEC = yaml.safe_load(GOLDEN.read_text(encoding="utf-8"))
CASES = [
    pytest.param(condition, entry, id=f"{condition['name']}-{entry['dataset']}")
    for condition in SPEC["conditions"]
    for entry in condition["datasets"]
]


def run_braid(command: str, **places: str) -> str:
    """Run one ``braid ...`` command line of the golden file in-process; return its stdout."""
    args = shlex.split(Template(command).substitute(places))
    assert args[0] == "braid", command
    res = CliRunner().invoke(main, args[1:])
    assert res.exit_code == 0, f"{' '.join(args)}\n{res.output}"
    return res.stdout


def needs(shared: Path, index: str, dataset: str) -> None:
    """Skip, saying what is missing, when an index recipe needs models or vectors that are not there."""
    if index.startswith("learned"):
        for model in ("splade-tiny", "all-MiniLM-L6-v2"):
            if not (shared / "models" / model).is_dir():
                pytest.skip(f"real model {model} not found in {shared / 'models'}")
    if index == "learned-vectors" and not (shared / "vectors" / dataset).is_dir():
        pytest.skip(f"pre-encoded vectors not found at {shared / 'vectors' / dataset}")


@pytest.fixture(scope="session")
def golden_index(tmp_path_factory, shared):
    """``golden_index(index, dataset)`` -> the index root holding ``dataset``'s index, built on first use."""
    root = tmp_path_factory.mktemp("golden-indexes")
    built: dict[tuple[str, str], Path] = {}

    def get(index: str, dataset: str) -> Path:
        key = (index, dataset)
        if key not in built:
            needs(shared, index, dataset)
            index_root = root / index
            run_braid(
                SPEC["indexes"][index]["command"],
                DATA=str(shared / "data"), VECTORS=str(shared / "vectors"), DATASET=dataset, INDEX_ROOT=str(index_root),
            )
            built[key] = index_root
        return built[key]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("condition, entry", CASES)
def test_golden_scores(condition, entry, golden_index, shared, tmp_path):
    dataset = entry["dataset"]
    index_root = golden_index(entry["index"], dataset)
    out = run_braid(
        condition["command"],
        DATA=str(shared / "data"), VECTORS=str(shared / "vectors"), DATASET=dataset,
        INDEX_ROOT=str(index_root), RUNS=str(tmp_path / "runs"),
    )
    got = json.loads(out)[dataset]
    for metric in METRICS:
        assert got[metric] == pytest.approx(entry[metric], abs=TOLERANCE), (condition["name"], dataset, metric, got[metric])


def test_golden_file_is_well_formed():
    """Every entry names a known index and both scores; no (condition, dataset) pair twice."""
    assert set(SPEC) == {"indexes", "conditions"}
    seen = set()
    for condition in SPEC["conditions"]:
        assert condition["command"].startswith("braid eval "), condition["name"]
        for entry in condition["datasets"]:
            assert entry["index"] in SPEC["indexes"], entry
            assert all(0.0 < entry[m] <= 1.0 for m in METRICS), entry
            assert (condition["name"], entry["dataset"]) not in seen
            seen.add((condition["name"], entry["dataset"]))


def test_default_hybrid_is_at_least_the_best_single_retriever():
    """What docs/BENCHMARKS.md claims for the default fusion weights, on the collections the file covers."""
    scores = {(c["name"], e["dataset"]): e["ndcg@10"] for c in SPEC["conditions"] for e in c["datasets"]}
    for dataset in {d for name, d in scores if name == "hybrid"}:
        best = max(scores[(r, dataset)] for r in ("bm25", "sparse", "sparse-if", "dense"))
        assert scores[("hybrid", dataset)] >= best, dataset
