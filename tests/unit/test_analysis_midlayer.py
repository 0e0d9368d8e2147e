"""Mid-layer anomaly and the depth profile of hidden-state norms (metrics.md §4)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from corevital.analysis.depth import layer_jumps, middle_third
from corevital.analysis.health import mid_layer_anomaly
from corevital.analysis.profiles import load_profile
from corevital.analysis.signals import SequenceSignals
from corevital.analysis.stats import robust_z_rows
from tests.support.signals import copy_of, make_signals, summary_only

PROFILE = load_profile("llama")


def with_fault(
    layers: int, layer: int, *, factor: float = 1e4, from_step: int = 0, steps: int = 32, seed: int = 0
) -> SequenceSignals:
    """A sequence whose layer ``layer`` output is scaled from ``from_step`` on; later layers carry it."""
    sig = make_signals(steps=steps, layers=layers, seed=seed)
    l2 = copy_of(sig.hidden_l2)
    l2[from_step:, layer:-1] *= factor  # the last layer is after the final norm
    return replace(sig, hidden_l2=l2)


@pytest.mark.parametrize("layers", [6, 12, 30, 32])
def test_a_fault_in_any_middle_layer_from_step_0_is_detected(layers: int) -> None:
    for layer in middle_third(layers):
        for seed in range(3):
            sig = with_fault(layers, layer, seed=seed)
            detail = mid_layer_anomaly(sig, PROFILE)
            assert detail.detected, (layers, layer, seed)
            assert detail.layers == (layer,)


@pytest.mark.parametrize("layer", [1, 2, 26, 28])
def test_early_and_late_faults_are_found_but_are_not_mid_layer(layer: int) -> None:
    sig = with_fault(30, layer)
    detail = mid_layer_anomaly(sig, PROFILE)
    assert not detail.detected
    assert [j.layer for j in detail.jumps] == [layer]
    assert detail.jumps[0].kind == "persistent"


def test_a_fault_that_starts_mid_run_is_a_transient_jump() -> None:
    sig = with_fault(30, 15, from_step=25, steps=40)
    detail = mid_layer_anomaly(sig, PROFILE)
    assert detail.detected and detail.layers == (15,)
    jump = detail.jumps[0]
    assert jump.kind == "transient" and jump.first_step == 25 and jump.steps == 15


def test_healthy_depth_profiles_are_quiet() -> None:
    for seed in range(50):
        sig = make_signals(steps=48, layers=30, seed=seed)
        assert not mid_layer_anomaly(sig, PROFILE).detected, seed
        assert layer_jumps(sig.hidden_l2, PROFILE.mid_layer) == ()


def test_massive_activations_in_an_early_layer_are_not_anomalies() -> None:
    sig = make_signals(steps=48, layers=30)
    l2 = copy_of(sig.hidden_l2)
    delimiter_steps = [0, 1, 9, 17, 30]  # newlines: a burst from layer 2 on, carried forward
    l2[np.ix_(delimiter_steps, range(2, 29))] *= 300.0
    sig = replace(sig, hidden_l2=l2)
    detail = mid_layer_anomaly(sig, PROFILE)
    assert not detail.detected and detail.jumps == ()


def test_a_one_step_burst_in_a_middle_layer_is_not_an_anomaly() -> None:
    sig = make_signals(steps=48, layers=30)
    l2 = copy_of(sig.hidden_l2)
    l2[7, 14:29] *= 50.0
    assert not mid_layer_anomaly(replace(sig, hidden_l2=l2), PROFILE).detected


def test_ordinary_depth_growth_is_not_an_anomaly() -> None:
    """The original's flaw: middle layers compared with early layers fire on ordinary growth."""
    sig = make_signals(steps=32, layers=32)
    l2 = np.exp(np.log(1.0) + np.cumsum(np.full((32, 32), 0.12), axis=1))  # x40 from first to last
    assert not mid_layer_anomaly(replace(sig, hidden_l2=l2), PROFILE).detected


def test_nan_in_a_middle_layer_is_an_anomaly() -> None:
    sig = make_signals(steps=10, layers=12)
    nan = copy_of(sig.hidden_nan)
    nan[4:, 5:] = True
    l2 = copy_of(sig.hidden_l2)
    l2[4:, 5:] = np.nan
    detail = mid_layer_anomaly(replace(sig, hidden_nan=nan, hidden_l2=l2), PROFILE)
    assert detail.detected
    assert detail.nonfinite_layers == (5, 6, 7)  # middle third of 12 layers: 4..7


def test_edge_cases_never_raise() -> None:
    assert not mid_layer_anomaly(summary_only(make_signals()), PROFILE).judged
    assert not mid_layer_anomaly(make_signals(steps=0), PROFILE).detected
    assert not mid_layer_anomaly(make_signals(steps=1), PROFILE).detected
    assert not mid_layer_anomaly(make_signals(layers=1), PROFILE).detected
    assert not mid_layer_anomaly(make_signals(layers=3), PROFILE).detected
    zeros = make_signals(steps=5, layers=12)
    assert not mid_layer_anomaly(replace(zeros, hidden_l2=np.zeros((5, 12))), PROFILE).detected
    assert list(middle_third(30)) == list(range(10, 20))
    assert list(middle_third(1)) == []


def test_persistent_massive_activations_in_a_fixed_early_layer_are_not_blamed() -> None:
    """GPT-2 style: from layer 2 on, every token carries a few huge dimensions (norm x60)."""
    sig = make_signals(steps=40, layers=12)
    l2 = copy_of(sig.hidden_l2)
    l2[:, 2:-1] *= 60.0
    assert layer_jumps(l2, PROFILE.mid_layer) == ()
    l2[:, 2:-1] *= 1e4 / 60.0  # a x1e4 fault there is still found
    assert [j.layer for j in layer_jumps(l2, PROFILE.mid_layer)] == [2]


def test_robust_z_of_rows_matches_the_row_by_row_definition() -> None:
    """Rows are grouped by their finite entries; each value is what the per-row formula gives."""

    def slow(values: np.ndarray, floor: float) -> np.ndarray:
        out = np.full(values.shape, np.nan)
        for t, row in enumerate(values):
            ok = np.isfinite(row)
            if ok.sum() < 3:
                continue
            med = float(np.median(row[ok]))
            scale = max(float(np.median(np.abs(row[ok] - med))) * 1.4826, floor)
            out[t, ok] = (row[ok] - med) / scale
        return out

    rng = np.random.default_rng(0)
    for trial in range(200):
        values = rng.normal(size=(int(rng.integers(0, 30)), int(rng.integers(1, 20))))
        if trial % 2:
            values = np.round(values, 1)  # ties in the medians
        values[:, 0] = np.nan
        values[rng.random(values.shape) < 0.1] = np.inf if trial % 3 else np.nan
        floor = float(rng.choice([1e-3, 0.5]))
        assert robust_z_rows(values, floor).tobytes() == slow(values, floor).tobytes()
