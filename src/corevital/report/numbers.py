"""Numbers as reports write them: finite floats rounded to 7 significant digits, NaN/Inf as None.

float32 carries about 7 significant digits, so nothing is lost; the rounding is vectorised because
a full report of a 32-layer model holds hundreds of thousands of values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SIGNIFICANT_DIGITS = 7


def num(value: Any) -> float | None:
    """One value: a finite float rounded to 7 significant digits (exactly as :func:`as_list`), or None."""
    result: float | None = as_list(np.asarray([value]))[0]
    return result


def rounded(values: Any) -> np.ndarray:
    """Float64 array rounded to 7 significant digits; non-finite entries become NaN."""
    a = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(a)
    magnitude = np.where(finite & (a != 0), np.abs(a), 1.0)
    digits = SIGNIFICANT_DIGITS - 1 - np.floor(np.log10(magnitude))
    scale = np.power(10.0, digits)
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.where(finite, np.round(a * scale) / scale, np.nan)
    return out


def as_list(values: Any) -> list[Any]:
    """Nested Python lists of rounded floats, with None where a value is not finite."""
    array = rounded(values)
    if array.ndim == 0:
        return [None if math.isnan(array) else float(array)]
    missing = np.isnan(array)
    if missing.any():
        array = array.astype(object)  # Python floats, so that None can take the place of NaN
        array[missing] = None
    items: list[Any] = array.tolist()
    return items
