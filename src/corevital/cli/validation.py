"""The ``corevital calibrate`` and ``corevital validate`` commands: thin wiring over :mod:`.validation`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from corevital.analysis.sklearn_support import require_sklearn
from corevital.cli.args import OUTPUT_SETTINGS, add_run_flags, settings_overrides
from corevital.config import load_settings
from corevital.errors import InputError
from corevital.pipeline import Pipeline, describe_loaded, settle_loaded_model
from corevital.progress import Progress
from corevital.report.timestamps import utc_now

# Settings these commands do not take: they write a profile or a validation directory, not reports.
_NOT_FOR_CALIBRATE = (*OUTPUT_SETTINGS, "calibration", "rag_context", "perf")
_NOT_FOR_VALIDATE = (*OUTPUT_SETTINGS, "rag_context", "perf")


def _progress(total: int, label: str) -> Progress:
    return Progress(total, label)


def _records(path: str, split: str | None) -> list[Any]:
    from corevital.validation.labels import load_labelled

    return list(load_labelled(path, split=split))


def _checker(spec: str | None) -> Any:
    from corevital.validation.answers import check_answer, load_checker

    return load_checker(spec) if spec else check_answer


def _prompt_items(path: str) -> list[Any]:
    from corevital.cli.common import read_prompts_file
    from corevital.validation.collect import PromptItem

    return [PromptItem(key=f"prompt-{i}", text=text) for i, text in enumerate(read_prompts_file(path))]


def _calibration_records(path: str, split: str | None) -> tuple[list[Any], str | None]:
    """The records ``calibrate`` fits on: ``--split``, else ``dev`` when the file has one, else all."""
    if split is not None:
        return _records(path, split), split
    records = _records(path, None)
    if any(r.split == "dev" for r in records):
        return [r for r in records if r.split == "dev"], "dev"
    return records, None


def cmd_calibrate(args: argparse.Namespace) -> int:
    from corevital.analysis.calibration.profile import save_calibration_profile
    from corevital.validation.workflow import calibrate

    if not args.prompts and not args.labels:
        raise InputError("calibrate needs --prompts FILE (healthy runs) and/or --labels FILE (labelled runs)")
    if args.labels:
        require_sklearn("calibrate --labels (fitting the risk model)")
    if args.folds < 2:
        raise InputError(f"--folds must be at least 2 (got {args.folds})")
    out = Path(args.out)
    if out.is_dir():
        raise InputError(
            f"--out {out} is a directory; give the profile's file name (e.g. {out / 'profile.json'})"
        )
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: the directory {out.parent} does not exist")
    settings = load_settings(settings_overrides(args), config_file=args.config)
    _quiet_libraries(settings.log_level)
    prompts = _prompt_items(args.prompts) if args.prompts else None
    split = None
    records = None
    if args.labels:
        records, split = _calibration_records(args.labels, args.split)
    checker = _checker(args.checker)
    pipeline = Pipeline(settings)
    t0 = time.perf_counter()
    print(f"Model: {describe_loaded(pipeline.loaded)}")
    settle_loaded_model()
    outcome = calibrate(
        pipeline,
        prompts=prompts,
        records=records,
        labels_file=args.labels,
        split=split,
        checker=checker,
        created_at_utc=utc_now(),
        progress=_progress,
        folds=args.folds,
    )
    path = save_calibration_profile(outcome.profile, args.out)
    profile = outcome.profile
    source = " and ".join(
        name
        for name, used in (("prompts", prompts), ("correctly answered labelled records", records))
        if used
    )
    print(
        f"Profile: {path} ({profile.num_runs} healthy runs from {source}, {profile.num_steps} steps, "
        f"{profile.model.model_id})"
    )
    if outcome.fitted is not None:
        t = outcome.fitted.spec.training
        print(
            f"Risk model: {t.num_records} labelled records ({t.failure_rate:.1%} failed, "
            f"{t.num_groups} groups), L2 {outcome.fitted.spec.l2:g}, {t.cv_folds}-fold grouped CV: "
            f"AUROC {_opt(t.cv_auroc)}, ECE {_opt(t.cv_ece)} (equal-mass bins "
            f"{outcome.fitted.cv_ece_equal_mass:.3f}; a perfectly calibrated model at this N: "
            f"{outcome.fitted.cv_ece_noise_floor.mean:.3f}; debiased L2 calibration error "
            f"{outcome.fitted.cv_calibration_error_debiased:.3f})"
        )
    print(f"Done in {time.perf_counter() - t0:.0f} s")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from corevital.validation.outputs import table_markdown, write_outputs
    from corevital.validation.workflow import labelled_runs, validate

    require_sklearn("validate")
    settings = load_settings(settings_overrides(args), config_file=args.config)
    _quiet_libraries(settings.log_level)
    records = _records(args.labels, args.split)
    if args.limit is not None:
        if args.limit < 1:
            raise InputError("--limit must be at least 1")
        records = records[: args.limit]
    checker = _checker(args.checker)
    pipeline = Pipeline(settings)
    profile = pipeline.calibration()
    t0 = time.perf_counter()
    print(f"Model: {describe_loaded(pipeline.loaded)}")
    settle_loaded_model()
    pipeline.check_calibration_model()
    for warning in pipeline.calibration_mismatch():
        print(f"Warning: {warning}")
    labelled_model = profile is not None and profile.risk_model is not None
    runs = labelled_runs(pipeline, records, checker, progress=Progress(len(records), "validate"))
    elapsed = time.perf_counter() - t0
    tables = validate(runs, labelled_model=labelled_model)
    header = {
        "model_id": pipeline.loaded.resolved.hf_id,
        "labels": str(args.labels),
        "calibration": settings.calibration,
        "risk_model": "labelled" if labelled_model else "heuristic",
        "temperature": settings.temperature,
        "max_new_tokens": settings.max_new_tokens,
        "records": len(records),
        "elapsed_s": round(elapsed, 1),
        "created_at_utc": utc_now(),
    }
    written = write_outputs(
        args.out, tables, runs, labelled_model=labelled_model, header=header, plots=not args.no_plots
    )
    if args.json:
        print((Path(args.out) / "validation.json").read_text(encoding="utf-8"))
    else:
        for table in tables:
            print()
            print(table_markdown(table))
        print()
        print(f"{len(records)} records in {elapsed:.0f} s. Written: " + ", ".join(str(p) for p in written))
    return 0


def _opt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _quiet_libraries(level: str) -> None:
    from corevital.cli.common import configure_logging

    configure_logging(level)


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``calibrate`` or ``validate``."""
    if name == "validate":
        _configure_validate(parser)
        return
    cal = parser
    cal.add_argument(
        "--prompts", metavar="FILE", help="Known-healthy prompts: one per line, or JSONL with 'prompt'."
    )
    cal.add_argument(
        "--labels",
        metavar="FILE",
        help="Labelled JSONL records (prompt + answer, or failed) to fit the risk model.",
    )
    cal.add_argument(
        "--split",
        metavar="NAME",
        help="Use only this split of --labels (default: dev, when the file has one).",
    )
    cal.add_argument(
        "--checker", metavar="MODULE:FUNCTION", help="Custom answer checker (output, record) -> bool."
    )
    cal.add_argument(
        "--folds", type=int, default=10, metavar="N", help="Grouped cross-validation folds (default 10)."
    )
    cal.add_argument("--out", required=True, metavar="PROFILE", help="Where to write the profile JSON.")
    cal.add_argument("--config", metavar="FILE", help="YAML file of settings (see docs/configuration.md).")
    add_run_flags(cal, exclude=_NOT_FOR_CALIBRATE)
    cal.set_defaults(handler=cmd_calibrate)


def _configure_validate(val: argparse.ArgumentParser) -> None:
    val.add_argument(
        "--labels", required=True, metavar="FILE", help="Labelled JSONL records (prompt + answer, or failed)."
    )
    val.add_argument(
        "--split", metavar="NAME", help="Only this split (default: every split, one table each)."
    )
    val.add_argument("--limit", type=int, metavar="N", help="Only the first N records (after --split).")
    val.add_argument(
        "--checker", metavar="MODULE:FUNCTION", help="Custom answer checker (output, record) -> bool."
    )
    val.add_argument(
        "--out", default="runs/validation", metavar="DIR", help="Output directory (JSON, MD, PNG)."
    )
    val.add_argument(
        "--no-plots", "--no_plots", dest="no_plots", action="store_true", help="Skip the PNG plots."
    )
    val.add_argument("--json", action="store_true", help="Print validation.json instead of the tables.")
    val.add_argument("--config", metavar="FILE", help="YAML file of settings (see docs/configuration.md).")
    add_run_flags(val, exclude=_NOT_FOR_VALIDATE)
    val.set_defaults(handler=cmd_validate)
