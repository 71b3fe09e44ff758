"""The sparse kernels as plain Python (``NUMBA_DISABLE_JIT=1``, the debugging mode the kernels promise):
the hand-worked kernel tests pass, and a small build + search gives exactly the jitted arrays and results,
which equal a scipy brute-force reference. Each runs in a subprocess: the variable is read at numba import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from braid.index.sparse import exact_search

REPO = Path(__file__).resolve().parents[1]

# Builds and searches a small seeded collection and saves every index array and result to argv[1]; the
# same code runs jitted in the test process.
SCRIPT = r'''
import sys
import numpy as np
from braid.index.sparse import BlockedIndexConfig, BlockedSparseIndex, SparseVectors


def collection():
    rng = np.random.default_rng(5)
    rows = []
    for _ in range(240):
        terms = rng.choice(120, size=int(rng.integers(3, 16)), replace=False)
        rows.append({int(t): float(w) for t, w in zip(terms, rng.gamma(1.5, 0.6, size=terms.size) + 1e-3)})
    queries = []
    for _ in range(12):
        terms = rng.choice(120, size=int(rng.integers(2, 8)), replace=False)
        queries.append({int(t): float(w) for t, w in zip(terms, rng.gamma(1.5, 0.6, size=terms.size) + 1e-3)})
    return SparseVectors.from_dicts(rows, 120), SparseVectors.from_dicts(queries, 120)


def run(docs, queries):
    out = {}
    # unpruned with a float32 forward index (exact = brute force to the last bit), pruned with float16
    for name, config in (("unpruned", BlockedIndexConfig(n_postings=10_000, centroid_fraction=0.2, forward_dtype="float32")),
                         ("pruned", BlockedIndexConfig(n_postings=8, centroid_fraction=0.3, min_cluster_size=1))):
        index = BlockedSparseIndex.build(docs, config)
        for array, values in index.arrays.items():
            out[f"{name}/{array}"] = values
        searches = {"exact": dict(exact=True), "approx": dict(query_cut=3, heap_factor=0.9),
                    "best_first": dict(query_cut=3, heap_factor=1.0, block_order="best_first")}
        for what, kwargs in searches.items():
            for threads in (1, 2):
                hits, stats = index.search_with_stats(queries, k=5, threads=threads, **kwargs)
                out[f"{name}/{what}/{threads}/docnos"] = hits.docnos
                out[f"{name}/{what}/{threads}/scores"] = hits.scores
                out[f"{name}/{what}/{threads}/docs_scored"] = stats.docs_scored
    return out


if __name__ == "__main__":
    np.savez(sys.argv[1], **run(*collection()))
'''


def _python_env() -> dict:
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO.parent), env.get("PYTHONPATH", "")) if p)
    return env


def _run_python(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=_python_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_kernel_tests_pass_as_python():
    done = _run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_sparse_kernels.py"], timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout


def test_build_and_search_as_python_equal_jitted_and_brute_force(tmp_path):
    script = tmp_path / "nojit_search.py"
    script.write_text(SCRIPT)
    check = _run_python(["-c", "import numba; from braid.index.sparse import kernels; "
                         "assert numba.config.DISABLE_JIT and not hasattr(kernels.search_batch, 'py_func')"], timeout=120)  # fmt: skip
    assert check.returncode == 0, check.stderr[-2000:]  # the subprocess really runs the kernels as Python
    done = _run_python([str(script), str(tmp_path / "python.npz")], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    python = np.load(tmp_path / "python.npz")

    namespace: dict = {}
    exec(compile(SCRIPT, str(script), "exec"), namespace)
    docs, queries = namespace["collection"]()
    jitted = namespace["run"](docs, queries)
    assert sorted(python.files) == sorted(jitted)
    different = [name for name in jitted if not np.array_equal(python[name], jitted[name])]
    assert not different, f"NUMBA_DISABLE_JIT results differ from the jitted ones: {different}"

    # and both are right: exact = the scipy top 5 (float16 forward index: scores to ~3 digits)
    ref = exact_search(docs, queries, 5)
    assert np.array_equal(jitted["unpruned/exact/1/docnos"], ref.docnos)
    np.testing.assert_allclose(jitted["unpruned/exact/1/scores"], ref.scores, rtol=1e-5)
    np.testing.assert_allclose(jitted["pruned/exact/1/scores"], ref.scores, rtol=3e-3)
    assert jitted["unpruned/exact/1/docs_scored"].sum() > jitted["unpruned/approx/1/docs_scored"].sum()
