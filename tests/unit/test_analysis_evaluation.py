"""Detection-quality statistics (analysis/evaluation.py, logistic.py) against hand values and references.

The references are slow and obviously correct: counting pairs, looping over thresholds, a plain
Newton iteration on the penalised log-loss, the greedy group-to-fold assignment written out; the
numpy metrics are also checked against scikit-learn's.
"""

from __future__ import annotations

import itertools
import math
import sys
from typing import Any

import numpy as np
import pytest

from corevital.analysis.evaluation import (
    PlattScaler,
    auprc,
    auroc,
    bootstrap_ci,
    compute_ece,
    compute_ece_equal_mass,
    ece_noise_floor,
    grouped_kfold,
    reliability_bins,
    roc_curve,
)
from corevital.analysis.logistic import Standardizer, fit_logistic

# -- slow, obviously-correct references -----------------------------------------------------------


def auroc_by_pairs(scores: np.ndarray, labels: np.ndarray) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def average_precision_by_loop(scores: np.ndarray, labels: np.ndarray) -> float:
    n_pos = int(sum(labels))
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        called = [y for s, y in zip(scores, labels, strict=True) if s >= t]
        tp = sum(called)
        recall, precision = tp / n_pos, tp / len(called)
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def newton_logistic(X: np.ndarray, y: np.ndarray, l2: float, w: np.ndarray | None = None) -> np.ndarray:
    """[intercept, *coef] minimising sum w·log-loss + (l2 / 2)·|coef|², by undamped Newton steps."""
    design = np.hstack([np.ones((X.shape[0], 1)), X])
    w = np.ones(X.shape[0]) if w is None else w
    penalty = np.full(design.shape[1], l2)
    penalty[0] = 0.0
    beta = np.zeros(design.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))
        grad = design.T @ (w * (p - y)) + penalty * beta
        hess = (design * (w * p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        beta = beta - step
        if np.max(np.abs(step)) < 1e-13:
            break
    return beta


def greedy_group_folds(groups: np.ndarray, n_splits: int, seed: int) -> list[np.ndarray]:
    """Test indices per fold: groups shuffled by seed, then largest first into the emptiest fold."""
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    shuffled = np.random.default_rng(seed).permutation(names.size).tolist()
    order = sorted(shuffled, key=lambda k: -counts[k])  # stable: shuffled order among equal sizes
    fold_of, sizes = {}, [0] * n_splits
    for k in order:
        fold = sizes.index(min(sizes))
        fold_of[k] = fold
        sizes[fold] += counts[k]
    return [np.array([i for i, k in enumerate(inverse) if fold_of[k] == f]) for f in range(n_splits)]


def tied_sample(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = rng.integers(0, 8, n).astype(float) + 0.7 * labels  # many ties, some signal
    return scores, labels


# -- ranking metrics ------------------------------------------------------------------------------


def test_auroc_and_auprc_on_the_textbook_example() -> None:
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert auroc(scores, labels) == pytest.approx(0.75)
    # thresholds 0.8, 0.4, 0.35, 0.1: recall steps 0.5 at P = 1 and 0.5 at P = 2/3
    assert auprc(scores, labels) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


@pytest.mark.parametrize("seed", range(6))
def test_auroc_matches_counting_all_pairs_with_ties(seed: int) -> None:
    scores, labels = tied_sample(seed)
    assert auroc(scores, labels) == pytest.approx(auroc_by_pairs(scores, labels), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_auprc_matches_an_explicit_loop_over_thresholds(seed: int) -> None:
    scores, labels = tied_sample(seed)
    assert auprc(scores, labels) == pytest.approx(average_precision_by_loop(scores, labels), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_ranking_metrics_agree_with_scikit_learn(seed: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    for scores, labels in (tied_sample(seed), informative_sample(300, seed)):
        assert auroc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
        expected = metrics.average_precision_score(labels, scores)
        assert auprc(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_ranking_extremes_and_degenerate_samples() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auroc(np.array([1.0, 2.0, 3.0, 4.0]), labels) == 1.0
    assert auroc(np.array([4.0, 3.0, 2.0, 1.0]), labels) == 0.0
    assert auroc(np.ones(4), labels) == 0.5
    assert auprc(np.ones(4), labels) == pytest.approx(0.5)  # one threshold: precision = base rate
    assert auprc(np.array([1.0, 2.0, 3.0, 4.0]), labels) == 1.0
    for metric in (auroc, auprc):
        assert math.isnan(metric(np.array([0.1, 0.2]), np.array([1, 1])))
        assert math.isnan(metric(np.array([0.1, 0.2]), np.array([0, 0])))


def test_roc_curve_starts_at_the_origin_and_its_area_is_the_auroc() -> None:
    for seed in range(4):
        scores, labels = tied_sample(seed)
        curve = roc_curve(scores, labels)
        assert (curve.fpr[0], curve.tpr[0], curve.thresholds[0]) == (0.0, 0.0, np.inf)
        assert (curve.fpr[-1], curve.tpr[-1]) == (1.0, 1.0)
        assert np.all(np.diff(curve.fpr) >= 0) and np.all(np.diff(curve.tpr) >= 0)
        assert np.all(np.diff(curve.thresholds) < 0)
        area = float(np.sum(np.diff(curve.fpr) * (curve.tpr[1:] + curve.tpr[:-1]) / 2))
        assert area == pytest.approx(auroc(scores, labels), abs=1e-12)


def test_roc_curve_by_hand() -> None:
    curve = roc_curve(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(curve.fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(curve.tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(curve.thresholds[1:], [0.8, 0.4, 0.35, 0.1])
    with pytest.raises(ValueError, match="both"):
        roc_curve(np.array([0.1, 0.2]), np.array([1, 1]))


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2, 0.3], [0, 1], "1-D with 3"),
        ([[0.1, 0.2]], [[0, 1]], "1-D"),
        ([0.1, float("nan")], [0, 1], "finite"),
        ([0.1, float("inf")], [0, 1], "finite"),
        ([0.1, 0.2], [0, 2], "0 \\(success\\) or 1"),
        ([0.1, 0.2], ["a", "b"], "0 \\(success\\) or 1"),
        ([], [], "empty"),
    ],
)
def test_invalid_input_is_a_clear_value_error(scores: list[Any], labels: list[Any], message: str) -> None:
    for metric in (auroc, auprc, roc_curve):
        with pytest.raises(ValueError, match=message):
            metric(np.asarray(scores), np.asarray(labels))


def test_boolean_labels_are_accepted() -> None:
    assert auroc(np.array([0.1, 0.9]), np.array([False, True])) == 1.0


# -- calibration ----------------------------------------------------------------------------------


def test_reliability_bins_and_ece_on_a_hand_example() -> None:
    probs = np.array([0.05, 0.15, 0.15, 0.95, 1.0, 0.5])
    labels = np.array([0, 1, 0, 1, 1, 0])
    bins = reliability_bins(probs, labels, n_bins=10)
    assert bins.counts.tolist() == [1, 2, 0, 0, 0, 1, 0, 0, 0, 2]  # 1.0 in the last bin, 0.5 in [0.5, 0.6)
    np.testing.assert_allclose(bins.mean_predicted[[0, 1, 5, 9]], [0.05, 0.15, 0.5, 0.975])
    np.testing.assert_allclose(bins.observed_rate[[0, 1, 5, 9]], [0.0, 0.5, 0.0, 1.0])
    assert np.isnan(bins.mean_predicted[2]) and np.isnan(bins.observed_rate[7])
    np.testing.assert_allclose(bins.edges, np.arange(11) / 10)
    # (1·0.05 + 2·0.35 + 1·0.5 + 2·0.025) / 6
    assert compute_ece(probs, labels, n_bins=10) == pytest.approx(1.3 / 6)


def test_bin_edges_are_exact_tenths() -> None:
    bins = reliability_bins(np.array([0.3, 0.7, 0.0, 0.1]), np.array([0, 1, 0, 1]), n_bins=10)
    assert np.flatnonzero(bins.counts).tolist() == [0, 1, 3, 7]


def test_ece_is_small_for_calibrated_probabilities_and_large_for_overconfident_ones() -> None:
    rng = np.random.default_rng(1)
    probs = rng.random(50_000)
    labels = (rng.random(probs.size) < probs).astype(int)
    assert compute_ece(probs, labels) < 0.01
    overconfident = np.where(probs > 0.5, 1.0, 0.0)
    assert compute_ece(overconfident, labels) == pytest.approx(0.25, abs=0.01)


def ece_equal_mass_by_loop(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Sorted records dealt into bins of size ceil / floor of N / n_bins, the larger ones first."""
    pairs = sorted(zip(probs.tolist(), labels.tolist(), strict=True), key=lambda pl: pl[0])
    size, extra = divmod(len(pairs), n_bins)
    total, start = 0.0, 0
    for b in range(n_bins):
        part = pairs[start : start + size + (1 if b < extra else 0)]
        start += len(part)
        if part:
            total += len(part) * abs(
                sum(y for _, y in part) / len(part) - sum(p for p, _ in part) / len(part)
            )
    return total / len(pairs)


def test_equal_mass_ece_on_a_hand_example_and_against_the_loop() -> None:
    probs = np.array([0.1, 0.9, 0.2, 0.8])
    labels = np.array([0, 1, 1, 1])
    # two bins: {0.1, 0.2} with one failure (|0.5 - 0.15|), {0.8, 0.9} both failed (|1 - 0.85|)
    assert compute_ece_equal_mass(probs, labels, n_bins=2) == pytest.approx((2 * 0.35 + 2 * 0.15) / 4)
    rng = np.random.default_rng(5)
    for n in (7, 40, 123):
        p = rng.random(n) ** 2  # crowded near 0: equal-width bins near 1 are nearly empty
        y = (rng.random(n) < p).astype(int)
        assert compute_ece_equal_mass(p, y, 10) == pytest.approx(ece_equal_mass_by_loop(p, y, 10))
    # fewer records than bins: one record per bin, |y - p| on average
    assert compute_ece_equal_mass(np.array([0.2, 0.7]), np.array([0, 1]), 10) == pytest.approx(0.25)


def test_the_noise_floor_is_what_a_perfectly_calibrated_predictor_shows_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(7)
    small = rng.uniform(0.1, 0.9, 40)
    floor = ece_noise_floor(small, n_sims=400, seed=1)
    # an independent simulation of the same quantity (another generator and seed)
    other = np.random.default_rng(99)
    direct = [compute_ece(small, (other.random(40) < small).astype(int)) for _ in range(400)]
    assert floor.mean == pytest.approx(float(np.mean(direct)), abs=0.01)
    assert 0.08 < floor.mean < floor.p95 < 0.3  # 40 records: an ECE of 0.05 is not measurable
    large = ece_noise_floor(rng.uniform(0.1, 0.9, 4000), n_sims=100, seed=1)
    assert large.mean < 0.025 and large.mean < floor.mean / 4
    mass = ece_noise_floor(small, compute_ece_equal_mass, n_sims=400, seed=1)
    assert mass.mean > 0.08  # equal-mass bins have the same floor problem
    with pytest.raises(ValueError, match="probabilities"):
        ece_noise_floor(np.array([0.2, 1.5]))


def test_probabilities_outside_the_unit_interval_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        compute_ece(np.array([0.2, 1.2]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_bins(np.array([-0.1, 0.5]), np.array([0, 1]))
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins(np.array([0.1, 0.5]), np.array([0, 1]), n_bins=0)


# -- bootstrap ------------------------------------------------------------------------------------


def informative_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return rng.normal(size=n) + labels, labels


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_n() -> None:
    small = bootstrap_ci(auroc, *informative_sample(200, 0), n_resamples=400)
    large = bootstrap_ci(auroc, *informative_sample(3200, 0), n_resamples=400)
    for ci in (small, large):
        assert ci.low <= ci.estimate <= ci.high
    assert small.estimate == auroc(*informative_sample(200, 0))
    # the width shrinks like 1 / sqrt(n): 16× the records, about a quarter of the width
    assert 0.15 < (large.high - large.low) / (small.high - small.low) < 0.4


def test_bootstrap_ci_is_deterministic_by_seed() -> None:
    scores, labels = informative_sample(100, 3)
    first = bootstrap_ci(auprc, scores, labels, n_resamples=200, seed=7)
    assert first == bootstrap_ci(auprc, scores, labels, n_resamples=200, seed=7)
    assert first != bootstrap_ci(auprc, scores, labels, n_resamples=200, seed=8)


def test_bootstrap_skips_resamples_with_a_single_class() -> None:
    scores, labels = np.array([0.9, 0.1, 0.2, 0.3, 0.4]), np.array([1, 0, 0, 0, 0])
    ci = bootstrap_ci(auroc, scores, labels, n_resamples=300)
    assert ci.estimate == 1.0 and ci.low == 1.0 and ci.high == 1.0  # ~1/3 of resamples lack a failure
    none = bootstrap_ci(auroc, np.array([0.1, 0.2]), np.array([1, 1]), n_resamples=20)
    assert math.isnan(none.estimate) and math.isnan(none.low) and math.isnan(none.high)


def test_grouped_bootstrap_does_not_count_copies_as_evidence() -> None:
    scores, labels = informative_sample(150, 5)
    copies, groups = np.repeat(scores, 10), np.repeat(np.arange(150), 10)
    plain = bootstrap_ci(auroc, scores, labels, n_resamples=300)
    naive = bootstrap_ci(auroc, copies, np.repeat(labels, 10), n_resamples=300)
    grouped = bootstrap_ci(auroc, copies, np.repeat(labels, 10), n_resamples=300, groups=groups)
    width = plain.high - plain.low
    assert naive.high - naive.low < 0.5 * width  # ten copies pretend to be ten times the evidence
    assert grouped.high - grouped.low == pytest.approx(width, rel=0.25)


def test_bootstrap_ci_rejects_bad_arguments() -> None:
    scores, labels = informative_sample(20, 0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(auroc, scores, labels, alpha=1.5)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(auroc, scores, labels, n_resamples=0)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci(auroc, scores, labels, groups=np.arange(3))


# -- Platt scaling --------------------------------------------------------------------------------


def test_platt_fit_recovers_a_known_logistic() -> None:
    rng = np.random.default_rng(11)
    a, b = -1.5, 0.5
    scores = rng.normal(0.0, 2.0, 20_000)
    labels = (rng.random(scores.size) < 1.0 / (1.0 + np.exp(a * scores + b))).astype(int)
    fitted = PlattScaler.fit(scores, labels)
    assert fitted.a == pytest.approx(a, abs=0.05)
    assert fitted.b == pytest.approx(b, abs=0.05)


def test_platt_solution_zeroes_the_gradient_of_the_smoothed_likelihood() -> None:
    rng = np.random.default_rng(2)
    scores = rng.normal(size=300)
    labels = (rng.random(300) < 1 / (1 + np.exp(-2 * scores))).astype(int)
    fitted = PlattScaler.fit(scores, labels)
    n_pos, n_neg = labels.sum(), labels.size - labels.sum()
    targets = np.where(labels == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    residual = targets - fitted.predict(scores)
    assert abs(float(np.sum(residual * scores))) < 1e-4 and abs(float(np.sum(residual))) < 1e-4


def test_platt_predict_is_stable_and_monotone() -> None:
    scaler = PlattScaler(a=-2.0, b=0.0)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        probs = scaler.predict(np.array([-1e6, -1.0, 0.0, 1.0, 1e6]))
    assert probs[0] == 0.0 and probs[-1] == 1.0 and probs[2] == 0.5
    assert np.all(np.diff(probs) >= 0) and np.all(np.diff(probs[1:4]) > 0)


def test_platt_fit_with_one_class_uses_the_smoothed_target() -> None:
    fitted = PlattScaler.fit(np.array([0.1, 0.5, 0.9]), np.array([1, 1, 1]))
    np.testing.assert_allclose(fitted.predict(np.array([0.1, 0.9])), 4 / 5, atol=1e-4)


# -- logistic regression --------------------------------------------------------------------------


def logistic_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    coef, intercept = np.array([1.0, -2.0, 0.5]), -0.3
    X = rng.normal(size=(n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ coef + intercept)))).astype(int)
    return X, y, coef, intercept


def test_logistic_fit_recovers_known_coefficients() -> None:
    X, y, coef, intercept = logistic_data(20_000, 0)
    fit = fit_logistic(X, y, l2=1e-6)
    assert fit.converged and fit.n_iter < 15
    np.testing.assert_allclose(fit.coef, coef, atol=0.08)
    assert fit.intercept == pytest.approx(intercept, abs=0.06)


def test_logistic_gradient_vanishes_at_the_penalised_solution() -> None:
    X, y, _, _ = logistic_data(500, 1)
    fit = fit_logistic(X, y, l2=3.0)
    residual = fit.predict_proba(X) - y
    assert abs(float(residual.sum())) < 1e-6  # the intercept is not penalised
    np.testing.assert_allclose(X.T @ residual + 3.0 * fit.coef, 0.0, atol=1e-6)


def test_a_stronger_penalty_shrinks_the_coefficients() -> None:
    X, y, _, _ = logistic_data(500, 2)
    norms = [float(np.linalg.norm(fit_logistic(X, y, l2=l2).coef)) for l2 in (0.1, 10.0, 1000.0)]
    assert norms[0] > norms[1] > norms[2] > 0


def test_integer_sample_weights_equal_repeated_rows() -> None:
    X, y, _, _ = logistic_data(200, 3)
    weights = np.random.default_rng(0).integers(0, 4, 200)
    weighted = fit_logistic(X, y, sample_weight=weights.astype(float))
    repeated = fit_logistic(np.repeat(X, weights, axis=0), np.repeat(y, weights))
    np.testing.assert_allclose(weighted.coef, repeated.coef, atol=1e-8)
    assert weighted.intercept == pytest.approx(repeated.intercept, abs=1e-8)


@pytest.mark.parametrize(("seed", "l2"), [(5, 0.03), (6, 1.0), (7, 30.0)])
def test_logistic_fit_matches_a_plain_newton_iteration(seed: int, l2: float) -> None:
    X, y, _, _ = logistic_data(400, seed)
    weights = np.random.default_rng(seed).uniform(0.5, 2.0, 400)
    for w in (None, weights):
        fit = fit_logistic(X, y, l2=l2, sample_weight=w)
        reference = newton_logistic(X, y, l2, w)
        assert fit.converged
        np.testing.assert_allclose(fit.coef, reference[1:], atol=1e-7)
        assert fit.intercept == pytest.approx(reference[0], abs=1e-7)


def test_separable_data_needs_a_penalty() -> None:
    X = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    y = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="l2 must be > 0"):
        fit_logistic(X, y, l2=0.0)
    fit = fit_logistic(X, y, l2=1.0)
    assert fit.converged and fit.coef[0] > 0
    np.testing.assert_allclose([fit.intercept, *fit.coef], newton_logistic(X, y, 1.0), atol=1e-7)


def test_a_fit_cut_short_says_it_did_not_converge() -> None:
    X, y, _, _ = logistic_data(300, 8)
    assert not fit_logistic(X, y, l2=0.1, max_iter=1).converged


def test_logistic_fit_rejects_bad_input() -> None:
    X, y, _, _ = logistic_data(10, 0)
    with pytest.raises(ValueError, match="2-D"):
        fit_logistic(X[:, 0], y)
    with pytest.raises(ValueError, match="labels"):
        fit_logistic(X, y[:5])
    with pytest.raises(ValueError, match="sample_weight"):
        fit_logistic(X, y, sample_weight=-np.ones(10))
    with pytest.raises(ValueError, match="finite"):
        fit_logistic(np.where(X > 1, np.nan, X), y)
    with pytest.raises(ValueError, match="both"):
        fit_logistic(X, np.ones(10, dtype=int))


def test_standardizer_centres_scales_and_leaves_constant_columns_alone() -> None:
    X = np.column_stack([np.arange(5.0), np.full(5, 0.1), [2.0, 4.0, 6.0, 8.0, 10.0]])
    scaler = Standardizer.fit(X)
    assert scaler.scales[1] == 1.0
    Z = scaler.transform(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), [1.0, 0.0, 1.0], atol=1e-12)
    with pytest.raises(ValueError, match="columns"):
        scaler.transform(X[:, :2])


# -- grouped cross-validation ---------------------------------------------------------------------


def test_grouped_kfold_never_splits_a_group_and_covers_every_record_once() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat([f"prompt-{i}" for i in range(23)], rng.integers(1, 9, 23))
    folds = grouped_kfold(groups, n_splits=5, seed=3)
    assert len(folds) == 5
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(groups.size))
    for train, test in folds:
        assert np.intersect1d(train, test).size == 0 and train.size + test.size == groups.size
        assert set(groups[train]).isdisjoint(groups[test])
    sizes = [test.size for _, test in folds]
    assert max(sizes) - min(sizes) <= 8  # greedy balance: within one (largest) group


@pytest.mark.parametrize("seed", range(4))
def test_grouped_kfold_is_the_greedy_assignment_of_shuffled_groups(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"q{i}" for i in range(31)], rng.integers(1, 6, 31))
    folds = grouped_kfold(groups, n_splits=5, seed=seed)
    expected = greedy_group_folds(groups, 5, seed)
    for (_, test), reference in zip(folds, expected, strict=True):
        np.testing.assert_array_equal(test, reference)


def test_grouped_kfold_is_deterministic_and_the_seed_matters() -> None:
    groups = np.arange(40) // 2
    same = grouped_kfold(groups, n_splits=4, seed=1)
    for (a_train, a_test), (b_train, b_test) in zip(same, grouped_kfold(groups, 4, seed=1), strict=True):
        assert np.array_equal(a_train, b_train) and np.array_equal(a_test, b_test)
    other = grouped_kfold(groups, n_splits=4, seed=2)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(same, other, strict=True))
    assert all(test.size == 10 for _, test in same)  # equal groups split evenly


def test_grouped_kfold_rejects_more_folds_than_groups() -> None:
    with pytest.raises(ValueError, match="n_splits"):
        grouped_kfold(np.array([1, 1, 2]), n_splits=3)
    with pytest.raises(ValueError, match="n_splits"):
        grouped_kfold(np.array([1, 2, 3]), n_splits=1)


def test_fitting_without_scikit_learn_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from corevital.analysis.sklearn_support import require_sklearn
    from corevital.errors import NotAvailableError

    require_sklearn()
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(NotAvailableError, match=r'pip install "corevital\[validate\]"'):
        require_sklearn("fitting a risk model")
