"""Fusion against ranx 0.3.21 (the independent reference) and hand-worked / brute-force values."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from braid.data.errors import DataError, OptionError
from braid.index.hits import Hits
from braid.retrieval.pipeline import fusion_kernels as K
from braid.retrieval.pipeline.fusion import FUSION_METHODS, drop_docnos, fuse, normalize_scores

ranx = pytest.importorskip("ranx")

N_QUERIES = 6
N_DOCS = 80


def random_runs(seed: int, n_runs: int = 3, k: int = 30, negative: bool = False) -> list[Hits]:
    """Seeded runs with overlapping candidates, rows of varying length (padding), distinct scores."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(n_runs):
        rows = []
        for _ in range(N_QUERIES):
            n = int(rng.integers(5, k + 1))
            docnos = rng.choice(N_DOCS, size=n, replace=False)
            scores = rng.normal(0.0, 3.0, size=n) if negative else rng.uniform(0.5, 20.0, size=n)
            rows.append((docnos, scores))
        runs.append(Hits.from_lists(rows, k))
    return runs


def to_ranx(h: Hits, depth: int | None = None) -> "ranx.Run":
    d = {}
    for q in range(h.n_queries):
        docnos, scores = h.row(q)
        if depth is not None:
            docnos, scores = docnos[:depth], scores[:depth]
        d[f"q{q}"] = {f"d{int(x)}": float(s) for x, s in zip(docnos, scores)}
    return ranx.Run(d)


def ranx_fuse(runs: list[Hits], norm, method, params=None, depths=None) -> dict:
    depths = depths or [None] * len(runs)
    fused = ranx.fuse([to_ranx(h, d) for h, d in zip(runs, depths)], norm=norm, method=method, params=params)
    return fused.to_dict()


def assert_matches_ranx(ours: Hits, expected: dict) -> None:
    """Same documents per query, same scores (float32 tolerance), rows in (-score, docno) order."""
    for q in range(ours.n_queries):
        docnos, scores = ours.row(q)
        exp = expected[f"q{q}"]
        assert sorted(f"d{int(x)}" for x in docnos) == sorted(exp), f"query {q}: different candidate sets"
        want = np.array([exp[f"d{int(x)}"] for x in docnos])
        np.testing.assert_allclose(scores, want, rtol=2e-6, atol=2e-6)
        order = np.lexsort((docnos, -scores))
        assert np.array_equal(order, np.arange(len(docnos))), f"query {q}: not ordered by (-score, docno)"


BIG_K = 3 * 30  # >= any union, so the whole fused list is compared


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("norm", "ranx_norm"), [("minmax", "min-max"), ("max", "max"), ("sum", "sum")])
def test_linear_matches_ranx_wsum(seed, norm, ranx_norm):
    runs = random_runs(seed)
    weights = [0.5, 1.3, 0.2]
    exp = ranx_fuse(runs, ranx_norm, "wsum", {"weights": weights})
    assert_matches_ranx(fuse(runs, "linear", BIG_K, weights, norm=norm, missing="zero"), exp)
    if norm == "minmax":  # after min-max the minimum is 0, so the two missing-doc rules coincide
        assert_matches_ranx(fuse(runs, "linear", BIG_K, weights, norm=norm, missing="min"), exp)


@pytest.mark.parametrize("seed", [2, 3])
def test_zscore_and_none_match_ranx_with_missing_zero(seed):
    runs = random_runs(seed, negative=True)
    weights = [1.0, 0.7, 2.0]
    exp = ranx_fuse(runs, "zmuv", "wsum", {"weights": weights})
    assert_matches_ranx(fuse(runs, "linear", BIG_K, weights, norm="zscore", missing="zero"), exp)
    exp = ranx_fuse(runs, None, "wsum", {"weights": weights})
    assert_matches_ranx(fuse(runs, "linear", BIG_K, weights, norm="none", missing="zero"), exp)


@pytest.mark.parametrize(("norm", "ranx_norm"), [("minmax", "min-max"), ("zscore", "zmuv")])
def test_combsum_combmnz_combmax_match_ranx(norm, ranx_norm):
    runs = random_runs(4)
    assert_matches_ranx(fuse(runs, "combsum", BIG_K, norm=norm, missing="zero"), ranx_fuse(runs, ranx_norm, "sum"))
    assert_matches_ranx(fuse(runs, "combmnz", BIG_K, norm=norm, missing="zero"), ranx_fuse(runs, ranx_norm, "mnz"))
    assert_matches_ranx(fuse(runs, "combmax", BIG_K, norm=norm), ranx_fuse(runs, ranx_norm, "max"))


def test_weighted_combmnz_is_weighted_sum_times_count():
    # ranx's wmnz is a different definition (unweighted sum times the sum of the holding lists'
    # weights), so weighted CombMNZ is checked against brute force instead.
    runs = random_runs(5)
    weights = [0.3, 1.0, 2.5]
    minmax = lambda s: (s - s.min()) / max(s.max() - s.min(), 1e-9)  # noqa: E731
    exp = brute_force(runs, weights, minmax, "zero", mnz=True)
    ours = fuse(runs, "combmnz", BIG_K, weights, norm="minmax")
    assert_matches_ranx(ours, {f"q{q}": {f"d{d}": s for d, s in e.items()} for q, e in enumerate(exp)})


@pytest.mark.parametrize("rrf_k", [60, 5])
def test_rrf_matches_ranx(rrf_k):
    runs = random_runs(6)
    exp = ranx_fuse(runs, None, "rrf", {"k": rrf_k})
    assert_matches_ranx(fuse(runs, "rrf", BIG_K, rrf_k=rrf_k), exp)
    if rrf_k == 60:
        assert_matches_ranx(fuse(runs, "rrf", BIG_K), exp)  # the default


def test_depth_per_list_matches_ranx_on_truncated_lists():
    runs = random_runs(7)
    depths = [4, 12, 30]
    exp = ranx_fuse(runs, "min-max", "wsum", {"weights": [1.0, 1.0, 1.0]}, depths=depths)
    assert_matches_ranx(fuse(runs, "linear", BIG_K, depth=depths), exp)
    exp = ranx_fuse(runs, None, "rrf", {"k": 60}, depths=[7, 7, 7])
    assert_matches_ranx(fuse(runs, "rrf", BIG_K, depth=7), exp)


def brute_force(runs, weights, norm_fn, missing, mnz=False):
    """Straight per-query Python: union, per-list normalised score or fill, weighted sum (times count)."""
    out = []
    for q in range(runs[0].n_queries):
        lists = []
        for h in runs:
            docnos, scores = h.row(q)
            s = norm_fn(scores.astype(np.float64))
            lists.append(dict(zip(docnos.tolist(), s.tolist())))
        fused = {}
        for d in set().union(*lists):
            total, count = 0.0, 0
            for w, lst in zip(weights, lists):
                if d in lst:
                    total += w * lst[d]
                    count += 1
                else:
                    total += w * (min(lst.values()) if (missing == "min" and lst) else 0.0)
            fused[d] = total * count if mnz else total
        out.append(fused)
    return out


def zscore(s):
    return (s - s.mean()) / max(s.std(), 1e-9)


@pytest.mark.parametrize(("norm", "norm_fn"), [("zscore", zscore), ("none", lambda s: s)])
@pytest.mark.parametrize("mnz", [False, True])
def test_missing_min_against_brute_force(norm, norm_fn, mnz):
    runs = random_runs(8, negative=True)
    weights = [0.4, 1.0, 1.7]
    exp = brute_force(runs, weights, norm_fn, "min", mnz=mnz)
    ours = fuse(runs, "combmnz" if mnz else "linear", BIG_K, weights, norm=norm)  # missing="min" is the default
    assert_matches_ranx(ours, {f"q{q}": {f"d{d}": s for d, s in e.items()} for q, e in enumerate(exp)})


def test_hand_worked_pyserini_style_interpolation():
    # sparse: d1=10, d2=6, d3=2 -> minmax 1, .5, 0. dense: d3=0.9, d4=0.5 -> minmax 1, 0.
    # missing="min": d1 = .3*1 + 0 = .3; d2 = .3*.5 + 0 = .15; d3 = .3*0 + 1 = 1; d4 = .3*0 + 0 = 0.
    sparse = Hits.from_lists([([1, 2, 3], [10.0, 6.0, 2.0])], 4)
    dense = Hits.from_lists([([3, 4], [0.9, 0.5])], 4)
    out = fuse([sparse, dense], "linear", 4, [0.3, 1.0])
    assert out.docnos.tolist() == [[3, 1, 2, 4]]
    np.testing.assert_allclose(out.scores, [[1.0, 0.3, 0.15, 0.0]], rtol=1e-6)
    # No normalisation, missing="min" (Pyserini's HybridSearcher without --normalization):
    # d1 = .3*10 + .5 = 3.5; d2 = .3*6 + .5 = 2.3; d3 = .3*2 + .9 = 1.5; d4 = .3*2 + .5 = 1.1.
    out = fuse([sparse, dense], "linear", 3, [0.3, 1.0], norm="none")
    assert out.docnos.tolist() == [[1, 2, 3]]
    np.testing.assert_allclose(out.scores, [[3.5, 2.3, 1.5]], rtol=1e-6)
    # zero instead: d4 = 0 + .5, d1 = 3.0
    out = fuse([sparse, dense], "linear", 4, [0.3, 1.0], norm="none", missing="zero")
    np.testing.assert_allclose(out.scores, [[3.0, 1.8, 1.5, 0.5]], rtol=1e-6)


def test_ties_broken_by_docno_and_padding():
    # d5 and d2 both get rrf 1/61 + 0; d9 only 1/62 -> order d2, d5 by docno.
    a = Hits.from_lists([([5, 9], [2.0, 1.0]), ([], [])], 6)
    b = Hits.from_lists([([2], [7.0]), ([], [])], 6)
    out = fuse([a, b], "rrf", 6)
    assert out.docnos.tolist() == [[2, 5, 9, -1, -1, -1], [-1] * 6]
    assert np.isneginf(out.scores[0, 3:]).all() and np.isneginf(out.scores[1]).all()
    np.testing.assert_allclose(out.scores[0, :3], [1 / 61, 1 / 61, 1 / 62], rtol=1e-6)


def test_weighted_rrf_and_small_k_prefix():
    runs = random_runs(9)
    weights = [2.0, 0.5, 1.0]
    full = fuse(runs, "rrf", BIG_K, weights)
    for q in range(N_QUERIES):
        exp = {}
        for w, h in zip(weights, runs):
            docnos, _ = h.row(q)
            for rank, d in enumerate(docnos.tolist(), start=1):
                exp[d] = exp.get(d, 0.0) + w / (60 + rank)
        docnos, scores = full.row(q)
        np.testing.assert_allclose(scores, [exp[int(d)] for d in docnos], rtol=1e-6)
        assert sorted(docnos.tolist()) == sorted(exp)
    top = fuse(runs, "rrf", 5, weights)
    assert np.array_equal(top.docnos, full.docnos[:, :5]) and np.array_equal(top.scores, full.scores[:, :5])


def test_single_list_minmax_is_identity_order():
    (h,) = random_runs(10, n_runs=1)
    out = fuse([h], "linear", h.k)
    assert np.array_equal(out.docnos, h.docnos)


def test_drop_docnos_removes_self_hit_and_shifts():
    h = Hits.from_lists([([4, 7, 1], [3.0, 2.0, 1.0]), ([2, 3], [5.0, 4.0]), ([8], [1.0])], 4)
    out = drop_docnos(h, np.array([7, -1, 8]))
    assert out.docnos.tolist() == [[4, 1, -1, -1], [2, 3, -1, -1], [-1, -1, -1, -1]]
    assert out.scores[0, :2].tolist() == [3.0, 1.0] and np.isneginf(out.scores[0, 2:]).all()
    assert np.isneginf(out.scores[2]).all()
    # The original is untouched (Hits is shared between stages).
    assert h.docnos[0].tolist() == [4, 7, 1, -1]


def test_drop_before_fusion_keeps_self_hit_out_of_normalisation():
    # The self-hit (docno 0) has the top score 100: dropped first, minmax runs on 5..1 only.
    h = Hits.from_lists([([0, 1, 2], [100.0, 5.0, 1.0])], 3)
    clean = drop_docnos(h, np.array([0]))
    np.testing.assert_allclose(normalize_scores(clean)[0, :2], [1.0, 0.0])
    out = fuse([clean, clean], "linear", 3)
    assert out.docnos.tolist() == [[1, 2, -1]]
    np.testing.assert_allclose(out.scores[0, :2], [2.0, 0.0])


def test_kernel_runs_as_python(tmp_path):
    """NUMBA_DISABLE_JIT=1 (a fresh interpreter) gives what the compiled parallel and serial kernels give."""
    runs = random_runs(11)
    docnos = np.stack([h.docnos for h in runs])
    rng = np.random.default_rng(0)
    values = rng.normal(size=docnos.shape)
    base = rng.normal(size=N_QUERIES)
    np.savez(tmp_path / "in.npz", docnos=docnos, values=values, base=base)
    script = (
        "import sys, numpy as np\n"
        "from braid.retrieval.pipeline import fusion_kernels as K\n"
        "a = np.load(sys.argv[1])\n"
        "out = {}\n"
        "for mode in (K.MODE_SUM, K.MODE_MNZ, K.MODE_MAX):\n"
        "    d, s, dup = K.fuse_contributions(a['docnos'], a['values'], a['base'], mode, 20)\n"
        "    out.update({f'd{mode}': d, f's{mode}': s, f'u{mode}': dup})\n"
        "np.savez(sys.argv[2], **out)\n"
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], env=env, check=True)
    py = np.load(tmp_path / "out.npz")
    for mode in (K.MODE_SUM, K.MODE_MNZ, K.MODE_MAX):
        for kernel in (K.fuse_contributions, K.fuse_contributions_serial):
            d, s, dup = kernel(docnos, values, base, mode, 20)
            assert np.array_equal(d, py[f"d{mode}"]) and np.array_equal(s, py[f"s{mode}"])
            assert not dup.any() and not py[f"u{mode}"].any()


def test_registry_and_validation():
    assert set(FUSION_METHODS) >= {"linear", "rrf", "combsum", "combmnz"}
    runs = random_runs(12, n_runs=2)
    with pytest.raises(OptionError, match="method"):
        fuse(runs, "borda", 10)
    with pytest.raises(OptionError, match="rrf_k"):
        fuse(runs, "linear", 10, rrf_k=3)
    with pytest.raises(OptionError, match="norm"):
        fuse(runs, "rrf", 10, norm="minmax")
    with pytest.raises(OptionError, match="norm"):
        fuse(runs, "linear", 10, norm="l2")
    with pytest.raises(OptionError, match="missing"):
        fuse(runs, "linear", 10, missing="max")
    with pytest.raises(OptionError, match="weights"):
        fuse(runs, "linear", 10, [1.0])
    with pytest.raises(OptionError, match="depth"):
        fuse(runs, "linear", 10, depth=[3])
    with pytest.raises(OptionError, match="k"):
        fuse(runs, "linear", 0)
    with pytest.raises(OptionError, match="runs"):
        fuse([runs[0], Hits.empty(2, 3)], "linear", 10)
    bad = Hits(np.array([[1, 1]]), np.array([[2.0, 1.0]], dtype=np.float32))
    with pytest.raises(DataError, match="twice"):
        fuse([bad], "rrf", 3)
    nan = Hits(np.array([[1, 2]]), np.array([[np.nan, 1.0]], dtype=np.float32))
    with pytest.raises(DataError, match="NaN"):
        fuse([nan], "linear", 3)
    with pytest.raises(OptionError, match="exclude"):
        drop_docnos(runs[0], np.zeros(2, dtype=np.int64))


def test_negative_zero_ties_with_zero_by_docno():
    a = Hits(np.array([[7, 9]]), np.array([[0.0, -1.0]], dtype=np.float32))
    b = Hits(np.array([[3, -1]]), np.array([[-0.0, -np.inf]], dtype=np.float32))
    out = fuse([a, b], "combmax", 3, norm="none")
    assert out.docnos.tolist() == [[3, 7, 9]]
    assert out.scores.tolist() == [[0.0, 0.0, -1.0]]
