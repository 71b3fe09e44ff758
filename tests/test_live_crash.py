"""Crash safety: ``braid add`` and ``braid compact`` killed with SIGKILL at every step of a commit
(the ``BRAID_CRASH_AT`` fault-injection points of :mod:`braid.retrieval.live`) and at random moments.

After each kill the index must open at the previous generation or the new one, never in between,
with no document lost or duplicated (its live ids are exactly the old set or the new set, and every
retriever finds only those), and the next operation must succeed and remove the crashed commit's
orphans. The commands run as real processes (``python -m braid.cli.main``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent))
from test_live import build, live_docs, make_doc, models, write_corpus  # noqa: E402,F401

ADD_STEPS = ["segment", "bm25", "merge", "docids", "deleted", "before-commit", "manifest", "after-commit"]
COMPACT_STEPS = ["segment", "bm25", "deleted", "before-commit", "manifest", "after-commit"]
REPO_PARENT = Path(__file__).resolve().parents[2]


def _run(args: list[str], crash_at: str | None = None, kill_after: float | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO_PARENT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("BRAID_CRASH_AT", None)
    if crash_at is not None:
        env["BRAID_CRASH_AT"] = crash_at
    proc = subprocess.Popen([sys.executable, "-m", "braid.cli.main", *args, "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if kill_after is not None:
        try:
            proc.wait(kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    proc.wait(300)
    return proc.returncode


def _state(index_dir: Path) -> tuple[int, list[str]]:
    from braid.retrieval.searcher import Searcher

    s = Searcher(index_dir)
    ids = [d["_id"] for d in live_docs(index_dir)]
    assert len(ids) == len(set(ids)) == s.num_docs, "a document is duplicated"
    # every retriever opens this generation and finds only its live documents
    for name in ("bm25", "sparse", "dense"):
        got = s.batch_search(["apple banana cherry", "cell gene"], k=s.num_docs, retriever=name, **({"exact": True} if name == "sparse" else {}))
        assert set(d for row in got.doc_ids for d in row) <= set(ids), name
    return s.generation, ids


@pytest.fixture()
def base(models, tmp_path):
    rng = random.Random(8)
    index_dir = build(models, [make_doc(rng, f"d{i}") for i in range(16)], tmp_path / "ix")
    # small tiers: the add below also merges segments, so the merge step is crossed too
    from braid.retrieval.live import Index

    index = Index(index_dir, batch_size=1, log=lambda m: None, merge_policy={"segments_per_tier": 2, "min_segment_docs": 2, "flat_max_docs": 3})
    index.add([make_doc(rng, "p1")])
    new = [make_doc(rng, f"n{i}") for i in range(4)] + [make_doc(rng, "d3")]
    corpus = write_corpus(tmp_path / "new.jsonl", new)
    return index_dir, corpus


@pytest.mark.slow
@pytest.mark.parametrize("step", ADD_STEPS)
def test_add_killed_at_a_step_leaves_the_old_or_the_new_generation(base, step):
    index_dir, corpus = base
    gen0, ids0 = _state(index_dir)
    new_ids = [json.loads(line)["_id"] for line in corpus.read_text().splitlines()]
    ids1 = [i for i in ids0 if i not in new_ids] + new_ids
    rc = _run(["add", str(index_dir), str(corpus), "--batch-size", "1"], crash_at=step)
    assert rc == -signal.SIGKILL
    gen, ids = _state(index_dir)
    if step == "after-commit":
        assert (gen, ids) == (gen0 + 1, ids1)
    else:
        assert (gen, ids) == (gen0, ids0)
    # the next writer finds the dead writer's lock stale, removes the orphans and commits
    assert _run(["add", str(index_dir), str(corpus), "--batch-size", "1"]) == 0
    gen2, ids2 = _state(index_dir)
    assert gen2 == gen + 1 and sorted(ids2) == sorted(ids1)
    assert not list(index_dir.glob(".*.tmp-*")) and not list((index_dir / "segments").glob(".*"))
    assert not (index_dir / "write.lock").exists()


@pytest.mark.slow
@pytest.mark.parametrize("step", COMPACT_STEPS)
def test_compact_killed_at_a_step_leaves_the_old_or_the_new_generation(base, step):
    index_dir, _ = base
    subprocess_ok = _run(["delete", str(index_dir), "d1", "d2"])
    assert subprocess_ok == 0
    gen0, ids0 = _state(index_dir)
    rc = _run(["compact", str(index_dir)], crash_at=step)
    assert rc == -signal.SIGKILL
    gen, ids = _state(index_dir)
    assert ids == ids0 and gen == (gen0 + 1 if step == "after-commit" else gen0)
    assert _run(["compact", str(index_dir)]) == 0
    gen2, ids2 = _state(index_dir)
    assert ids2 == ids0 and gen2 == gen + 1
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert len(manifest["live"]["segments"]) == 1


@pytest.mark.slow
def test_add_killed_at_random_moments(base):
    index_dir, corpus = base
    rng = np.random.default_rng(0)
    gen0, ids0 = _state(index_dir)
    new_ids = [json.loads(line)["_id"] for line in corpus.read_text().splitlines()]
    ids1 = [i for i in ids0 if i not in new_ids] + new_ids
    # how long an add takes here, then kills spread over it
    t0 = time.monotonic()
    assert _run(["add", str(index_dir), str(corpus), "--batch-size", "1"]) == 0
    took = time.monotonic() - t0
    gen_done, ids_done = _state(index_dir)
    assert ids_done == ids1
    corpus2 = write_corpus(corpus.parent / "new2.jsonl", [make_doc(random.Random(9), f"m{i}") for i in range(3)])
    for delay in sorted(rng.uniform(0.3 * took, 1.05 * took, size=4)):
        before_gen, before = _state(index_dir)
        _run(["add", str(index_dir), str(corpus2), "--batch-size", "1"], kill_after=float(delay))
        gen, ids = _state(index_dir)
        after = [i for i in before if not i.startswith("m")] + [f"m{i}" for i in range(3)]
        assert (gen, ids) in ((before_gen, before), (before_gen + 1, after)), (delay, gen, ids)
