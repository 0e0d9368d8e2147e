"""Cutting a batch's host-side steps into per-sequence series (numpy only).

A step's statistics hold the whole batch: rows are axis 0 of logits values (``[B]``, ``[B, k]``)
and axis 1 of per-layer values (``[L, B]``, ``[L, B, H]``). A sequence's series stacks its row
over the steps it really generated (up to and including its EOS), giving ``[T]``, ``[T, k]``,
``[T, L]``, ``[T, L, H]``.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def _row(value: Any, index: int, axis: int) -> Any:
    if value is None:
        return None
    array = np.asarray(value)
    return array[index] if axis == 0 else array[:, index]


def series(steps: list[T | None], index: int, *, axis: int) -> T | None:
    """Stack row ``index`` of each step's dataclass into one dataclass of arrays with a step axis.

    A step without the dataclass (attention of a compiled step over a sliding-window cache) or a
    statistic some steps lack (the MLP update ratio of compiled steps) keeps its place in the
    series: NaN there (False for flags), the same as a statistic that could not be computed. None
    only when no step has it.
    """
    first = next((s for s in steps if s is not None), None)
    if first is None:
        return None
    values: dict[str, Any] = {}
    for f in dataclasses.fields(first):  # type: ignore[arg-type]
        rows = [None if s is None else _row(getattr(s, f.name), index, axis) for s in steps]
        shaped = next((row for row in rows if row is not None), None)
        values[f.name] = (
            None if shaped is None else np.stack([_missing(shaped) if row is None else row for row in rows])
        )
    return type(first)(**values)


def _missing(like: Any) -> np.ndarray:
    """A row shaped like ``like`` for a step that lacks it: False for flags, NaN otherwise."""
    array = np.asarray(like)
    if array.dtype == bool:
        return np.zeros(array.shape, dtype=bool)
    return np.full(array.shape, np.nan)


def reduce_rows(stats: T, mask: np.ndarray, *, axis: int = 1) -> T:
    """Aggregate statistics over the rows selected by ``mask`` (e.g. one sequence's source tokens).

    Extremes keep their meaning (``*_min`` is the min, ``*_max``/``max_abs`` the max, flags any),
    everything else is averaged, ignoring NaN.
    """
    values: dict[str, Any] = {}
    with warnings.catch_warnings():  # all-NaN slices are expected (e.g. collapse counts when K < 4)
        warnings.simplefilter("ignore", RuntimeWarning)
        for f in dataclasses.fields(stats):  # type: ignore[arg-type]
            values[f.name] = _reduce_field(f.name, getattr(stats, f.name), mask, axis)
    return type(stats)(**values)


def generated_length(token_ids: np.ndarray, eos_ids: tuple[int, ...]) -> tuple[int, bool]:
    """Tokens really generated (through the first EOS) and whether it ended on EOS."""
    hits = np.flatnonzero(np.isin(token_ids, eos_ids))
    if hits.size:
        return int(hits[0]) + 1, True
    return len(token_ids), False


def _reduce_field(name: str, raw: Any, mask: np.ndarray, axis: int) -> Any:
    if raw is None:
        return None
    array = np.asarray(raw)
    selected = np.compress(mask, array, axis=axis)
    if array.dtype == bool:
        return selected.any(axis=axis)
    if selected.shape[axis] == 0:
        return np.full(np.delete(np.array(array.shape), axis), np.nan, dtype=np.float32)
    if name.endswith("_min"):
        return np.nanmin(selected, axis=axis)
    if name.endswith("_max") or name in ("max_abs", "clip_max_before"):
        return np.nanmax(selected, axis=axis)
    return np.nanmean(selected.astype(np.float64), axis=axis).astype(np.float32)
