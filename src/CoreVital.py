"""The original CoreVital's import name, kept so its users' code runs: ``import CoreVital``.

Every public name of :mod:`corevital` is available here (imported on first use, as there), so
``from CoreVital import CoreVitalMonitor`` keeps working. Importing it warns once
(``DeprecationWarning``): the package is ``corevital``.

A module rather than a ``CoreVital/`` directory: next to ``corevital/``, a directory would be the
same directory on a case-insensitive file system (the default on macOS and Windows).
"""

from __future__ import annotations

import warnings
from typing import Any

import corevital as _corevital

warnings.warn(
    "`import CoreVital` is deprecated: the package is `corevital` (same API: `from corevital import ...`)",
    DeprecationWarning,
    stacklevel=2,
)

__version__ = _corevital.__version__
__all__ = list(_corevital.__all__)


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(_corevital, name)
    raise AttributeError(f"module 'CoreVital' has no attribute {name!r} (see corevital.__all__)")


def __dir__() -> list[str]:
    return sorted(__all__)
