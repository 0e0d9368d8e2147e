"""Attention collapse (``metrics.md`` §4): trend and catastrophic tests, run-wide and per layer.

The per-step rate is collapsed heads / (layers × heads), i.e. the mean over layers of each layer's
``collapsed_head_rate`` (whose denominator is the model's true head count). Layers whose rate is
null at a step (fewer than 4 keys) are left out of that step.

- **trend**: the trailing ``smooth_window`` mean of the rate, after the first ``early_window``
  steps, rises more than ``trend_delta`` above the mean of those first steps;
- **catastrophic**: the mean rate over the run exceeds ``catastrophic_mean``.

The same two tests run on every layer's own rate, the trend with ``layer_trend_delta`` (one layer's
rate moves in steps of 1/heads, so its noise is far larger than the run-wide rate's: on healthy
SmolLM2 runs a layer's smoothed rate rises by up to ~0.55 on its own); the layers that pass either are
the ``trend_layers`` (a single layer collapsing from the first step is caught by its own catastrophic
test, a whole-model trend by the run-wide one). Severity in [0, 1]: a run-wide finding maps its
excess over the threshold to 0.5–1.0; layer-only findings to 0.25–0.5, scaled by the share of layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corevital.analysis.profiles import CollapseProfile
from corevital.analysis.stats import clip, fmean, rolling_mean


@dataclass(frozen=True)
class CollapseTest:
    mean_rate: float
    peak_deviation: float  # largest smoothed rise over the early mean (0.0 when not judged)
    peak_step: int | None
    trend: bool
    catastrophic: bool


@dataclass(frozen=True)
class CollapseFinding:
    detected: bool = False
    severity: float = 0.0
    mean_collapse_rate: float | None = None
    trend_detected: bool = False  # run-wide trend (layer findings are in trend_layers)
    trend_peak_deviation: float | None = None
    trend_peak_step: int | None = None
    trend_layers: tuple[int, ...] = ()  # layers whose own rate passed the trend or catastrophic test
    catastrophic: bool = False
    per_layer_mean_collapse_rate: tuple[float, ...] = ()


def collapse_test(rate: np.ndarray, profile: CollapseProfile, *, delta: float | None = None) -> CollapseTest:
    """Trend (rise > ``delta``, default ``trend_delta``) and catastrophic tests on one rate series ``[T]``."""
    delta = profile.trend_delta if delta is None else delta
    rate = np.asarray(rate, dtype=np.float64).reshape(-1)
    mean_rate = fmean(rate)
    catastrophic = bool(np.isfinite(rate).any()) and mean_rate > profile.catastrophic_mean
    early = profile.early_window
    if rate.size < early + profile.smooth_window:
        return CollapseTest(mean_rate, 0.0, None, False, catastrophic)
    base = fmean(rate[:early], default=np.nan)
    smooth = rolling_mean(rate, profile.smooth_window)[early + profile.smooth_window - 1 :]
    if not np.isfinite(base) or not np.isfinite(smooth).any():
        return CollapseTest(mean_rate, 0.0, None, False, catastrophic)
    deviation = smooth - base
    peak = int(np.nanargmax(deviation))
    peak_dev = float(deviation[peak])
    return CollapseTest(
        mean_rate=mean_rate,
        peak_deviation=peak_dev,
        peak_step=peak + early + profile.smooth_window - 1,
        trend=peak_dev > delta,
        catastrophic=catastrophic,
    )


def _strength(test: CollapseTest, profile: CollapseProfile, delta: float) -> float:
    """0 at the thresholds, 1 at the ceiling (rate rise of 1, mean of 1)."""
    parts = [0.0]
    if test.trend:
        parts.append((test.peak_deviation - delta) / max(1e-9, 1.0 - delta))
    if test.catastrophic:
        parts.append(
            (test.mean_rate - profile.catastrophic_mean) / max(1e-9, 1.0 - profile.catastrophic_mean)
        )
    return clip(max(parts), 0.0, 1.0)


def step_collapse_rate(collapse_rate: np.ndarray | None) -> np.ndarray | None:
    """Collapsed heads / (layers × heads) per step ``[T]``: the mean over layers of each layer's rate
    (over the layers whose rate is finite; NaN where none is). None without a ``[T, L]`` input.
    """
    if collapse_rate is None:
        return None
    rates = np.asarray(collapse_rate, dtype=np.float64)
    if rates.ndim != 2 or rates.shape[1] == 0:
        return None
    ok = np.isfinite(rates)
    counts = ok.sum(axis=1)
    sums = np.where(ok, rates, 0.0).sum(axis=1)
    with np.errstate(all="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def detect_attention_collapse(collapse_rate: np.ndarray | None, profile: CollapseProfile) -> CollapseFinding:
    """Collapse detail of a run from the per-layer collapsed-head rates ``[T, L]`` (None: not judged)."""
    if collapse_rate is None:
        return CollapseFinding()
    rates = np.asarray(collapse_rate, dtype=np.float64)
    if rates.ndim != 2 or rates.size == 0 or not np.isfinite(rates).any():
        return CollapseFinding()
    per_step = step_collapse_rate(rates)
    if per_step is None:
        return CollapseFinding()
    run = collapse_test(per_step, profile)
    layer_delta = profile.layer_trend_delta
    layer_tests = [
        collapse_test(rates[:, layer], profile, delta=layer_delta) for layer in range(rates.shape[1])
    ]
    trend_layers = tuple(i for i, t in enumerate(layer_tests) if t.trend or t.catastrophic)
    run_hit = run.trend or run.catastrophic
    detected = run_hit or bool(trend_layers)
    if run_hit:
        severity = 0.5 + 0.5 * _strength(run, profile, profile.trend_delta)
    elif trend_layers:
        share = len(trend_layers) / rates.shape[1]
        peak = max(_strength(layer_tests[i], profile, layer_delta) for i in trend_layers)
        severity = 0.25 + 0.25 * clip(0.5 * peak + 0.5 * clip(3.0 * share, 0.0, 1.0), 0.0, 1.0)
    else:
        severity = 0.0
    return CollapseFinding(
        detected=detected,
        severity=round(severity, 4),
        mean_collapse_rate=run.mean_rate,
        trend_detected=run.trend,
        trend_peak_deviation=run.peak_deviation,
        trend_peak_step=run.peak_step,
        trend_layers=trend_layers,
        catastrophic=run.catastrophic,
        per_layer_mean_collapse_rate=tuple(t.mean_rate for t in layer_tests),
    )
