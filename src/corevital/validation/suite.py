"""A validation suite of several failure kinds: the scores of its runs and their tables.

The suite's items are generated deterministically by :func:`~corevital.validation.suite_items.build_suite`
(no downloads; kinds, groups, splits) and judged by :func:`~corevital.validation.suite_labels.label`
(one rule per kind). This module gives the baselines of every run (:func:`baseline_scores`:
sequence probability (−log₂ p), mean NLL, mean and max entropy, minimum margin (negated: a smaller
margin is more likely a failure), length and the token 4-gram repeat rate), next to CoreVital's
scores, and :func:`kind_table` computes AUROC with 95% grouped bootstrap intervals per kind and
pooled, with the default risk score's quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from corevital.analysis.evaluation import ConfidenceInterval, auroc, bootstrap_ci
from corevital.validation.suite_labels import repeat_rate

# --- scores and tables -----------------------------------------------------------------------------

# (key, label); every score is oriented so that higher means "more likely failed"
SCORES: tuple[tuple[str, str], ...] = (
    ("risk_score", "risk_score (default, no profile)"),
    ("labelled_risk", "risk_score (shipped QA profile, labelled model)"),
    ("sequence_nll", "sequence probability (−log₂ p)"),
    ("mean_surprisal", "mean token NLL"),
    ("mean_entropy", "mean entropy"),
    ("max_entropy", "max entropy"),
    ("neg_min_margin", "min margin (negated)"),
    ("length", "generated length"),
    ("token_repeat_rate", "token 4-gram repeat rate"),
)
BASELINE_KEYS = tuple(key for key, _ in SCORES[2:])


def _num(value: float) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan


def baseline_scores(features: Mapping[str, float], token_ids: Sequence[int]) -> dict[str, float]:
    """The baselines of one run from its run features and generated token ids."""
    return {
        "sequence_nll": _num(features["sequence_nll"]),
        "mean_surprisal": _num(features["mean_surprisal"]),
        "mean_entropy": _num(features["mean_entropy"]),
        "max_entropy": _num(features["max_entropy"]),
        "neg_min_margin": -_num(features["min_margin"]),
        "length": _num(features["length"]),
        "token_repeat_rate": repeat_rate(list(token_ids), 4),
    }


@dataclass(frozen=True)
class ScoreAuroc:
    key: str
    label: str
    auroc: ConfidenceInterval


@dataclass(frozen=True)
class KindTable:
    kind: str
    split: str
    n: int
    failures: int
    rows: tuple[ScoreAuroc, ...]
    risk_quantiles: tuple[float, float, float, float, float]  # min, p25, median, p75, max

    def best_baseline(self) -> ScoreAuroc | None:
        rows = [r for r in self.rows if r.key in BASELINE_KEYS and math.isfinite(r.auroc.estimate)]
        return max(rows, key=lambda r: r.auroc.estimate) if rows else None

    def row(self, key: str) -> ScoreAuroc:
        return next(r for r in self.rows if r.key == key)


def kind_table(
    kind: str, split: str, runs: Sequence[Mapping[str, object]], *, n_resamples: int = 1000
) -> KindTable:
    """AUROC [95% grouped bootstrap CI] of every score on ``runs`` (dicts with ``failed``, ``group``
    and one entry per score key). NaN scores count as the lowest score (a baseline that cannot be
    computed says nothing)."""
    y = np.asarray([bool(r["failed"]) for r in runs], dtype=bool)
    groups = np.asarray([str(r["group"]) for r in runs])
    rows = []
    for key, text in SCORES:
        s = np.asarray([float(r[key]) for r in runs], dtype=np.float64)  # type: ignore[arg-type]
        s = np.where(np.isfinite(s), s, -1e9)
        if y.all() or not y.any():
            ci = ConfidenceInterval(math.nan, math.nan, math.nan)
        else:
            ci = bootstrap_ci(auroc, s, y, n_resamples=n_resamples, groups=groups)
        rows.append(ScoreAuroc(key, text, ci))
    risk = np.asarray([float(r["risk_score"]) for r in runs], dtype=np.float64)  # type: ignore[arg-type]
    q = np.quantile(risk, [0.0, 0.25, 0.5, 0.75, 1.0]) if risk.size else np.full(5, math.nan)
    return KindTable(
        kind=kind,
        split=split,
        n=len(runs),
        failures=int(y.sum()),
        rows=tuple(rows),
        risk_quantiles=(float(q[0]), float(q[1]), float(q[2]), float(q[3]), float(q[4])),
    )


def _ci(ci: ConfidenceInterval) -> str:
    if not math.isfinite(ci.estimate):
        return "–"
    return f"{ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


def markdown_tables(tables: Sequence[KindTable]) -> str:
    """One Markdown table: a row per kind, a column per score (AUROC [95% CI])."""
    head = (
        "| kind | N (failed) | " + " | ".join(label for _, label in SCORES) + " | best baseline − default |"
    )
    lines = [head, "|" + "---|" * (len(SCORES) + 3)]
    for t in tables:
        best = t.best_baseline()
        gap = best.auroc.estimate - t.row("risk_score").auroc.estimate if best is not None else math.nan
        cells = " | ".join(_ci(r.auroc) for r in t.rows)
        lines.append(f"| {t.kind} | {t.n} ({t.failures}) | {cells} | {gap:+.3f} |")
    return "\n".join(lines)
