"""Attention collapse: trend and catastrophic tests, run-wide and per layer (metrics.md §4)."""

from __future__ import annotations

import numpy as np

from corevital.analysis.collapse import collapse_test, detect_attention_collapse
from corevital.analysis.profiles import load_profile

PROFILE = load_profile("llama").collapse


def test_quiet_rates_are_not_collapse() -> None:
    rng = np.random.default_rng(0)
    rates = (rng.random((60, 30)) < 0.02) / 9.0  # now and then one of 9 heads
    detail = detect_attention_collapse(rates, PROFILE)
    assert not detail.detected and detail.severity == 0.0
    assert detail.trend_layers == ()
    assert len(detail.per_layer_mean_collapse_rate) == 30


def test_a_run_wide_rise_is_a_trend_with_its_peak_step() -> None:
    rates = np.full((40, 12), 0.05)
    rates[25:, :] = 0.45
    detail = detect_attention_collapse(rates, PROFILE)
    assert detail.detected and detail.trend_detected and not detail.catastrophic
    assert detail.trend_peak_deviation is not None and detail.trend_peak_deviation > 0.3
    assert detail.trend_peak_step is not None and detail.trend_peak_step >= 25
    assert detail.severity >= 0.5


def test_a_rise_of_exactly_the_delta_is_not_a_trend() -> None:
    rates = np.full((40, 4), 0.10)
    rates[20:] = 0.10 + PROFILE.trend_delta - 0.01
    assert not collapse_test(rates.mean(axis=1), PROFILE).trend


def test_a_high_mean_is_catastrophic() -> None:
    rates = np.full((10, 6), 0.9)
    detail = detect_attention_collapse(rates, PROFILE)
    assert detail.detected and detail.catastrophic
    assert detail.severity > 0.6


def test_one_layer_collapsed_from_the_first_step_is_named() -> None:
    rates = np.zeros((30, 30))
    rates[:, 17] = 1.0  # every head of layer 17, all run long: the run-wide mean is only 1/30
    detail = detect_attention_collapse(rates, PROFILE)
    assert detail.detected and not detail.trend_detected and not detail.catastrophic
    assert detail.trend_layers == (17,)
    assert 0.25 <= detail.severity <= 0.5


def test_one_layer_collapsing_mid_run_is_named() -> None:
    rates = np.zeros((40, 30))
    rates[20:, 4] = 1.0
    detail = detect_attention_collapse(rates, PROFILE)
    assert detail.detected and 4 in detail.trend_layers


def test_single_head_models_and_null_rates() -> None:
    rates = np.zeros((30, 2))  # one head: rates are 0 or 1
    rates[:3] = np.nan  # fewer than 4 keys at the first steps: null
    rates[5, 0] = 1.0
    detail = detect_attention_collapse(rates, PROFILE)
    assert not detail.detected
    assert detail.mean_collapse_rate is not None and np.isfinite(detail.mean_collapse_rate)


def test_edge_cases() -> None:
    assert not detect_attention_collapse(None, PROFILE).detected
    assert not detect_attention_collapse(np.zeros((0, 4)), PROFILE).detected
    assert not detect_attention_collapse(np.full((5, 4), np.nan), PROFILE).detected
    one = detect_attention_collapse(np.full((1, 1), 0.9), PROFILE)
    assert one.detected and one.catastrophic  # too short for a trend, not for a mean
