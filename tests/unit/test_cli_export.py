"""`corevital export` (JSON lines, CSV per run and per step, Parquet) on the six original CoreVital
traces after `corevital migrate`; CSV cells a spreadsheet would run as formulas are neutralised."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from corevital.report.encoding import load_report, report_from_json
from corevital.sinks.base import TraceQuery
from corevital.sinks.sqlite import SQLiteStore
from tests.support.cli import one_error_line, run_cli
from tests.support.golden import GOLDEN, ORIGINAL_NEWEST_FIRST, ORIGINAL_TRACES

FIXTURES = ORIGINAL_TRACES
NEWEST_FIRST = ORIGINAL_NEWEST_FIRST


@pytest.fixture(scope="module")
def db(originals_db: str) -> str:
    return originals_db


def test_export_jsonl_reads_back_as_the_stored_reports(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    out = tmp_path / "runs.jsonl"
    code, _, err = run_cli(
        capsys, "export", "--db", db, "--format", "jsonl", "--out", str(out), "--min-risk", "0.45"
    )
    assert code == 0 and "4 reports written" in err
    reports = [report_from_json(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [report.trace_id[:8] for report in reports] == ["8d0bad87", "7c1c62d1", "01aeafe3", "f7de7f4d"]
    with SQLiteStore(db, read_only=True) as store:
        assert reports[0] == store.get("8d0bad87")


def test_export_csv_per_run_and_per_step(capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path) -> None:
    runs_file = tmp_path / "runs.csv"
    code, out, _ = run_cli(capsys, "export", "--db", db, "--format", "csv", "--out", str(runs_file), "--json")
    assert code == 0 and json.loads(out) == {
        "written": 6,
        "records": "run",
        "format": "csv",
        "out": str(runs_file),
    }
    with runs_file.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["trace_id"][:8] for row in rows] == NEWEST_FIRST
    t5 = rows[1]
    assert t5["model_id"] == "google/flan-t5-large" and t5["mid_layer_anomaly_detected"] == "true"
    assert t5["nan_detected"] == "false" and float(t5["risk_score"]) == 1.0 and t5["finish_reason"] == ""
    steps_file = tmp_path / "steps.csv"
    code, _, err = run_cli(
        capsys, "export", "--db", db, "--format", "csv", "--rows", "step", "--model", "google/flan-t5-large",
        "--out", str(steps_file),
    )  # fmt: skip
    assert code == 0 and "21 step rows written" in err
    with steps_file.open(encoding="utf-8", newline="") as handle:
        steps = list(csv.DictReader(handle))
    original = load_report(FIXTURES / "trace_8d0bad87.json")
    assert [int(step["step"]) for step in steps] == list(range(21))
    assert [int(step["token_id"]) for step in steps] == original.generated.token_ids[:21]
    assert float(steps[0]["entropy"]) == pytest.approx(original.timeline[0].logits_summary.entropy)


def test_export_csv_to_stdout(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run_cli(capsys, "export", "--db", db, "--format", "csv", "--out", "-", "--limit", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("trace_id,created_at_utc,") and len(lines) == 3


def test_export_parquet_without_pyarrow_is_one_line(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pyarrow is installed")
    out = tmp_path / "runs.parquet"
    code, _, err = run_cli(capsys, "export", "--db", db, "--format", "parquet", "--out", str(out))
    assert code == 8 and "parquet export needs pyarrow" in one_error_line(err)
    assert not out.exists()


def test_export_step_rows_need_csv_or_parquet(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    code, _, err = run_cli(
        capsys, "export", "--db", db, "--format", "jsonl", "--rows", "step", "--out", str(tmp_path / "x")
    )
    assert code == 2 and "--rows step needs --format csv or parquet" in one_error_line(err)


def test_export_to_an_unwritable_place_is_one_line(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    out = tmp_path / "missing-directory" / "runs.csv"
    code, _, err = run_cli(capsys, "export", "--db", db, "--format", "csv", "--out", str(out))
    assert code == 2 and f"cannot write {out}" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # starts a real process
def test_a_reader_that_leaves_ends_the_command_quietly(db: str) -> None:
    command = [sys.executable, "-m", "corevital", "export", "--db", db, "--format", "jsonl", "--out", "-"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.read(1000)  # the reports are megabytes: the writer blocks on the full pipe
    process.stdout.close()
    assert process.wait(timeout=60) == 141
    assert process.stderr.read() == b""


def test_export_csv_neutralises_text_cells_a_spreadsheet_would_run_as_formulas() -> None:
    import io

    from corevital.sinks.base import MemorySink
    from corevital.views.export import export_runs

    golden = load_report(GOLDEN)
    timeline = [
        step.model_copy(update={"token": step.token.model_copy(update={"token_text": text})})
        for step, text in zip(golden.timeline, ["-2+3", "\tx"], strict=False)
    ]
    report = golden.model_copy(
        update={
            "model": golden.model.model_copy(update={"hf_id": "@evil/model"}),
            "prompt": golden.prompt.model_copy(update={"text": '=HYPERLINK("https://evil.example","y")'}),
            "timeline": timeline,
        }
    )
    store = MemorySink()
    store.write(report)
    runs, steps = io.StringIO(newline=""), io.StringIO(newline="")
    export_runs(store, TraceQuery(), fmt="csv", rows="run", out=runs)
    export_runs(store, TraceQuery(), fmt="csv", rows="step", out=steps)
    (run,) = list(csv.DictReader(io.StringIO(runs.getvalue())))
    assert run["model_id"] == "'@evil/model"
    assert run["prompt_preview"] == '\'=HYPERLINK("https://evil.example","y")'
    assert run["trace_id"] == report.trace_id and float(run["mean_entropy"]) >= 0  # numbers as they are
    rows = list(csv.DictReader(io.StringIO(steps.getvalue())))
    assert [row["token_text"] for row in rows[:2]] == ["'-2+3", "'\tx"]
    assert rows[0]["model_id"] == "'@evil/model"
    assert all(not row["entropy"].startswith("'") for row in rows)
