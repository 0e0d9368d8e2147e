"""``corevital calibrate`` and ``corevital validate``: runs in, calibration profiles and tables out.

- :func:`labelled_runs` runs labelled records and judges each output (``failed`` records keep their
  own label; the others go through the answer checker).
- :func:`calibrate` builds a calibration profile from known-healthy runs (the ``--prompts`` file
  and the labelled records that were answered correctly) and, with ``--labels``, fits the labelled
  risk model and stores it in the profile.
- :func:`validate` computes the validation table of every split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corevital import __version__
from corevital.analysis.calibration.builder import ProfileBuilder
from corevital.analysis.calibration.fit import DatasetInfo, FittedRiskModel, fit_risk_model
from corevital.analysis.calibration.profile import CalibrationProfile, ModelIdentity
from corevital.analysis.diagnose import diagnose
from corevital.analysis.profiles import load_profile
from corevital.errors import InputError
from corevital.pipeline import Pipeline, generation_identity
from corevital.progress import Progress
from corevital.validation.answers import AnswerChecker
from corevital.validation.collect import CollectedRun, PromptItem, collect_runs
from corevital.validation.labels import LabelledRecord
from corevital.validation.table import LabelledRun, SplitTable, split_table

ProgressFactory = Callable[[int, str], Progress | None]


def _no_progress(total: int, label: str) -> Progress | None:
    return None


def record_item(record: LabelledRecord) -> PromptItem:
    if record.messages is not None:
        return PromptItem(key=record.id, messages=tuple((m.role, m.content) for m in record.messages))
    return PromptItem(key=record.id, text=record.prompt)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def labelled_runs(
    pipeline: Pipeline,
    records: Sequence[LabelledRecord],
    checker: AnswerChecker,
    *,
    progress: Progress | None = None,
) -> list[LabelledRun]:
    """Run every record and judge it; with a labelled risk model also keep the heuristic score."""
    collected = collect_runs(pipeline, [record_item(r) for r in records], progress=progress)
    return judge(pipeline, records, collected, checker)


def judge(
    pipeline: Pipeline,
    records: Sequence[LabelledRecord],
    collected: Sequence[CollectedRun],
    checker: AnswerChecker,
) -> list[LabelledRun]:
    profile = pipeline.calibration()
    labelled_model = profile is not None and profile.risk_model is not None
    thresholds = load_profile(pipeline.loaded.capabilities.model_type, pipeline.settings.thresholds or None)
    runs = []
    for record, run in zip(records, collected, strict=True):
        failed = record.failed if record.failed is not None else not checker(run.output_text, record)
        risk = run.diagnosis.risk.risk_score
        # The heuristic score of the same run, for comparison (analysis only, no second generation).
        heuristic = risk
        if labelled_model:
            heuristic = diagnose(run.signals, thresholds, basin_scores=run.basin_scores).risk.risk_score
        runs.append(
            LabelledRun(
                record_id=record.id,
                split=record.split or "all",
                task=record.task,
                group=record.group or record.id,
                failed=bool(failed),
                output=run.output_text,
                finish_reason=run.finish_reason,
                risk_score=risk,
                heuristic_risk_score=heuristic,
                features=run.diagnosis.run_features,
            )
        )
    return runs


def model_identity(pipeline: Pipeline) -> ModelIdentity:
    return ModelIdentity.of(pipeline.loaded)


@dataclass(frozen=True)
class CalibrationOutcome:
    profile: CalibrationProfile
    healthy_runs: int
    labelled: list[LabelledRun] | None = None
    fitted: FittedRiskModel | None = None


def calibrate(
    pipeline: Pipeline,
    *,
    prompts: Sequence[PromptItem] | None,
    records: Sequence[LabelledRecord] | None,
    labels_file: str | None,
    split: str | None,
    checker: AnswerChecker,
    created_at_utc: str,
    progress: ProgressFactory = _no_progress,
    folds: int = 10,
    seed: int = 0,
) -> CalibrationOutcome:
    if not prompts and not records:
        raise InputError("calibrate needs --prompts FILE (healthy runs) and/or --labels FILE (labelled runs)")
    builder = ProfileBuilder(model_identity(pipeline), generation_identity(pipeline.settings))
    labelled: list[LabelledRun] | None = None
    healthy: list[CollectedRun] = []
    if prompts:
        healthy = collect_runs(pipeline, prompts, progress=progress(len(prompts), "healthy runs"))
        for run in healthy:
            builder.add(run.signals)
    fitted = None
    if records:
        collected = collect_runs(
            pipeline, [record_item(r) for r in records], progress=progress(len(records), "labelled runs")
        )
        labelled = judge(pipeline, records, collected, checker)
        for run, judged in zip(collected, labelled, strict=True):
            if not judged.failed:  # a correct answer is a healthy run too
                builder.add(run.signals)
        assert labels_file is not None
        fitted = fit_risk_model(
            [r.features for r in labelled],
            np.asarray([int(r.failed) for r in labelled]),
            np.asarray([r.group for r in labelled]),
            dataset=DatasetInfo(name=Path(labels_file).name, sha256=file_sha256(labels_file), split=split),
            folds=folds,
            seed=seed,
        )
    profile = builder.finish(created_at_utc=created_at_utc, corevital_version=__version__)
    if fitted is not None:
        profile = profile.with_risk_model(fitted.spec)
    return CalibrationOutcome(
        profile=profile, healthy_runs=builder.num_runs, labelled=labelled, fitted=fitted
    )


def validate(runs: Sequence[LabelledRun], *, labelled_model: bool) -> list[SplitTable]:
    """One table per split, in the order the splits first appear."""
    splits = list(dict.fromkeys(r.split for r in runs))
    return [split_table(s, [r for r in runs if r.split == s], labelled_model=labelled_model) for s in splits]
