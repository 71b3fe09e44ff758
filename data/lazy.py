"""Imports on first use.

* :func:`lazy_exports`: lazy re-exports for a package's ``__init__`` (PEP 562). A package that re-exports
  names from heavy or cycle-prone submodules gives ``{name: module}`` once and takes
  ``__getattr__ = lazy_exports(__name__, EXPORTS)``; importing the package then imports none of them.
* :class:`LazyModule`: a module global (numba, and the kernels built on it) imported at its first use.
  numba's first use in a process costs about 1.5 s on a 2-core machine (its CPU target imports
  ``scipy.linalg`` and ``cffi`` and loads each cached kernel), several times a whole one-shot
  ``braid search`` with BM25. The first attribute read imports the module and puts it in the owner's
  globals in place of the stand-in, so later reads are plain global lookups (nothing added to the hot
  path). :func:`loaded` says whether a module is imported: how the numpy tiers
  (:mod:`braid.data.csr_numpy`, :mod:`braid.index.sparse.numpy_search`) decide to run.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``exports[name]`` (a full module name) is imported when ``name`` is read."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__


class LazyModule:
    """Stand-in for the global ``alias`` of ``owner`` (a module's ``globals()``): module ``name`` on first use."""

    instances: list["LazyModule"] = []  # every stand-in made, for load_all

    def __init__(self, name: str, owner: dict, alias: str) -> None:
        self._name, self._owner, self._alias = name, owner, alias
        LazyModule.instances.append(self)

    def load(self):
        module = importlib.import_module(self._name)
        self._owner[self._alias] = module
        return module

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def load_all() -> list[str]:
    """Import every module a :class:`LazyModule` stands in for (those of the modules imported so far), and
    return their names: for a long-running process (``braid serve``), which pays numba's start-up once,
    at start, instead of at its fifth query, and then never takes a numpy tier."""
    names = []
    for stand_in in list(LazyModule.instances):
        if stand_in._owner.get(stand_in._alias) is stand_in:
            stand_in.load()
        names.append(stand_in._name)
    return names


def loaded(name: str) -> bool:
    """Whether module ``name`` has been imported in this process."""
    return name in sys.modules


TIER0_CALLS = 4  # small calls per kernel module that a process runs on a numpy tier before loading numba
_tier0_calls: dict[str, int] = {}


def tier0(module: str) -> bool:
    """Whether a small call (one query) runs on the numpy tier in place of ``module``'s numba kernels.

    Yes while ``module`` is not imported, for its first :data:`TIER0_CALLS` calls in this process: a
    one-shot ``braid search`` never pays numba's start-up, and a process that keeps searching pays it
    once, at its fifth query, then runs at the kernels' speed. Every numpy tier returns what the kernels
    return, bit for bit (the tests compare them), so only the time differs.
    """
    if loaded(module):
        return False
    used = _tier0_calls.get(module, 0)
    if used >= TIER0_CALLS:
        return False
    _tier0_calls[module] = used + 1
    return True
