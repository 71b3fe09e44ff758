"""Every compiled kernel is called on numba's fast dispatch path.

A jitted function called with a defaulted argument omitted is not matched by the C dispatcher's
fast path: numba re-binds the call in Python (measured: ~310 us per call against ~4 us), which once
made single-query sparse search 2.2x slower with no test failing. So no kernel may have defaulted
parameters; callers pass every argument. No timing here: this checks the signatures themselves.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

numba = pytest.importorskip("numba")

import braid  # noqa: E402


def _braid_modules():
    for info in pkgutil.walk_packages(braid.__path__, prefix="braid."):
        if info.name.startswith(("braid.tests", "braid.scripts", "braid.cli")):
            continue
        yield info.name


def _kernel_modules() -> list:
    """Modules of the package that define numba dispatchers (imported by name; heavy optional ones skipped)."""
    found = []
    for name in _braid_modules():
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if any(isinstance(v, numba.core.registry.CPUDispatcher) for v in vars(module).values()):
            found.append(module)
    return found


def _dispatchers(module):
    for attr, value in vars(module).items():
        if isinstance(value, numba.core.registry.CPUDispatcher) and value.py_func.__module__ == module.__name__:
            yield attr, value


def test_kernel_modules_are_found():
    names = {m.__name__ for m in _kernel_modules()}
    assert "braid.index.sparse.kernels" in names


@pytest.mark.parametrize("module", _kernel_modules(), ids=lambda m: m.__name__)
def test_no_kernel_has_defaulted_parameters(module):
    offenders = []
    for attr, dispatcher in _dispatchers(module):
        defaulted = [p.name for p in inspect.signature(dispatcher.py_func).parameters.values() if p.default is not p.empty]
        if defaulted:
            offenders.append(f"{module.__name__}.{attr}({', '.join(defaulted)})")
    assert not offenders, "jitted kernels with defaulted parameters (slow dispatch when omitted): " + "; ".join(offenders)


def test_sparse_search_passes_plain_tuples(monkeypatch):
    """The blocked index hands its arrays to the kernels as plain tuples, never as the named tuples.

    numba's dispatcher fingerprints a named tuple argument by encoding its class and every field name on
    each call: measured +1.5 us per call for the 13-array ``BlockedArrays`` and +0.9 us for ``SearchScratch``,
    against -0.1 us for the same arrays as plain tuples (3.2 us for the call with 31 positional arguments).
    Every call of every search path into a kernel that Python calls is recorded and checked."""
    import numpy as np

    from braid.index.sparse import BlockedIndexConfig, BlockedSparseIndex, SparseVectors, kernels

    rng = np.random.default_rng(0)
    rows = [{int(t): float(w) for t, w in zip(rng.choice(40, 6, replace=False), rng.random(6) + 0.1)} for _ in range(120)]
    docs = SparseVectors.from_dicts(rows, 40)
    queries = docs.take(np.arange(3))
    unpruned = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=1000))
    pruned = BlockedSparseIndex.build(docs, BlockedIndexConfig(n_postings=2))
    searches = [
        lambda: unpruned.search(queries.take([0]), k=5),
        lambda: unpruned.search(queries, k=5, threads=1),
        lambda: unpruned.search(queries, k=5, threads=2),
        lambda: unpruned.search_with_stats(queries, k=5, exact=True),
        lambda: pruned.search(queries, k=5, exact=True),
        lambda: pruned.search(queries, k=5, block_order="best_first"),
    ]
    for search in searches:  # compile (or load) every kernel before any is replaced
        search()
    # replace only the kernels no other kernel calls (a kernel compiled later must not see a Python spy)
    called_by_kernels = {name for _, d in _dispatchers(kernels) for name in d.py_func.__code__.co_names}
    calls = []
    for attr, dispatcher in _dispatchers(kernels):
        if attr in called_by_kernels:
            continue

        def spy(*args, _dispatcher=dispatcher, _attr=attr):
            calls.append((_attr, args))
            return _dispatcher(*args)

        monkeypatch.setattr(kernels, attr, spy)
    for search in searches:
        search()
    assert {"search_batch", "search_batch_parallel", "scan_batch"} <= {name for name, _ in calls}
    named = [f"{name} argument {i}: {type(a).__name__}" for name, args in calls for i, a in enumerate(args)
             if isinstance(a, tuple) and type(a) is not tuple]  # fmt: skip
    assert not named, "named tuples passed to jitted kernels (slow dispatch): " + "; ".join(named)
