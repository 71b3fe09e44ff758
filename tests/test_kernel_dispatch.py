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
