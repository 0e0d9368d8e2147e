"""Writing a validation: the table as JSON and Markdown, the per-record runs, the PNG plots.

``validation.json`` holds everything the printed table shows plus the run settings; ``runs.jsonl``
one line per record (id, split, label, output, every score and every run feature) so any number
can be recomputed and another risk model can be fitted without running the model again;
``reliability_<split>.png`` and ``roc_<split>.png`` plot the risk score(s) and baselines of a split.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from corevital.analysis.evaluation import ConfidenceInterval
from corevital.errors import StoreError
from corevital.validation.table import LabelledRun, ScoreRow, SplitTable, score_columns


def _num(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


def _ci(ci: ConfidenceInterval | None) -> dict[str, float | None] | None:
    if ci is None:
        return None
    return {"estimate": _num(ci.estimate), "low": _num(ci.low), "high": _num(ci.high)}


def table_json(table: SplitTable) -> dict[str, Any]:
    dist = dataclasses.asdict(table.risk_distribution)
    return {
        "split": table.split,
        "n": table.n,
        "failures": table.failures,
        "failure_rate": _num(table.failure_rate),
        "tasks": {t: {"n": n, "failures": f} for t, (n, f) in table.tasks.items()},
        "scores": [
            {
                "name": row.name,
                "label": row.label,
                "is_probability": row.is_probability,
                "auroc": _ci(row.auroc),
                "auprc": _ci(row.auprc),
                "ece": _ci(row.ece),
                "ece_equal_mass": _ci(row.ece_equal_mass),
                "ece_noise_floor": None
                if row.ece_noise_floor is None
                else {"mean": row.ece_noise_floor.mean, "p95": row.ece_noise_floor.p95},
                "calibration_error_debiased": _ci(row.calibration_error_debiased),
            }
            for row in table.rows
        ],
        "risk_score_distribution": {k: (_num(v) if isinstance(v, float) else v) for k, v in dist.items()},
    }


def _fmt(ci: ConfidenceInterval | None) -> str:
    if ci is None or not math.isfinite(ci.estimate):
        return "–"
    if not (math.isfinite(ci.low) and math.isfinite(ci.high)):
        return f"{ci.estimate:.3f}"
    return f"{ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


def _row_line(row: ScoreRow) -> str:
    floor = "–" if row.ece_noise_floor is None else f"{row.ece_noise_floor.mean:.3f}"
    return (
        f"| {row.label} | {_fmt(row.auroc)} | {_fmt(row.auprc)} | {_fmt(row.ece)} | "
        f"{_fmt(row.ece_equal_mass)} | {floor} | {_fmt(row.calibration_error_debiased)} |"
    )


def table_markdown(table: SplitTable) -> str:
    d = table.risk_distribution
    tasks = ", ".join(f"{t}: {n} ({f / n:.0%} failed)" for t, (n, f) in table.tasks.items())
    lines = [
        f"### Split `{table.split}`: N = {table.n}, failure rate {table.failure_rate:.1%}",
        "",
        f"Tasks: {tasks}",
        "",
        "| score | AUROC [95% CI] | AUPRC [95% CI] | ECE [95% CI] | ECE, equal-mass bins [95% CI] | "
        "ECE of a perfectly calibrated score at this N | debiased L2 calibration error [95% CI] |",
        "|---|---|---|---|---|---|---|",
        *(_row_line(r) for r in table.rows),
        "",
        (
            f"risk_score distribution: min {d.minimum:.3f}, p10 {d.p10:.3f}, p25 {d.p25:.3f}, "
            f"median {d.median:.3f}, p75 {d.p75:.3f}, p90 {d.p90:.3f}, max {d.maximum:.3f}; "
            f"per 0.1 bin: {list(d.histogram)}; most common value shared by {d.most_common_share:.1%}"
        ),
    ]
    return "\n".join(lines)


def runs_jsonl(runs: Sequence[LabelledRun], *, labelled_model: bool) -> str:
    columns = score_columns(runs, labelled_model=labelled_model)
    lines = []
    for i, run in enumerate(runs):
        entry: dict[str, Any] = {
            "id": run.record_id,
            "split": run.split,
            "task": run.task,
            "group": run.group,
            "failed": run.failed,
            "finish_reason": run.finish_reason,
            "output": run.output,
        }
        entry.update({name: _num(scores[i]) for name, _, _, scores in columns})
        entry["features"] = {k: _num(v) for k, v in dataclasses.asdict(run.features).items()}
        lines.append(json.dumps(entry, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def write_outputs(
    out_dir: str | Path,
    tables: Sequence[SplitTable],
    runs: Sequence[LabelledRun],
    *,
    labelled_model: bool,
    header: dict[str, Any],
    plots: bool = True,
) -> list[Path]:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "validation.json", out / "validation.md", out / "runs.jsonl"]
        document = {**header, "splits": [table_json(t) for t in tables]}
        written[0].write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        markdown = "\n\n".join(table_markdown(t) for t in tables)
        written[1].write_text(markdown + "\n", encoding="utf-8")
        written[2].write_text(runs_jsonl(runs, labelled_model=labelled_model), encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot write the validation to {out}: {exc.strerror or exc}") from exc
    if plots:
        written.extend(_plots(out, tables, runs, labelled_model=labelled_model))
    return written


def _plots(
    out: Path, tables: Sequence[SplitTable], runs: Sequence[LabelledRun], *, labelled_model: bool
) -> list[Path]:
    from corevital.validation.plots import PlotSeries, write_reliability_diagram, write_roc_curves

    written = []
    for table in tables:
        subset = [r for r in runs if r.split == table.split]
        labels = np.asarray([int(r.failed) for r in subset])
        if labels.min(initial=0) == labels.max(initial=0):
            continue  # one class only: no curve to draw
        columns = score_columns(subset, labelled_model=labelled_model)
        probabilities = [PlotSeries(label, scores, labels) for _, label, is_p, scores in columns if is_p]
        every = [PlotSeries(label, scores, labels) for _, label, _, scores in columns]
        title = f"split {table.split} (N = {table.n}, {table.failure_rate:.0%} failed)"
        written.append(
            write_reliability_diagram(
                out / f"reliability_{table.split}.png", probabilities, title=f"Reliability, {title}"
            )
        )
        written.append(write_roc_curves(out / f"roc_{table.split}.png", every, title=f"ROC, {title}"))
    return written
