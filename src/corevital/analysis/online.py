"""Analysis while a sequence is still being generated, one step at a time.

:class:`OnlineSequenceMonitor` keeps the state the live stream and intervention need for one
sequence: the early-warning tracker (the same code the post-run report uses), incremental
repetition-loop detectors on the token ids and on the decoded words (the same definitions as the
post-run flag), and NaN/Inf seen so far.

Its ``running_risk`` is the report's risk model (:func:`corevital.analysis.risk.combine`) applied to
the steps seen so far: the continuous features (entropy mean, 90th percentile and trend, surprisal
mean and 3-step peak, margin, early warning), the compound signals computed from those values
(``confident_confusion``, ``degenerating_generation``, ``confident_repetition_risk``), the
repetition loop and NaN/Inf are kept as incremental statistics, so a step costs O(1) apart from the
loop detectors' O(max period) and an O(log n) sorted insert. A silenced or sharpened sub-layer
(``layer_update_anomaly_detected``, :mod:`corevital.analysis.updates`) is judged on each layer's
median so far of its update ratio, MLP update ratio and attention entropy (per-layer sorted
inserts, O(L log n)), with the report's own judge and calibration profile when the step hands the
layer rows in. What needs the prompt's attention or the whole run's shape (mid-layer anomaly,
attention collapse, norm jumps, ``attention_bottleneck``, ``context_loss``) and a labelled
calibration model are known only after the run, so when they fire the report's risk is higher than
the last running risk. Without them, the last step's running risk is the report's risk (up to
float summation order).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from corevital.analysis.early_warning import EarlyWarningTracker
from corevital.analysis.profiles import CompoundProfile, ModelProfile, RepetitionProfile
from corevital.analysis.repetition import (
    WordLoop,
    WordLoopDetector,
    WordSplitter,
    requested_repetition,
    unit_text,
)
from corevital.analysis.risk import (
    MIN_TREND_STEPS,
    REPEAT_NGRAM,
    Risk,
    RiskEvidence,
    RiskFeatures,
    combine,
    running_score,
)
from corevital.analysis.stats import clip
from corevital.analysis.updates import LayerReferences, TypicalLevels, judge_levels


@dataclass(frozen=True)
class LoopSoFar:
    period: int  # tokens (word loops: mean tokens per repeat)
    first_step: int
    span: int  # tokens
    level: str = "tokens"  # "tokens" or "words"
    last_step: int | None = None
    period_words: int | None = None
    unit: str | None = None  # word loops: the repeated unit, normalised
    requested: bool = False  # the prompt asks for repetition


class OnlineRepetitionDetector:
    """Incremental loop detection on token ids: O(max_period) work per token, constant memory.

    For every period p the detector keeps the length of the current run of positions where
    ``token[i] == token[i - p]``; a run of length r means the last ``r + p`` tokens are periodic
    with period p. A loop exists once that span reaches ``max(min_span, min_repeats * p)``.
    """

    def __init__(self, profile: RepetitionProfile) -> None:
        self._profile = profile
        self._recent: deque[int] = deque(maxlen=profile.max_period + 1)
        self._runs = [0] * (profile.max_period + 1)
        self._step = -1
        self.loop: LoopSoFar | None = None

    def update(self, token_id: int) -> LoopSoFar | None:
        """Take the next token; return the loop as soon as one has formed (and on later steps)."""
        self._step += 1
        recent, profile = self._recent, self._profile
        recent.append(token_id)
        n = len(recent)
        best: LoopSoFar | None = None
        for period in range(1, profile.max_period + 1):
            if n > period and recent[n - 1] == recent[n - 1 - period]:
                self._runs[period] += 1
            else:
                self._runs[period] = 0
            span = self._runs[period] + period
            qualifies = self._runs[period] > 0 and span >= max(profile.min_span, profile.min_repeats * period)
            if qualifies and (best is None or span > best.span):
                best = LoopSoFar(
                    period=period, first_step=self._step - span + 1, span=span, last_step=self._step
                )
        if best is not None and (self.loop is None or best.span >= self.loop.span):
            self.loop = best
        return self.loop


def _word_loop_so_far(loop: WordLoop, requested: bool) -> LoopSoFar:
    return LoopSoFar(
        period=max(1, round(loop.span / loop.repeats)),
        first_step=loop.first_step,
        span=loop.span,
        level="words",
        last_step=loop.last_step,
        period_words=loop.period_words,
        unit=unit_text(loop.unit),
        requested=requested,
    )


class RepetitionSoFar:
    """Token and word loops of one sequence so far; the one covering more tokens (ties: tokens)."""

    def __init__(self, profile: RepetitionProfile, *, prompt_text: str = "") -> None:
        self._tokens = OnlineRepetitionDetector(profile)
        self._splitter = WordSplitter()
        self._words = WordLoopDetector(profile)
        self._requested = requested_repetition(prompt_text)
        self._step = -1

    def update(self, token_id: int, token_text: str | None) -> LoopSoFar | None:
        self._step += 1
        tokens = self._tokens.update(token_id)
        if token_text is not None:
            for word in self._splitter.feed(token_text, self._step):
                self._words.update(word)
        words = self._words.loop
        if words is not None and (tokens is None or words.span > tokens.span):
            return _word_loop_so_far(words, self._requested)
        if tokens is not None and self._requested:
            return LoopSoFar(**{**tokens.__dict__, "requested": True})
        return tokens


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


@dataclass(frozen=True)
class OnlineStep:
    """What is known about a sequence after one more generated token."""

    step: int
    token_id: int
    entropy: float | None
    surprisal: float | None
    margin: float | None
    topk_mass: float | None
    running_risk: float
    warnings_fired: tuple[str, ...]  # early-warning signals that fired for the first time now
    loop: LoopSoFar | None
    non_finite: bool  # NaN or Inf seen at this step or before


def _value(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


class OnlineSequenceMonitor:
    """Online state of one sequence. ``prompt_text``: lets a loop the prompt asks for be recognised;
    ``calibration``: the profile the report judges layer updates against."""

    def __init__(
        self, profile: ModelProfile, *, prompt_text: str = "", calibration: LayerReferences | None = None
    ) -> None:
        self._profile = profile
        self._warning = EarlyWarningTracker(profile.early_warning)
        self._repetition = RepetitionSoFar(profile.repetition, prompt_text=prompt_text)
        self._features = RunningFeatures()
        self._requested = requested_repetition(prompt_text)
        self._compound = RunningCompound(profile.compound)
        self._layers = RunningLayerUpdates(calibration)
        self._non_finite = False
        self._steps = 0
        self._evidence: RiskEvidence | None = None

    def update(
        self,
        *,
        token_id: int,
        entropy: float,
        surprisal: float,
        margin: float,
        topk_mass: float,
        non_finite: bool = False,
        token_text: str | None = None,
        layers: LayerRows | None = None,
    ) -> OnlineStep:
        entropy, surprisal, margin, topk_mass = (
            float(entropy),
            float(surprisal),
            float(margin),
            float(topk_mass),
        )
        self._steps += 1
        warning = self._warning.update(entropy, margin, surprisal)
        loop = self._repetition.update(token_id, token_text)
        self._features.update(entropy, surprisal, margin, token_id)
        self._compound.update(token_id, entropy, margin, surprisal, topk_mass)
        self._non_finite = self._non_finite or non_finite or not math.isfinite(entropy)
        if layers is not None:
            self._layers.update(layers)
        found = RiskEvidence(
            features=self._features.features(warning.failure_risk),
            compound=self._compound.severities(),
            loop=loop is not None and not loop.requested,
            loop_coverage=loop.span / self._steps if loop is not None else 0.0,
            non_finite=self._non_finite,
            layer_update=self._layers.severity(),
            repetition_requested=self._requested,
        )
        self._evidence = found
        return OnlineStep(
            step=warning.step,
            token_id=token_id,
            entropy=_value(entropy),
            surprisal=_value(surprisal),
            margin=_value(margin),
            topk_mass=_value(topk_mass),
            running_risk=running_score(found, self._profile.risk),
            warnings_fired=warning.fired,
            loop=loop,
            non_finite=self._non_finite,
        )

    def risk(self) -> Risk | None:
        """The running risk with its factors (the report's :func:`~corevital.analysis.risk.combine`),
        after the last step; None before the first."""
        return None if self._evidence is None else combine(self._evidence, self._profile.risk)
