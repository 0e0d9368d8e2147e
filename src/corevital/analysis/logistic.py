"""L2-penalised logistic regression by Newton/IRLS, feature standardisation, and stable numerics.

The fitted model gives P(failure) = sigmoid(X·coef + intercept), label 1 being a failure. Features
are expected standardised by the caller (:class:`Standardizer`, fitted on the training rows only).
The intercept is not penalised. :mod:`.evaluation` re-exports the public names.
"""

from __future__ import annotations

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
    n_iter: int  # Newton iterations, the final convergence check included
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
    tol: float = 1e-8,
) -> LogisticFit:
    """Minimise sum_i w_i·[log(1 + exp(z_i)) - y_i·z_i] + (l2 / 2)·|coef|², z = X·coef + intercept.

    Newton steps with step halving (Armijo); converged when the largest Newton step is at most
    ``tol·(1 + max|β|)``. Without a penalty, separable data has no finite optimum: the loss keeps
    falling towards 0 while the coefficients grow, and the fit reports ``converged=False``.
    """
    x = as_matrix(X)
    labels = as_labels(y, x.shape[0])
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    w = np.ones(x.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w.shape != labels.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("sample_weight must be finite, non-negative, not all zero and one per row")
    t = labels.astype(np.float64)
    design = np.hstack([np.ones((x.shape[0], 1)), x])
    penalty = np.full(design.shape[1], float(l2))
    penalty[0] = 0.0

    def loss(beta: np.ndarray) -> float:
        z = design @ beta
        return float(np.sum(w * (log1pexp(z) - t * z)) + 0.5 * np.sum(penalty * beta * beta))

    beta = np.zeros(design.shape[1])
    rate = float(np.clip(np.sum(w * t) / np.sum(w), 1e-6, 1 - 1e-6))
    beta[0] = np.log(rate / (1.0 - rate))
    f = loss(beta)
    converged, n_iter = False, 0
    while n_iter < max_iter:
        n_iter += 1
        p = sigmoid_array(design @ beta)
        grad = design.T @ (w * (p - t)) + penalty * beta
        hess = (design * (w * p * (1.0 - p))[:, None]).T @ design + np.diag(penalty)
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        if float(np.max(np.abs(step))) <= tol * (1.0 + float(np.max(np.abs(beta)))):
            converged = True
            break
        decrement = float(grad @ step) / 2.0
        size = 1.0
        while size >= 1e-10:
            candidate = beta - size * step
            new_f = loss(candidate)
            if new_f <= f - 1e-4 * size * 2.0 * decrement:
                beta, f = candidate, new_f
                break
            size /= 2.0
        else:
            break  # no descent left along the Newton direction
    return LogisticFit(coef=beta[1:].copy(), intercept=float(beta[0]), n_iter=n_iter, converged=converged)
