"""Lenient readers of a report document (JSON of any schema version, written by any CoreVital): each
gives the value when it has the expected type and ``None`` (or an empty mapping or list) when it is
missing or malformed, so a view of an old or damaged report shows what is there instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["as_int", "as_list", "as_map", "as_str", "finite"]


def as_map(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` when it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_int(value: Any) -> int | None:
    """``value`` when it is an int (not a bool)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def finite(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, not a number, a bool, NaN, ±Inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
