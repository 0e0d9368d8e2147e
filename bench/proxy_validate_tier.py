"""A labelled risk model for the logprobs tier, fitted on proxy runs of the dev split (docs/validation.md).

The shipped profile's labelled risk model (``--calibration default``) was fitted on the transformers
backend's features of the QA set's dev split (float32, exact entropy). This script fits the same
model (the same features, grouped 10-fold CV over the L2 grid, Platt step;
:func:`corevital.analysis.calibration.fit.fit_risk_model`, what ``corevital calibrate --labels``
runs) on the logprobs tier's own features: the reports the proxy stored for a
deterministic part of the dev split (``bench/proxy_validate.py --split dev --every 3``), and scores
the test-split reports of ``bench/proxy_validate.py --every 2`` with it, next to the shipped model
and to the shipped model's score Platt-rescaled on the same dev runs (one slope and intercept).
The entropy is the capture's estimate, the midpoint of the bounds (reports stored with the lower
bound as their entropy are re-estimated from their stored bounds: ``estimated_reports``):

    .venv/bin/python bench/proxy_validate.py --split dev --every 3 --out .bench-out/proxy_validate_dev
    .venv/bin/python bench/proxy_validate_tier.py [--dev-db ...] [--test-db ...] [--out .bench-out/proxy_tier]

Writes the tier's profile (the shipped profile with the refitted risk model; usable as
``corevital proxy --calibration FILE``), ``tier.json`` and ``tier.md``. Sends nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from proxy_common import (  # first: sys.path (this checkout's src/, tests.support, bench/)
    MAX_NEW_TOKENS,
    REPO,
    RESAMPLES,
    ece_intervals,
)
from proxy_validate import LABELS, chat_body, estimated_reports, subset

from corevital.analysis.calibration.fit import DatasetInfo, fit_risk_model
from corevital.analysis.calibration.profile import CalibrationProfile, save_calibration_profile
from corevital.analysis.diagnose import diagnose
from corevital.analysis.evaluation import PlattScaler, auroc, bootstrap_ci
from corevital.analysis.profiles import load_profile
from corevital.capture.openai_api import prompt_text
from corevital.config import load_settings
from corevital.pipeline import Pipeline
from corevital.validation.answers import check_answer
from corevital.validation.labels import LabelledRecord
from tests.support.reanalysis import signals_from_report


class Runs:
    """The stored reports of a proxy run, one per record: signals, verdict, group."""

    def __init__(self, records: list[LabelledRecord], db: Path) -> None:
        by_prompt = {r.prompt.text: r for r in estimated_reports(db)[0]}
        self.records = []
        self.signals = []
        self.failed = []
        for record in records:
            report = by_prompt.get(prompt_text(chat_body(record, MAX_NEW_TOKENS)))
            if report is None:
                continue
            self.records.append(record)
            self.signals.append(signals_from_report(report))
            self.failed.append(int(not check_answer(report.generated.output_text, record)))
        self.y = np.asarray(self.failed)
        self.groups = np.asarray([r.group for r in self.records])

    def scores(self, profile: CalibrationProfile | None) -> np.ndarray:
        thresholds = load_profile("unknown")
        return np.asarray(
            [diagnose(s, thresholds, calibration=profile).risk.risk_score for s in self.signals]
        )


def row(name: str, p: np.ndarray, runs: Runs) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "mean_predicted": float(p.mean()), "observed": float(runs.y.mean())}
    a = bootstrap_ci(auroc, p, runs.y, n_resamples=RESAMPLES, groups=runs.groups)
    out["auroc"] = (a.estimate, a.low, a.high)
    for label, (ci, floor) in ece_intervals(p, runs.y, runs.groups).items():
        out[label] = {"ece": (ci.estimate, ci.low, ci.high), "floor_mean": floor.mean, "floor_p95": floor.p95}
    return out


def markdown(rows: list[dict[str, Any]], n: int) -> str:
    def ci(v: tuple[float, float, float]) -> str:
        return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"

    lines = [
        f"Test split, half of the groups, logprobs tier: N = {n}",
        "",
        "| labelled risk | AUROC [95% CI] | mean predicted / observed | ECE equal-width [95% CI] "
        "| noise floor (mean, p95) | ECE equal-mass [95% CI] | noise floor (mean, p95) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w, m = r["equal-width"], r["equal-mass"]
        lines.append(
            f"| {r['name']} | {ci(r['auroc'])} | {r['mean_predicted']:.3f} / {r['observed']:.3f} "
            f"| {ci(w['ece'])} | {w['floor_mean']:.3f}, {w['floor_p95']:.3f} "
            f"| {ci(m['ece'])} | {m['floor_mean']:.3f}, {m['floor_p95']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument(
        "--dev-db", type=Path, default=REPO / ".bench-out" / "proxy_validate_dev" / "proxy.db"
    )
    parser.add_argument("--dev-every", type=int, default=3)
    parser.add_argument("--test-db", type=Path, default=REPO / ".bench-out" / "proxy_validate" / "proxy.db")
    parser.add_argument("--test-every", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / ".bench-out" / "proxy_tier")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    dev = Runs(subset(args.labels, "dev", args.dev_every, args.out / "dev_subset.jsonl"), args.dev_db)
    test = Runs(subset(args.labels, "test", args.test_every, args.out / "test_subset.jsonl"), args.test_db)
    print(
        f"dev: {len(dev.records)} runs ({dev.y.mean():.1%} failed); test: {len(test.records)} runs",
        flush=True,
    )

    shipped = Pipeline(load_settings({"calibration": "default"})).calibration()
    assert shipped is not None and shipped.risk_model is not None
    thresholds = load_profile("unknown")
    features = [diagnose(s, thresholds).run_features for s in dev.signals]
    fitted = fit_risk_model(
        features,
        dev.y,
        dev.groups,
        dataset=DatasetInfo(
            name=f"{args.labels.name} (dev, groups with SHA-256 % {args.dev_every} == 0, logprobs tier "
            "through corevital proxy in front of llama.cpp's server)",
            sha256=hashlib.sha256(args.labels.read_bytes()).hexdigest(),
            split="dev",
        ),
        feature_names=shipped.risk_model.features,
    )
    tier = shipped.with_risk_model(fitted.spec)
    save_calibration_profile(tier, args.out / "logprobs_tier_profile.json")
    platt = PlattScaler.fit(dev.scores(shipped), dev.y)

    shipped_test = test.scores(shipped)
    rows = [
        row("shipped model (transformers-tier dev fit)", shipped_test, test),
        row("shipped model, Platt-rescaled on the dev proxy runs", platt.predict(shipped_test), test),
        row("refitted on the dev proxy runs (logprobs tier)", test.scores(tier), test),
    ]
    result = {
        "dev_runs": len(dev.records),
        "dev_failure_rate": float(dev.y.mean()),
        "test_runs": len(test.records),
        "platt": {"a": platt.a, "b": platt.b},
        "fit": {
            "l2": fitted.spec.l2,
            "cv_auroc": fitted.spec.training.cv_auroc,
            "cv_ece": fitted.spec.training.cv_ece,
            "cv_ece_equal_mass": fitted.cv_ece_equal_mass,
            "cv_ece_noise_floor": [fitted.cv_ece_noise_floor.mean, fitted.cv_ece_noise_floor.p95],
            "coef": dict(zip(fitted.spec.features, fitted.spec.coef, strict=True)),
        },
        "rows": rows,
    }
    text = markdown(rows, len(test.records))
    (args.out / "tier.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (args.out / "tier.md").write_text(text, encoding="utf-8")
    print(json.dumps(result["fit"], indent=1), flush=True)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
