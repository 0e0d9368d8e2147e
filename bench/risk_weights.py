"""Choose the default risk score's weights on the validation suite's ``dev`` split only.

Reads the signals that ``bench/validation_suite.py`` captured (``--out`` of that script), builds
every dev run's :class:`~corevital.analysis.risk.RiskEvidence` once, and

- ``--fit``: fits the weights of the default ``risk`` profile's terms, the same features the risk
  model always had (the seven continuous features, clipped and standardised by the profile's
  centers and scales; the severities of attention collapse, a silenced or sharpened sub-layer,
  an abnormal norm jump and the compound signals; the mid-layer anomaly and the repetition loop
  flags), by a non-negative L2-penalised logistic regression on dev, every kind weighted equally
  (a fault kind: its faulted runs and the same prompts' clean runs). The NaN/Inf floor is not fitted:
  it stays a hard floor.
- always: the AUROC on dev per kind and pooled of the score that a profile gives (the shipped one,
  or with ``--fit`` the fitted one) against the best single baseline, and the score's quantiles.
- ``--internal``: the per-kind AUROC of the shipped score with one attention feature of the run
  added to its logit (the share of collapsed heads over all layers, the first or the last third of
  the layers, or the negated mean normalised attention entropy; each standardised by the median and
  interquartile range of the healthy dev runs, fault kinds aside, and clipped to ±3), at weights
  0.25, 0.5 and 1 (and each feature alone): whether internal attention evidence helps the kinds
  where the score falls short.

    .venv/bin/python bench/risk_weights.py --out .bench-out/validation_suite --fit \
        --merge .bench-out/faults_mlp/signals.pkl

The test split is never read.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corevital.analysis.diagnose import diagnose
from corevital.analysis.evaluation import auroc
from corevital.analysis.health import assess_health
from corevital.analysis.profiles import RiskProfile, load_profile
from corevital.analysis.risk import RiskEvidence, combine, evidence
from corevital.analysis.signals import SequenceSignals
from corevital.validation.suite import BASELINE_KEYS, baseline_scores
from corevital.validation.suite_items import build_suite
from corevital.validation.suite_labels import label

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import best_baseline  # noqa: E402
from validation_suite import cache_key, read_cache  # noqa: E402

CONTINUOUS = (
    "mean_entropy",
    "entropy_peak",
    "mean_surprisal",
    "surprisal_peak",
    "low_margin",
    "entropy_trend",
    "early_warning",
)
# the loop and internal-state terms and the profile weight each one's value multiplies (set a priori
# unless --fit-flags); repeat_share is a continuous term but loop evidence like the loop flag
FLAG_WEIGHTS = (
    ("repeat_share", "repeat_share"),
    ("collapse", "collapse_weight"),
    ("layer_update", "layer_update_weight"),
    ("layer_jump", "layer_jump_weight"),
    ("mid_layer", "mid_layer_weight"),
    ("compound", "compound_weight"),
    ("loop", "repetition_weight"),
)


@dataclass(frozen=True)
class DevRun:
    kind: str  # the table the run counts in (a clean run of a fault kind's prompt: that fault kind)
    group: str
    failed: bool
    found: RiskEvidence
    baselines: dict[str, float]
    attention: dict[str, float]  # the run's attention features (:func:`attention_features`)


INTERNAL = (
    "collapse, all layers",
    "collapse, first third",
    "collapse, last third",
    "attention entropy (negated)",
)


def attention_features(sig: SequenceSignals) -> dict[str, float]:
    """The run's mean share of collapsed heads over all layers, the first and the last third of the
    layers, and its negated mean normalised attention entropy (NaN without attention)."""
    rate, entropy = sig.attn_collapse_rate, sig.attn_entropy_norm
    if rate is None or entropy is None or not np.size(rate):
        return dict.fromkeys(INTERNAL, math.nan)
    rate = np.asarray(rate, dtype=np.float64)
    third = rate.shape[1] // 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a run whose attention is all NaN
        values = (
            np.nanmean(rate),
            np.nanmean(rate[:, :third]),
            np.nanmean(rate[:, rate.shape[1] - third :]),
            -np.nanmean(np.asarray(entropy, dtype=np.float64)),
        )
    return {name: float(v) for name, v in zip(INTERNAL, values, strict=True)}


def dev_runs(out: Path, merge: Sequence[Path] = ()) -> list[DevRun]:
    """Every dev run of the suite with its evidence (the fault kinds' clean runs once per fault kind);
    ``merge``: other signal caches whose runs replace the same items' (as ``validation_suite --merge``)."""
    captured = read_cache(out / "signals.pkl")
    for other in merge:
        captured.update(read_cache(other))
    items = [i for i in build_suite() if i.split == "dev" and cache_key(i) in captured]
    by_id = {i.id: i for i in items}
    profile = load_profile(next(iter(captured.values()))[1].model_type)
    cache: dict[str, tuple[RiskEvidence, dict[str, float], dict[str, float]]] = {}

    def evidence_of(item_id: str) -> tuple[RiskEvidence, dict[str, float], dict[str, float]]:
        if item_id not in cache:
            sig = captured[cache_key(by_id[item_id])][1]
            d = diagnose(sig, profile)
            assert d.risk.features is not None
            updates = assess_health(sig, profile).layer_updates  # what diagnose gives the risk model
            found = evidence(
                d.risk.features,
                d.health_flags,
                compound=d.compound_signals,
                blamed=d.blamed_layers,
                repetition_coverage=d.repetition.coverage,
                repetition_requested=d.repetition.requested,
                layer_updates=updates,
            )
            assert combine(found, profile.risk).risk_score == d.risk.risk_score  # the report's evidence
            baselines = baseline_scores(vars(d.run_features), sig.token_ids.tolist())
            cache[item_id] = (found, baselines, attention_features(sig))
        return cache[item_id]

    runs = []
    for item in items:
        if item.kind == "requested_repetition":
            continue
        output = captured[cache_key(item)][0]
        runs.append(DevRun(item.kind, item.group, label(item, output), *evidence_of(item.id)))
        if item.clean_of is not None and item.clean_of in by_id:
            runs.append(DevRun(item.kind, item.group, False, *evidence_of(item.clean_of)))
    return runs


def design(found: RiskEvidence, risk: RiskProfile) -> np.ndarray:
    """The value each weight multiplies (a continuous term's clipped standardised feature)."""
    row = []
    for name in CONTINUOUS:
        x = getattr(found.features, name)
        term = getattr(risk, name)
        row.append(0.0 if not math.isfinite(x) else float(np.clip((x - term.center) / term.scale, -3, 3)))
    share, term = found.features.repeat_share, risk.repeat_share
    row += [
        0.0 if not math.isfinite(share) else float(np.clip((share - term.center) / term.scale, -3, 3)),
        found.collapse_severity or 0.0,
        found.layer_update or 0.0,
        0.0 if found.mid_layer else found.layer_jump or 0.0,
        float(found.mid_layer),
        sum(s for _, s in found.compound),
        float(found.loop),
    ]
    return np.asarray(row, dtype=np.float64)


def _weight(risk: RiskProfile, key: str) -> float:
    return risk.repeat_share.weight if key == "repeat_share" else float(getattr(risk, key))


def fit(
    runs: list[DevRun], risk: RiskProfile, penalty: float, healthy_median: float | None, fit_flags: bool
) -> RiskProfile:
    """Non-negative weights and an intercept by L2-penalised logistic loss, kinds weighted equally.

    Without ``fit_flags`` the flag terms keep the profile's weights (an offset: a detector that
    fires on a few dev runs says too little to fit its weight) and only the continuous features'
    weights are fitted. ``healthy_median``: instead of the fitted intercept (which follows the
    suite's failure rate), the one that puts the median score of the dev runs labelled healthy
    (fault kinds aside) there."""
    full = np.stack([design(r.found, risk) for r in runs])
    k = len(CONTINUOUS)
    flag_weights = np.asarray([_weight(risk, key) for _, key in FLAG_WEIGHTS])
    x = full if fit_flags else full[:, :k]
    offset = np.zeros(len(runs)) if fit_flags else full[:, k:] @ flag_weights
    y = np.asarray([r.failed for r in runs], dtype=np.float64)
    kinds = [r.kind for r in runs]
    counts = {kind: kinds.count(kind) for kind in set(kinds)}
    w = np.asarray([1.0 / counts[kind] for kind in kinds]) * len(set(kinds))
    w /= w.mean()

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] + x @ theta[1:] + offset
        p = 1.0 / (1.0 + np.exp(-z))
        nll = np.sum(w * (np.logaddexp(0.0, z) - y * z)) / len(y)
        g = (p - y) * w / len(y)
        grad = np.concatenate([[g.sum()], x.T @ g + 2 * penalty * theta[1:]])
        return float(nll + penalty * np.sum(theta[1:] ** 2)), grad

    theta = np.zeros(x.shape[1] + 1)  # projected gradient descent (the weights stay >= 0)
    step = 0.5
    value, grad = loss(theta)
    for _ in range(20000):
        trial = theta - step * grad
        trial[1:] = np.maximum(trial[1:], 0.0)
        trial_value, trial_grad = loss(trial)
        if trial_value <= value:
            if value - trial_value < 1e-12:
                break
            theta, value, grad = trial, trial_value, trial_grad
            step *= 1.1
        else:
            step *= 0.5
    intercept = float(theta[0])
    if healthy_median is not None:  # the slopes from the fit, the level set a priori
        healthy = np.asarray([not r.failed and not r.kind.startswith("fault_") for r in runs])
        rest = x[healthy] @ theta[1:] + offset[healthy]
        intercept = math.log(healthy_median / (1 - healthy_median)) - float(np.median(rest))
    update: dict[str, Any] = {"intercept": round(intercept, 2)}
    for i, name in enumerate(CONTINUOUS):
        update[name] = getattr(risk, name).model_copy(update={"weight": round(float(theta[1 + i]), 2)})
    if fit_flags:
        for j, (_, key) in enumerate(FLAG_WEIGHTS):
            value = round(float(theta[1 + k + j]), 2)
            update[key] = (
                risk.repeat_share.model_copy(update={"weight": value}) if key == "repeat_share" else value
            )
    return risk.model_copy(update=update)


PENALTY_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


def cv_penalty(runs: list[DevRun], risk: RiskProfile, fit_flags: bool, folds: int = 5) -> dict[float, float]:
    """Kind-balanced held-out log loss of every penalty of :data:`PENALTY_GRID`, by grouped k-fold
    cross-validation on dev (a group's runs stay in one fold)."""
    groups = sorted({r.group for r in runs})
    rng = np.random.default_rng(0)
    fold_of = dict(zip(groups, rng.permutation(len(groups)) % folds, strict=True))
    losses: dict[float, float] = {}
    for penalty in PENALTY_GRID:
        total, weight = 0.0, 0.0
        for k in range(folds):
            train = [r for r in runs if fold_of[r.group] != k]
            held = [r for r in runs if fold_of[r.group] == k]
            if not held:
                continue
            fitted = fit(train, risk, penalty, None, fit_flags)
            kinds = [r.kind for r in held]
            for r in held:
                p = min(max(combine(r.found, fitted).smooth_score, 1e-6), 1 - 1e-6)
                w = 1.0 / kinds.count(r.kind)
                total -= w * (math.log(p) if r.failed else math.log(1 - p))
                weight += w
        losses[penalty] = total / weight
    return losses


def report(runs: list[DevRun], risk: RiskProfile) -> str:
    scores = np.asarray([combine(r.found, risk).risk_score for r in runs])
    lines = [
        "| kind | N (failed) | risk_score | best baseline | gap | p10 / median / p90 of risk |",
        "|---|---|---|---|---|---|",
    ]
    for kind, idx in _kind_indices(runs).items():
        y = np.asarray([runs[i].failed for i in idx])
        s = scores[idx]
        if y.all() or not y.any():
            lines.append(f"| {kind} | {len(idx)} ({int(y.sum())}) | – | – | – | – |")
            continue
        ours = auroc(s, y)
        best = best_baseline({k: [runs[i].baselines[k] for i in idx] for k in BASELINE_KEYS}, y)
        q = np.quantile(s, [0.1, 0.5, 0.9])
        lines.append(
            f"| {kind} | {len(idx)} ({int(y.sum())}) | {ours:.3f} | {best.key} {best.auroc:.3f} | "
            f"{ours - best.auroc:+.3f} | {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} |"
        )
    return "\n".join(lines)


def _kind_indices(runs: list[DevRun]) -> dict[str, list[int]]:
    """Each kind's runs, and the pooled ones: a fault kind's clean runs once (they are the factual
    prompts' runs)."""
    out: dict[str, list[int]] = {}
    for kind in [*dict.fromkeys(r.kind for r in runs), "pooled"]:
        idx = [i for i, r in enumerate(runs) if kind == "pooled" or r.kind == kind]
        if kind == "pooled":
            idx = [i for i in idx if not (runs[i].kind.startswith("fault_") and not runs[i].failed)]
        out[kind] = idx
    return out


def internal_table(runs: list[DevRun], risk: RiskProfile, weights: Sequence[float] = (0.25, 0.5, 1.0)) -> str:
    """Dev AUROC per kind of the shipped score, the best baseline, each attention feature alone and
    the shipped score with it added to its logit at each weight (see the module text)."""
    y = np.asarray([r.failed for r in runs])
    score = np.clip([combine(r.found, risk).risk_score for r in runs], 1e-9, 1 - 1e-9)
    logit = np.log(score / (1 - score))
    healthy = ~y & np.asarray([not r.kind.startswith("fault_") for r in runs])
    columns: dict[str, np.ndarray] = {"shipped": score}
    for name in INTERNAL:
        x = np.asarray([r.attention[name] for r in runs])
        ref = x[healthy & np.isfinite(x)]
        center = float(np.median(ref))
        scale = float(np.subtract(*np.percentile(ref, [75, 25]))) or 1e-3
        z = np.clip((np.where(np.isfinite(x), x, center) - center) / scale, -3.0, 3.0)
        columns[f"{name}, alone"] = z
        for w in weights:
            columns[f"{name}, w {w:g}"] = logit + w * z
    lines = [
        "| kind | N (failed) | best baseline | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for kind, idx in _kind_indices(runs).items():
        labels = y[idx]
        if labels.all() or not labels.any():
            continue
        best = best_baseline({k: [runs[i].baselines[k] for i in idx] for k in BASELINE_KEYS}, labels)
        cells = " | ".join(f"{auroc(s[idx], labels):.3f}" for s in columns.values())
        lines.append(f"| {kind} | {len(idx)} ({int(labels.sum())}) | {best.key} {best.auroc:.3f} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(".bench-out/validation_suite"))
    parser.add_argument("--fit", action="store_true", help="fit the weights on dev")
    parser.add_argument("--fit-flags", action="store_true", help="fit the flag terms' weights too")
    parser.add_argument(
        "--penalty", type=float, default=None, help="L2 penalty on the weights (default: grouped CV on dev)"
    )
    parser.add_argument(
        "--healthy-median",
        type=float,
        default=None,
        help="set the intercept so healthy dev runs' median is this",
    )
    parser.add_argument("--merge", type=Path, action="append", default=[], help="another signals.pkl to add")
    parser.add_argument(
        "--internal", action="store_true", help="the shipped score with attention features added"
    )
    args = parser.parse_args(argv)
    runs = dev_runs(args.out, args.merge)
    risk = load_profile("llama").risk
    print("shipped profile:\n" + report(runs, risk))
    if args.internal:
        print(
            "\nattention features added to the shipped score's logit (dev AUROC):\n"
            + internal_table(runs, risk)
        )
    if args.fit:
        penalty = args.penalty
        if penalty is None:
            losses = cv_penalty(runs, risk, args.fit_flags)
            penalty = min(losses, key=lambda k: (losses[k], -k))
            print(
                "\ngrouped 5-fold CV log loss on dev per penalty:",
                {k: round(v, 4) for k, v in losses.items()},
            )
        fitted = fit(runs, risk, penalty, args.healthy_median, args.fit_flags)
        print(f"penalty {penalty}")
        print("\nfitted on dev:", fitted.model_dump_json())
        print(report(runs, fitted))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
