"""The README's first command on a machine without ``../shared``: scripts/quickstart.sh fetches the collection
by name and the two default models by hub id, here from loopback servers (no network in tests).

The script is copied into an empty temporary "checkout" whose ``.venv/bin/python`` runs this interpreter on
this worktree, so ``../shared`` is absent there, ``cd``-ing to the checkout writes ``indexes/`` and ``runs/``
into the temporary folder, and everything else is the script as a user runs it (``--no-setup`` skips only
``scripts/setup.sh``, which would need PyPI). The BEIR mirror is ``BRAID_BEIR_URL``, the hub is
``HF_ENDPOINT``; the models it serves under the default hub ids are tiny random BERTs built here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from braid.encoders.resolve import DEFAULT_DENSE_MODEL, DEFAULT_SPARSE_MODEL
from tests.conftest import REPO
from tests.hub_support import FileServer, HubServer
from tests.test_datasets import toy_zip

pytest.importorskip("torch")
pytest.importorskip("faiss")
from tests.test_encoders import make_tiny_bert  # noqa: E402

pytestmark = pytest.mark.slow


def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "quickstart.sh", root / "scripts" / "quickstart.sh")
    py = root / ".venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    py.chmod(0o755)
    return root


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "BRAID_", "HUGGINGFACE_"))}
    env.update(
        PYTHONPATH=str(REPO.parent),
        HF_HOME=str(tmp_path / "hf-home"),
        BRAID_DATA=str(tmp_path / "braid-data"),
        BRAID_CACHE=str(tmp_path / "braid-cache"),  # a fresh ONNX graph cache: a cached export would skip the weights' download
        TOKENIZERS_PARALLELISM="false",
        NO_COLOR="1",
    )
    env.update(extra)
    return env


def run_quickstart(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(root / "scripts" / "quickstart.sh"), "--no-setup", *args],
        env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub-models")
    return {
        DEFAULT_SPARSE_MODEL: make_tiny_bert(root / "splade", mlm=True),
        DEFAULT_DENSE_MODEL: make_tiny_bert(root / "minilm", mlm=False, st_pooling="mean", normalize=True, seed=1),
    }


def test_quickstart_without_shared_fetches_scifact_by_name_and_refuses_a_bad_checksum(tmp_path):
    """With no ../shared the default dataset is beir/scifact from the BEIR mirror, checked against BEIR's md5."""
    root = checkout(tmp_path)
    with FileServer({"/beir/scifact.zip": toy_zip("scifact")}) as mirror:
        res = run_quickstart(root, clean_env(tmp_path, BRAID_BEIR_URL=mirror.endpoint + "/beir", HF_HUB_OFFLINE="1"))
    assert res.returncode == 1, res.stderr
    assert "quickstart: no ../shared/data/scifact here" in res.stderr
    assert "dataset beir/scifact: checksum mismatch" in res.stderr
    assert mirror.requests == ["/beir/scifact.zip"]
    assert not (tmp_path / "braid-data" / "beir" / "scifact").exists()


def test_quickstart_without_shared_downloads_dataset_and_default_models_then_reruns_offline(tmp_path, tiny_models):
    root = checkout(tmp_path)
    body = toy_zip("toy")
    with FileServer({"/beir/toy.zip": body}) as mirror, HubServer(tiny_models) as hub:
        env = clean_env(tmp_path, BRAID_BEIR_URL=mirror.endpoint + "/beir", HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0")
        first = run_quickstart(root, env, "beir/toy")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "quickstart: no ../shared/data/scifact here" in first.stderr
    assert mirror.requests == ["/beir/toy.zip"]
    source = json.loads((tmp_path / "braid-data" / "beir" / "toy" / "braid-source.json").read_text())
    assert source["sha256"] == hashlib.sha256(body).hexdigest()
    # both default models came from the hub by their ids, weights included
    for repo in (DEFAULT_SPARSE_MODEL, DEFAULT_DENSE_MODEL):
        assert "model.safetensors" in hub.downloaded(repo), (repo, hub.requests)
    assert "modules.json" in hub.downloaded(DEFAULT_DENSE_MODEL)
    manifest = json.loads((root / "indexes" / "toy" / "manifest.json").read_text())
    text = json.dumps(manifest)
    assert DEFAULT_SPARSE_MODEL in text and DEFAULT_DENSE_MODEL in text
    assert manifest["num_docs"] == 6
    metrics = json.loads((root / "runs" / "toy" / "hybrid.test.metrics.json").read_text())
    assert 0.0 <= metrics["mean"]["ndcg@10"] <= 1.0
    assert first.stdout.count("\n") >= 5  # the eval table, then the five search hits

    # the same command again with both servers gone and the hub switched off: everything from the caches
    again = run_quickstart(root, clean_env(tmp_path, BRAID_BEIR_URL="http://127.0.0.1:9/beir", HF_HUB_OFFLINE="1"), "beir/toy")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout == first.stdout
