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

import math
from collections import deque
from dataclasses import dataclass

from corevital.analysis.early_warning import EarlyWarningTracker
from corevital.analysis.profiles import ModelProfile, RepetitionProfile
from corevital.analysis.repetition import (
    WordLoop,
    WordLoopDetector,
    WordSplitter,
    requested_repetition,
    unit_text,
)
from corevital.analysis.risk import Risk, RiskEvidence, combine, running_score
from corevital.analysis.running import (
    LayerRows,
    RunningCompound,
    RunningFeatures,
    RunningLayerUpdates,
    RunningMedians,
)
from corevital.analysis.updates import LayerReferences

__all__ = [  # the running statistics live in .running; these names stay importable from here
    "LayerRows",
    "LoopSoFar",
    "OnlineRepetitionDetector",
    "OnlineSequenceMonitor",
    "OnlineStep",
    "RepetitionSoFar",
    "RunningCompound",
    "RunningFeatures",
    "RunningLayerUpdates",
    "RunningMedians",
]


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
