"""OTelExporter against a real OTLP/HTTP receiver: the protobuf payloads decoded and checked."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.proto")

from opentelemetry.proto.trace.v1.trace_pb2 import Span  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from corevital.config import load_settings  # noqa: E402
from corevital.errors import ConfigError, ExporterError  # noqa: E402
from corevital.exporters.base import Outputs, open_exporter  # noqa: E402
from corevital.exporters.otel import OTelExporter, otlp_base, risk_label, span_times_ns  # noqa: E402
from corevital.report.schema import (  # noqa: E402
    GenerationConfig,
    HealthFlags,
    LatencyPercentiles,
    Report,
)
from corevital.report.timestamps import epoch_ms, format_utc, parse_utc  # noqa: E402
from tests.support.golden import golden_report, report_variant  # noqa: E402
from tests.support.otlp import OtlpReceiver, free_port  # noqa: E402


@pytest.fixture(scope="module")
def base() -> Report:
    return golden_report()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def ns(text: str) -> int:
    return epoch_ms(parse_utc(text)) * 1_000_000


def variant(
    base: Report, number: int, *, risk: float | None, weight: float | None = None, chat: bool = False
) -> Report:
    return report_variant(base, number, risk=risk, chat=chat, weight=weight)


def test_one_span_per_report_with_the_runs_times_and_genai_attributes(
    base: Report, receiver: OtlpReceiver
) -> None:
    exporter = OTelExporter(receiver.url, service_name="checkout-llm")
    exporter.export(base)
    exporter.close()

    assert set(receiver.paths) == {"/v1/traces", "/v1/metrics"}
    assert set(receiver.content_types) == {"application/x-protobuf"}
    [record] = receiver.spans()
    span = record.span
    assert record.resource["service.name"] == "checkout-llm"
    assert record.scope == "corevital"
    assert span.name == "text_completion tiny/causal-lm"
    assert span.kind == Span.SpanKind.SPAN_KIND_INTERNAL
    assert span.parent_span_id == b""  # no caller span: a trace of its own
    # start and end are the run's: summary.started_at_utc + summary.generation_ms, not zero-length
    assert base.summary.started_at_utc is not None and base.summary.generation_ms is not None
    start = ns(base.summary.started_at_utc)
    assert span.start_time_unix_nano == start
    assert span.end_time_unix_nano == start + int(base.summary.generation_ms * 1_000_000)
    assert span.end_time_unix_nano - span.start_time_unix_nano == 11_500_000

    attrs = record.attributes
    assert attrs == {
        "gen_ai.operation.name": "text_completion",
        "gen_ai.provider.name": "huggingface",
        "gen_ai.request.model": "tiny/causal-lm",
        "gen_ai.request.max_tokens": 2,
        "gen_ai.request.seed": 42,
        "gen_ai.request.temperature": 0.0,
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.response.finish_reasons": ["length"],
        "corevital.finish_reason": "length",
        "corevital.trace_id": base.trace_id,
        "corevital.risk_score": 1.0,
        "corevital.health_flags": ["nan"],
        "corevital.high_entropy_steps": 1,
        "corevital.blamed_layers": [1],
        "corevital.compound_signals": ["confident_confusion"],
        "corevital.sampling.weight": 1.0,
        "corevital.model.device": "cpu",
        "corevital.capture_mode": "full",
    }
    [event] = span.events
    assert event.name == "gen_ai.evaluation.result"
    assert event.time_unix_nano == span.end_time_unix_nano
    event_attrs = {kv.key: kv.value for kv in event.attributes}
    assert event_attrs["gen_ai.evaluation.name"].string_value == "corevital.risk"
    assert event_attrs["gen_ai.evaluation.score.value"].double_value == 1.0
    assert event_attrs["gen_ai.evaluation.score.label"].string_value == "high"
    assert event_attrs["gen_ai.evaluation.explanation"].string_value == "nan_or_inf"


def test_prompt_and_output_text_are_sent_only_when_asked(base: Report) -> None:
    with OtlpReceiver() as receiver:
        quiet = OTelExporter(receiver.url)
        quiet.export(base)
        quiet.close()
        payload = b"".join(request.SerializeToString() for request in receiver.traces)
        assert base.prompt.text.encode() not in payload
        assert base.generated.output_text.encode() not in payload
    with OtlpReceiver() as receiver:
        verbose = OTelExporter(receiver.url, include_text=True)
        verbose.export(base)
        verbose.close()
        [record] = receiver.spans()
        assert base.prompt.text in record.attributes["gen_ai.input.messages"]
        assert base.generated.output_text in record.attributes["gen_ai.output.messages"]


def test_a_chat_prompt_names_the_chat_operation_and_sampling_sets_the_request_knobs(
    base: Report, receiver: OtlpReceiver
) -> None:
    sampled = variant(base, 2, risk=0.4, chat=True)
    sampled.run_config = sampled.run_config.model_copy(
        update={"generation": GenerationConfig(do_sample=True, temperature=0.7, top_k=40, top_p=0.9)}
    )
    exporter = OTelExporter(receiver.url)
    exporter.export(sampled)
    exporter.close()
    [record] = receiver.spans()
    assert record.span.name == "chat tiny/causal-lm"
    attrs = record.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.temperature"] == pytest.approx(0.7)
    assert attrs["gen_ai.request.top_p"] == pytest.approx(0.9)
    assert attrs["gen_ai.request.top_k"] == 40.0
    labels = {kv.key: kv.value.string_value for kv in record.span.events[0].attributes}
    assert labels["gen_ai.evaluation.score.label"] == "medium"


def test_a_report_without_its_start_ends_at_creation_and_lasts_elapsed_ms(
    base: Report, receiver: OtlpReceiver
) -> None:
    old = base.model_copy(
        update={"summary": base.summary.model_copy(update={"started_at_utc": None, "generation_ms": None})}
    )
    assert span_times_ns(old) == (
        ns(old.created_at_utc) - old.summary.elapsed_ms * 1_000_000,
        ns(old.created_at_utc),
    )
    no_risk = old.model_copy(update={"extensions": old.extensions.model_copy(update={"risk": None})})
    exporter = OTelExporter(receiver.url)
    exporter.export(no_risk)
    exporter.close()
    [record] = receiver.spans()
    assert record.span.end_time_unix_nano == ns(old.created_at_utc)
    assert record.span.end_time_unix_nano - record.span.start_time_unix_nano == 12_000_000
    assert list(record.span.events) == []  # no risk score, no evaluation event
    assert "corevital.risk_score" not in record.attributes


def test_the_span_joins_the_callers_current_trace(base: Report, receiver: OtlpReceiver) -> None:
    caller_spans = InMemorySpanExporter()
    caller = TracerProvider()  # the application's provider, not the global one
    caller.add_span_processor(SimpleSpanProcessor(caller_spans))
    exporter = OTelExporter(receiver.url)
    with caller.get_tracer("app").start_as_current_span("POST /generate") as request_span:
        exporter.export(base)
    exporter.export(variant(base, 3, risk=0.1))  # outside the request: a root span
    exporter.close()
    caller.shutdown()
    joined, root = receiver.spans()
    context = request_span.get_span_context()
    assert joined.span.trace_id == context.trace_id.to_bytes(16, "big")
    assert joined.span.parent_span_id == context.span_id.to_bytes(8, "big")
    assert root.span.parent_span_id == b"" and root.span.trace_id != joined.span.trace_id
    assert [s.name for s in caller_spans.get_finished_spans()] == ["POST /generate"]


def timed(report: Report, ttft_ms: float = 4.5, tokens_per_second: float = 180.0) -> Report:
    """``report`` with the per-sequence latency figures of a capture that measured them."""
    inter_token = LatencyPercentiles(p50=5.0, p90=6.0, p99=9.0, mean=5.5)
    summary = report.summary.model_copy(
        update={"ttft_ms": ttft_ms, "tokens_per_second": tokens_per_second, "inter_token_ms": inter_token}
    )
    return report.model_copy(update={"summary": summary})


def test_latency_figures_become_the_genai_time_to_first_token(base: Report, receiver: OtlpReceiver) -> None:
    exporter = OTelExporter(receiver.url)
    exporter.export(timed(variant(base, 4, risk=0.2), ttft_ms=4.5))
    exporter.export(timed(variant(base, 5, risk=0.2), ttft_ms=120.0))
    exporter.export(variant(base, 6, risk=0.2))  # not measured: no point
    exporter.close()
    first = receiver.spans()[0].attributes
    assert first["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.0045)
    assert first["corevital.tokens_per_second"] == 180.0
    assert "gen_ai.response.time_to_first_chunk" not in receiver.spans()[2].attributes
    [(_, ttft)] = receiver.metric_points()["gen_ai.server.time_to_first_token"]
    assert ttft.count == 2 and ttft.sum == pytest.approx(0.1245)
    assert receiver.metric_units()["gen_ai.server.time_to_first_token"] == ("histogram", "s")
    [(_, tpot)] = receiver.metric_points()["gen_ai.server.time_per_output_token"]
    assert tpot.count == 2 and tpot.sum == pytest.approx(0.011)  # 5.5 ms each


def test_metrics_carry_the_same_numbers_with_sampling_weights(base: Report, receiver: OtlpReceiver) -> None:
    reports = [
        variant(base, 1, risk=0.1),
        variant(base, 2, risk=0.5, weight=4.0),
        variant(base, 3, risk=0.9, weight=4.0),
    ]
    reports[0].health_flags = HealthFlags()  # no flag fired
    exporter = OTelExporter(receiver.url)
    for report in reports:
        exporter.export(report)
    exporter.close()

    assert receiver.metric_units() == {
        "corevital.runs": ("sum", "{run}"),
        "corevital.flags": ("sum", "{run}"),
        "corevital.risk_score": ("histogram", "1"),
        "gen_ai.client.token.usage": ("histogram", "{token}"),
        "gen_ai.client.operation.duration": ("histogram", "s"),
    }
    points = receiver.metric_points()
    common = {
        "gen_ai.operation.name": "text_completion",
        "gen_ai.provider.name": "huggingface",
        "gen_ai.request.model": "tiny/causal-lm",
    }
    [(attrs, runs)] = points["corevital.runs"]
    assert attrs == common and runs.as_double == 9.0  # 1 + 4 + 4: the runs the reports stand for
    flags = {a["corevital.flag"]: p.as_double for a, p in points["corevital.flags"]}
    assert flags == {"nan": 8.0, "confident_confusion": 9.0}  # the compound signal is in all three
    [(_, risk)] = points["corevital.risk_score"]
    assert risk.count == 3 and risk.sum == pytest.approx(1.5)
    assert list(risk.explicit_bounds)[:3] == [0.1, 0.2, 0.3]
    tokens = {a["gen_ai.token.type"]: (p.count, p.sum) for a, p in points["gen_ai.client.token.usage"]}
    assert tokens == {"input": (3, 9.0), "output": (3, 6.0)}
    [(_, duration)] = points["gen_ai.client.operation.duration"]
    assert duration.count == 3 and duration.sum == pytest.approx(3 * 0.0115)


def test_the_callers_providers_are_used_and_not_shut_down(base: Report) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    exporter = OTelExporter(tracer_provider=tracer_provider, meter_provider=meter_provider)
    exporter.export(base)
    exporter.close()
    [span] = spans.get_finished_spans()
    assert span.name == "text_completion tiny/causal-lm"
    assert span.attributes is not None and span.attributes["corevital.trace_id"] == base.trace_id
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert "corevital.runs" in names
    tracer_provider.get_tracer("app").start_span("still works").end()  # not shut down by close()
    assert len(spans.get_finished_spans()) == 2
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_a_collector_that_is_down_neither_raises_in_export_nor_hangs_close(base: Report) -> None:
    exporter = OTelExporter(f"http://127.0.0.1:{free_port()}", timeout_s=1.0, close_timeout_s=4.0)
    outputs = Outputs(exporters=[exporter], names=["otel"])
    t0 = time.perf_counter()
    assert outputs.write(base) == []
    assert time.perf_counter() - t0 < 0.5  # export() only records
    outputs.close()  # logs the failure, does not raise
    assert time.perf_counter() - t0 < 6.0
    assert outputs.exported["otel"] == 1 and outputs.failures["otel"] == 1
    assert exporter.failures.spans == 1 and exporter.failures.metric_exports >= 1
    with pytest.raises(ExporterError, match="closed"):
        exporter.export(base)


def test_close_reports_what_was_not_delivered(base: Report) -> None:
    exporter = OTelExporter(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
    exporter.export(base)
    with pytest.raises(ExporterError, match=r"1 span\(s\) not delivered"):
        exporter.close()
    exporter.close()  # once only


def test_endpoint_from_settings_then_environment_then_default() -> None:
    assert otlp_base("http://collector:4318/", {}) == "http://collector:4318"
    assert otlp_base(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example:443"}) == (
        "https://otel.example:443"
    )
    assert otlp_base(None, {}) == "http://localhost:4318"
    with pytest.raises(ConfigError, match="--otel-endpoint must be an http"):
        otlp_base("collector:4318", {})
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT must be"):
        otlp_base(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://x"})
    with pytest.raises(ConfigError, match="invalid port"):
        otlp_base("http://collector:99999", {})


def test_sink_otel_is_built_from_the_settings(base: Report, receiver: OtlpReceiver) -> None:
    settings = load_settings(
        {"sink": ["otel"], "otel_endpoint": receiver.url, "otel_service_name": "svc-a"}, environ={}
    )
    exporter: Any = open_exporter("otel", settings)
    assert isinstance(exporter, OTelExporter)
    exporter.export(base)
    exporter.close()
    assert [r.resource["service.name"] for r in receiver.spans()] == ["svc-a"]
    bad = load_settings({"sink": ["otel"], "otel_endpoint": "localhost:4318"}, environ={})
    with pytest.raises(ConfigError):
        open_exporter("otel", bad)


@pytest.mark.parametrize(("score", "label"), [(0.0, "low"), (0.29, "low"), (0.3, "medium"), (0.7, "high")])
def test_risk_labels(score: float, label: str) -> None:
    assert risk_label(score) == label


def test_times_are_exact_for_a_run_of_many_seconds(base: Report) -> None:
    start = parse_utc("2026-05-01T10:00:00.250Z")
    report = base.model_copy(
        update={
            "summary": base.summary.model_copy(
                update={"started_at_utc": format_utc(start), "generation_ms": 83_456.789}
            )
        }
    )
    begin, end = span_times_ns(report)
    assert begin == epoch_ms(start) * 1_000_000
    assert end - begin == 83_456_789_000


# docs/production.md ---------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "production.md"


def otel_section() -> str:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("## OpenTelemetry")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def fenced(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_the_docs_collector_config_receives_otlp_http_into_both_pipelines() -> None:
    [config] = fenced(otel_section(), "yaml")
    parsed = yaml.safe_load(config)
    assert parsed["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "127.0.0.1:4318"
    pipelines = parsed["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    for pipeline in pipelines.values():
        assert pipeline["receivers"] == ["otlp"]
        assert set(pipeline["processors"]) <= set(parsed["processors"])
        assert set(pipeline["exporters"]) <= set(parsed["exporters"])


def test_the_docs_library_example_runs(receiver: OtlpReceiver) -> None:
    [example] = fenced(otel_section(), "python")
    assert "http://127.0.0.1:4318" in example
    exec(compile(example.replace("http://127.0.0.1:4318", receiver.url), "docs/production.md", "exec"), {})


def test_the_docs_name_every_span_attribute_and_metric(base: Report, receiver: OtlpReceiver) -> None:
    section = otel_section()
    exporter = OTelExporter(receiver.url)
    exporter.export(timed(base))
    exporter.close()
    [record] = receiver.spans()
    for name in record.attributes:
        assert f"`{name}`" in section, name
    for name in receiver.metric_units():
        assert f"| `{name}` |" in section, name
