"""Metric consistency (``metrics.md`` §6): information-theoretic invariants checked per step.

- ``perplexity_matches_entropy``: ``|perplexity − 2^entropy| ≤ 1%`` of perplexity;
- ``margin_within_mass``: top-1/top-2 margin ≤ top-10 mass (the margin is at most p(1), which is in the mass);
- ``entropy_nonnegative``, ``surprisal_nonnegative``.

A small absolute tolerance (1e-6) absorbs float32 rounding. Missing (NaN) values are not checked;
a step counts as checked when at least one invariant could be evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOLERANCE = 1e-6
RELATIVE_PERPLEXITY_TOLERANCE = 0.01


@dataclass(frozen=True)
class InvariantViolation:
    check: str
    step_index: int  # 0-based generated-token index
    message: str


@dataclass(frozen=True)
class ConsistencyCheck:
    checked_steps: int
    violations: tuple[InvariantViolation, ...]

    @property
    def ok(self) -> bool:
        return not self.violations


def check_consistency(
    entropy: np.ndarray,
    perplexity: np.ndarray,
    margin: np.ndarray,
    topk_mass: np.ndarray,
    surprisal: np.ndarray,
) -> ConsistencyCheck:
    e, ppl, m, k, s = (
        np.asarray(a, dtype=np.float64).reshape(-1)
        for a in (entropy, perplexity, margin, topk_mass, surprisal)
    )
    n = e.size
    violations: list[InvariantViolation] = []
    checked = np.zeros(n, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = np.exp2(e)
    for t in range(n):
        if np.isfinite(ppl[t]) and np.isfinite(e[t]):
            checked[t] = True
            if abs(ppl[t] - expected[t]) > RELATIVE_PERPLEXITY_TOLERANCE * abs(ppl[t]) + TOLERANCE:
                violations.append(
                    InvariantViolation(
                        "perplexity_matches_entropy",
                        t,
                        f"perplexity {ppl[t]:.4g} but 2^entropy = {expected[t]:.4g}",
                    )
                )
        if np.isfinite(m[t]) and np.isfinite(k[t]):
            checked[t] = True
            if m[t] > k[t] + TOLERANCE:
                violations.append(
                    InvariantViolation("margin_within_mass", t, f"margin {m[t]:.4g} > top-k mass {k[t]:.4g}")
                )
        if np.isfinite(e[t]):
            checked[t] = True
            if e[t] < -TOLERANCE:
                violations.append(InvariantViolation("entropy_nonnegative", t, f"entropy {e[t]:.4g} < 0"))
        if np.isfinite(s[t]):
            checked[t] = True
            if s[t] < -TOLERANCE:
                violations.append(InvariantViolation("surprisal_nonnegative", t, f"surprisal {s[t]:.4g} < 0"))
    return ConsistencyCheck(checked_steps=int(checked.sum()), violations=tuple(violations))
