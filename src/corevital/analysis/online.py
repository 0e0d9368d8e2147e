"""Analysis while a sequence is still being generated, one step at a time.

:class:`OnlineSequenceMonitor` keeps the state the live stream and intervention need for one
sequence: the early-warning tracker (the same code the post-run report uses), an incremental
repetition-loop detector with the same definition as the post-run flag, and NaN/Inf seen so far.
Its running risk is an estimate available at every step: the early-warning failure risk, raised
to the profile's repetition floor once a loop has formed and to 1.0 after a NaN or Inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from corevital.analysis.early_warning import EarlyWarningTracker
from corevital.analysis.profiles import ModelProfile, RepetitionProfile


@dataclass(frozen=True)
class LoopSoFar:
    period: int
    first_step: int
    span: int


class OnlineRepetitionDetector:
    """Incremental loop detection: O(max_period) work per token, constant memory.

    For every period p the detector keeps the length of the current run of positions where
    ``token[i] == token[i - p]``; a run of length r means the last ``r + p`` tokens are periodic
    with period p. A loop exists once that span reaches ``max(min_span, min_repeats * p)``.
    """

    def __init__(self, profile: RepetitionProfile) -> None:
        self._profile = profile
        self._recent: list[int] = []
        self._runs = [0] * (profile.max_period + 1)
        self._step = -1
        self.loop: LoopSoFar | None = None

    def update(self, token_id: int) -> LoopSoFar | None:
        """Take the next token; return the loop as soon as one has formed (and on later steps)."""
        self._step += 1
        recent, profile = self._recent, self._profile
        recent.append(token_id)
        if len(recent) > profile.max_period + 1:
            del recent[0]
        best: LoopSoFar | None = None
        for period in range(1, profile.max_period + 1):
            if len(recent) > period and recent[-1] == recent[-1 - period]:
                self._runs[period] += 1
            else:
                self._runs[period] = 0
            span = self._runs[period] + period
            qualifies = self._runs[period] > 0 and span >= max(profile.min_span, profile.min_repeats * period)
            if qualifies and (best is None or span > best.span):
                best = LoopSoFar(period=period, first_step=self._step - span + 1, span=span)
        if best is not None and (self.loop is None or best.span >= self.loop.span):
            self.loop = best
        return self.loop


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
    def __init__(self, profile: ModelProfile) -> None:
        self._profile = profile
        self._warning = EarlyWarningTracker(profile.early_warning)
        self._repetition = OnlineRepetitionDetector(profile.repetition)
        self._non_finite = False

    def update(
        self,
        *,
        token_id: int,
        entropy: float,
        surprisal: float,
        margin: float,
        topk_mass: float,
        non_finite: bool = False,
    ) -> OnlineStep:
        warning = self._warning.update(entropy, margin, surprisal)
        loop = self._repetition.update(token_id)
        self._non_finite = self._non_finite or non_finite or not math.isfinite(float(entropy))
        risk = warning.failure_risk
        if loop is not None:
            risk = max(risk, self._profile.risk.repetition_floor)
        if self._non_finite:
            risk = 1.0
        return OnlineStep(
            step=warning.step,
            token_id=token_id,
            entropy=_value(entropy),
            surprisal=_value(surprisal),
            margin=_value(margin),
            topk_mass=_value(topk_mass),
            running_risk=float(risk),
            warnings_fired=warning.fired,
            loop=loop,
            non_finite=self._non_finite,
        )
