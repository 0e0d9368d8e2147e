"""How well calibrated the labelled path is per kind of the failure-kind suite, read against noise.

Reads the ``runs.jsonl`` of ``bench/validation_suite.py`` (every run's label, group, split and run
features) and, for every plain kind, fits the labelled risk model exactly as ``corevital calibrate
--labels`` does (:func:`corevital.analysis.calibration.fit.fit_risk_model`, 5 grouped folds):

- ``dev-CV``: nested grouped 5-fold cross-validation inside the dev split (the model and its Platt
  step fitted on four fifths of the dev groups, predictions on the fifth): AUROC, ECE with 10
  equal-width and 10 equal-mass bins, each with a 95% group-bootstrap interval, and the noise floor
  of each (mean and 95th percentile of the ECE a perfectly calibrated predictor shows with the same
  probabilities and N), and the debiased L2 calibration error over 10 equal-mass bins (Kumar, Liang
  & Ma 2019, ``calibration_error_debiased``: its square is unbiased, so a calibrated predictor
  reads near 0 at any N) with its 95% group-bootstrap interval and the 95th percentile it reaches
  for a perfectly calibrated predictor with the same probabilities and N (labels drawn as
  Bernoulli(p): a value above it is miscalibration, not noise), and the mean probability minus the
  failure rate (calibration in the large: a base rate the model did not learn). With
  ``--recalibration`` the same nested CV also for the logits without Platt scaling and with isotonic
  regression in its place;
- ``test`` (only with ``--split test``): the model fitted on the whole dev split of the kind, read on
  the test split of the kind, the same columns.

It also prints, per kind and split, the paired group-bootstrap interval of the default risk score's
AUROC minus the best baseline's (the baseline chosen on that split, as the suite's tables do).

    .venv/bin/python bench/labelled_calibration.py --runs .bench-out/validation_suite/runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from baselines import best_baseline, paired_auroc_difference

from corevital.analysis.calibration.features import RunFeatures
from corevital.analysis.calibration.fit import DatasetInfo, FittedRiskModel, fit_risk_model
from corevital.analysis.calibration.risk_model import predict
from corevital.analysis.evaluation import (
    auroc,
    bootstrap_ci,
    calibration_error_debiased,
    compute_ece,
    compute_ece_equal_mass,
    ece_noise_floor,
)
from corevital.validation.suite import BASELINE_KEYS

PLAIN_KINDS = ("factual", "arithmetic", "word_problem", "open_ended", "unanswerable")
Row = dict[str, Any]


def kind_rows(rows: list[Row], kind: str, split: str) -> list[Row]:
    """A kind's runs of one split; a fault kind with the fault-free runs of its prompts (label 0)."""
    if not kind.startswith("fault_"):
        return [r for r in rows if r["kind"] == kind and r["split"] == split]
    by_id = {r["id"]: r for r in rows}
    faulted = [r for r in rows if r["kind"] == kind and r["split"] == split]
    return faulted + [dict(by_id[r["clean_of"]], failed=False) for r in faulted if r["clean_of"] in by_id]


def _fit(runs: list[Row]) -> FittedRiskModel:
    y = [int(r["failed"]) for r in runs]
    most = max(2, min(5, sum(y), len(y) - sum(y), len({r["group"] for r in runs})))
    for folds in range(most, 1, -1):  # fewer folds when a grouped fold's training part is one class
        try:
            return fit_risk_model(
                [RunFeatures(**r["features"]) for r in runs],
                y,
                [r["group"] for r in runs],
                dataset=DatasetInfo("suite", "-", "dev"),
                folds=folds,
            )
        except ValueError:
            if folds == 2:
                raise
    raise AssertionError("unreachable")


def _probability(fitted: FittedRiskModel, runs: list[Row]) -> np.ndarray:
    return np.asarray([predict(fitted.spec, RunFeatures(**r["features"])).probability for r in runs])


def _raw(fitted: FittedRiskModel, runs: list[Row]) -> np.ndarray:
    """The fitted model's own probability, without its Platt step."""
    logits = [predict(fitted.spec, RunFeatures(**r["features"])).logit for r in runs]
    raw: np.ndarray = 1.0 / (1.0 + np.exp(-np.asarray(logits)))
    return raw


def _isotonic(fitted: FittedRiskModel, train: list[Row], runs: list[Row]) -> np.ndarray:
    """Isotonic regression in place of the Platt step, fitted on the training runs' out-of-fold
    probabilities (monotone in the logit, so the same order)."""
    from sklearn.isotonic import IsotonicRegression

    y = np.asarray([int(r["failed"]) for r in train])
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(fitted.oof_probability, y)
    return np.asarray(iso.predict(_probability(fitted, runs)))


Predictor = Callable[[FittedRiskModel, list[Row], list[Row]], np.ndarray]
PREDICTORS: dict[str, Predictor] = {
    "Platt (the fit's)": lambda f, train, runs: _probability(f, runs),
    "no recalibration": lambda f, train, runs: _raw(f, runs),
    "isotonic": _isotonic,
}


def nested_cv(runs: list[Row], predictors: dict[str, Predictor], seed: int = 0) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities of every predictor: outer grouped 5-fold CV over the runs' groups."""
    from corevital.analysis.evaluation import grouped_kfold

    g = np.asarray([r["group"] for r in runs])
    out = {name: np.full(len(runs), np.nan) for name in predictors}
    for train_idx, test_idx in grouped_kfold(g, n_splits=5, seed=seed):
        train = [runs[i] for i in train_idx]
        test = [runs[i] for i in test_idx]
        fitted = _fit(train)
        for name, predictor in predictors.items():
            out[name][test_idx] = predictor(fitted, train, test)
    return out


def calibration_cells(p: np.ndarray, runs: list[Row], resamples: int) -> list[str]:
    y = np.asarray([int(r["failed"]) for r in runs])
    g = np.asarray([r["group"] for r in runs])
    cells = []
    if 0 < y.sum() < y.size:
        a = bootstrap_ci(auroc, p, y, n_resamples=resamples, groups=g)
        cells.append(f"{a.estimate:.3f} [{a.low:.3f}, {a.high:.3f}]")
    else:
        cells.append("– (one class)")
    for metric in (compute_ece, compute_ece_equal_mass):
        e = bootstrap_ci(metric, p, y, n_resamples=resamples, groups=g)
        floor = ece_noise_floor(p, metric, n_sims=1000, seed=0)
        cells.append(f"{e.estimate:.3f} [{e.low:.3f}, {e.high:.3f}]")
        cells.append(f"{floor.mean:.3f} (p95 {floor.p95:.3f})")
    d = bootstrap_ci(calibration_error_debiased, p, y, n_resamples=resamples, groups=g)
    calibrated = ece_noise_floor(p, calibration_error_debiased, n_sims=1000, seed=0)
    cells.append(f"{d.estimate:.3f} [{d.low:.3f}, {d.high:.3f}]")
    cells.append(f"{calibrated.p95:.3f}")
    cells.append(f"{float(p.mean() - y.mean()):+.3f}")
    return cells


HEAD = (
    "| kind | where | N (failed) | recalibration | AUROC [95% CI] | ECE equal-width [95% CI] | "
    "its noise floor | ECE equal-mass [95% CI] | its noise floor | debiased L2 calibration error [95% CI] | "
    "its p95 if calibrated | mean P − failure rate |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def calibration_table(rows: list[Row], split: str, resamples: int, recalibration: bool) -> str:
    lines = [HEAD]
    predictors = PREDICTORS if recalibration else {"Platt (the fit's)": PREDICTORS["Platt (the fit's)"]}
    for kind in PLAIN_KINDS:
        dev = kind_rows(rows, kind, "dev")
        y = [int(r["failed"]) for r in dev]
        n = f"{len(dev)} ({sum(y)})"
        if min(sum(y), len(y) - sum(y)) < 4:
            lines.append(
                f"| {kind} | dev-CV | {n} | – | not fitted: {min(sum(y), len(y) - sum(y))} of one class |"
            )
            continue
        try:
            predicted = nested_cv(dev, predictors)
        except ValueError as exc:  # an outer training part whose grouped folds all lack a class
            groups = len({r["group"] for r in dev if not r["failed"]})
            lines.append(f"| {kind} | dev-CV | {n} | – | not fitted: successes in {groups} groups ({exc}) |")
            continue
        for name, p in predicted.items():
            cells = " | ".join(calibration_cells(p, dev, resamples))
            lines.append(f"| {kind} | dev-CV | {n} | {name} | {cells} |")
        if split == "test":
            test = kind_rows(rows, kind, "test")
            fitted = _fit(dev)
            ty = [int(r["failed"]) for r in test]
            cells = " | ".join(calibration_cells(_probability(fitted, test), test, resamples))
            lines.append(f"| {kind} | test (fitted on all dev) | {len(test)} ({sum(ty)}) | Platt | {cells} |")
    return "\n".join(lines)


def default_gap_table(rows: list[Row], split: str, resamples: int) -> str:
    """Default risk score's AUROC minus the best baseline's, with a paired group-bootstrap interval."""
    kinds = list(dict.fromkeys(r["kind"] for r in rows if r["kind"] != "requested_repetition"))
    lines = [
        "| kind | N (failed) | default | best baseline | its AUROC | default − best [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        runs = kind_rows(rows, kind, split)
        y = np.asarray([int(r["failed"]) for r in runs])
        if not 0 < y.sum() < y.size:
            lines.append(f"| {kind} | {len(runs)} ({int(y.sum())}) | – | – | – | one class |")
            continue
        g = np.asarray([r["group"] for r in runs])
        default = np.asarray([float(r["risk_score"]) for r in runs])
        best = best_baseline({k: [float(r[k]) for r in runs] for k in BASELINE_KEYS}, y)
        ci = paired_auroc_difference(default, best.scores, y, g, resamples)
        lines.append(
            f"| {kind} | {len(runs)} ({int(y.sum())}) | {auroc(default, y):.3f} | {best.key} | "
            f"{best.auroc:.3f} | {ci.estimate:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, default=Path(".bench-out/validation_suite/runs.jsonl"))
    parser.add_argument("--split", default="dev", help="dev (CV inside dev only) or test (also read test)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--recalibration", action="store_true", help="also no Platt step and isotonic")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    rows = [json.loads(line) for line in args.runs.read_text(encoding="utf-8").splitlines() if line]
    print(calibration_table(rows, args.split, args.resamples, args.recalibration))
    print()
    print(f"Default risk score against the best baseline, split {args.split}:\n")
    print(default_gap_table(rows, args.split, args.resamples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
