"""Lazy public names for a package (PEP 562): each name is imported from its home on first use.

A package declares ``_HOMES`` (public name → the module that defines it) and binds
``__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)``. Importing the package
then imports none of those modules, so a command that needs one part of CoreVital does not pay for
the rest.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any


def lazy_exports(
    package: str, homes: Mapping[str, str], namespace: MutableMapping[str, Any], public: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``; a resolved name is kept in ``namespace``."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*public, *(name for name in namespace if name.startswith("_"))})

    return __getattr__, __dir__
