"""Fitting the labelled risk model (``corevital calibrate --labels``) with grouped cross-validation.

1. Features: the :class:`~.features.RunFeatures` named in ``feature_names``; a missing value is
   imputed with its column mean, then standardised (means and scales of all records) and clipped to
   ±``Z_CAP`` exactly as at prediction time.
2. Grouped k-fold cross-validation (a group, e.g. one question asked several ways, never straddles
   a fold's train and test records): for each L2 penalty of ``l2_grid``, one logistic model per
   fold, and the out-of-fold logits of every record. The penalty with the lowest out-of-fold
   log-loss is kept.
3. Platt scaling (``a``, ``b``) is fitted on that penalty's out-of-fold logits.
4. The saved model is the average of the k fold models (coefficients and intercepts; the same
   standardisation makes this one linear model). Its logits on new data behave like the fold models'
   logits on their held-out records, which is what the Platt step was fitted on; a model refitted on
   all records would be slightly more confident than that, and its probabilities less calibrated.

The logistic fits, the folds and the Platt step are scikit-learn's (the ``validate`` extra), through
:mod:`corevital.analysis.evaluation`; scoring with the saved model needs numpy only.

The training summary keeps the cross-validated AUROC and ECE. The ECE is cross-fitted: each
fold's out-of-fold logits are Platt-scaled by a Platt step fitted on the other folds' out-of-fold
logits, so no record is scaled by a step that saw it (the saved Platt step is fitted on all of them).
:class:`FittedRiskModel` adds it with equal-mass bins and its noise floor, the ECE of a perfectly
calibrated predictor with the same probabilities and N (labels drawn as Bernoulli(p)): on a few
dozen records that floor is 0.1 or more, and an ECE near it says nothing about calibration. It
also adds the debiased L2 calibration error of the same probabilities
(:func:`~corevital.analysis.evaluation.calibration_error_debiased`), which has no such floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from corevital.analysis.calibration.features import RunFeatures
from corevital.analysis.calibration.risk_model import Z_CAP, RiskModelSpec, TrainingSummary
from corevital.analysis.evaluation import (
    NoiseFloor,
    PlattScaler,
    auroc,
    calibration_error_debiased,
    compute_ece,
    compute_ece_equal_mass,
    ece_noise_floor,
    grouped_kfold,
)
from corevital.analysis.logistic import Standardizer, fit_logistic, log1pexp
from corevital.analysis.sklearn_support import require_sklearn
from corevital.errors import InputError

# One or two features per kind of evidence, so that each coefficient reads on its own (correlated
# duplicates such as mean and sum surprisal would share and flip their weights).
DEFAULT_FEATURES: tuple[str, ...] = (
    "early_mean_surprisal",
    "mean_surprisal",
    "max_surprisal",
    "early_mean_entropy",
    "mean_entropy",
    "mean_margin",
    "mean_topk_mass",
    "log_length",
    "repetition_loop",
    "early_warning",
)
L2_GRID: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    sha256: str
    split: str | None


@dataclass(frozen=True)
class FittedRiskModel:
    spec: RiskModelSpec
    oof_probability: np.ndarray  # Platt-scaled out-of-fold P(failure) per record
    cv_log_loss: dict[float, float]  # per L2 penalty tried
    cv_probability: np.ndarray  # cross-fitted out-of-fold P(failure): what spec.training.cv_ece is of
    cv_ece_equal_mass: float  # of cv_probability, 10 equal-mass bins
    cv_ece_noise_floor: NoiseFloor  # ECE (equal-width) of a perfectly calibrated model at this N
    cv_calibration_error_debiased: float  # of cv_probability: L2, 10 equal-mass bins, about 0 if calibrated


def _design(rows: Sequence[RunFeatures], names: Sequence[str]) -> np.ndarray:
    x = np.vstack([r.vector(names) for r in rows])
    means = np.array([float(np.nanmean(c)) if np.isfinite(c).any() else 0.0 for c in x.T])
    return np.where(np.isfinite(x), x, means)


def _z(scaler: Standardizer, x: np.ndarray) -> np.ndarray:
    z: np.ndarray = np.clip(scaler.transform(x), -Z_CAP, Z_CAP)
    return z


@dataclass(frozen=True)
class _CrossValidated:
    logits: np.ndarray  # out-of-fold logit of every record
    coef: np.ndarray  # mean of the fold models
    intercept: float


def _cross_validate(
    z: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], l2: float
) -> _CrossValidated:
    logits = np.full(y.size, np.nan)
    coefs, intercepts = [], []
    for train, test in folds:
        model = fit_logistic(z[train], y[train], l2=l2)
        logits[test] = model.decision_function(z[test])
        coefs.append(model.coef)
        intercepts.append(model.intercept)
    return _CrossValidated(logits, np.mean(coefs, axis=0), float(np.mean(intercepts)))


def _log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(log1pexp(logits) - y * logits))


def fit_risk_model(
    rows: Sequence[RunFeatures],
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    dataset: DatasetInfo,
    feature_names: Sequence[str] = DEFAULT_FEATURES,
    l2_grid: Sequence[float] = L2_GRID,
    folds: int = 10,
    seed: int = 0,
) -> FittedRiskModel:
    require_sklearn("fitting a risk model (calibrate --labels)")
    y = np.asarray(labels, dtype=np.int64)
    g = np.asarray(groups)
    if len(rows) != y.size or g.size != y.size:
        raise ValueError("rows, labels and groups must have the same length")
    failures = int(y.sum())
    if failures < folds or y.size - failures < folds:
        raise InputError(
            f"a risk model needs at least {folds} failures and {folds} successes; "
            f"the labelled runs have {failures} failures and {y.size - failures} successes"
        )
    num_groups = int(np.unique(g).size)
    if num_groups < folds:
        raise InputError(
            f"grouped cross-validation needs at least {folds} groups, the records have {num_groups}"
        )
    x = _design(rows, feature_names)
    scaler = Standardizer.fit(x)
    z = _z(scaler, x)
    split = grouped_kfold(g, n_splits=folds, seed=seed)
    runs = {l2: _cross_validate(z, y, split, l2) for l2 in l2_grid}
    losses = {l2: _log_loss(cv.logits, y) for l2, cv in runs.items()}
    best = min(l2_grid, key=lambda l2: (losses[l2], -l2))
    chosen = runs[best]
    platt = PlattScaler.fit(chosen.logits, y)
    oof = platt.predict(chosen.logits)
    crossfit = _cross_fitted_platt(chosen.logits, y, split)
    spec = RiskModelSpec(
        features=list(feature_names),
        means=[float(v) for v in scaler.means],
        scales=[float(v) for v in scaler.scales],
        coef=[float(v) for v in chosen.coef],
        intercept=chosen.intercept,
        l2=float(best),
        platt_a=float(platt.a),
        platt_b=float(platt.b),
        training=TrainingSummary(
            dataset=dataset.name,
            dataset_sha256=dataset.sha256,
            split=dataset.split,
            num_records=int(y.size),
            num_groups=num_groups,
            failure_rate=float(y.mean()),
            cv_folds=folds,
            cv_auroc=_finite_or_none(auroc(oof, y)),
            cv_ece=_finite_or_none(compute_ece(crossfit, y)),
            l2_grid=[float(v) for v in l2_grid],
        ),
    )
    return FittedRiskModel(
        spec=spec,
        oof_probability=oof,
        cv_log_loss=losses,
        cv_probability=crossfit,
        cv_ece_equal_mass=compute_ece_equal_mass(crossfit, y),
        cv_ece_noise_floor=ece_noise_floor(crossfit, n_sims=500, seed=seed),
        cv_calibration_error_debiased=calibration_error_debiased(crossfit, y),
    )


def _cross_fitted_platt(
    logits: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Out-of-fold probabilities whose Platt step never saw them: each fold's logits scaled by a
    Platt step fitted on the other folds' out-of-fold logits (all of them when those are one class)."""
    probs = np.full(y.size, np.nan)
    for train, test in folds:
        source = train if 0 < int(y[train].sum()) < train.size else np.arange(y.size)
        probs[test] = PlattScaler.fit(logits[source], y[source]).predict(logits[test])
    return probs


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
