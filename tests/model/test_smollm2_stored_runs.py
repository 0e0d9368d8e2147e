"""`corevital runs/show/compare/export` on runs of the real SmolLM2 model stored in SQLite."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from corevital.capture.loading import LoadedModel
from corevital.cli import main
from corevital.pipeline import Pipeline
from corevital.sinks.sqlite import SQLiteStore
from tests.model.conftest import smol_settings

pytestmark = [pytest.mark.model, pytest.mark.slow]

SKY = "Explain why the sky is blue."


@pytest.fixture(scope="module")
def db(smollm2: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three greedy summary-capture runs in one batch: one prompt twice, another once."""
    pipeline = Pipeline(smol_settings(temperature=0.0, max_new_tokens=12, capture="summary"))
    pipeline.use_model(smollm2)
    reports = pipeline.build(pipeline.capture([SKY, SKY, "Name three fruits."]))
    path = tmp_path_factory.mktemp("smollm2-store") / "corevital.db"
    with SQLiteStore(path) as store:
        for report in reports:
            store.write(report)
    return str(path)


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main([*argv, "--json"]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_runs_show_and_compare_a_real_model(capsys: pytest.CaptureFixture[str], db: str) -> None:
    listed = cli_json(capsys, "runs", "--db", db)
    assert listed["total"] == 3
    assert {run["model_id"] for run in listed["runs"]} == {"HuggingFaceTB/SmolLM2-135M-Instruct"}
    assert all(run["generated_tokens"] == 12 and run["mean_entropy"] > 0 for run in listed["runs"])
    sky = [run["trace_id"] for run in listed["runs"] if run["prompt_preview"] == SKY]
    assert len(sky) == 2

    assert main(["show", sky[0][:8], "--db", db]) == 0
    shown = capsys.readouterr().out
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in shown and "Narrative" in shown and "Risk" in shown
    entropy_line = next(line for line in shown.splitlines() if line.startswith("entropy"))
    assert sum(char in "▁▂▃▄▅▆▇█" for char in entropy_line) == 12

    compared = cli_json(capsys, "compare", sky[0][:8], sky[1][:8], "--db", db)
    assert compared["shared_prompt"] is True  # greedy in one batch: the same tokens
    assert compared["divergence"] == {"step": None, "common_prefix": 12, "identical": True}
    summary = cli_json(capsys, "compare", "--db", db)
    assert [(group["runs"], group["generated_tokens"]) for group in summary["groups"]] == [(3, 36)]


def test_export_a_real_model(capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path) -> None:
    out = tmp_path / "steps.csv"
    assert main(["export", "--db", db, "--format", "csv", "--rows", "step", "--out", str(out)]) == 0
    with out.open(encoding="utf-8", newline="") as handle:
        steps = list(csv.DictReader(handle))
    assert len(steps) == 36 and all(float(step["entropy"]) >= 0 for step in steps)
