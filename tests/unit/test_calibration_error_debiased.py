"""The debiased L2 calibration error (analysis/evaluation.calibration_error_debiased).

Three checks: against a re-implementation written here of the published code of Kumar, Liang & Ma
(2019, the ``uncertainty-calibration`` package: ``get_equal_bins``, ``fast_bin``, ``plugin_ce``,
``unbiased_square_ce``, ``unbiased_l2_ce``), which must agree exactly; on a perfectly calibrated
predictor, where the estimate must be about 0 while the plug-in's is not; and on predictors of known
miscalibration, where it must recover the true binned L2 error at N = 100–300.
"""

from __future__ import annotations

import numpy as np
import pytest

from corevital.analysis.evaluation import calibration_error_debiased

# -- their code, written out (lists and loops as published) --------------------------------------


def ref_equal_bins(probs: list[float], num_bins: int) -> list[float]:
    sorted_probs = sorted(probs)
    part_size = int(np.ceil(len(sorted_probs) * 1.0 / num_bins))
    chunks = [sorted_probs[i : i + part_size] for i in range(0, len(sorted_probs), part_size)]
    bins = [(chunks[i][-1] + chunks[i + 1][0]) / 2.0 for i in range(len(chunks) - 1)]
    bins.append(1.0)
    return sorted(set(bins))


def ref_bin(probs: np.ndarray, labels: np.ndarray, bins: list[float]) -> list[np.ndarray]:
    prob_label = np.array(list(zip(probs, labels, strict=True)))
    bin_indices = np.searchsorted(bins, prob_label[:, 0])
    bin_sort_indices = np.argsort(bin_indices)
    sorted_bins = bin_indices[bin_sort_indices]
    splits = np.searchsorted(sorted_bins, list(range(1, len(bins))))
    return list(np.split(prob_label[bin_sort_indices], splits))


def ref_bin_probs(binned: list[np.ndarray]) -> list[float]:
    num_data = sum(len(b) for b in binned)
    return [len(b) * 1.0 / num_data for b in binned]


def ref_plugin_l2(binned: list[np.ndarray]) -> float:
    errors = [0.0 if len(b) == 0 else abs(np.mean(b[:, 0]) - np.mean(b[:, 1])) ** 2 for b in binned]
    return float(np.dot(ref_bin_probs(binned), errors) ** 0.5)


def ref_unbiased_square(binned: list[np.ndarray]) -> float:
    errors = []
    for data in binned:
        if len(data) < 2:
            errors.append(0.0)
            continue
        biased = abs(np.mean(data[:, 0]) - np.mean(data[:, 1])) ** 2
        mean_label = np.mean([row[1] for row in data])
        errors.append(biased - mean_label * (1.0 - mean_label) / (len(data) - 1.0))
    return float(np.dot(ref_bin_probs(binned), errors))


def ref_unbiased_l2(probs: np.ndarray, labels: np.ndarray, num_bins: int = 10) -> float:
    binned = ref_bin(probs, labels, ref_equal_bins(list(probs), num_bins))
    return float(max(ref_unbiased_square(binned), 0.0) ** 0.5)


def plugin_l2(probs: np.ndarray, labels: np.ndarray, num_bins: int = 10) -> float:
    return ref_plugin_l2(ref_bin(probs, labels, ref_equal_bins(list(probs), num_bins)))


# -- tests ----------------------------------------------------------------------------------------


def test_equals_a_reimplementation_of_the_published_code_exactly() -> None:
    rng = np.random.default_rng(11)
    checked = 0
    for n in (10, 11, 37, 100, 150, 301):
        for kind in ("uniform", "crowded", "ties"):
            p = rng.random(n)
            if kind == "crowded":
                p = p**3
            elif kind == "ties":  # few distinct values: merged edges, records on an edge
                p = np.round(p, 1)
            y = (rng.random(n) < p).astype(np.int64)
            for bins in (10, 15, 3):
                binned = ref_bin(p, y, ref_equal_bins(list(p), bins))
                assert calibration_error_debiased(p, y, bins) == ref_unbiased_l2(p, y, bins)
                assert calibration_error_debiased(p, y, bins, squared=True) == ref_unbiased_square(binned)
                checked += 1
    assert checked == 54


def test_a_hand_example() -> None:
    # 4 records, 2 bins: edge at (0.2 + 0.8) / 2; {0.1, 0.2} one failure, {0.8, 0.9} both failed
    p = np.array([0.1, 0.9, 0.2, 0.8])
    y = np.array([0, 1, 1, 1])
    low = (0.15 - 0.5) ** 2 - 0.5 * 0.5 / 1.0  # -0.1275
    high = (0.85 - 1.0) ** 2 - 0.0  # 0.0225
    expected = 0.5 * low + 0.5 * high
    assert calibration_error_debiased(p, y, 2, squared=True) == pytest.approx(expected)
    assert calibration_error_debiased(p, y, 2) == 0.0  # negative sum: clipped
    # fewer records than bins: one per bin, every bin adds 0
    assert calibration_error_debiased(np.array([0.2, 0.7]), np.array([0, 1])) == 0.0
    with pytest.raises(ValueError, match="n_bins"):
        calibration_error_debiased(p, y, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration_error_debiased(np.array([0.2, 1.2]), np.array([0, 1]))


def test_a_perfectly_calibrated_predictor_reads_about_zero_where_the_plug_in_does_not() -> None:
    rng = np.random.default_rng(3)
    squared, debiased, plugin = [], [], []
    for _ in range(400):
        p = rng.uniform(0.1, 0.9, 100)
        y = (rng.random(p.size) < p).astype(np.int64)
        squared.append(calibration_error_debiased(p, y, squared=True))
        debiased.append(calibration_error_debiased(p, y))
        plugin.append(plugin_l2(p, y))
    # the plug-in's squared error is about the mean of p(1 - p) / n_b: 0.2 / 10 = 0.02
    assert np.mean(np.square(plugin)) == pytest.approx(0.019, abs=0.004)
    # the debiased sum is unbiased for the calibrated predictor's 0 (its mean's standard error here is
    # about 0.0007; within-bin spread of p biases it slightly below 0)
    assert abs(float(np.mean(squared))) < 0.003
    # after the square root and clip at 0 the estimate is >= 0, but far below the plug-in's
    assert float(np.mean(debiased)) < 0.5 * float(np.mean(plugin))
    assert float(np.median(debiased)) < 0.25 * float(np.median(plugin))


def _true_binned_l2(predict: np.ndarray, truth: np.ndarray, num_bins: int = 10) -> float:
    """The binned L2 error with each record's label replaced by its true probability."""
    order = np.argsort(predict, kind="mergesort")
    total = 0.0
    for part in np.array_split(order, num_bins):
        total += part.size * (predict[part].mean() - truth[part].mean()) ** 2
    return float((total / predict.size) ** 0.5)


@pytest.mark.parametrize("n", [100, 300])
def test_a_known_miscalibration_is_recovered(n: int) -> None:
    rng = np.random.default_rng(17 + n)
    # shifted by 0.1 (p in [0.1, 0.8], so no clipping): the error is exactly 0.1 in every bin
    shifted, shifted_plugin = [], []
    # temperature 0.5 (logits doubled, overconfident): the true binned error from a huge sample
    tempered, tempered_plugin = [], []
    for _ in range(300):
        p = rng.uniform(0.1, 0.8, n)
        y = (rng.random(n) < p).astype(np.int64)
        shifted.append(calibration_error_debiased(p + 0.1, y, squared=True))
        shifted_plugin.append(plugin_l2(p + 0.1, y) ** 2)
        sharp = 1.0 / (1.0 + np.exp(-2.0 * np.log(p / (1.0 - p))))
        tempered.append(calibration_error_debiased(sharp, y, squared=True))
        tempered_plugin.append(plugin_l2(sharp, y) ** 2)
    # means of the squared estimates against the true squared error
    assert float(np.mean(shifted)) == pytest.approx(0.01, abs=0.002)
    assert float(np.mean(shifted_plugin)) > 0.01 + 0.5 * 0.2 * 10 / n  # the plug-in adds its noise
    big = np.random.default_rng(5).uniform(0.1, 0.8, 1_000_000)
    truth = _true_binned_l2(1.0 / (1.0 + np.exp(-2.0 * np.log(big / (1.0 - big)))), big)
    assert 0.08 < truth < 0.12
    assert float(np.mean(tempered)) == pytest.approx(truth**2, abs=0.002)
    assert float(np.mean(tempered_plugin)) > truth**2 + 0.5 * 0.2 * 10 / n
    # the reported error (square root, clipped at 0) of a typical draw is near the truth
    assert float(np.median(np.sqrt(np.clip(shifted, 0.0, None)))) == pytest.approx(0.1, abs=0.02)
    assert float(np.median(np.sqrt(np.clip(tempered, 0.0, None)))) == pytest.approx(truth, abs=0.02)
