"""The labelled risk model: fitting with grouped CV, the JSON contract, its use as the risk score."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from corevital.analysis.calibration.features import FEATURE_NAMES, RunFeatures, run_features
from corevital.analysis.calibration.fit import DatasetInfo, fit_risk_model
from corevital.analysis.calibration.risk_model import RiskModelSpec, predict
from corevital.analysis.diagnose import diagnose
from corevital.analysis.evaluation import auroc, calibration_error_debiased, compute_ece
from corevital.analysis.health import HealthFindings
from corevital.analysis.profiles import load_profile
from corevital.analysis.signals import SequenceSignals
from corevital.errors import InputError
from tests.support.signals import make_signals
from tests.unit.test_analysis_calibration import build_profile

DATASET = DatasetInfo(name="synthetic.jsonl", sha256="0" * 64, split="dev")


def labelled_population(
    n: int, seed: int
) -> tuple[list[RunFeatures], np.ndarray, np.ndarray, list[SequenceSignals]]:
    """Runs whose failure probability rises with their mean surprisal (a known logistic)."""
    rng = np.random.default_rng(seed)
    rows: list[RunFeatures] = []
    labels: list[int] = []
    groups: list[str] = []
    signals: list[SequenceSignals] = []
    for i in range(n):
        level = rng.uniform(0.2, 4.0)
        sig = make_signals(12, 6, seed=seed * 10_000 + i)
        sig = replace(sig, surprisal=np.abs(level + 0.3 * rng.standard_normal(12)))
        p_fail = 1.0 / (1.0 + math.exp(-(2.0 * (level - 2.0))))
        labels.append(int(rng.uniform() < p_fail))
        groups.append(f"g{i // 3}")  # three related items per group
        rows.append(run_features(sig, HealthFindings(), failure_risk=0.0, high_entropy_bits=4.0))
        signals.append(sig)
    return rows, np.asarray(labels), np.asarray(groups), signals


def test_fitted_model_is_calibrated_and_discriminates_on_new_data() -> None:
    rows, y, groups, _ = labelled_population(600, seed=1)
    fitted = fit_risk_model(rows, y, groups, dataset=DATASET)
    spec = fitted.spec
    assert spec.training.num_records == 600 and spec.training.num_groups == 200
    assert spec.training.cv_auroc is not None and spec.training.cv_auroc > 0.8
    assert set(fitted.cv_log_loss) == set(spec.training.l2_grid) and spec.l2 in spec.training.l2_grid
    test_rows, test_y, _, _ = labelled_population(1500, seed=2)
    probs = np.asarray([predict(spec, r).probability for r in test_rows])
    assert auroc(probs, test_y) > 0.8
    assert compute_ece(probs, test_y) < 0.05
    # JSON round trip
    assert RiskModelSpec.model_validate_json(spec.model_dump_json()) == spec


def test_cross_validated_ece_is_cross_fitted_and_read_against_its_noise_floor() -> None:
    rows, y, groups, _ = labelled_population(240, seed=5)
    fitted = fit_risk_model(rows, y, groups, dataset=DATASET, folds=5)
    cv = fitted.cv_probability
    assert cv.shape == y.shape and np.all((cv > 0) & (cv < 1))
    # scaled by Platt steps that never saw the record: not the in-sample Platt-scaled probabilities
    assert not np.allclose(cv, fitted.oof_probability)
    assert np.max(np.abs(cv - fitted.oof_probability)) < 0.15  # but close: the same logits
    assert fitted.spec.training.cv_ece == pytest.approx(compute_ece(cv, y))
    floor = fitted.cv_ece_noise_floor
    assert 0.03 < floor.mean < floor.p95 < 0.15  # 240 records, 10 bins
    # the population is nearly logistic in one feature: the cross-fitted ECE (0.098 here) is of the
    # order of a perfectly calibrated predictor's (mean 0.063) with either binning, far from the
    # 0.05 a reader might expect of a calibrated model on 240 records
    assert fitted.spec.training.cv_ece is not None and fitted.spec.training.cv_ece < 2 * floor.mean
    assert fitted.cv_ece_equal_mass < 2 * floor.mean
    # the debiased L2 error of the same probabilities subtracts the labels' noise bin by bin: 0.069
    # here, below both plug-in ECEs (0.098 equal-width, 0.100 equal-mass) although an L2 error is at
    # least its L1 counterpart on the same bins
    assert fitted.cv_calibration_error_debiased == calibration_error_debiased(cv, y)
    assert 0.0 < fitted.cv_calibration_error_debiased < fitted.cv_ece_equal_mass


def test_contributions_explain_the_probability() -> None:
    rows, y, groups, _ = labelled_population(300, seed=3)
    spec = fit_risk_model(rows, y, groups, dataset=DATASET).spec
    risky = max(rows, key=lambda r: r.mean_surprisal)
    out = predict(spec, risky)
    assert out.probability > 0.8
    top_name, top_value = out.contributions[0]
    assert "surprisal" in top_name or top_name == "sequence_nll"
    assert top_value > 0
    values = [v for _, v in out.contributions]
    assert values == sorted(values, reverse=True)


def test_missing_features_count_as_typical() -> None:
    rows, y, groups, _ = labelled_population(120, seed=4)
    spec = fit_risk_model(rows, y, groups, dataset=DATASET, folds=3).spec
    nan_row = replace(rows[0], **{name: math.nan for name in FEATURE_NAMES})
    out = predict(spec, nan_row)
    assert 0.0 < out.probability < 1.0
    assert all(abs(v) < 1e-12 for _, v in out.contributions)


def test_fit_refuses_data_without_both_classes_or_groups() -> None:
    rows, y, groups, _ = labelled_population(60, seed=5)
    with pytest.raises(InputError, match="at least 10 failures"):
        fit_risk_model(rows, np.zeros_like(y), groups, dataset=DATASET)
    with pytest.raises(InputError, match="at least 10 groups"):
        fit_risk_model(rows, y, np.asarray(["a", "b"] * 30), dataset=DATASET)


def test_spec_is_validated() -> None:
    rows, y, groups, _ = labelled_population(90, seed=6)
    good = fit_risk_model(rows, y, groups, dataset=DATASET, folds=3).spec.model_dump()
    for change, message in (
        ({"features": ["no_such_feature", *good["features"][1:]]}, "unknown risk-model features"),
        ({"coef": good["coef"][:-1]}, "same length"),
        ({"scales": [0.0] * len(good["scales"])}, "positive"),
        ({"version": 2}, "version"),
    ):
        with pytest.raises(ValidationError, match=message):
            RiskModelSpec.model_validate({**good, **change})


def test_a_profile_with_a_risk_model_gives_the_risk_score() -> None:
    rows, y, groups, signals = labelled_population(300, seed=7)
    spec = fit_risk_model(rows, y, groups, dataset=DATASET).spec
    profile = build_profile().model_copy(
        update={"model": build_profile().model.model_copy(update={"num_layers": 6})}
    )
    thresholds = load_profile("llama")
    calm = min(signals, key=lambda s: float(np.mean(s.surprisal)))
    wild = max(signals, key=lambda s: float(np.mean(s.surprisal)))
    calm_d = diagnose(calm, thresholds, calibration=profile.with_risk_model(spec))
    wild_d = diagnose(wild, thresholds, calibration=profile.with_risk_model(spec))
    assert calm_d.risk.model == wild_d.risk.model == "labelled"
    assert calm_d.risk.risk_score < 0.2 < 0.8 < wild_d.risk.risk_score
    assert wild_d.risk.risk_factors and all(f in FEATURE_NAMES for f in wild_d.risk.risk_factors[:1])
    assert wild_d.calibration is not None and wild_d.calibration.risk_model_training == spec.training
    # The hard floors still hold on top of the probability.
    nan_logits = calm.logits_nan.copy()
    nan_logits[3] = True
    floored = diagnose(
        replace(calm, logits_nan=nan_logits), thresholds, calibration=profile.with_risk_model(spec)
    )
    assert floored.risk.risk_score == 1.0 and "nan_or_inf" in floored.risk.risk_factors
