"""The labelled risk model: logistic regression over standardised run features, Platt-recalibrated.

``logit = intercept + Σ coef_i · z_i`` with ``z_i = clip((x_i − mean_i) / scale_i, ±Z_CAP)`` (a missing
feature counts as its training mean, z = 0), then ``p = 1 / (1 + exp(platt_a · logit + platt_b))``:
the Platt step, fitted on out-of-fold predictions, corrects the over- or under-confidence of the
fitted logistic. ``p`` is the probability that the run fails, as judged on the labelled data the
model was fitted on (``training`` says which). A factor's contribution is ``p − p`` with that
feature at its training mean, the same "how much would the score drop without it" rule as the
heuristic score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from corevital.analysis.calibration.features import FEATURE_NAMES, RunFeatures
from corevital.analysis.stats import sigmoid

RISK_MODEL_FORMAT = "corevital.risk-model"
RISK_MODEL_VERSION = 1
Z_CAP = 5.0


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingSummary(_Frozen):
    """What the model was fitted on and how well it did in grouped cross-validation."""

    dataset: str
    dataset_sha256: str
    split: str | None = None
    num_records: int = Field(ge=1)
    num_groups: int = Field(ge=1)
    failure_rate: float = Field(ge=0.0, le=1.0)
    cv_folds: int = Field(ge=2)
    cv_auroc: float | None = None
    cv_ece: float | None = None
    l2_grid: list[float] = Field(default_factory=list)


class RiskModelSpec(_Frozen):
    format: Literal["corevital.risk-model"] = "corevital.risk-model"
    version: Literal[1] = 1
    features: list[str] = Field(min_length=1)
    means: list[float]
    scales: list[float]
    coef: list[float]
    intercept: float
    l2: float = Field(gt=0.0)
    platt_a: float = -1.0  # identity recalibration: p = sigmoid(logit)
    platt_b: float = 0.0
    training: TrainingSummary

    @model_validator(mode="after")
    def _consistent(self) -> RiskModelSpec:
        unknown = [f for f in self.features if f not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"unknown risk-model features {unknown}")
        n = len(self.features)
        if not (len(self.means) == len(self.scales) == len(self.coef) == n):
            raise ValueError("features, means, scales and coef must have the same length")
        if any(s <= 0 or not math.isfinite(s) for s in self.scales):
            raise ValueError("scales must be positive")
        values = [*self.means, *self.coef, self.intercept, self.platt_a, self.platt_b]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("non-finite model parameter")
        return self


@dataclass(frozen=True)
class RiskModelOutput:
    probability: float
    logit: float
    contributions: tuple[tuple[str, float], ...]  # (feature, p − p without it), largest first


def standardised(spec: RiskModelSpec, features: RunFeatures) -> np.ndarray:
    x = features.vector(spec.features)
    z = (x - np.asarray(spec.means)) / np.asarray(spec.scales)
    return np.clip(np.where(np.isfinite(z), z, 0.0), -Z_CAP, Z_CAP)


def calibrated(spec: RiskModelSpec, logit: float) -> float:
    return 1.0 - sigmoid(spec.platt_a * logit + spec.platt_b)


def predict(spec: RiskModelSpec, features: RunFeatures) -> RiskModelOutput:
    terms = np.asarray(spec.coef) * standardised(spec, features)
    logit = spec.intercept + float(terms.sum())
    prob = calibrated(spec, logit)
    contributions = [
        (name, prob - calibrated(spec, logit - float(term)))
        for name, term in zip(spec.features, terms, strict=True)
    ]
    contributions.sort(key=lambda nc: (-nc[1], nc[0]))
    return RiskModelOutput(probability=prob, logit=logit, contributions=tuple(contributions))
