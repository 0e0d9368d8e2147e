"""Cutting a batch's host-side steps into per-sequence series: the batch stacked once
(:class:`StepSeries`) gives each sequence what stacking its own rows step by step gives."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from corevital.capture.assemble import StepSeries, series


@dataclasses.dataclass
class Stats:
    value: np.ndarray | None  # [L, B] floats
    flag: np.ndarray | None  # [L, B] booleans
    ids: np.ndarray | None  # [L, B, k] integers


def _steps(rng: np.random.Generator, count: int, layers: int, batch: int) -> list[Stats | None]:
    """Steps as a generation leaves them: some without the dataclass, some without one field."""
    steps: list[Stats | None] = []
    for t in range(count):
        if t in (3, 7):
            steps.append(None)  # e.g. a compiled step without attention
            continue
        steps.append(
            Stats(
                value=rng.normal(size=(layers, batch)).astype(np.float32),
                flag=rng.random((layers, batch)) > 0.5,
                ids=None if t < 2 else rng.integers(0, 100, size=(layers, batch, 3)),
            )
        )
    return steps


def _batch_first(stats: Stats) -> Stats:
    return Stats(**{k: None if v is None else np.moveaxis(v, 1, 0) for k, v in vars(stats).items()})


def _own_rows(steps: list[Stats | None], index: int, length: int, axis: int) -> Stats | None:
    """The reference: each sequence's rows taken from each step and stacked (no shared stack)."""
    mine = steps[:length]
    first = next((s for s in mine if s is not None), None)
    if first is None:
        return None
    values: dict[str, Any] = {}
    for f in dataclasses.fields(first):
        rows: list[Any] = [None if s is None else getattr(s, f.name) for s in mine]
        rows = [None if r is None else (r[index] if axis == 0 else r[:, index]) for r in rows]
        shaped = next((r for r in rows if r is not None), None)
        if shaped is None:
            values[f.name] = None
            continue
        filler = np.zeros(shaped.shape, bool) if shaped.dtype == bool else np.full(shaped.shape, np.nan)
        values[f.name] = np.stack([filler if r is None else r for r in rows])
    return Stats(**values)


@pytest.mark.parametrize("axis", [0, 1])
def test_batch_stacked_once_gives_each_sequence_its_own_series(axis: int) -> None:
    rng = np.random.default_rng(0)
    steps = _steps(rng, count=10, layers=4, batch=3)
    if axis == 0:  # values [B, ...]: the batch axis first
        steps = [None if s is None else _batch_first(s) for s in steps]
    stacked = StepSeries(steps, axis=axis)
    checked = 0
    for index in range(3):
        for length in range(0, 11):
            want = _own_rows(steps, index, length, axis)
            checked += _assert_same_rows(stacked.row(index, length), want, (index, length))
    assert checked > 60
    # the series function is the same cut
    got = series(steps, 1, axis=axis)
    want = _own_rows(steps, 1, len(steps), axis)
    assert got is not None and want is not None
    np.testing.assert_array_equal(got.value, want.value)


def _assert_same_rows(got: Stats | None, want: Stats | None, where: object) -> int:
    """``got`` has ``want``'s fields, values and dtypes; the number of fields compared."""
    if want is None:
        assert got is None, where
        return 0
    assert got is not None, where
    compared = 0
    for name in ("value", "flag", "ids"):
        a, b = getattr(got, name), getattr(want, name)
        if b is None:
            assert a is None, (name, where)
            continue
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype, (name, where, a.dtype, b.dtype)
        compared += 1
    return compared


def test_rows_do_not_share_memory() -> None:
    rng = np.random.default_rng(1)
    steps: list[Stats | None] = [s for s in _steps(rng, count=6, layers=2, batch=2) if s is not None]
    stacked = StepSeries(steps, axis=1)
    first, second = stacked.row(0, 4), stacked.row(1, 4)
    assert first is not None and second is not None and first.value is not None
    first.value[:] = 0.0
    assert second.value is not None and np.all(second.value != 0.0)
    again = stacked.row(0, 4)
    assert again is not None and again.value is not None and np.all(again.value != 0.0)


def _window_of(steps: list[Stats | None]) -> Stats:
    """A window's statistics as a reduction leaves them: every field with the step axis first."""
    present = [s for s in steps if s is not None]
    assert len(present) == len(steps)
    return Stats(
        **{
            f.name: None
            if any(getattr(s, f.name) is None for s in present)
            else np.stack([getattr(s, f.name) for s in present])
            for f in dataclasses.fields(Stats)
        }
    )


@pytest.mark.parametrize("axis", [0, 1])
def test_series_from_windows_equal_the_steps_stacked(axis: int) -> None:
    """Windows (some without the statistics, some without a field, one holding a single step)
    concatenated: every row, every length, the values and dtypes of stacking each step."""
    rng = np.random.default_rng(2)
    steps = _steps(rng, count=14, layers=4, batch=3)
    if axis == 0:
        steps = [None if s is None else _batch_first(s) for s in steps]
    # steps 0-1 lack `ids`, 3 and 7 lack everything: windows [0, 2) [2, 3) [3, 8) [8, 9) [9, 14)
    bounds = [(0, 2), (2, 3), (3, 8), (8, 9), (9, 14)]
    windows: list[tuple[Stats | None, int]] = []
    for start, stop in bounds:
        own = steps[start:stop]
        windows.append((None if any(s is None for s in own) else _window_of(own), stop - start))
    assert windows[2][0] is None and windows[0][0] is not None and windows[0][0].ids is None
    want = StepSeries(steps, axis=axis)
    got = StepSeries.of_windows(windows, steps, axis=axis)
    np.testing.assert_array_equal(got.present, want.present)
    checked = 0
    for index in range(3):
        for length in range(0, 15):
            checked += _assert_same_rows(got.row(index, length), want.row(index, length), (index, length))
    assert checked > 100
    # windows that do not cover the steps: the steps are stacked
    partial = StepSeries.of_windows(windows[:-1], steps, axis=axis)
    assert _assert_same_rows(partial.row(0, 14), want.row(0, 14), "partial") == 3
