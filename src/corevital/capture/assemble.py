"""Cutting a batch's host-side steps into per-sequence series (numpy only).

A step's statistics hold the whole batch: rows are axis 0 of logits values (``[B]``, ``[B, k]``)
and axis 1 of per-layer values (``[L, B]``, ``[L, B, H]``). A sequence's series stacks its row
over the steps it really generated (up to and including its EOS), giving ``[T]``, ``[T, k]``,
``[T, L]``, ``[T, L, H]``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

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
    only when no step has it. Several rows of the same steps: :class:`StepSeries`.
    """
    return StepSeries(steps, axis=axis).row(index, len(steps))


class StepSeries(Generic[T]):
    """Every step's dataclass stacked once (each field gains a leading step axis, the batch axis
    kept); :meth:`row` cuts one sequence's series from it, as :func:`series` would.

    Stacking a batch once costs one ``np.stack`` per field, where cutting each sequence from the
    steps would cost one per field and sequence plus a row view per field, step and sequence.
    ``axis``: the batch axis of each step's values (0 for ``[B, ...]``, 1 for ``[L, B, ...]``).
    """

    def __init__(self, steps: Sequence[T | None], *, axis: int) -> None:
        self.axis = axis
        self.present = np.array([s is not None for s in steps], dtype=bool)
        first = next((s for s in steps if s is not None), None)
        self.kind: Callable[..., T] | None = None if first is None else type(first)
        # per field: its stacked values and which steps have it (None: no step has it)
        self.fields: dict[str, _Field | None] = {}
        if first is None:
            return
        for f in dataclasses.fields(first):  # type: ignore[arg-type]
            self.fields[f.name] = _concatenated([[None if s is None else getattr(s, f.name) for s in steps]])

    @classmethod
    def of_windows(
        cls, windows: Sequence[tuple[T | None, int]], steps: Sequence[T | None], *, axis: int
    ) -> StepSeries[T]:
        """The series of ``steps`` from the windows they were reduced in: ``StepSeries(steps)``'s values.

        ``windows``: each window's statistics (every field with the step as its leading axis; None
        where the window's steps have them one by one) and its number of steps, in order, covering
        ``steps``. A field's series is a concatenation of a few windows' arrays rather than a stack
        of every step; a window without the statistics, or without the field, adds its steps' own.
        """
        if sum(count for _, count in windows) != len(steps):
            return cls(steps, axis=axis)
        series = cls(steps[:0], axis=axis)
        starts = np.cumsum([0] + [count for _, count in windows])
        series.present = np.ones(len(steps), dtype=bool)
        for (stats, count), start in zip(windows, starts, strict=False):
            if stats is None:
                series.present[start : start + count] = [s is not None for s in steps[start : start + count]]
        first = next((stats for stats, _ in windows if stats is not None), None)
        first = first if first is not None else next((s for s in steps if s is not None), None)
        if first is None:
            return series
        series.kind = type(first)
        for f in dataclasses.fields(first):  # type: ignore[arg-type]
            chunks: list[list[Any] | np.ndarray] = []
            for (stats, count), start in zip(windows, starts, strict=False):
                value = None if stats is None else getattr(stats, f.name)
                if value is not None:
                    chunks.append(np.asarray(value))
                else:
                    own = steps[start : start + count]
                    chunks.append([None if s is None else getattr(s, f.name) for s in own])
            series.fields[f.name] = _concatenated(chunks)
        return series

    def row(self, index: int, length: int) -> T | None:
        """Row ``index`` over the first ``length`` steps: arrays ``[T, ...]`` of its own."""
        if self.kind is None or _first(self.present, True) >= length:
            return None
        values: dict[str, Any] = {}
        for name, found in self.fields.items():
            if found is None or found.first_with >= length:
                values[name] = None
                continue
            stacked = found.values
            part = stacked[:length, index] if self.axis == 0 else stacked[:length, :, index]
            # a series whose own steps all have the field keeps its dtype (a missing step elsewhere
            # in the batch made the stack NaN-capable)
            values[name] = part.astype(found.dtype) if found.first_without >= length else part.copy()
        return self.kind(**values)


class _Field(NamedTuple):
    """A field stacked over the steps, and which steps have it (found once per batch, not per row)."""

    values: np.ndarray  # step axis first; NaN (False for flags) where a step lacks the field
    first_with: int  # the first step that has it
    first_without: int  # the first step that lacks it (the number of steps when none does)
    dtype: np.dtype  # the field's own dtype


def _first(flags: np.ndarray, value: bool) -> int:
    """The first step whose flag is ``value`` (``len(flags)`` when none is)."""
    hits = np.flatnonzero(flags == value)
    return int(hits[0]) if hits.size else len(flags)


def _concatenated(chunks: Sequence[list[Any] | np.ndarray]) -> _Field | None:
    """A field stacked from chunks of consecutive steps (None: no step has it).

    A chunk is a window's array (step axis first; every step has the field) or a list of steps'
    values (None where a step lacks it); the values are those :class:`StepSeries` stacks.
    """
    shaped = None
    for chunk in chunks:
        if isinstance(chunk, np.ndarray):
            shaped = chunk[0] if len(chunk) else None
        else:
            shaped = next((np.asarray(v) for v in chunk if v is not None), None)
        if shaped is not None:
            break
    if shaped is None:
        return None
    arrays: list[np.ndarray] = []
    lacking: list[tuple[int, list[bool]]] = []  # (first step, which steps have it) of listed steps
    at = 0
    for chunk in chunks:
        if isinstance(chunk, np.ndarray):
            arrays.append(chunk)
        elif chunk:
            arrays.append(np.stack([_missing(shaped) if v is None else np.asarray(v) for v in chunk]))
            lacking.append((at, [v is not None for v in chunk]))
        at += len(chunk)
    stacked = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    has = np.ones(at, dtype=bool)
    for start, flags in lacking:
        has[start : start + len(flags)] = flags
    return _Field(stacked, _first(has, True), _first(has, False), shaped.dtype)


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
