"""Paired significance tests on per-query scores, and the correction for testing several systems.

None of the statistics is written here. Student's paired t-test is :func:`scipy.stats.ttest_rel`;
Fisher's randomisation test is ranx's own implementation (Smucker, Allan & Carterette, CIKM 2007);
Holm-Bonferroni is statsmodels' ``multipletests(method="holm")``. Each test is
``(system_scores, baseline_scores, permutations, seed) -> two-sided p``, registered in :data:`TESTS`.

Why ranx's function is compiled here again: ranx jits it with ``parallel=True``, and its
``np.random.seed(random_seed)`` then seeds only the calling thread's generator while the permutations
are drawn on numba's worker threads, whose generators nobody seeded. The same seed gives a different
p-value from call to call (measured with ranx 0.3.21: 0.070, 0.075, 0.070, 0.070 in one process, 0.048,
0.045, 0.044, 0.062 in the next, on one pair of 300-query arrays). Compiled without ``parallel``, the
same Python function draws every permutation from the generator its seed set, so the p-value is a
function of (scores, permutations, seed); numba's generator is NumPy's Mersenne Twister, so it also
equals running ranx's function as plain Python with NumPy.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, Sequence

import numpy as np

from braid.data.errors import OptionError

EXTRA_HINT = "pip install 'braid[compare]'"


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise OptionError("--tests", module, f"{module} is needed for significance tests: {EXTRA_HINT}") from None


def student_t(system: np.ndarray, baseline: np.ndarray, permutations: int = 0, seed: int = 0) -> float:
    """Two-sided paired t-test (``scipy.stats.ttest_rel``). Identical score arrays give 1.0 (scipy
    returns NaN there: no difference and no variance; nothing suggests the systems differ)."""
    from scipy.stats import ttest_rel

    system, baseline = np.asarray(system, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if np.array_equal(system, baseline):
        return 1.0
    return float(ttest_rel(system, baseline, alternative="two-sided").pvalue)


@functools.lru_cache(maxsize=1)
def _ranx_fisher() -> Callable:
    """ranx's ``fisher_randomization_test``, compiled without ``parallel`` (see the module docstring)."""
    _require("ranx.statistical_tests")
    import numba

    module = sys.modules["ranx.statistical_tests.fisher_randomization_test"]
    return numba.njit(cache=False)(module.fisher_randomization_test.py_func)


def ranx_fisher_serial() -> Callable:
    """The reproducible build of ranx's test, with ranx's signature
    ``(control, treatment, n_permutations, max_p, random_seed) -> (p_value, significant)``."""
    return _ranx_fisher()


def fisher_randomization(system: np.ndarray, baseline: np.ndarray, permutations: int = 10_000, seed: int = 42) -> float:
    """Two-sided Fisher randomisation test on the difference of means, ``permutations`` random sign
    flips drawn from a generator seeded with ``seed`` (ranx's implementation)."""
    if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) or permutations < 1:
        raise OptionError("--permutations", permutations, "a positive integer")
    control = np.ascontiguousarray(baseline, dtype=np.float64)
    treatment = np.ascontiguousarray(system, dtype=np.float64)
    p_value, _ = _ranx_fisher()(control, treatment, int(permutations), 1.0, int(seed))
    return float(p_value)


TESTS: dict[str, Callable[..., float]] = {"t": student_t, "fisher": fisher_randomization}
TEST_NAMES = {"t": "paired Student's t-test", "fisher": "Fisher's randomisation test"}


def check_tests(names: Sequence[str]) -> list[str]:
    out = []
    for name in names:
        name = name.strip().lower()
        if name not in TESTS:
            raise OptionError("--tests", name, "known: " + ", ".join(TESTS))
        if name not in out:
            out.append(name)
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (statsmodels), in the order given."""
    if len(pvalues) == 0:
        return []
    multitest = _require("statsmodels.stats.multitest")
    _, adjusted, _, _ = multitest.multipletests(np.asarray(pvalues, dtype=np.float64), method="holm")
    return [float(p) for p in adjusted]
