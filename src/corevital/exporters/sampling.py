"""Sampling for production: which finished runs are kept (stored and exported).

Three policies, combinable: every Nth run (``sample_every``), a random fraction with an optional
seed (``sample_rate``, ``sample_seed``), only runs at or above a risk score (``sample_min_risk``).
Every run is still captured and analysed; the policy only decides what is kept. A kept report
records the policy in ``extensions.sampling`` with its weight (the runs it stands for), so that
counters summed over kept reports estimate the counts of all runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corevital.report.schema import SamplingInfo

if TYPE_CHECKING:
    from corevital.config import Settings
    from corevital.report.schema import Report


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass
class Sampler:
    """Decides, run by run, which reports are kept. Not thread-safe (the caller holds a lock)."""

    every: int = 1
    rate: float = 1.0
    seed: int | None = None
    min_risk: float | None = None
    seen: int = 0
    kept: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError("every must be >= 1")
        if not 0.0 < self.rate <= 1.0:
            raise ValueError("rate must be in (0, 1]")
        self._rng = random.Random(self.seed)

    @classmethod
    def from_settings(cls, settings: Settings) -> Sampler:
        return cls(
            every=settings.sample_every,
            rate=settings.sample_rate,
            seed=settings.sample_seed,
            min_risk=settings.sample_min_risk,
        )

    @property
    def active(self) -> bool:
        return self.every > 1 or self.rate < 1.0 or self.min_risk is not None

    @property
    def policy(self) -> str:
        parts = []
        if self.every > 1:
            parts.append(f"every {self.every}")
        if self.rate < 1.0:
            parts.append(
                f"rate {_number(self.rate)}" + (f" (seed {self.seed})" if self.seed is not None else "")
            )
        if self.min_risk is not None:
            parts.append(f"risk >= {_number(self.min_risk)}")
        return ", ".join(parts) or "all"

    @property
    def fraction(self) -> float:
        """The expected fraction kept by the every-N and rate policies (1 with neither)."""
        return self.rate / self.every

    def decide(self, report: Report) -> SamplingInfo | None:
        """Whether ``report`` is kept, as its ``extensions.sampling`` (None: no policy, keep all)."""
        if not self.active:
            return None
        self.seen += 1
        keep = True
        if self.every > 1:
            keep = (self.seen - 1) % self.every == 0
        if self.rate < 1.0:
            keep = self._rng.random() < self.rate and keep  # draw for every run: the sequence is seeded
        if self.min_risk is not None:
            keep = keep and _risk(report) >= self.min_risk
        if keep:
            self.kept += 1
        if self.min_risk is not None:
            # kept runs above a threshold stand for themselves; the kept fraction is observed
            kept_fraction, weight = self.kept / self.seen, 1.0
        else:
            kept_fraction, weight = self.fraction, 1.0 / self.fraction
        return SamplingInfo(
            policy=self.policy,
            kept=keep,
            kept_fraction=kept_fraction,
            weight=weight,
            runs_seen=self.seen,
            runs_kept=self.kept,
        )


def _risk(report: Report) -> float:
    risk = report.extensions.risk
    return risk.risk_score if risk is not None and risk.risk_score is not None else 0.0


def report_weight(report: Report) -> float:
    """How many runs ``report`` stands for: its sampling weight, 1 when it was not sampled."""
    sampling = report.extensions.sampling
    return sampling.weight if sampling is not None else 1.0


__all__ = ["Sampler", "report_weight"]
