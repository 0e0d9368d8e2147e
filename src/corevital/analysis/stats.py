"""Small NaN-tolerant numeric helpers shared by the detectors.

Every function accepts empty arrays and arrays with NaN, and returns a plain float (0.0 or NaN,
as documented) instead of raising or warning.
"""

from __future__ import annotations

import math

import numpy as np


def finite(values: np.ndarray) -> np.ndarray:
    """The finite entries of a 1-D array, as float64."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def fmean(values: np.ndarray, default: float = 0.0) -> float:
    """Mean of the finite entries, ``default`` when there are none."""
    vals = finite(values)
    return float(vals.mean()) if vals.size else default


def fstd(values: np.ndarray, default: float = 0.0) -> float:
    """Population standard deviation of the finite entries, ``default`` when there are none."""
    vals = finite(values)
    return float(vals.std()) if vals.size else default


def fmin(values: np.ndarray, default: float = 0.0) -> float:
    vals = finite(values)
    return float(vals.min()) if vals.size else default


def fmax(values: np.ndarray, default: float = 0.0) -> float:
    vals = finite(values)
    return float(vals.max()) if vals.size else default


def slope(values: np.ndarray) -> float:
    """Least-squares slope per step over the finite entries (x = step index); 0.0 with < 2 points."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    x = np.arange(arr.size, dtype=np.float64)
    ok = np.isfinite(arr)
    if ok.sum() < 2:
        return 0.0
    x, y = x[ok], arr[ok]
    dx = x - x.mean()
    den = float((dx * dx).sum())
    return float((dx * (y - y.mean())).sum() / den) if den > 0 else 0.0


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over steps where both are finite; 0.0 when undefined."""
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return 0.0
    x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


def sigmoid(x: float) -> float:
    """1 / (1 + exp(-x)) without overflow for any finite x (:func:`.logistic.sigmoid_array` for arrays)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` steps ignoring NaN; entry t covers steps max(0, t-window+1)..t.

    Entries whose window holds no finite value are NaN.
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        return arr.copy()
    ok = np.isfinite(arr)
    sums = np.concatenate([[0.0], np.cumsum(np.where(ok, arr, 0.0))])
    counts = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(arr.size)
    lo = np.maximum(0, idx - window + 1)
    n = counts[idx + 1] - counts[lo]
    total = sums[idx + 1] - sums[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def robust_z_rows(values: np.ndarray, floor: float, *, min_finite: int = 3) -> np.ndarray:
    """Robust z of each entry of a ``[R, N]`` array against its row: (x − median) / max(1.4826·MAD,
    ``floor``), the median and MAD over the row's finite entries (docs/metrics.md, mid-layer anomaly).

    Non-finite entries, and rows with fewer than ``min_finite`` finite entries, are NaN. Rows with
    the same finite entries (usually all of them) are computed together.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, np.nan)
    masks, group = np.unique(np.isfinite(values), axis=0, return_inverse=True)
    for index, ok in enumerate(masks):
        if ok.sum() < max(1, min_finite):
            continue
        cells = np.ix_(np.flatnonzero(group.reshape(-1) == index), ok)
        rows = values[cells]
        med = np.median(rows, axis=1, keepdims=True)
        scale = np.maximum(np.median(np.abs(rows - med), axis=1, keepdims=True) * 1.4826, floor)
        out[cells] = (rows - med) / scale
    return out


def first_true(flags: np.ndarray | None) -> int | None:
    """Index of the first True along axis 0 (any over the other axes), None when none."""
    if flags is None:
        return None
    arr = np.asarray(flags, dtype=bool)
    if arr.size == 0:
        return None
    per_step = arr.reshape(arr.shape[0], -1).any(axis=1)
    hits = np.flatnonzero(per_step)
    return int(hits[0]) if hits.size else None
