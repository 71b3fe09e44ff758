"""The rules every trainer shares (braid.retrieval.train: leakage, checkpoints) and the import boundaries around training."""

from __future__ import annotations

import ast
import hashlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from braid.data.errors import DataError, OptionError
from braid.retrieval.train import checkpoint
from braid.retrieval.train.leakage import check_training_split, training_record

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- leakage
def test_check_training_split():
    assert check_training_split("train") == "train"
    assert check_training_split("dev", "test") == "dev"
    assert check_training_split("test", "dev") == "test"  # the rule follows the reported split
    for bad in ("test", "TEST", " test "):
        with pytest.raises(OptionError, match=r"--split.*training on the split that is reported \('test'\) would overfit"):
            check_training_split(bad)
    with pytest.raises(OptionError, match=r"invalid value for --split: 'dev'.*tuning on the split that is reported \('dev'\)"):
        check_training_split("dev", "dev", what="tuning")
    with pytest.raises(OptionError, match="split"):
        check_training_split("dev", "dev", option="split")
    for bad in ("", "  ", None):
        with pytest.raises(OptionError, match="name of a qrels split"):
            check_training_split(bad)


def test_training_record(tmp_path):
    ds = tmp_path / "mini"
    (ds / "qrels").mkdir(parents=True)
    (ds / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    record = training_record(ds, "train")
    sha = hashlib.sha256((ds / "qrels" / "train.tsv").read_bytes()).hexdigest()
    assert record == {"dataset": {"name": "mini", "path": str(ds.resolve()), "qrels": "qrels/train.tsv", "qrels_sha256": sha}, "split": "train"}
    assert json.loads(json.dumps(record)) == record
    (ds / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")  # other judgments, other fingerprint
    assert training_record(ds, "train")["dataset"]["qrels_sha256"] != sha
    with pytest.raises(DataError, match=r"no qrels for split 'dev' \(available: train\)"):
        training_record(ds, "dev")


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_and_atomic_replace(tmp_path):
    ck = tmp_path / "ck"
    fp = {"model": "m", "config": {"lr": 1.0, "seed": 3}}
    assert checkpoint.read_checkpoint(ck, fp) is None
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = checkpoint.write_checkpoint(ck, {"step": 1, "fingerprint": fp}, arrays={"centroids": a})
    assert path == ck / "latest" and sorted(p.name for p in ck.iterdir()) == ["latest"]
    got = checkpoint.read_checkpoint(ck, fp, arrays=("centroids",))
    assert got.state["step"] == 1 and got.path == ck / "latest"
    np.testing.assert_array_equal(got.arrays["centroids"], a)
    checkpoint.write_checkpoint(ck, {"step": 2, "fingerprint": fp}, arrays={"centroids": a + 1})
    assert checkpoint.read_checkpoint(ck, fp).state["step"] == 2 and sorted(p.name for p in ck.iterdir()) == ["latest"]
    # a crash between the two renames of a replace leaves only latest.old: it is read back
    (ck / "latest").rename(ck / "latest.old")
    assert checkpoint.read_checkpoint(ck, fp, arrays=("centroids",)).path == ck / "latest.old"
    # another run's checkpoint is refused, naming what differs
    with pytest.raises(OptionError, match=r"another training run \(differs in model, config.lr\)"):
        checkpoint.read_checkpoint(ck, {"model": "other", "config": {"lr": 2.0, "seed": 3}})
    (ck / "latest.old" / "state.json").write_text("{not json")
    with pytest.raises(OptionError, match="unreadable checkpoint state"):
        checkpoint.read_checkpoint(ck, fp)


def test_default_checkpoint_dir():
    assert checkpoint.default_checkpoint_dir(Path("/x/idx/sf"), "jpq") == Path("/x/idx/.sf.jpq-train")
    assert checkpoint.default_checkpoint_dir("sf", "sparse") == Path(".sf.sparse-train")


# ---------------------------------------------------------------------------- import boundaries
def _imports(path: Path) -> set[str]:
    """Every module a source file imports (absolute names, anywhere in the file, lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("folder", ["encoders", "retrieval/retrievers", "index", "data"])
def test_query_time_code_never_imports_training(folder):
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in sorted(_imports(path))
        if name == "braid.retrieval.train" or name.startswith("braid.retrieval.train.")
    ]
    assert not offenders, "query-time code imports training modules: " + "; ".join(offenders)


def test_training_modules_import_alone_without_torch():
    """Each training module imports first in a fresh interpreter (no import cycle) and loads no torch/faiss/numba."""
    import braid.retrieval.train as train

    # the one module that is torch by nature: it defines a torch.nn.Module (a SpladeLoss regulariser) at import;
    # nothing else imports it at module level (checked here: every other module, the CLI's included, stays clean)
    torch_modules = {"braid.retrieval.train.sparse.loss"}
    found = sorted(i.name for i in pkgutil.walk_packages(train.__path__, train.__name__ + "."))
    assert torch_modules <= set(found)
    modules = [train.__name__] + [m for m in found if m not in torch_modules] + ["braid.cli.train"]
    code = (
        "import importlib, json, sys\n"
        f"modules = {modules!r}\n"
        "bad = {}\n"
        "for name in modules:\n"
        "    for m in [m for m in sys.modules if m == 'braid' or m.startswith('braid.')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
        "    heavy = [m for m in ('torch', 'faiss', 'numba', 'transformers') if m in sys.modules]\n"
        "    if heavy:\n"
        "        bad[name] = heavy\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == {}
    assert "braid.retrieval.train.jpq.loop" in modules and "braid.retrieval.train.leakage" in modules
