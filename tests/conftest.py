"""Shared fixtures. Tests never touch the network: HF_HUB_OFFLINE is set before anything imports transformers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Exported ONNX graphs go to a cache of this test session, never the user's ~/.cache/braid.
if "BRAID_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["BRAID_CACHE"] = tempfile.mkdtemp(prefix="braid-test-cache-")
    atexit.register(shutil.rmtree, os.environ["BRAID_CACHE"], True)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BRAID_SHARED", REPO.parent / "shared"))
if (SHARED / "models").is_dir():
    os.environ.setdefault("BRAID_MODEL_PATH", str(SHARED / "models"))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared collections not found at {SHARED / 'data'} (../shared from the repository root; set BRAID_SHARED)")
    return SHARED


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


TOY_DOCS = [
    {"_id": "d1", "title": "Cats", "text": "Cats are small domesticated carnivorous mammals that purr."},
    {"_id": "d2", "title": "Dogs", "text": "Dogs are domesticated descendants of wolves and bark loudly."},
    {"_id": "d3", "title": "Wolves", "text": "The wolf is a large canine native to Eurasia and North America."},
    {"_id": "d4", "title": "Purring", "text": "Purring is a tonal buzzing sound made by cats and some other felids."},
    {"_id": "d5", "title": "Lions", "text": "The lion is a large cat of the genus Panthera, native to Africa."},
    {"_id": "q2", "title": "Barking", "text": "A bark is a sound most often produced by dogs."},
]
TOY_QUERIES = [
    {"_id": "q1", "text": "why do cats purr"},
    {"_id": "q2", "text": "dogs bark"},
    {"_id": "q3", "text": "wolf habitat"},
]
TOY_QRELS = "query-id\tcorpus-id\tscore\nq1\td4\t2\nq1\td1\t1\nq2\td2\t1\nq2\tq2\t1\nq3\td3\t1\n"


@pytest.fixture()
def toy_dataset(tmp_path: Path) -> Path:
    """A six-document BEIR folder; query q2's id equals a document id (to exercise self-hit removal)."""
    root = tmp_path / "toy"
    write_jsonl(root / "corpus.jsonl", TOY_DOCS)
    write_jsonl(root / "queries.jsonl", TOY_QUERIES)
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(TOY_QRELS)
    return root
