"""The validation table: how well each score separates failed from correct runs, per split.

For every score (the risk score, and the single-pass baselines of
:data:`corevital.analysis.calibration.features.BASELINES`): AUROC and AUPRC with 95% percentile
bootstrap intervals (1,000 resamples of whole groups, fixed seed), and, for the scores that claim to be
probabilities (the risk scores), ECE over 10 equal-width bins. Failure = the positive class; higher
score = more likely failure. The risk score's distribution on the split is given too, so a
saturated or constant score is visible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from corevital.analysis.calibration.features import BASELINES, RunFeatures
from corevital.analysis.evaluation import (
    ConfidenceInterval,
    Metric,
    NoiseFloor,
    auprc,
    auroc,
    bootstrap_ci,
    calibration_error_debiased,
    compute_ece,
    compute_ece_equal_mass,
    ece_noise_floor,
)


@dataclass(frozen=True)
class LabelledRun:
    record_id: str
    split: str
    task: str | None
    group: str
    failed: bool
    output: str
    finish_reason: str
    risk_score: float
    heuristic_risk_score: float
    features: RunFeatures


@dataclass(frozen=True)
class ScoreRow:
    name: str
    label: str
    is_probability: bool
    auroc: ConfidenceInterval
    auprc: ConfidenceInterval
    ece: ConfidenceInterval | None = None
    ece_equal_mass: ConfidenceInterval | None = None
    ece_noise_floor: NoiseFloor | None = None  # of a perfectly calibrated score at these values and N
    calibration_error_debiased: ConfidenceInterval | None = None  # L2, equal-mass bins, ~0 if calibrated


@dataclass(frozen=True)
class Distribution:
    minimum: float
    p10: float
    p25: float
    median: float
    p75: float
    p90: float
    maximum: float
    histogram: tuple[int, ...]  # 10 equal-width bins over [0, 1]
    most_common_share: float  # share of runs holding the most common value (3 decimals)


@dataclass(frozen=True)
class SplitTable:
    split: str
    n: int
    failures: int
    rows: tuple[ScoreRow, ...]
    risk_distribution: Distribution
    tasks: dict[str, tuple[int, int]] = field(default_factory=dict)  # task -> (n, failures)

    @property
    def failure_rate(self) -> float:
        return self.failures / self.n if self.n else math.nan

    def row(self, name: str) -> ScoreRow:
        return next(r for r in self.rows if r.name == name)


def score_columns(
    runs: Sequence[LabelledRun], *, labelled_model: bool
) -> list[tuple[str, str, bool, np.ndarray]]:
    """(name, label, is_probability, scores) of every score the table compares."""
    columns: list[tuple[str, str, bool, np.ndarray]] = []
    if labelled_model:
        columns.append(("risk_score", "risk_score (labelled model)", True, _arr(r.risk_score for r in runs)))
        columns.append(
            (
                "heuristic_risk_score",
                "risk_score (heuristic)",
                True,
                _arr(r.heuristic_risk_score for r in runs),
            )
        )
    else:
        columns.append(("risk_score", "risk_score (heuristic)", True, _arr(r.risk_score for r in runs)))
    for name, label in BASELINES:
        values = _arr(getattr(r.features, name) for r in runs)
        columns.append(
            (name, label, False, np.where(np.isfinite(values), values, np.nanmax(values, initial=0.0)))
        )
    return columns


def _arr(values: Iterable[float]) -> np.ndarray:
    return np.asarray(list(values), dtype=np.float64)


def _ci(
    metric: Metric, scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int
) -> ConfidenceInterval:
    """The metric with a 95% interval from resampling whole groups (related items are not independent)."""
    if labels.min(initial=0) == labels.max(initial=0):
        return ConfidenceInterval(math.nan, math.nan, math.nan)
    return bootstrap_ci(metric, scores, labels, n_resamples=1000, seed=seed, groups=groups)


def distribution(scores: np.ndarray) -> Distribution:
    q = np.percentile(scores, [0, 10, 25, 50, 75, 90, 100]) if scores.size else np.full(7, np.nan)
    hist, _ = np.histogram(np.clip(scores, 0.0, 1.0), bins=10, range=(0.0, 1.0))
    _, counts = np.unique(np.round(scores, 3), return_counts=True)
    share = float(counts.max() / scores.size) if scores.size else math.nan
    v = [float(x) for x in q]
    return Distribution(
        minimum=v[0],
        p10=v[1],
        p25=v[2],
        median=v[3],
        p75=v[4],
        p90=v[5],
        maximum=v[6],
        histogram=tuple(int(h) for h in hist),
        most_common_share=share,
    )


def split_table(
    split: str, runs: Sequence[LabelledRun], *, labelled_model: bool, seed: int = 0
) -> SplitTable:
    labels = np.asarray([int(r.failed) for r in runs], dtype=np.int64)
    groups = np.asarray([r.group for r in runs])
    rows = []
    for name, label, is_prob, scores in score_columns(runs, labelled_model=labelled_model):
        ece = _ci(compute_ece, scores, labels, groups, seed) if is_prob else None
        ece_mass = _ci(compute_ece_equal_mass, scores, labels, groups, seed) if is_prob else None
        floor = ece_noise_floor(scores, n_sims=1000, seed=seed) if is_prob else None
        debiased = _ci(calibration_error_debiased, scores, labels, groups, seed) if is_prob else None
        rows.append(
            ScoreRow(
                name=name,
                label=label,
                is_probability=is_prob,
                auroc=_ci(auroc, scores, labels, groups, seed),
                auprc=_ci(auprc, scores, labels, groups, seed),
                ece=ece,
                ece_equal_mass=ece_mass,
                ece_noise_floor=floor,
                calibration_error_debiased=debiased,
            )
        )
    tasks: dict[str, tuple[int, int]] = {}
    for run in runs:
        n, f = tasks.get(run.task or "-", (0, 0))
        tasks[run.task or "-"] = (n + 1, f + int(run.failed))
    return SplitTable(
        split=split,
        n=len(runs),
        failures=int(labels.sum()),
        rows=tuple(rows),
        risk_distribution=distribution(_arr(r.risk_score for r in runs)),
        tasks=dict(sorted(tasks.items())),
    )
