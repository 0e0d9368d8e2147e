"""Metric consistency invariants (metrics.md §6)."""

from __future__ import annotations

import numpy as np

from corevital.analysis.consistency import check_consistency


def test_consistent_metrics_pass() -> None:
    e = np.array([0.0, 1.0, 3.5])
    result = check_consistency(
        e, np.exp2(e), np.array([0.9, 0.5, 0.1]), np.array([1.0, 0.9, 0.4]), np.array([0.1, 1, 2])
    )
    assert result.ok and result.checked_steps == 3


def test_each_violation_is_reported_with_its_step() -> None:
    e = np.array([2.0, 2.0, -0.5, 1.0])
    ppl = np.array([4.0, 4.1, 2**-0.5, 2.0])  # step 1: 2.5% off
    margin = np.array([0.2, 0.2, 0.2, 0.9])
    mass = np.array([0.8, 0.8, 0.8, 0.5])  # step 3: margin > mass
    surprisal = np.array([1.0, -0.2, 1.0, 1.0])
    result = check_consistency(e, ppl, margin, mass, surprisal)
    got = {(v.check, v.step_index) for v in result.violations}
    assert got == {
        ("perplexity_matches_entropy", 1),
        ("surprisal_nonnegative", 1),
        ("entropy_nonnegative", 2),
        ("margin_within_mass", 3),
    }


def test_nan_values_are_not_checked_and_empty_is_fine() -> None:
    nan = np.full(3, np.nan)
    assert check_consistency(nan, nan, nan, nan, nan).checked_steps == 0
    empty = np.array([])
    assert check_consistency(empty, empty, empty, empty, empty).ok
