"""`corevital run --sink otel` and the library on a tiny model, against a real OTLP/HTTP receiver."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.proto")

from corevital.cli import main  # noqa: E402
from corevital.report.timestamps import epoch_ms, parse_utc  # noqa: E402
from corevital.sinks.sqlite import SQLiteStore  # noqa: E402
from tests.support.cli import run_args  # noqa: E402
from tests.support.otlp import OtlpReceiver, free_port  # noqa: E402


def otel_args(model: str, out: Path, endpoint: str) -> list[str]:
    return [
        *run_args(model, out),
        "--temperature",
        "0",
        "--max_new_tokens",
        "4",
        "--batch_size",
        "1",
        "--sink",
        "sqlite",
        "--sink",
        "otel",
        "--otel-endpoint",
        endpoint,
    ]


def test_run_sends_one_span_per_generation_timed_like_the_stored_report(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    with OtlpReceiver() as receiver:
        code = main(
            [*otel_args(tiny_llama, tmp_path, receiver.url), "--prompt", "hello there", "--prompt", "a b c"]
        )
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert "exporter failures" not in captured.err
        spans = sorted(receiver.spans(), key=lambda r: r.span.start_time_unix_nano)
        points = receiver.metric_points()
    store = SQLiteStore(tmp_path / "corevital.db", read_only=True)
    try:
        reports = {row.trace_id: store.get(row.trace_id) for row in store.list()}
    finally:
        store.close()
    assert len(spans) == 2 and len(reports) == 2
    for record in spans:
        report = reports[record.attributes["corevital.trace_id"]]
        assert report is not None
        summary = report.summary
        assert summary.started_at_utc is not None and summary.generation_ms is not None
        start = epoch_ms(parse_utc(summary.started_at_utc)) * 1_000_000
        assert record.span.name == f"text_completion {report.model.hf_id}"
        assert record.span.start_time_unix_nano == start
        assert record.span.end_time_unix_nano == start + round(summary.generation_ms * 1_000_000)
        assert 0 < summary.generation_ms <= summary.elapsed_ms + 1
        assert record.attributes["gen_ai.usage.output_tokens"] == report.generated.num_tokens
        assert record.attributes["gen_ai.usage.input_tokens"] == report.prompt.num_tokens
        assert record.resource["service.name"] == "corevital"
        assert report.extensions.risk is not None
        [event] = record.span.events
        assert event.name == "gen_ai.evaluation.result"
    # batch size 1: each span covers its own generate() call, one after the other
    first, second = spans
    assert first.span.end_time_unix_nano <= second.span.start_time_unix_nano + 1_000_000  # ms clock
    [(_, runs)] = points["corevital.runs"]
    assert runs.as_double == 2.0


def test_a_collector_that_is_down_does_not_fail_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    t0 = time.perf_counter()
    code = main([*otel_args(tiny_llama, tmp_path, f"http://127.0.0.1:{free_port()}"), "--prompt", "hello"])
    elapsed = time.perf_counter() - t0
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warning: exporter failures: otel: 1" in captured.err
    assert "Traceback" not in captured.err
    assert elapsed < 60.0
    store = SQLiteStore(tmp_path / "corevital.db", read_only=True)
    try:
        assert len(store.list()) == 1  # the store got the report all the same
    finally:
        store.close()


def docs_commands(section_title: str) -> list[list[str]]:
    """The ``corevital run`` commands of a docs/production.md section, as argv lists."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "production.md").read_text(encoding="utf-8")
    start = text.index(section_title)
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```bash\n(.*?)```", text[start : end if end != -1 else None], re.S)
    return [shlex.split(block.replace("\\\n", " ")) for block in blocks if block.startswith("corevital run")]


def test_the_docs_cli_command_sends_its_spans(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    [argv] = docs_commands("## OpenTelemetry")
    assert argv[:2] == ["corevital", "run"] and "http://127.0.0.1:4318" in argv
    with OtlpReceiver() as receiver:
        argv = [receiver.url if arg == "http://127.0.0.1:4318" else arg for arg in argv[1:]]
        tiny = ["--model", tiny_llama, "--device", "cpu", "--chat-template", "off", "--max_new_tokens", "3"]
        code = main([*argv, *tiny, "--out", str(tmp_path)])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        [record] = receiver.spans()
    assert record.resource["service.name"] == "nightly-eval"
    assert (tmp_path / "corevital.db").is_file()


def test_library_generations_join_the_callers_trace_in_run_and_stream(tiny_llama: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from corevital import CoreVitalMonitor
    from corevital.exporters.otel import OTelExporter

    app = TracerProvider()  # the application's provider; never registered globally
    with OtlpReceiver() as receiver:
        monitor = CoreVitalMonitor(
            tiny_llama,
            device="cpu",
            max_new_tokens=4,
            chat_template="off",
            temperature=0.0,
            sink=OTelExporter(receiver.url),
        )
        tracer = app.get_tracer("app")
        with tracer.start_as_current_span("POST /generate") as request:
            report = monitor.run("hello there")
        with tracer.start_as_current_span("POST /stream") as streaming:
            events = list(monitor.iter_stream("a b c"))
        monitor.close()
        app.shutdown()
        spans = {record.attributes["corevital.trace_id"]: record.span for record in receiver.spans()}
    streamed = events[-1].report
    assert report is not None and streamed is not None
    for trace_id, parent in [(report.trace_id, request), (streamed.trace_id, streaming)]:
        context = parent.get_span_context()
        assert spans[trace_id].trace_id == context.trace_id.to_bytes(16, "big")
        assert spans[trace_id].parent_span_id == context.span_id.to_bytes(8, "big")
