"""L2-penalised logistic regression (scikit-learn), feature standardisation, and stable numerics.

The fitted model gives P(failure) = sigmoid(X·coef + intercept), label 1 being a failure. Features
are expected standardised by the caller (:class:`Standardizer`, fitted on the training rows only:
the same arithmetic as the numpy predictor applies at run time). The intercept is not penalised.
scikit-learn is imported by :func:`fit_logistic` only (the ``validate`` extra). :mod:`.evaluation`
re-exports the public names.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


def sigmoid_array(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) elementwise, without overflow for any finite z."""
    e = np.exp(-np.abs(z))
    out: np.ndarray = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out


def log1pexp(z: np.ndarray) -> np.ndarray:
    """log(1 + exp(z)) elementwise, without overflow."""
    out: np.ndarray = np.logaddexp(0.0, z)
    return out


def as_labels(labels: object, n: int) -> np.ndarray:
    """``labels`` as an int64 vector of n entries, each 0 (success) or 1 (failure)."""
    raw = np.asarray(labels)
    if raw.ndim != 1 or raw.size != n:
        raise ValueError(f"labels must be 1-D with {n} entries, got shape {raw.shape}")
    if raw.dtype.kind not in "biuf" or not np.all((raw == 0) | (raw == 1)):
        raise ValueError("labels must be 0 (success) or 1 (failure)")
    return raw.astype(np.int64)


def as_matrix(X: object) -> np.ndarray:
    """``X`` as a finite float64 matrix (records × features)."""
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"X must be 2-D (records × features), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("X has no rows")
    if not np.all(np.isfinite(x)):
        raise ValueError("X must be finite")
    return x


@dataclass(frozen=True)
class Standardizer:
    means: np.ndarray
    scales: np.ndarray  # population standard deviation, 1.0 for constant columns

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        x = as_matrix(X)
        std = x.std(axis=0)
        constant = (x.max(axis=0) == x.min(axis=0)) | (std == 0.0)
        return cls(means=x.mean(axis=0), scales=np.where(constant, 1.0, std))

    def transform(self, X: np.ndarray) -> np.ndarray:
        x = as_matrix(X)
        if x.shape[1] != self.means.size:
            raise ValueError(f"X has {x.shape[1]} columns, the standardizer was fitted on {self.means.size}")
        out: np.ndarray = (x - self.means) / self.scales
        return out


@dataclass(frozen=True)
class LogisticFit:
    coef: np.ndarray  # [n_features]
    intercept: float
    n_iter: int  # solver iterations
    converged: bool

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        out: np.ndarray = as_matrix(X) @ self.coef + self.intercept
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(failure) per row."""
        return sigmoid_array(self.decision_function(X))


def fit_logistic(
    X: np.ndarray,
    y: np.ndarray,
    *,
    l2: float = 1.0,
    sample_weight: np.ndarray | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> LogisticFit:
    """Minimise sum_i w_i·[log(1 + exp(z_i)) - y_i·z_i] + (l2 / 2)·|coef|², z = X·coef + intercept.

    scikit-learn's ``LogisticRegression`` with ``C = 1 / l2`` (its objective is
    C·sum_i w_i·log-loss_i + |coef|² / 2, the same minimiser) and the Newton–Cholesky solver; the
    intercept is not penalised. ``l2`` must be positive: without a penalty, separable data has no
    finite optimum. ``converged`` is False when the solver stopped at ``max_iter``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x = as_matrix(X)
    labels = as_labels(y, x.shape[0])
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0 (without a penalty separable data has no optimum), got {l2}")
    w = np.ones(x.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w.shape != labels.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("sample_weight must be finite, non-negative, not all zero and one per row")
    if np.unique(labels[w > 0]).size < 2:
        raise ValueError("fitting a logistic model needs both failures (1) and successes (0)")
    model = LogisticRegression(C=1.0 / l2, solver="newton-cholesky", tol=tol, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, labels, sample_weight=w)
    converged = not any(issubclass(c.category, ConvergenceWarning) for c in caught)
    return LogisticFit(
        coef=np.asarray(model.coef_[0], dtype=np.float64).copy(),
        intercept=float(model.intercept_[0]),
        n_iter=int(model.n_iter_[0]),
        converged=converged,
    )
