"""Incremental statistics of the steps seen so far, for the live running risk
(:mod:`corevital.analysis.online`): each equals the report's whole-run statistic over the same steps.

- :class:`RunningFeatures`: the risk model's continuous features
  (:class:`~corevital.analysis.risk.RiskFeatures`), O(log n) a step;
- :class:`RunningCompound`: the compound signals that need only the logits' statistics and the token ids;
- :class:`RunningLayerUpdates`: ``layer_update_anomaly_detected`` judged on each layer's median so far
  (:class:`RunningMedians`) of the rows a step hands in (:class:`LayerRows`).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from corevital.analysis.profiles import CompoundProfile
from corevital.analysis.risk import MIN_TREND_STEPS, REPEAT_NGRAM, RiskFeatures
from corevital.analysis.stats import clip
from corevital.analysis.updates import LayerReferences, TypicalLevels, judge_levels

__all__ = ["LayerRows", "RunningCompound", "RunningFeatures", "RunningLayerUpdates", "RunningMedians"]


def _finite(x: float) -> bool:
    return math.isfinite(x)


class _Window:
    """The last ``size`` values with the sum and count of their finite entries."""

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)

    def push(self, x: float) -> None:
        self.values.append(x)

    def mean(self) -> float:
        total, count = 0.0, 0
        for v in self.values:
            if _finite(v):
                total += v
                count += 1
        return total / count if count else math.nan


class _Prefix:
    """Prefix sums and counts of the finite entries, per step: the NaN-ignoring mean of any range."""

    def __init__(self) -> None:
        self.sums = [0.0]
        self.counts = [0]

    def push(self, x: float) -> None:
        ok = _finite(x)
        self.sums.append(self.sums[-1] + (x if ok else 0.0))
        self.counts.append(self.counts[-1] + (1 if ok else 0))

    def mean(self, lo: int, hi: int) -> float:
        count = self.counts[hi] - self.counts[lo]
        return (self.sums[hi] - self.sums[lo]) / count if count else math.nan


class RunningFeatures:
    """:class:`~corevital.analysis.risk.RiskFeatures` of the steps seen so far, in O(log n) per step."""

    def __init__(self) -> None:
        self._n = 0
        self._entropy_sorted: list[float] = []
        self._entropy_finite = _Prefix()  # over the finite entropies only (the trend's definition)
        self._surprisal = _Prefix()
        self._margin = _Prefix()
        self._window = _Window(3)
        self._window_mean = math.nan
        self._surprisal_peak = math.nan
        self._recent_ids: deque[int] = deque(maxlen=REPEAT_NGRAM)
        self._ngrams: set[tuple[int, ...]] = set()
        self._ngram_count = 0

    def update(self, entropy: float, surprisal: float, margin: float, token_id: int) -> None:
        self._n += 1
        self._recent_ids.append(token_id)
        if len(self._recent_ids) == REPEAT_NGRAM:  # repeat_share: token n-grams seen, distinct ones
            self._ngram_count += 1
            self._ngrams.add(tuple(self._recent_ids))
        if _finite(entropy):
            bisect.insort(self._entropy_sorted, entropy)
            self._entropy_finite.push(entropy)
        self._surprisal.push(surprisal)
        self._margin.push(margin)
        self._window.push(surprisal)
        self._window_mean = self._window.mean()
        higher = not _finite(self._surprisal_peak) or self._window_mean > self._surprisal_peak
        if self._n >= 3 and _finite(self._window_mean) and higher:
            self._surprisal_peak = self._window_mean

    def features(self, failure_risk: float) -> RiskFeatures:
        ent = self._entropy_sorted
        k = len(ent)
        mean_entropy = peak = trend = math.nan
        if k:
            prefix = self._entropy_finite
            mean_entropy = prefix.sums[k] / k
            pos = 0.9 * (k - 1)
            lo = int(pos)
            hi = min(lo + 1, k - 1)
            peak = ent[lo] + (ent[hi] - ent[lo]) * (pos - lo)
            third = k // 3
            if third >= MIN_TREND_STEPS // 3:
                trend = prefix.mean(k - third, k) - prefix.mean(0, third)
        n = self._n
        margin = self._margin.mean(0, n) if n else math.nan
        return RiskFeatures(
            mean_entropy=mean_entropy,
            entropy_peak=peak,
            mean_surprisal=self._surprisal.mean(0, n) if n else math.nan,
            surprisal_peak=self._surprisal_peak if n >= 3 else self._window_mean,
            low_margin=1.0 - margin if _finite(margin) else math.nan,
            entropy_trend=trend,
            early_warning=float(failure_risk),
            repeat_share=1.0 - len(self._ngrams) / self._ngram_count if self._ngram_count else math.nan,
        )


class RunningCompound:
    """The compound signals that need only entropy, margin, surprisal, top-k mass and token ids,
    incrementally, with the severities :func:`~corevital.analysis.compound.detect_compound_signals`
    gives over the same steps."""

    def __init__(self, profile: CompoundProfile) -> None:
        self._p = profile
        self._n = 0
        self._confusion = 0
        self._entropy = _Prefix()
        self._margin = _Prefix()
        self._surprisal = _Prefix()
        self._recent_ids: deque[int] = deque(maxlen=profile.repetition_risk_ngram)
        self._seen: set[tuple[int, ...]] = set()
        self._repeat_window = _Window(profile.window)
        self._entropy_window = _Window(profile.window)
        self._mass_window = _Window(profile.window)
        self._hits = 0
        self._first_hit_share = 0.0

    def update(self, token_id: int, entropy: float, margin: float, surprisal: float, mass: float) -> None:
        p = self._p
        self._n += 1
        if entropy > p.confusion_entropy_bits and margin > p.confusion_margin_min:  # False for NaN
            self._confusion += 1
        self._entropy.push(entropy)
        self._margin.push(margin)
        self._surprisal.push(surprisal)
        self._recent_ids.append(token_id)
        repeat = 0.0
        if len(self._recent_ids) == p.repetition_risk_ngram:
            gram = tuple(self._recent_ids)
            repeat = 1.0 if gram in self._seen else 0.0
            self._seen.add(gram)
        self._repeat_window.push(repeat)
        self._entropy_window.push(entropy)
        self._mass_window.push(mass)
        if self._n >= p.window:
            share = self._repeat_window.mean()
            ent, top = self._entropy_window.mean(), self._mass_window.mean()
            calm = ent < p.repetition_risk_entropy_bits and top > p.repetition_risk_mass  # False for NaN
            if calm and share >= p.repetition_risk_share:
                if self._hits == 0:
                    self._first_hit_share = share
                self._hits += 1

    def severities(self) -> tuple[tuple[str, float], ...]:
        p, n = self._p, self._n
        out: list[tuple[str, float]] = []
        if n and self._confusion >= p.confusion_min_steps:
            share = self._confusion / n
            out.append(("confident_confusion", round(clip(0.35 + 0.65 * clip(3.0 * share, 0, 1), 0, 1), 4)))
        if n >= p.degeneration_min_steps:
            third = n // 3

            def change(prefix: _Prefix) -> float:
                return prefix.mean(n - third, n) - prefix.mean(0, third)

            ent, margin, surp = change(self._entropy), -change(self._margin), change(self._surprisal)
            if (
                ent > p.degeneration_entropy_rise_bits
                and margin > p.degeneration_margin_drop
                and surp > p.degeneration_surprisal_rise_bits
            ):
                excess = min(
                    ent / p.degeneration_entropy_rise_bits,
                    margin / p.degeneration_margin_drop,
                    surp / p.degeneration_surprisal_rise_bits,
                )
                out.append(("degenerating_generation", round(clip(0.5 + 0.25 * (excess - 1.0), 0.5, 1.0), 4)))
        if self._hits:
            covered = self._hits / max(1, n - p.window + 1)
            severity = clip(0.4 + 0.3 * self._first_hit_share + 0.3 * clip(2.0 * covered, 0, 1), 0, 1)
            out.append(("confident_repetition_risk", round(severity, 4)))
        return tuple(out)


@dataclass(frozen=True)
class LayerRows:
    """One step's per-layer values of one sequence ([L] each; None where not captured)."""

    update_ratio: Sequence[float] | np.ndarray | None = None
    mlp_update_ratio: Sequence[float] | np.ndarray | None = None
    attention_entropy: Sequence[float] | np.ndarray | None = None  # normalised, mean over heads


class RunningMedians:
    """Each layer's median of its finite values so far (``np.median`` of the same values)."""

    def __init__(self) -> None:
        self._sorted: list[list[float]] | None = None

    def push(self, row: Sequence[float] | np.ndarray | None) -> None:
        if row is None:
            return
        if self._sorted is None:
            self._sorted = [[] for _ in range(len(row))]
        for column, x in zip(self._sorted, row, strict=False):
            value = float(x)
            if math.isfinite(value):
                bisect.insort(column, value)

    def medians(self) -> np.ndarray | None:
        if self._sorted is None:
            return None
        out = np.full(len(self._sorted), np.nan)
        for layer, column in enumerate(self._sorted):
            n = len(column)
            if n:
                half = n // 2
                out[layer] = column[half] if n % 2 else (column[half - 1] + column[half]) / 2.0
        return out


class RunningLayerUpdates:
    """``layer_update_anomaly_detected`` of the steps seen so far: the severity the risk reads."""

    def __init__(self, calibration: LayerReferences | None = None) -> None:
        self._calibration = calibration
        self._ratio, self._mlp, self._entropy = RunningMedians(), RunningMedians(), RunningMedians()
        self._seen = False

    def update(self, rows: LayerRows) -> None:
        self._ratio.push(rows.update_ratio)
        self._mlp.push(rows.mlp_update_ratio)
        self._entropy.push(rows.attention_entropy)
        self._seen = True

    def severity(self) -> float | None:
        if not self._seen:
            return None
        levels = TypicalLevels(self._ratio.medians(), self._mlp.medians(), self._entropy.medians())
        return judge_levels(levels, calibration=self._calibration).severity
