"""Early warning: online tracker, post-run function, each signal, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from corevital.analysis.early_warning import SIGNALS, EarlyWarningTracker, early_warning
from corevital.analysis.profiles import load_profile

PROFILE = load_profile("llama").early_warning
W = PROFILE.window


def calm(steps: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        np.clip(2.0 + 0.5 * rng.standard_normal(steps), 0, None),
        np.clip(0.6 + 0.1 * rng.standard_normal(steps), 0, 1),
        np.abs(1.0 + 0.5 * rng.standard_normal(steps)),
    )


def test_online_updates_end_in_the_post_run_result() -> None:
    e, m, s = calm(80, seed=3)
    e[50:] += np.linspace(0, 6, 30) ** 1.5 / 3  # an accelerating rise
    m[55:] = 0.01
    tracker = EarlyWarningTracker(PROFILE)
    fired_online: list[tuple[str, int]] = []
    for t in range(e.size):
        step = tracker.update(float(e[t]), float(m[t]), float(s[t]))
        assert step.step == t
        fired_online.extend((name, t) for name in step.fired)
        assert 0.0 <= step.failure_risk <= 1.0
    final, steps = early_warning(e, m, s, PROFILE)
    assert tracker.result == final
    assert [(f.signal, f.step) for f in final.firings] == fired_online
    assert steps[-1].failure_risk == final.failure_risk
    assert all(a.failure_risk <= b.failure_risk for a, b in zip(steps, steps[1:], strict=False))


def test_calm_runs_fire_nothing_and_stay_low() -> None:
    for seed in range(20):
        result, _ = early_warning(*calm(seed=seed), PROFILE)
        assert result.warning_signals == (), seed
        assert result.failure_risk < 0.3


def fired(e: np.ndarray, m: np.ndarray, s: np.ndarray) -> set[str]:
    return set(early_warning(e, m, s, PROFILE)[0].warning_signals)


def test_entropy_accelerating() -> None:
    _, m, s = calm(3 * W)
    e = np.concatenate([np.full(W, 1.0), 1.0 + np.arange(W) * 0.2, np.full(W, 5.0)])  # means 1, ~1.5, 5
    assert "entropy_accelerating" in fired(e, m, s)
    flat = np.full(3 * W, 2.0)
    assert "entropy_accelerating" not in fired(flat, m[: 3 * W], s[: 3 * W])


def test_margin_collapsed_and_declining() -> None:
    e, m, s = calm(40)
    m2 = m.copy()
    m2[-W:] = 0.01
    assert "margin_collapsed" in fired(e, m2, s)
    m3 = m.copy()
    m3[-W:] = 0.1  # 0.1 / 0.6 < 0.3 of the first window, not yet collapsed
    got = fired(e, m3, s)
    assert "margin_declining" in got and "margin_collapsed" not in got


def test_surprisal_volatile() -> None:
    e, m, s = calm(30)
    s[-W:] = [0.0, 14.0, 0.0, 14.0, 0.0, 14.0][:W] + [0.0] * max(0, W - 6)
    assert "surprisal_volatile" in fired(e, m, s)


def test_entropy_margin_divergence() -> None:
    e, m, s = calm(30)
    e[-W:] = PROFILE.divergence_entropy_bits + 1.5
    m[-W:] = 0.6
    assert "entropy_margin_divergence" in fired(e, m, s)


def test_memory_is_bounded() -> None:
    tracker = EarlyWarningTracker(PROFILE)
    for t in range(5000):
        tracker.update(2.0 + (t % 7) * 0.1, 0.5, 1.0)
    assert len(tracker._entropy) == 3 * W and len(tracker._margin) == W and len(tracker._surprisal) == W
    assert len(tracker._base_margin) == W


@pytest.mark.parametrize("steps", [0, 1, 2])
def test_short_and_empty_runs(steps: int) -> None:
    e, m, s = (a[:steps] for a in calm())
    result, per_step = early_warning(e, m, s, PROFILE)
    assert result.warning_signals == () and len(per_step) == steps
    assert 0.0 <= result.failure_risk < 0.1


def test_nan_values_are_skipped() -> None:
    e, m, s = calm(40)
    e[5:9] = np.nan
    m[10] = np.nan
    s[::3] = np.nan
    result, per_step = early_warning(e, m, s, PROFILE)
    assert np.isfinite(result.failure_risk) and len(per_step) == 40


def test_signal_names_are_the_specs() -> None:
    assert SIGNALS == (
        "entropy_accelerating",
        "margin_collapsed",
        "margin_declining",
        "surprisal_volatile",
        "entropy_margin_divergence",
    )
