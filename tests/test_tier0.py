"""The numpy tiers (a process's first single queries, before numba is loaded) return what the numba kernels
return, bit for bit: the blocked sparse search, fusion, and the CSR checks; and a one-shot search imports no
numba at all (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from braid.data import csr_kernels, csr_numpy
from braid.index.sparse import BlockedIndexConfig, BlockedSparseIndex, SparseVectors, kernels, numpy_search
from braid.index.sparse.blocked import _BLOCK_ORDERS, exclusion_bitset
from braid.retrieval.pipeline import fusion_kernels, fusion_numpy

from tests.conftest import REPO, SHARED

VECTORS = SHARED / "vectors" / "scifact"


def _kernel_search(index, q, k, query_cut, heap_factor, exact, block_order, excluded):
    """The serial numba kernel on one query (what ``index.search`` runs once the kernels are loaded)."""
    out_docs = np.empty((1, k), np.int64)
    out_scores = np.empty((1, k), np.float32)
    n = np.empty(1, np.int64)
    cut = index.vocab_size if exact else query_cut
    order = _BLOCK_ORDERS[block_order]
    if excluded is None:
        index._run(q, k, cut, heap_factor, not exact, order, 1, out_docs, out_scores, n)
    else:
        index._run_masked(q, k, cut, heap_factor, not exact, order, 1, excluded, out_docs, out_scores, n)
    return out_docs[0], out_scores[0], int(n[0])


def _numpy_search(index, q, k, query_cut, heap_factor, exact, block_order, excluded):
    terms, weights = q.row(0)
    cut = index.vocab_size if exact else query_cut
    return numpy_search.search_query(terms, weights, k, cut, heap_factor, not exact, _BLOCK_ORDERS[block_order],
                                     index._a, index.vocab_size, excluded)  # fmt: skip


def _assert_same(index, queries, settings, excluded=None):
    compared = 0
    for qi in range(queries.n_rows):
        q = queries.take(np.array([qi]))
        for kwargs in settings:
            want = _kernel_search(index, q, excluded=excluded, **kwargs)
            got = _numpy_search(index, q, excluded=excluded, **kwargs)
            assert np.array_equal(got[0], want[0]), (qi, kwargs)
            assert got[1].tobytes() == want[1].tobytes(), (qi, kwargs)  # bit for bit, padding included
            assert got[2] == want[2], (qi, kwargs)  # the same documents scored
            compared += 1
    return compared


SETTINGS = [
    dict(k=10, query_cut=10, heap_factor=0.7, exact=False, block_order="seismic"),
    dict(k=10, query_cut=5, heap_factor=0.9, exact=False, block_order="best_first"),
    dict(k=3, query_cut=3, heap_factor=1.0, exact=False, block_order="seismic"),
    dict(k=100, query_cut=10, heap_factor=0.5, exact=False, block_order="best_first"),
    dict(k=7, query_cut=10, heap_factor=0.7, exact=True, block_order="seismic"),
]


def _tied_collection(seed: int, n_docs: int = 400, vocab: int = 60):
    """Small integer weights over a small vocabulary: many equal scores and equal block estimates."""
    rng = np.random.default_rng(seed)
    rows, queries = [], []
    for _ in range(n_docs):
        terms = rng.choice(vocab, size=int(rng.integers(1, 14)), replace=False)
        rows.append({int(t): float(rng.integers(1, 4)) for t in terms})
    for _ in range(25):
        terms = rng.choice(vocab, size=int(rng.integers(1, 7)), replace=False)
        queries.append({int(t): float(rng.integers(1, 3)) for t in terms})
    return SparseVectors.from_dicts(rows, vocab), SparseVectors.from_dicts(queries, vocab)


@pytest.mark.parametrize("forward_dtype", ["float16", "float32"])
@pytest.mark.parametrize("n_postings", [10_000, 300])  # unpruned, pruned
def test_blocked_search_equals_kernel_with_ties(forward_dtype, n_postings):
    docs, queries = _tied_collection(3)
    config = BlockedIndexConfig(n_postings=n_postings, centroid_fraction=0.2, min_cluster_size=1, forward_dtype=forward_dtype)
    index = BlockedSparseIndex.build(docs, config)
    settings = [s for s in SETTINGS if not (s["exact"] and index._pruned)]  # a pruned exact search scans, not tiered
    assert _assert_same(index, queries, settings) == queries.n_rows * len(settings)


def test_blocked_search_equals_kernel_with_exclusions():
    docs, queries = _tied_collection(4)
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=10_000, centroid_fraction=0.2, min_cluster_size=1))
    rng = np.random.default_rng(0)
    for share in (0.05, 0.5, 0.97):
        excluded = exclusion_bitset(rng.random(docs.n_rows) < share)
        _assert_same(index, queries, SETTINGS, excluded)
        hits = index.search(queries.take(np.array([0])), k=400, exact=True, excluded=excluded)
        bad = set(np.flatnonzero(np.unpackbits(excluded.view(np.uint8), bitorder="little")[: docs.n_rows]))
        assert not bad & set(hits.docnos[0][hits.docnos[0] >= 0].tolist())


def test_exclusion_bitset_matches_the_kernel_packing():
    rng = np.random.default_rng(1)
    for n in (0, 1, 63, 64, 65, 1000):
        mask = rng.random(n) < 0.3
        words = np.empty((n >> 6) + 1, np.uint64)
        kernels.pack_excluded(np.ascontiguousarray(mask), words)
        assert np.array_equal(exclusion_bitset(mask), words), n


@pytest.mark.skipif(not (VECTORS / "splade-tiny-docs.npz").exists(), reason="needs ../shared/vectors")
def test_blocked_search_equals_kernel_on_real_vectors():
    """scifact documents 0-1999 and 40 test queries as splade-tiny encoded them (float16 forward index)."""
    docs = SparseVectors.from_scipy(sp.load_npz(VECTORS / "splade-tiny-docs.npz").tocsr()[:2000])
    queries = SparseVectors.from_scipy(sp.load_npz(VECTORS / "splade-tiny-queries.npz").tocsr()[:40], docs.vocab_size)
    index = BlockedSparseIndex.build(docs)
    n = _assert_same(index, queries, SETTINGS[:4] + [dict(k=1000, query_cut=10, heap_factor=0.7, exact=False, block_order="seismic")])
    assert n == 200


def test_fusion_equals_kernel():
    rng = np.random.default_rng(7)
    for trial in range(40):
        n_runs, depth = int(rng.integers(1, 4)), int(rng.integers(1, 30))
        docnos = np.full((n_runs, 1, depth), -1, np.int64)
        values = np.zeros((n_runs, 1, depth))
        for r in range(n_runs):
            m = int(rng.integers(0, depth + 1))
            docnos[r, 0, :m] = rng.choice(40, size=m, replace=False)
            values[r, 0, :m] = rng.integers(-3, 4, size=m) / 4.0 if trial % 2 else rng.normal(size=m)  # ties, -0.0
        base = np.array([float(rng.integers(-2, 3)) / 2])
        for mode in (fusion_numpy.MODE_SUM, fusion_numpy.MODE_MNZ, fusion_numpy.MODE_MAX):
            for k in (1, 5, 100):
                want = fusion_kernels.fuse_contributions_serial(docnos, values, base, mode, k)
                got = fusion_numpy.fuse_contributions(docnos, values, base, mode, k)
                assert np.array_equal(got[0], want[0]) and got[1].tobytes() == want[1].tobytes(), (trial, mode, k)
                assert np.array_equal(got[2], want[2])
    dup = np.array([[[3, 5, 3, -1]], [[5, 5, 5, 1]]], np.int64)
    want = fusion_kernels.fuse_contributions_serial(dup, np.ones(dup.shape), np.zeros(1), fusion_numpy.MODE_SUM, 3)
    assert fusion_numpy.fuse_contributions(dup, np.ones(dup.shape), np.zeros(1), fusion_numpy.MODE_SUM, 3)[2][0] == want[2][0] == 3


def test_csr_checks_equal_kernel():
    rng = np.random.default_rng(2)
    cases = 0
    for _ in range(300):
        n_rows = int(rng.integers(0, 5))
        lens = rng.integers(0, 5, size=n_rows)
        indptr = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
        nnz = int(indptr[-1])
        indices = np.sort(rng.integers(-1, 12, size=nnz)).astype(np.int32)
        if rng.random() < 0.5:
            rng.shuffle(indices)
        data = rng.choice(np.array([1.0, 0.5, 0.0, -1.0, np.nan, np.inf], np.float32), size=nnz, p=[0.6, 0.2, 0.08, 0.04, 0.04, 0.04])
        want = csr_kernels.check_rows(indptr, indices, data, 10)
        assert tuple(int(x) for x in csr_numpy.check_rows(indptr, indices, data, 10)) == tuple(int(x) for x in want)
        cases += want[0] != csr_kernels.ROW_OK
        p = rng.integers(0, 5, size=int(rng.integers(1, 8))).astype(np.int64)
        assert csr_numpy.first_decreasing(p) == csr_kernels.first_decreasing(p)
    assert cases > 50  # most random batches have a problem somewhere: every code is exercised


_ONE_SHOT = r"""
import json, sys
import numpy as np
from braid.data import lazy
from braid.data.vectors import SparseVectors
from braid.index.sparse import BlockedSparseIndex
from braid.index.hits import Hits
from braid.retrieval.pipeline.fusion import fuse

index = BlockedSparseIndex.load(sys.argv[1], json.load(open(sys.argv[2])))
q = SparseVectors.from_dicts([{1: 1.0, 5: 2.0, 9: 0.5}], index.vocab_size)
out, loaded = [], []
for i in range(lazy.TIER0_CALLS + 2):
    hits = index.search(q, k=5)
    fused = fuse([hits, index.search(q, k=5, exact=True)], method="rrf", k=5)
    out.append([hits.docnos.tolist(), hits.scores.tolist(), fused.docnos.tolist(), fused.scores.tolist()])
    loaded.append("numba" in sys.modules)
print(json.dumps({"out": out, "numba": loaded}))
"""


def test_one_shot_search_imports_no_numba_then_moves_to_the_kernels(tmp_path):
    docs, _ = _tied_collection(5, vocab=20)
    index = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=10_000, centroid_fraction=0.2, min_cluster_size=1))
    (tmp_path / "ix").mkdir()
    info = index.save(tmp_path / "ix")
    (tmp_path / "info.json").write_text(json.dumps(info))
    run = subprocess.run([sys.executable, "-c", _ONE_SHOT, str(tmp_path / "ix"), str(tmp_path / "info.json")],
                         capture_output=True, text=True, cwd=REPO.parent, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    # numba stays out for the first TIER0_CALLS searches (two per round: approximate and exact), then loads
    first_numba = got["numba"].index(True)
    assert first_numba == 2 and not any(got["numba"][:first_numba])
    assert all(row == got["out"][0] for row in got["out"])  # numpy tier and kernels: the same hits and fused rows


_SERVE = r"""
import sys
from pathlib import Path
from tests.serve_support import build_toy_index
from braid.retrieval.serve.app import create_app

index = build_toy_index(Path(sys.argv[1]))
before = "numba" in sys.modules
create_app(index)
print(before, "numba" in sys.modules, "braid.retrieval.pipeline.fusion_kernels" in sys.modules)
"""


def test_serve_loads_the_kernels_at_start(tmp_path):
    """A server pays numba's start-up once, at start (not at its fifth request), and so its threading-layer
    check sees numba."""
    run = subprocess.run([sys.executable, "-c", _SERVE, str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True", "True"]
