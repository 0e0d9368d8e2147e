"""`corevital runs/show/compare/export` on reports that `corevital run` stored from a tiny model."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from corevital.cli import main
from corevital.sinks.base import TraceQuery
from corevital.sinks.sqlite import SQLiteStore
from tests.support.cli import run_args, run_cli

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def stored(tiny_model_dir: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Three runs of a tiny Llama: one prompt sampled with two seeds, another greedy."""
    model = str(tiny_model_dir("llama"))
    out = tmp_path_factory.mktemp("runs")
    common = run_args(model, out)
    for extra in (
        ["--prompt", PROMPT, "--seed", "1", "--max_new_tokens", "12"],
        ["--prompt", PROMPT, "--seed", "2", "--max_new_tokens", "12"],
        ["--prompt", "Once upon a time", "--temperature", "0", "--max_new_tokens", "6"],
    ):
        assert main([*common, *extra, "--json"]) == 0
    return str(out / "corevital.db"), model


def test_runs_lists_what_run_stored(capsys: pytest.CaptureFixture[str], stored: tuple[str, str]) -> None:
    db, model = stored
    code, out, _ = run_cli(capsys, "runs", "--db", db, "--json")
    assert code == 0
    listed = json.loads(out)
    assert listed["total"] == 3
    assert [run["prompt_preview"] for run in listed["runs"]] == ["Once upon a time", PROMPT, PROMPT]
    assert {run["model_id"] for run in listed["runs"]} == {model}
    assert [run["generated_tokens"] for run in listed["runs"]] == [6, 12, 12]
    assert all(run["mean_entropy"] is not None and run["risk_score"] is not None for run in listed["runs"])
    code, out, _ = run_cli(capsys, "runs", "--db", db)
    assert code == 0 and out.startswith("3 of 3 runs") and "Once upon a time" in out


def test_show_on_a_fresh_run(capsys: pytest.CaptureFixture[str], stored: tuple[str, str]) -> None:
    db, _ = stored
    with SQLiteStore(db, read_only=True) as store:
        row = store.list(TraceQuery(limit=1))[0]
        report = store.get(row.trace_id)
    assert report is not None
    code, out, _ = run_cli(capsys, "show", row.trace_id[:6], "--db", db)
    assert code == 0 and f"Run {row.trace_id}" in out
    assert "Narrative" in out and "Early warning" in out and "failure risk" in out
    assert report.extensions.narrative is not None and report.extensions.narrative.summary[:40] in out
    entropy_line = next(line for line in out.splitlines() if line.startswith("entropy"))
    assert sum(char in "▁▂▃▄▅▆▇█" for char in entropy_line) == 6
    code, out, _ = run_cli(capsys, "show", row.trace_id, "--db", db, "--json")
    assert code == 0 and json.loads(out)["trace_id"] == row.trace_id


def test_compare_runs_of_one_prompt(capsys: pytest.CaptureFixture[str], stored: tuple[str, str]) -> None:
    db, _ = stored
    with SQLiteStore(db, read_only=True) as store:
        rows = store.list(TraceQuery(limit=None, ascending=True))[:2]
        streams = [store.get(row.trace_id).generated.token_ids for row in rows]  # type: ignore[union-attr]
    code, out, _ = run_cli(
        capsys, "compare", rows[0].trace_id[:8], rows[1].trace_id[:8], "--db", db, "--json"
    )
    assert code == 0
    compared = json.loads(out)
    assert compared["shared_prompt"] is True
    expected = next((i for i, (a, b) in enumerate(zip(*streams, strict=True)) if a != b), None)
    assert compared["divergence"]["step"] == expected
    assert [run["entropy"]["steps"] for run in compared["runs"]] == [12, 12]


def test_compare_by_model_and_export(
    capsys: pytest.CaptureFixture[str], stored: tuple[str, str], tmp_path: Path
) -> None:
    db, model = stored
    code, out, _ = run_cli(capsys, "compare", "--db", db, "--json")
    assert code == 0
    (group,) = json.loads(out)["groups"]
    assert group["key"] == model and group["runs"] == 3 and group["generated_tokens"] == 30
    steps = tmp_path / "steps.csv"
    code, _, _ = run_cli(
        capsys, "export", "--db", db, "--format", "csv", "--rows", "step", "--out", str(steps)
    )
    assert code == 0
    with steps.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30 and all(row["entropy"] != "" for row in rows)
