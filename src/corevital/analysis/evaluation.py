"""Measured detection quality: ranking and calibration metrics, bootstrap CIs, Platt scaling, logistic models.

Conventions everywhere: ``labels`` are 1 for a failure (the positive class) and 0 for a success;
``scores`` are finite and higher means "more likely a failure"; ``probs`` are scores in [0, 1].
Invalid input (wrong shape, unequal lengths, labels outside {0, 1}, non-finite scores, an empty
sample) raises ``ValueError``. Metrics that need both classes return NaN when one is missing.

Fitting and curves come from scikit-learn (the ``validate`` extra, imported inside the functions
that need it): ``roc_curve`` (``sklearn.metrics.roc_curve``), ``PlattScaler.fit`` and
``fit_logistic`` (``LogisticRegression``), ``grouped_kfold`` (``GroupKFold``). The rest is numpy:

- ``auroc``: Mann–Whitney U with average ranks for ties; ``auprc``: average precision with equal
  scores forming one threshold, the definition of scikit-learn's ``average_precision_score``. Both
  are called a thousand times per score by the group bootstrap, so they are plain numpy (scikit-learn's
  input validation alone costs more than the computation); the tests check them against
  scikit-learn and against brute-force references.
- ``reliability_bins`` / ``compute_ece``: equal-width bins on [0, 1], the last bin closed;
  ``compute_ece_equal_mass``: the records sorted by probability and cut into bins of equal size
  (adaptive binning: no bin is nearly empty when the probabilities crowd in one region).
- ``ece_noise_floor``: the ECE a perfectly calibrated predictor shows on a sample of this size and
  these probabilities (labels drawn as Bernoulli(p)); ECE is biased upwards on small samples, and
  a measured ECE is only readable against it.
- ``calibration_error_debiased``: the debiased estimator of the binned squared calibration error of
  Kumar, Liang & Ma (2019), whose bias from the labels' binomial noise is subtracted bin by bin, so
  that a calibrated predictor reads about 0 at any N; an L2 error, not the L1 ECE.
- ``bootstrap_ci``: percentile bootstrap; resamples where the metric is NaN are skipped. With
  ``groups`` whole groups are resampled (a cluster bootstrap) so that repeated prompts do not
  narrow the interval.
- ``PlattScaler``: Platt (1999) with smoothed targets, fitted as an unpenalised logistic regression
  on the 1-D score (each record twice, as a failure weighted by its target and as a success
  weighted by one minus it: the cross-entropy with soft targets).
- The L2-penalised logistic model itself (``fit_logistic``, ``Standardizer``) is
  :mod:`.logistic`; ``grouped_kfold`` gives honest out-of-fold splits when several
  records share a prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from corevital.analysis.logistic import as_labels, sigmoid_array

__all__ = [
    "ConfidenceInterval",
    "NoiseFloor",
    "PlattScaler",
    "ReliabilityBins",
    "RocCurve",
    "auprc",
    "auroc",
    "bootstrap_ci",
    "calibration_error_debiased",
    "compute_ece",
    "compute_ece_equal_mass",
    "ece_noise_floor",
    "grouped_kfold",
    "reliability_bins",
    "roc_curve",
]

Metric = Callable[[np.ndarray, np.ndarray], float]


def _check(scores: object, labels: object, what: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{what} are empty")
    y = as_labels(labels, s.size)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{what} must be finite ({int((~np.isfinite(s)).sum())} are not)")
    return s, y


def _check_probs(probs: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    p, y = _check(probs, labels, "probs")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(f"probs must lie in [0, 1], got range [{p.min():g}, {p.max():g}]")
    return p, y


# -- ranking metrics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RocCurve:
    fpr: np.ndarray  # false-positive rate per threshold, from 0 to 1
    tpr: np.ndarray  # true-positive rate per threshold, from 0 to 1
    thresholds: np.ndarray  # score >= threshold is called a failure; the first is +inf


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a failure > score of a success), ties counting 1/2."""
    s, y = _check(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = float(_average_ranks(s)[y == 1].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _threshold_counts(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives when calling ``score >= t`` a failure, for each distinct t (descending)."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tps = np.cumsum(y_sorted)[last].astype(np.float64)
    fps = (last + 1) - tps
    return tps, fps, s_sorted[last]


def auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision, sum over thresholds of (R_k - R_{k-1})·P_k; NaN unless both classes occur.

    A sample of failures only would score 1.0 whatever the scores, so it is NaN like ``auroc``.
    """
    s, y = _check(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return float("nan")
    tps, fps, _ = _threshold_counts(s, y)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> RocCurve:
    """The ROC curve at every distinct score, starting at (0, 0); needs both classes."""
    from sklearn.metrics import roc_curve as sk_roc_curve

    s, y = _check(scores, labels)
    if y.min() == y.max():
        raise ValueError("a ROC curve needs both failures (1) and successes (0) in labels")
    fpr, tpr, thresholds = sk_roc_curve(y, s, drop_intermediate=False)
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thresholds)


# -- calibration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityBins:
    edges: np.ndarray  # [n_bins + 1] from 0 to 1; bin i is [edges[i], edges[i+1]), the last one closed
    counts: np.ndarray  # [n_bins] records per bin
    mean_predicted: np.ndarray  # [n_bins] mean probability in the bin, NaN when empty
    observed_rate: np.ndarray  # [n_bins] share of failures in the bin, NaN when empty


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> ReliabilityBins:
    """Per equal-width bin on [0, 1]: count, mean predicted probability and observed failure rate."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _check_probs(probs, labels)
    edges = np.arange(n_bins + 1) / n_bins  # exact i / n, unlike linspace (0.3 is 3 / 10, not 3 · 0.1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sum_p / counts, np.nan)
        rate = np.where(counts > 0, sum_y / counts, np.nan)
    return ReliabilityBins(edges=edges, counts=counts, mean_predicted=mean_p, observed_rate=rate)


def compute_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: sum over non-empty bins of (count / N)·|observed - mean predicted|."""
    bins = reliability_bins(probs, labels, n_bins)
    full = bins.counts > 0
    gaps = np.abs(bins.observed_rate[full] - bins.mean_predicted[full])
    return float(np.sum(bins.counts[full] * gaps) / bins.counts.sum())


def compute_ece_equal_mass(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """ECE over ``n_bins`` equal-mass bins: the records in order of probability (stable sort) cut
    into bins whose sizes differ by at most one; fewer records than bins gives one record per bin."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _check_probs(probs, labels)
    order = np.argsort(p, kind="mergesort")
    total = 0.0
    for part in np.array_split(order, min(n_bins, p.size)):
        total += part.size * abs(float(y[part].mean()) - float(p[part].mean()))
    return total / p.size


def calibration_error_debiased(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = 10, *, squared: bool = False
) -> float:
    """Debiased L2 calibration error over equal-mass bins (Kumar, Liang & Ma, "Verified Uncertainty
    Calibration", NeurIPS 2019; ``calibration.get_calibration_error(probs, labels, p=2, debias=True)``
    of their ``uncertainty-calibration`` package, ``unbiased_l2_ce`` over ``get_equal_bins``).

    Per bin b of n_b records with mean probability p̄_b and failure rate ȳ_b, the plug-in
    (p̄_b − ȳ_b)² overestimates the squared gap by the variance of ȳ_b; the estimator subtracts its
    unbiased estimate ȳ_b(1 − ȳ_b) / (n_b − 1) and weights by n_b / N:
    ``sqrt(max(Σ_b n_b/N · ((p̄_b − ȳ_b)² − ȳ_b(1 − ȳ_b)/(n_b − 1)), 0))``; a bin of fewer than 2
    records adds 0. The sum is unbiased for the binned squared error, so a perfectly calibrated
    predictor reads about 0 at any N (its noise is centred on 0, not a floor above it, though it
    still spreads on small N), and the estimate can be 0 when the noise exceeds the gap
    (``squared=True`` returns the sum itself, unclipped: their ``unbiased_square_ce``, the unbiased
    quantity). It is an L2 error: comparable in scale to the L1 ECE (on the same bins the true L2
    error is at least the true L1 error, equal when every bin has the same gap) but not the same
    quantity.

    Bins as theirs: the probabilities sorted and cut into chunks of ceil(N / n_bins) (fewer chunks
    when that divides N unevenly; min(n_bins, N) parts), a bin edge at the midpoint between
    neighbouring chunks, the last edge 1.0, repeated edges merged; a record goes to the first bin
    whose edge is at or above it (a probability on an edge belongs to the lower bin).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _check_probs(probs, labels)
    ordered = np.sort(p)
    size = -(-p.size // min(n_bins, p.size))  # ceil(N / parts), their split()
    starts = np.arange(size, p.size, size)
    edges = np.unique(np.append((ordered[starts - 1] + ordered[starts]) / 2.0, 1.0))
    index = np.searchsorted(edges, p)
    order = np.argsort(index)  # their fast_bin: the same sort, so that each bin's sums match theirs
    sorted_index = index[order]
    parts = np.split(order, np.searchsorted(sorted_index, np.arange(1, edges.size)))
    y_float = y.astype(np.float64)
    errors = np.zeros(len(parts))
    for b, part in enumerate(parts):
        if part.size < 2:
            continue
        mean_label = np.mean(y_float[part])
        errors[b] = abs(np.mean(p[part]) - mean_label) ** 2 - mean_label * (1.0 - mean_label) / (
            part.size - 1.0
        )
    weights = np.array([part.size * 1.0 / p.size for part in parts])
    total = float(np.dot(weights, errors))
    return total if squared else max(total, 0.0) ** 0.5


@dataclass(frozen=True)
class NoiseFloor:
    mean: float  # expected ECE of a perfectly calibrated predictor at these probabilities
    p95: float  # its 95th percentile: a measured ECE below it is consistent with calibration


def ece_noise_floor(
    probs: np.ndarray, metric: Metric = compute_ece, *, n_sims: int = 1000, seed: int = 0
) -> NoiseFloor:
    """``metric`` (an ECE) of the probabilities ``probs`` against labels drawn as Bernoulli(p),
    ``n_sims`` times: what sampling noise alone gives when the predictor is perfectly calibrated."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probs must be a non-empty 1-D array of probabilities in [0, 1]")
    rng = np.random.default_rng(seed)
    values = np.array([metric(p, (rng.random(p.size) < p).astype(np.int64)) for _ in range(n_sims)])
    return NoiseFloor(mean=float(values.mean()), p95=float(np.quantile(values, 0.95)))


# -- bootstrap ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfidenceInterval:
    estimate: float  # the metric on the full sample
    low: float  # NaN when no resample gave a finite metric
    high: float


def bootstrap_ci(
    metric: Metric,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> ConfidenceInterval:
    """Percentile bootstrap (1 - alpha) interval of ``metric(scores, labels)``.

    Resamples whose metric is NaN (one class only) are skipped. With ``groups``, whole groups are
    drawn with replacement (a cluster bootstrap), so records of one prompt stay together.
    """
    s, y = _check(scores, labels)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    if groups is None:
        draws: Iterator[np.ndarray] = (rng.integers(0, s.size, size=s.size) for _ in range(n_resamples))
    else:
        g = np.asarray(groups)
        if g.shape != s.shape:
            raise ValueError(f"groups must have the shape of scores {s.shape}, got {g.shape}")
        _, inverse = np.unique(g, return_inverse=True)
        members = np.split(np.argsort(inverse, kind="mergesort"), np.cumsum(np.bincount(inverse))[:-1])
        picks = rng.integers(0, len(members), size=(n_resamples, len(members)))
        draws = (np.concatenate([members[k] for k in row]) for row in picks)
    values = np.array([metric(s[idx], y[idx]) for idx in draws], dtype=np.float64)
    values = values[np.isfinite(values)]
    estimate = float(metric(s, y))
    if values.size == 0:
        return ConfidenceInterval(estimate, float("nan"), float("nan"))
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return ConfidenceInterval(estimate, float(low), float(high))


# -- Platt scaling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlattScaler:
    """P(failure | s) = 1 / (1 + exp(a·s + b)); a < 0 when higher scores mean more failures."""

    a: float
    b: float

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray, *, max_iter: int = 100) -> PlattScaler:
        """Maximum likelihood with Platt's targets (n₊ + 1) / (n₊ + 2) and 1 / (n₋ + 2)."""
        from sklearn.linear_model import LogisticRegression

        s, y = _check(scores, labels)
        n_pos = float(y.sum())
        n_neg = float(y.size) - n_pos
        t = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
        column = np.r_[s, s][:, None]
        model = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12, max_iter=max_iter)
        model.fit(column, np.r_[np.ones(s.size), np.zeros(s.size)], sample_weight=np.r_[t, 1.0 - t])
        return cls(a=-float(model.coef_[0, 0]), b=-float(model.intercept_[0]))

    def predict(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        return sigmoid_array(-(self.a * s + self.b))


# -- grouped cross-validation -------------------------------------------------------------------


def grouped_kfold(
    groups: np.ndarray, n_splits: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, test_idx) per fold; each group lies in one test fold only.

    scikit-learn's ``GroupKFold`` assigns groups largest first to the fold holding the fewest
    records so far; groups of equal size go in the order of their codes, which are a permutation
    drawn from ``seed`` (so the seed chooses among equally balanced splits).
    """
    from sklearn.model_selection import GroupKFold

    g = np.asarray(groups)
    if g.ndim != 1 or g.size == 0:
        raise ValueError(f"groups must be a non-empty 1-D array, got shape {g.shape}")
    _, inverse = np.unique(g, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    if not 2 <= n_splits <= n_groups:
        raise ValueError(f"n_splits must be between 2 and the number of groups ({n_groups}), got {n_splits}")
    # GroupKFold takes equal-sized groups in descending code order: the first drawn gets the top code.
    codes = np.empty(n_groups, dtype=np.int64)
    codes[np.random.default_rng(seed).permutation(n_groups)] = np.arange(n_groups - 1, -1, -1)
    split = GroupKFold(n_splits=n_splits).split(np.zeros((g.size, 1)), groups=codes[inverse])
    return [(np.asarray(train), np.asarray(test)) for train, test in split]
