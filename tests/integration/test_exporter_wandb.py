"""WandbExporter in W&B offline mode: the run's transaction log and files are read back and checked.

One offline run for the module (W&B takes seconds to start): three reports, then close(); the
tests read what the run wrote (``run-<id>.wandb``, the staged artifact files, the table file) and
compare it with the reports. Nothing leaves the machine: offline mode, every W&B directory under
a temporary one, no credentials.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("wandb")
pytestmark = pytest.mark.slow  # W&B's service takes seconds to start; the module takes ~20 s

from corevital.config import load_settings  # noqa: E402
from corevital.errors import ConfigError, ExporterError  # noqa: E402
from corevital.exporters.base import open_exporter  # noqa: E402
from corevital.exporters.wandb import (  # noqa: E402
    ARTIFACT_TYPE,
    STEP_METRICS,
    TABLE_COLUMNS,
    TABLE_KEY,
    WandbExporter,
)
from corevital.report.encoding import report_from_json, report_to_json  # noqa: E402
from corevital.report.schema import (  # noqa: E402
    HealthFlags,
    LogitsSummary,
    Report,
    RiskExtension,
    SamplingInfo,
    TimelineStep,
    TokenInfo,
)
from tests.support.golden import GOLDEN  # noqa: E402
from tests.support.wandb_log import OfflineRun, wait_for_exit  # noqa: E402


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every W&B directory and credential source under a temporary directory; offline."""
    root = tmp_path_factory.mktemp("wandb-env")
    (root / "netrc").write_text("")
    with pytest.MonkeyPatch.context() as patch:
        for name, sub in [
            ("WANDB_DATA_DIR", "data"),
            ("WANDB_CACHE_DIR", "cache"),
            ("WANDB_CONFIG_DIR", "config"),
            ("WANDB_ARTIFACT_DIR", "artifacts"),
            ("HOME", "home"),
        ]:
            (root / sub).mkdir()
            patch.setenv(name, str(root / sub))
        patch.setenv("NETRC", str(root / "netrc"))
        patch.setenv("WANDB_MODE", "offline")
        patch.delenv("WANDB_API_KEY", raising=False)
        yield root


def make_reports() -> list[Report]:
    """Three reports with their own ids (same first 8 characters), risks, weights and steps."""
    base = report_from_json(GOLDEN.read_bytes())
    steps = [
        TimelineStep(
            step_index=3 + t,
            token=TokenInfo(token_id=10 + t, token_text=f"t{t}"),
            logits_summary=LogitsSummary(
                entropy=1.0 + t / 4,
                perplexity=2 ** (1.0 + t / 4),
                surprisal=0.25 * t,
                top_k_margin=0.5 - t / 20,
            ),
        )
        for t in range(5)
    ]
    calm = base.model_copy(
        update={
            "trace_id": "00000000-0000-4000-8000-0000000000a2",
            "timeline": steps,
            "health_flags": HealthFlags(),
            "extensions": base.extensions.model_copy(
                update={"risk": RiskExtension(risk_score=0.2), "compound_signals": None}
            ),
            "summary": base.summary.model_copy(update={"generated_tokens": 5, "total_steps": 8}),
        }
    )
    sampled = calm.model_copy(
        update={
            "trace_id": "1a2b3c4d-0000-4000-8000-0000000000a3",
            "extensions": calm.extensions.model_copy(
                update={
                    "risk": RiskExtension(risk_score=0.6),
                    "sampling": SamplingInfo(
                        policy="every 5", kept=True, kept_fraction=0.2, weight=5.0, runs_seen=6, runs_kept=2
                    ),
                }
            ),
        }
    )
    return [base, calm, sampled]


@dataclass
class Logged:
    reports: list[Report]
    exporter: WandbExporter
    run: OfflineRun


@pytest.fixture(scope="module")
def logged(wandb_env: Path) -> Logged:
    reports = make_reports()
    exporter = WandbExporter(project="corevital-tests", mode="offline", directory=wandb_env / "out")
    for report in reports:
        exporter.export(report)
    exporter.close()
    run_dir = Path(exporter.run.dir).parent
    assert run_dir.parent == wandb_env / "out" / "wandb"
    return Logged(reports, exporter, wait_for_exit(run_dir))


def _number(value: Any) -> float:
    return float(value)


def test_each_reports_steps_are_logged_against_its_own_step_metric(logged: Logged) -> None:
    history = logged.run.history()
    sections = ["report_00000000", "report_00000000-0000-4000-8000-0000000000a2", "report_1a2b3c4d"]
    metrics = logged.run.metrics()
    for section, report in zip(sections, logged.reports, strict=True):
        assert metrics[f"{section}/*"].step_metric == f"{section}/token"
        assert metrics[f"{section}/token"].options.hidden
        rows = [
            {k.removeprefix(f"{section}/"): v for k, v in row.items() if k.startswith(f"{section}/")}
            for row in history
            if f"{section}/token" in row
        ]
        assert [row["token"] for row in rows] == list(range(len(report.timeline)))
        for row, step in zip(rows, report.timeline, strict=True):
            for name in STEP_METRICS:
                value = getattr(step.logits_summary, name)
                if value is None or not math.isfinite(value):
                    assert name not in row  # NaN/Inf (null in the report) are not logged
                else:
                    assert _number(row[name]) == pytest.approx(value, rel=1e-12)


def test_each_reports_totals_are_logged_against_the_report_counter(logged: Logged) -> None:
    assert logged.run.metrics()["corevital/*"].step_metric == "report"
    rows = [row for row in logged.run.history() if "report" in row]
    assert [row["report"] for row in rows] == [1, 2, 3]
    for row, report in zip(rows, logged.reports, strict=True):
        assert report.extensions.risk is not None
        assert _number(row["corevital/risk_score"]) == report.extensions.risk.risk_score
        assert row["corevital/generated_tokens"] == report.summary.generated_tokens
        assert row["corevital/prompt_tokens"] == report.summary.prompt_tokens
    assert [row["corevital/flags"] for row in rows] == [2, 0, 0]
    assert [_number(row["corevital/sampling_weight"]) for row in rows] == [1.0, 1.0, 5.0]
    assert _number(rows[1]["corevital/mean_entropy"]) == pytest.approx(1.5)  # 1.0 .. 2.0 in steps of 0.25


def test_each_report_is_an_artifact_holding_its_json(logged: Logged) -> None:
    artifacts = {a.name: a for a in logged.run.artifacts() if a.type == ARTIFACT_TYPE}
    assert sorted(artifacts) == sorted(f"report-{r.trace_id}" for r in logged.reports)
    for report in logged.reports:
        artifact = artifacts[f"report-{report.trace_id}"]
        metadata = json.loads(artifact.metadata)
        assert metadata["trace_id"] == report.trace_id and metadata["model"] == report.model.hf_id
        [entry] = artifact.manifest.contents
        assert entry.path == "report.json"
        assert Path(entry.local_path).read_text(encoding="utf-8") == report_to_json(report)


def test_the_summary_table_and_run_summary(logged: Logged) -> None:
    [table_row] = [row for row in logged.run.history() if f"{TABLE_KEY}/_type" in row]
    assert table_row[f"{TABLE_KEY}/_type"] == "table-file"
    table = json.loads((logged.run.directory / "files" / table_row[f"{TABLE_KEY}/path"]).read_text())
    assert table["columns"] == TABLE_COLUMNS
    assert [row[0] for row in table["data"]] == [r.trace_id for r in logged.reports]
    first = dict(zip(TABLE_COLUMNS, table["data"][0], strict=True))
    assert first == {
        "trace_id": logged.reports[0].trace_id,
        "model": "tiny/causal-lm",
        "risk_score": 1.0,
        "flags": "nan, confident_confusion",
        "prompt_tokens": 3,
        "generated_tokens": 2,
        "finish_reason": "length",
        "created_at_utc": "2026-01-02T03:04:05.678Z",
    }
    assert "Explain why" not in json.dumps(table)  # no prompt text in the table
    summary = logged.run.summary()
    assert summary["reports"] == 3 and summary["flagged_reports"] == 1
    assert summary["runs"] == 7.0  # 1 + 1 + 5: the runs the reports stand for
    assert summary["risk_score_max"] == 1.0
    assert summary["risk_score_mean"] == pytest.approx((1.0 + 0.2 + 0.6) / 3)


def test_the_run_is_offline_in_its_project_and_finished(logged: Logged) -> None:
    run = logged.run.run()
    assert run.project == "corevital-tests"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert "corevital_version" in config
    assert logged.run.of("exit")[0].exit_code == 0
    with pytest.raises(ExporterError, match="closed"):
        logged.exporter.export(logged.reports[0])


def test_a_callers_run_is_used_and_left_running(wandb_env: Path) -> None:
    import wandb

    report = make_reports()[1]
    (wandb_env / "caller").mkdir()
    run = wandb.init(
        project="callers-project",
        mode="offline",
        dir=str(wandb_env / "caller"),
        reinit="create_new",
        settings=wandb.Settings(silent=True, console="off"),
    )
    exporter = WandbExporter(run=run, include_artifacts=False)
    exporter.export(report)
    exporter.close()
    run.log({"after_close": 1})  # still the caller's, still running
    run.finish()
    written = wait_for_exit(Path(run.dir).parent)
    assert [a.type for a in written.artifacts()] == ["run_table"]  # the table; no report artifact
    assert any(row.get("after_close") == 1 for row in written.history())
    assert any(f"report_00000000/{name}" in row for row in written.history() for name in STEP_METRICS)


def test_from_settings_offline_writes_under_out_and_online_needs_credentials(
    wandb_env: Path, tmp_path: Path
) -> None:
    offline = load_settings({"sink": ["wandb"], "wandb_mode": "offline", "out": str(tmp_path)}, environ={})
    exporter: Any = open_exporter("wandb", offline)
    assert isinstance(exporter, WandbExporter)
    assert exporter.directory == tmp_path and exporter.mode == "offline" and exporter.run is None
    exporter.close()  # no report, no run started
    assert not (tmp_path / "wandb").exists()
    online = load_settings({"sink": ["wandb"], "wandb_mode": "online", "out": str(tmp_path)}, environ={})
    with pytest.raises(ConfigError, match="WANDB_API_KEY"):
        open_exporter("wandb", online)


def test_cli_run_logs_one_offline_wandb_run_under_out(
    wandb_env: Path,
    tmp_path: Path,
    tiny_model_dir: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from corevital.cli import main
    from corevital.sinks.sqlite import SQLiteStore

    argv = ["run", "--model", str(tiny_model_dir("llama")), "--device", "cpu", "--out", str(tmp_path)]
    argv += ["--chat-template", "off", "--temperature", "0", "--max_new_tokens", "4"]
    argv += ["--sink", "sqlite", "--sink", "wandb", "--wandb-mode", "offline", "--wandb-project", "cli-runs"]
    code = main([*argv, "--prompt", "hello there", "--prompt", "a b c"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "exporter failures" not in captured.err
    [run_dir] = list((tmp_path / "wandb").glob("offline-run-*"))
    written = wait_for_exit(run_dir)
    assert written.run().project == "cli-runs"
    store = SQLiteStore(tmp_path / "corevital.db", read_only=True)
    try:
        reports = [store.get(row.trace_id) for row in store.list()]
    finally:
        store.close()
    assert len(reports) == 2
    history = written.history()
    for report in reports:
        assert report is not None
        section = f"report_{report.trace_id[:8]}"
        logged = [row[f"{section}/entropy"] for row in history if f"{section}/entropy" in row]
        assert logged == pytest.approx([step.logits_summary.entropy for step in report.timeline])
    assert written.summary()["reports"] == 2


def wandb_section() -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "production.md").read_text(encoding="utf-8")
    start = text.index("## Weights & Biases")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_docs_cli_command_writes_an_offline_run(
    wandb_env: Path,
    tmp_path: Path,
    tiny_model_dir: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from corevital.cli import main

    [block] = [
        b for b in re.findall(r"```bash\n(.*?)```", wandb_section(), re.S) if b.startswith("corevital")
    ]
    argv = shlex.split(block.replace("\\\n", " "))
    assert argv[:2] == ["corevital", "run"] and "offline" in argv
    tiny = ["--model", str(tiny_model_dir("llama")), "--device", "cpu", "--chat-template", "off"]
    code = main([*argv[1:], *tiny, "--max_new_tokens", "3", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    [run_dir] = list((tmp_path / "wandb").glob("offline-run-*"))
    written = wait_for_exit(run_dir)
    assert written.run().project == "llm-evals"
    assert written.summary()["reports"] == 2
    assert len([a for a in written.artifacts() if a.type == ARTIFACT_TYPE]) == 2
    totals = [row for row in written.history() if "report" in row]
    assert all(row["corevital/ttft_ms"] > 0 and row["corevital/tokens_per_second"] > 0 for row in totals)


def test_the_docs_library_example_runs(wandb_env: Path, tmp_path: Path) -> None:
    [example] = re.findall(r"```python\n(.*?)```", wandb_section(), re.S)
    # the example's dir="runs" made absolute: this test process started W&B from another working
    # directory, and W&B does not resolve a relative one against the current directory then
    assert 'dir="runs"' in example
    (tmp_path / "runs").mkdir()
    exec(compile(example.replace('dir="runs"', f'dir="{tmp_path}/runs"'), "docs/production.md", "exec"), {})
    [run_dir] = list((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert wait_for_exit(run_dir).run().project == "llm-evals"
