"""Runs that send their reports to several destinations, with sampling (tiny model, in process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corevital.monitor import CoreVitalMonitor
from corevital.sinks.base import MemorySink
from corevital.sinks.sqlite import SQLiteStore
from tests.support.cli import run_args, run_cli
from tests.support.sinks import FailingExporter, RecordingSink


def run(capsys: pytest.CaptureFixture[str], model: str, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, *run_args(model, out), "--max-new-tokens", "3", *extra)


def test_a_store_and_a_custom_sink_both_get_every_report(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    RecordingSink.written.clear()
    RecordingSink.closed = 0
    prompts = ["--prompt", "one", "--prompt", "two"]
    code, out, err = run(
        capsys,
        tiny_llama,
        tmp_path,
        *prompts,
        "--sink",
        "sqlite",
        "--sink",
        "tests.support.sinks:RecordingSink",
    )
    assert code == 0, err
    with SQLiteStore(tmp_path / "corevital.db", read_only=True) as store:
        stored = sorted(row.trace_id for row in store.list())
    assert sorted(r.trace_id for r in RecordingSink.written) == stored and len(stored) == 2
    assert RecordingSink.closed == 1
    report = RecordingSink.written[0]
    assert report.run_config.sink.type == "sqlite+tests.support.sinks:RecordingSink"
    assert report.run_config.sink.target == str(tmp_path / "corevital.db")


def test_a_failing_exporter_never_fails_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    code, _, err = run(
        capsys,
        tiny_llama,
        tmp_path,
        "--prompt",
        "hi",
        "--sink",
        "sqlite",
        "--sink",
        "tests.support.sinks:FailingExporter",
    )
    assert code == 0
    assert "exporter failures: tests.support.sinks:FailingExporter: 2" in err  # export and close
    with SQLiteStore(tmp_path / "corevital.db", read_only=True) as store:
        assert store.count() == 1


def test_sampling_keeps_every_second_run_and_records_the_weight(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    prompts = [arg for i in range(4) for arg in ("--prompt", f"prompt {i}")]
    code, out, err = run(capsys, tiny_llama, tmp_path, *prompts, "--sample-every", "2", "--batch-size", "4")
    assert code == 0, err
    with SQLiteStore(tmp_path / "corevital.db", read_only=True) as store:
        rows = store.list()
        reports = [store.get(row.trace_id) for row in rows]
    assert len(rows) == 2
    assert sorted(r.prompt.text for r in reports if r is not None) == ["prompt 0", "prompt 2"]
    for report in reports:
        assert report is not None and report.extensions.sampling is not None
        assert (report.extensions.sampling.policy, report.extensions.sampling.weight) == ("every 2", 2.0)


def test_the_monitor_takes_sink_objects_and_keeps_them_open_until_close(tiny_llama: str) -> None:
    memory = MemorySink()
    FailingExporter.calls = 0
    monitor = CoreVitalMonitor(
        tiny_llama, sink=[memory, FailingExporter()], max_new_tokens=2, device="cpu", chat_template="off"
    )
    first = monitor.run("hello")
    second = monitor.run("again")
    assert memory.count() == 2 and FailingExporter.calls == 2
    assert memory.get(first.trace_id) is not None and memory.get(second.trace_id) is not None
    outputs = monitor.outputs
    assert outputs is not None and outputs.failures == {"FailingExporter": 2}
    monitor.close()
    assert outputs.failures == {"FailingExporter": 3}


def test_a_postgres_sink_without_a_url_fails_before_the_model_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "no-such-org/no-such-model", tmp_path, "--prompt", "hi", "--sink", "postgres")
    assert code == 2 and "--db postgresql://" in err and "not found" not in err
