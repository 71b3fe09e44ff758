"""Lazy re-exports for a package's ``__init__`` (PEP 562): a name is imported from its module on first use.

A package that re-exports names from heavy or cycle-prone submodules gives ``{name: module}`` once
and takes ``__getattr__ = lazy_exports(__name__, EXPORTS)``; importing the package then imports none of them.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``exports[name]`` (a full module name) is imported when ``name`` is read."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
