"""Early warning (``metrics.md`` §6): trend signals computed online, one step at a time.

:class:`EarlyWarningTracker` keeps bounded windows (3 windows of entropy, 1 of margin and surprisal,
plus the first margin window as a baseline) and, at each step, evaluates five signals:

- ``entropy_accelerating``: of three consecutive window means m0, m1, m2 of entropy, the last rise
  m2 − m1 exceeds ``accel_rise_bits`` and exceeds the rise before it (m1 − m0) by ``accel_increase_bits``;
- ``margin_collapsed``: the window mean of the top-1/top-2 margin is below ``collapsed_margin``;
- ``margin_declining``: the window mean margin fell below ``decline_ratio`` × the first window's mean
  (judged once the windows no longer overlap and when that baseline is at least ``decline_min_base``);
- ``surprisal_volatile``: the standard deviation of surprisal in the window exceeds ``volatile_std_bits``;
- ``entropy_margin_divergence``: window mean entropy above ``divergence_entropy_bits`` while the window
  mean margin stays above ``divergence_margin`` (uncertain overall, yet one token dominates).

Each signal has a continuous strength ``sigmoid(e / softness)``, ``e`` being its relative excess over
its threshold (``e > 0`` ⇔ it fires). The step's risk is ``1 − Π(1 − weight·strength)``, and
``failure_risk`` is its peak so far: continuous, in [0, 1], non-decreasing over the run. The post-run
:func:`early_warning` is the tracker run over the whole timeline, so the live stream and the report
agree exactly. NaN inputs are skipped (the step still counts).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from corevital.analysis.profiles import EarlyWarningProfile
from corevital.analysis.stats import sigmoid

SIGNALS = (
    "entropy_accelerating",
    "margin_collapsed",
    "margin_declining",
    "surprisal_volatile",
    "entropy_margin_divergence",
)


@dataclass(frozen=True)
class WarningFiring:
    signal: str
    step: int  # 0-based generated-token index at which it first fired


@dataclass(frozen=True)
class StepWarning:
    step: int
    fired: tuple[str, ...]  # signals that fired for the first time at this step
    active: tuple[str, ...]  # signals whose condition holds at this step
    step_risk: float  # this step's risk
    failure_risk: float  # peak so far


@dataclass(frozen=True)
class EarlyWarningResult:
    failure_risk: float = 0.0
    warning_signals: tuple[str, ...] = ()  # in the order they first fired
    firings: tuple[WarningFiring, ...] = ()
    peak_step: int | None = None  # step at which failure_risk was reached


def _excess_above(value: float, threshold: float) -> float:
    return (value - threshold) / max(abs(threshold), 1e-3)


def _excess_below(value: float, threshold: float) -> float:
    return (threshold - value) / max(abs(threshold), 1e-3)


def _finite(value: float) -> bool:
    return value is not None and bool(np.isfinite(value))


class EarlyWarningTracker:
    """Online early-warning state for one sequence: ``update`` once per generated step."""

    def __init__(self, profile: EarlyWarningProfile) -> None:
        self._p = profile
        w = profile.window
        self._entropy: deque[float] = deque(maxlen=3 * w)
        self._margin: deque[float] = deque(maxlen=w)
        self._surprisal: deque[float] = deque(maxlen=w)
        self._base_margin: list[float] = []
        self._margins_seen = 0
        self._step = -1
        self._risk = 0.0
        self._peak_step: int | None = None
        self._firings: list[WarningFiring] = []
        self._fired: set[str] = set()

    def update(self, entropy: float, margin: float, surprisal: float) -> StepWarning:
        """Take one step's values; returns what fired at this step and the failure risk so far."""
        self._step += 1
        if _finite(entropy):
            self._entropy.append(float(entropy))
        if _finite(margin):
            self._margin.append(float(margin))
            self._margins_seen += 1
            if len(self._base_margin) < self._p.window:
                self._base_margin.append(float(margin))
        if _finite(surprisal):
            self._surprisal.append(float(surprisal))
        excess = self._excesses()
        strengths = {name: sigmoid(e / self._p.softness) for name, e in excess.items()}
        weights = {
            "entropy_accelerating": self._p.weight_accelerating,
            "margin_collapsed": self._p.weight_collapsed,
            "margin_declining": self._p.weight_declining,
            "surprisal_volatile": self._p.weight_volatile,
            "entropy_margin_divergence": self._p.weight_divergence,
        }
        keep = 1.0
        for name, strength in strengths.items():
            keep *= 1.0 - weights[name] * strength
        step_risk = 1.0 - keep
        if step_risk > self._risk:
            self._risk, self._peak_step = step_risk, self._step
        active = tuple(name for name in SIGNALS if excess.get(name, -1.0) > 0)
        fired = tuple(name for name in active if name not in self._fired)
        for name in fired:
            self._fired.add(name)
            self._firings.append(WarningFiring(signal=name, step=self._step))
        return StepWarning(
            step=self._step, fired=fired, active=active, step_risk=step_risk, failure_risk=self._risk
        )

    def _excesses(self) -> dict[str, float]:
        p, w = self._p, self._p.window
        out: dict[str, float] = {}
        if len(self._entropy) == 3 * w:
            values = np.fromiter(self._entropy, dtype=np.float64)
            m0, m1, m2 = values[:w].mean(), values[w : 2 * w].mean(), values[2 * w :].mean()
            rise, previous = m2 - m1, m1 - m0
            out["entropy_accelerating"] = min(
                _excess_above(rise, p.accel_rise_bits), _excess_above(rise - previous, p.accel_increase_bits)
            )
        if len(self._margin) == w:
            recent = float(np.mean(self._margin))
            out["margin_collapsed"] = _excess_below(recent, p.collapsed_margin)
            base = float(np.mean(self._base_margin))
            if self._margins_seen >= 2 * w and base >= p.decline_min_base:
                out["margin_declining"] = _excess_below(recent / base, p.decline_ratio)
        if len(self._surprisal) == w:
            out["surprisal_volatile"] = _excess_above(float(np.std(self._surprisal)), p.volatile_std_bits)
        if len(self._entropy) >= w and len(self._margin) == w:
            recent_entropy = float(np.mean(list(self._entropy)[-w:]))
            out["entropy_margin_divergence"] = min(
                _excess_above(recent_entropy, p.divergence_entropy_bits),
                _excess_above(float(np.mean(self._margin)), p.divergence_margin),
            )
        return out

    @property
    def result(self) -> EarlyWarningResult:
        """The early warning so far (after the last step: the report's ``early_warning``)."""
        return EarlyWarningResult(
            failure_risk=self._risk,
            warning_signals=tuple(f.signal for f in self._firings),
            firings=tuple(self._firings),
            peak_step=self._peak_step,
        )


def early_warning(
    entropy: np.ndarray, margin: np.ndarray, surprisal: np.ndarray, profile: EarlyWarningProfile
) -> tuple[EarlyWarningResult, tuple[StepWarning, ...]]:
    """Post-run early warning: the tracker over the whole timeline, and what it said at each step."""
    tracker = EarlyWarningTracker(profile)
    e = np.asarray(entropy, dtype=np.float64).reshape(-1)
    m = np.asarray(margin, dtype=np.float64).reshape(-1)
    s = np.asarray(surprisal, dtype=np.float64).reshape(-1)
    steps = tuple(tracker.update(float(e[t]), float(m[t]), float(s[t])) for t in range(e.size))
    return tracker.result, steps
