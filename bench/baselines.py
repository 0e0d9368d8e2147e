"""The best single baseline of a set of runs and a score's paired AUROC difference to it (bench scripts).

The validation suite's baselines (:data:`corevital.validation.suite.BASELINE_KEYS`) are read as its
tables read them: a baseline that cannot be computed (NaN) counts as its lowest score, and the best
one is the baseline with the highest AUROC on the runs at hand (the first in ``BASELINE_KEYS`` order
on a tie). ``bench/risk_weights.py`` and ``bench/labelled_calibration.py`` print their per-kind
tables with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from corevital.analysis.evaluation import ConfidenceInterval, auroc, bootstrap_ci

NAN_SCORE = -1e9  # a baseline's score where it cannot be computed: below every real one


@dataclass(frozen=True)
class BestBaseline:
    key: str
    auroc: float
    scores: np.ndarray  # its score of every run, NaN as NAN_SCORE


def best_baseline(baselines: Mapping[str, Sequence[float]], labels: np.ndarray) -> BestBaseline:
    """The baseline (key: every run's score, in ``labels``' order) whose AUROC on ``labels`` is highest."""
    scores = {k: np.nan_to_num(np.asarray(v, dtype=np.float64), nan=NAN_SCORE) for k, v in baselines.items()}
    aurocs = {k: auroc(s, labels) for k, s in scores.items()}
    best = max(aurocs, key=lambda k: aurocs[k])
    return BestBaseline(best, aurocs[best], scores[best])


def paired_auroc_difference(
    ours: np.ndarray, theirs: np.ndarray, labels: np.ndarray, groups: np.ndarray, resamples: int
) -> ConfidenceInterval:
    """AUROC of ``ours`` minus AUROC of ``theirs`` on the same runs, with its 95% interval: both scores
    read on the same resamples of whole groups (a paired cluster bootstrap)."""
    pair = np.stack([ours, theirs], axis=1)
    index = np.arange(len(labels), dtype=np.float64)

    def diff(idx: np.ndarray, y: np.ndarray) -> float:
        sel = idx.astype(np.int64)
        return float(auroc(pair[sel, 0], y) - auroc(pair[sel, 1], y))

    return bootstrap_ci(diff, index, labels, n_resamples=resamples, groups=groups)
