"""OpenTelemetry: one span per generation and the same numbers as metrics, over OTLP/HTTP (protobuf).

:class:`OTelExporter` has its own ``TracerProvider`` and ``MeterProvider`` (resource
``service.name`` = ``--otel-service-name``), never the global ones; a library user may pass their
own providers instead. The OpenTelemetry *context* is global by design: the span's parent is the
caller's current span, so a generation made inside a request's span joins that request's trace.

The span follows the GenAI semantic conventions for an inference span:

* name ``"{gen_ai.operation.name} {gen_ai.request.model}"``; ``gen_ai.operation.name`` is ``chat``
  when the prompt was wrapped in the model's chat template, else ``text_completion``;
* kind ``INTERNAL``: the conventions ask for ``CLIENT`` on calls to a model service and allow
  ``INTERNAL`` for a model running in the same process, which is what CoreVital observes;
* ``gen_ai.provider.name`` ``"huggingface"``: the conventions name no provider for a local
  transformers model and ask for the instrumentation's best knowledge; the model is a Hugging Face
  model run by transformers in this process (``corevital`` is the instrumentation, the span's scope);
* start and end from the report: ``summary.started_at_utc`` and ``summary.generation_ms`` (the
  generation's own batch); a report written before those fields existed ends at ``created_at_utc``
  and starts ``elapsed_ms`` earlier;
* the risk as a ``gen_ai.evaluation.result`` event; flags, blamed layers and compound signals as
  ``corevital.*`` attributes. Prompt and output text are not sent unless ``include_text=True``.

Metrics (cumulative, exported every ``export_interval_s`` and at :meth:`OTelExporter.close`):
``corevital.runs`` and ``corevital.flags`` count runs with their sampling weight (so rates stay
right under sampling); ``corevital.risk_score``, ``gen_ai.client.token.usage``,
``gen_ai.client.operation.duration``, ``gen_ai.server.time_to_first_token`` and
``gen_ai.server.time_per_output_token`` (a run's mean time between tokens after the first) are
histograms of the kept runs. The span, the event and every metric are listed in ``docs/production.md``.

Sending happens in the SDK's background threads: :meth:`OTelExporter.export` only records. A
collector that is down costs at most ``timeout_s`` per batch, in those threads, and
:meth:`OTelExporter.close` waits at most ``close_timeout_s``; failed exports are counted and
reported by ``close()`` as an :class:`~corevital.errors.ExporterError` (logged by the caller,
never raised into a run).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import urlsplit

from corevital.closing import ClosesOnExit
from corevital.errors import ConfigError, ExporterError, import_extra
from corevital.exporters.sampling import report_weight
from corevital.report.timestamps import epoch_ms, parse_utc
from corevital.sinks.rows import HealthFlag

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from corevital.config import Settings
    from corevital.report.schema import Report

log = logging.getLogger(__name__)

_P = TypeVar("_P")

INSTALL_HINT = "OpenTelemetry export needs the otel extra: pip install 'corevital[otel]'"
DEFAULT_ENDPOINT = "http://localhost:4318"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
SCOPE = "corevital"
PROVIDER_NAME = "huggingface"
EVALUATION_EVENT = "gen_ai.evaluation.result"
EVALUATION_NAME = "corevital.risk"
HIGH_RISK = 0.7
"""Risk scores at or above this are labelled ``high`` in the evaluation event."""
MEDIUM_RISK = 0.3
"""Risk scores at or above this (and below :data:`HIGH_RISK`) are labelled ``medium``; below, ``low``."""

FINISH_REASONS = {
    "eos": "stop",
    "stop_string": "stop",
    "length": "length",
    "stopped_by_callback": "stopped_by_callback",
}
"""CoreVital's finish reasons as ``gen_ai.response.finish_reasons`` values (an end-of-sequence token
or a stop string: ``stop``, as the conventions' providers report it)."""

# Bucket boundaries the GenAI semantic conventions advise for their two histograms.
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
RISK_BUCKETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def otlp_base(endpoint: str | None, environ: dict[str, str] | None = None) -> str:
    """The OTLP/HTTP base URL: ``endpoint``, else ``OTEL_EXPORTER_OTLP_ENDPOINT``, else localhost:4318."""
    env = os.environ if environ is None else environ
    base = (endpoint or env.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).strip()
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        source = "--otel-endpoint" if endpoint else ENDPOINT_ENV
        raise ConfigError(f"{source} must be an http:// or https:// URL, got {base!r}")
    try:
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise ConfigError(f"the OTLP endpoint {base!r} has an invalid port") from None
    return base.rstrip("/")


def risk_label(score: float) -> str:
    """``low``, ``medium`` or ``high`` by :data:`MEDIUM_RISK` and :data:`HIGH_RISK`."""
    return "high" if score >= HIGH_RISK else "medium" if score >= MEDIUM_RISK else "low"


def span_times_ns(report: Report) -> tuple[int, int]:
    """The generation's start and end in ns since the epoch, from the report's clock fields."""
    summary = report.summary
    if summary.started_at_utc is not None:
        start = epoch_ms(parse_utc(summary.started_at_utc)) * 1_000_000
        duration_ms = summary.generation_ms if summary.generation_ms is not None else summary.elapsed_ms
        return start, start + int(round(duration_ms * 1_000_000))
    end = epoch_ms(parse_utc(report.created_at_utc)) * 1_000_000
    return end - int(summary.elapsed_ms) * 1_000_000, end


def operation_name(report: Report) -> str:
    return "chat" if report.prompt.chat_template_applied else "text_completion"


def fired_flags(report: Report) -> list[str]:
    """The health flags set in ``report`` (short names: ``nan``, ``repetition_loop``, ...)."""
    flags = report.health_flags
    if flags is None:
        return []
    return [flag.short_name for flag in HealthFlag if getattr(flags, flag.value) is True]


def compound_signals(report: Report) -> list[str]:
    return [signal.name for signal in report.extensions.compound_signals or ()]


def risk_score(report: Report) -> float | None:
    risk = report.extensions.risk
    return risk.risk_score if risk is not None else None


def common_attributes(report: Report) -> dict[str, str]:
    """The attributes shared by the span and every metric point (bounded: no ids, no text)."""
    return {
        "gen_ai.operation.name": operation_name(report),
        "gen_ai.provider.name": PROVIDER_NAME,
        "gen_ai.request.model": report.model.hf_id,
    }


def span_attributes(report: Report, *, include_text: bool = False) -> dict[str, Any]:
    """The span's attributes: GenAI request/response/usage ones and CoreVital's ``corevital.*``."""
    gen = report.run_config.generation
    attrs: dict[str, Any] = common_attributes(report)
    attrs["gen_ai.request.max_tokens"] = report.run_config.max_new_tokens
    attrs["gen_ai.request.seed"] = report.run_config.seed
    if not gen.do_sample:
        attrs["gen_ai.request.temperature"] = 0.0  # greedy; top-p and top-k are not applied
    else:
        if gen.temperature is not None:
            attrs["gen_ai.request.temperature"] = float(gen.temperature)
        if gen.top_p is not None:
            attrs["gen_ai.request.top_p"] = float(gen.top_p)
        if gen.top_k:
            attrs["gen_ai.request.top_k"] = float(gen.top_k)
    attrs["gen_ai.usage.input_tokens"] = report.summary.prompt_tokens
    attrs["gen_ai.usage.output_tokens"] = report.summary.generated_tokens
    if report.summary.ttft_ms is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = report.summary.ttft_ms / 1000.0
    if report.summary.tokens_per_second is not None:
        attrs["corevital.tokens_per_second"] = float(report.summary.tokens_per_second)
    finish = report.generated.finish_reason
    if finish is not None:
        attrs["gen_ai.response.finish_reasons"] = [FINISH_REASONS.get(finish, finish)]
        attrs["corevital.finish_reason"] = finish
    attrs["corevital.trace_id"] = report.trace_id
    score = risk_score(report)
    if score is not None:
        attrs["corevital.risk_score"] = float(score)
    attrs["corevital.health_flags"] = fired_flags(report)
    if report.health_flags is not None:
        attrs["corevital.high_entropy_steps"] = report.health_flags.high_entropy_steps
    risk = report.extensions.risk
    attrs["corevital.blamed_layers"] = list(risk.blamed_layers_flat) if risk is not None else []
    attrs["corevital.compound_signals"] = compound_signals(report)
    attrs["corevital.sampling.weight"] = float(report_weight(report))
    attrs["corevital.model.device"] = report.model.device
    if report.run_config.capture_mode is not None:
        attrs["corevital.capture_mode"] = report.run_config.capture_mode
    if include_text:
        attrs["gen_ai.input.messages"] = json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": report.prompt.text}]}],
            ensure_ascii=False,
        )
        output: dict[str, Any] = {
            "role": "assistant",
            "parts": [{"type": "text", "content": report.generated.output_text}],
        }
        if finish is not None:
            output["finish_reason"] = FINISH_REASONS.get(finish, finish)
        attrs["gen_ai.output.messages"] = json.dumps([output], ensure_ascii=False)
    return attrs


def evaluation_attributes(report: Report) -> dict[str, Any] | None:
    """The ``gen_ai.evaluation.result`` event's attributes (None without a risk score)."""
    score = risk_score(report)
    if score is None:
        return None
    attrs: dict[str, Any] = {
        "gen_ai.evaluation.name": EVALUATION_NAME,
        "gen_ai.evaluation.score.value": float(score),
        "gen_ai.evaluation.score.label": risk_label(score),
    }
    narrative = report.extensions.narrative
    risk = report.extensions.risk
    if risk is not None and risk.risk_factors:
        attrs["gen_ai.evaluation.explanation"] = ", ".join(risk.risk_factors)
    elif narrative is not None and narrative.summary:
        attrs["gen_ai.evaluation.explanation"] = narrative.summary
    return attrs


@dataclass
class _Failures:
    """Exports that failed, per signal, counted from the SDK's export threads."""

    spans: int = 0
    metric_exports: int = 0


def _check_sdk() -> None:
    """:class:`NotAvailableError` unless the OpenTelemetry SDK and OTLP/HTTP exporter are installed."""
    import_extra(
        "opentelemetry.exporter.otlp.proto.http",
        "opentelemetry.sdk.metrics",
        "opentelemetry.sdk.trace",
        hint=INSTALL_HINT,
    )


def _counting_exporters(failures: _Failures) -> tuple[type[Any], type[Any]]:
    """OTLP span and metric exporters that count their failed exports in ``failures``."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExportResult

    class SpanExporter(OTLPSpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            result = super().export(spans)
            if result is not SpanExportResult.SUCCESS:
                failures.spans += len(spans)
            return result

    class MetricExporter(OTLPMetricExporter):
        def export(
            self, metrics_data: MetricsData, timeout_millis: float | None = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            if result is not MetricExportResult.SUCCESS:
                failures.metric_exports += 1
            return result

    return SpanExporter, MetricExporter


class OTelExporter(ClosesOnExit):
    """Spans and metrics of finished reports, over OTLP/HTTP, through providers of its own.

    ``endpoint``: the OTLP/HTTP base URL (``/v1/traces`` and ``/v1/metrics`` are appended);
    default ``OTEL_EXPORTER_OTLP_ENDPOINT``, else ``http://localhost:4318``. Other standard
    ``OTEL_EXPORTER_OTLP_*`` variables (headers, certificates, compression) apply as the SDK reads
    them. ``tracer_provider`` / ``meter_provider``: the caller's providers, used instead of building
    ours (``endpoint`` then unused for that signal; the caller's providers are flushed at
    :meth:`close`, never shut down). ``include_text``: also send the prompt and the output as
    ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (off: text often holds personal data).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        service_name: str = "corevital",
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        timeout_s: float = 5.0,
        close_timeout_s: float = 8.0,
        export_interval_s: float = 60.0,
        include_text: bool = False,
    ) -> None:
        if timeout_s <= 0 or close_timeout_s <= 0 or export_interval_s <= 0:
            raise ConfigError("OTelExporter: timeout_s, close_timeout_s and export_interval_s must be > 0")
        _check_sdk()
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.include_text = include_text
        self.close_timeout_s = close_timeout_s
        self.failures = _Failures()
        self._lock = threading.Lock()
        self._closed = False
        needs_own = tracer_provider is None or meter_provider is None
        self.endpoint = otlp_base(endpoint) if needs_own else (endpoint or "")
        from corevital import __version__

        resource = Resource.create({"service.name": service_name, "service.version": __version__})
        span_exporter, metric_exporter = _counting_exporters(self.failures)
        self._finish: list[Callable[[], object]] = []  # what close() runs: see _provider

        def own_tracer() -> tuple[TracerProvider, Callable[[], object]]:
            provider = SdkTracerProvider(resource=resource, shutdown_on_exit=False)
            provider.add_span_processor(
                BatchSpanProcessor(span_exporter(endpoint=self.endpoint + TRACES_PATH, timeout=timeout_s))
            )
            return provider, provider.shutdown

        def own_meter() -> tuple[MeterProvider, Callable[[], object]]:
            reader = PeriodicExportingMetricReader(
                metric_exporter(endpoint=self.endpoint + METRICS_PATH, timeout=timeout_s),
                export_interval_millis=export_interval_s * 1000.0,
                export_timeout_millis=timeout_s * 1000.0,
            )
            provider = SdkMeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
            return provider, lambda: provider.shutdown(timeout_millis=close_timeout_s * 1000.0)

        tracer_provider = self._provider(tracer_provider, own_tracer)
        meter_provider = self._provider(meter_provider, own_meter)
        self._tracer = tracer_provider.get_tracer(SCOPE, __version__)
        meter = meter_provider.get_meter(SCOPE, __version__)
        self._runs = meter.create_counter(
            "corevital.runs", unit="{run}", description="Generations observed, with sampling weights."
        )
        self._flags = meter.create_counter(
            "corevital.flags",
            unit="{run}",
            description="Generations in which a health flag or compound signal fired, by corevital.flag.",
        )
        self._risk = meter.create_histogram(
            "corevital.risk_score",
            unit="1",
            description="Risk score of each kept generation (0 to 1).",
            explicit_bucket_boundaries_advisory=RISK_BUCKETS,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token",
            unit="s",
            description="Time to generate the first token.",
            explicit_bucket_boundaries_advisory=TTFT_BUCKETS,
        )
        self._tpot = meter.create_histogram(
            "gen_ai.server.time_per_output_token",
            unit="s",
            description="Time per output token generated after the first token.",
            explicit_bucket_boundaries_advisory=TPOT_BUCKETS,
        )

    def _provider(self, given: _P | None, build: Callable[[], tuple[_P, Callable[[], object]]]) -> _P:
        """``given`` (the caller's provider: flushed at close, never shut down), else one built
        here with its shutdown (run at close; it flushes first). Both bounded by ``close_timeout_s``."""
        if given is None:
            own, shutdown = build()
            self._finish.append(shutdown)
            return own
        flush = getattr(given, "force_flush", None)
        if callable(flush):
            timeout_ms = int(self.close_timeout_s * 1000)
            self._finish.append(lambda: flush(timeout_ms))
        return given

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """``--sink otel``: ``--otel-endpoint`` (else the environment's), ``--otel-service-name``."""
        otlp_base(settings.otel_endpoint)  # a bad URL fails before any model is loaded
        return cls(settings.otel_endpoint, service_name=settings.otel_service_name)

    def export(self, report: Report) -> None:
        """Record the report's span and metric points (sending happens in the SDK's threads)."""
        from opentelemetry.trace import SpanKind

        if self._closed:
            raise ExporterError("the OpenTelemetry exporter is closed")
        start_ns, end_ns = span_times_ns(report)
        common = common_attributes(report)
        span = self._tracer.start_span(
            f"{common['gen_ai.operation.name']} {common['gen_ai.request.model']}",
            kind=SpanKind.INTERNAL,
            attributes=span_attributes(report, include_text=self.include_text),
            start_time=start_ns,
        )
        evaluation = evaluation_attributes(report)
        if evaluation is not None:
            span.add_event(EVALUATION_EVENT, evaluation, timestamp=end_ns)
        span.end(end_time=end_ns)

        weight = report_weight(report)
        self._runs.add(weight, common)
        for name in fired_flags(report) + compound_signals(report):
            self._flags.add(weight, {**common, "corevital.flag": name})
        score = risk_score(report)
        if score is not None:
            self._risk.record(float(score), common)
        self._tokens.record(report.summary.prompt_tokens, {**common, "gen_ai.token.type": "input"})
        self._tokens.record(report.summary.generated_tokens, {**common, "gen_ai.token.type": "output"})
        self._duration.record((end_ns - start_ns) / 1e9, common)
        if report.summary.ttft_ms is not None:
            self._ttft.record(report.summary.ttft_ms / 1000.0, common)
        itl = report.summary.inter_token_ms
        if itl is not None and itl.mean is not None:
            self._tpot.record(itl.mean / 1000.0, common)

    def close(self) -> None:
        """Flush and shut down the providers built here (the caller's: flushed only), within
        ``close_timeout_s``; :class:`ExporterError` when something could not be sent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + self.close_timeout_s
        threads = [
            threading.Thread(target=_logged(step), name="corevital-otel-close", daemon=True)
            for step in self._finish
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        unfinished = sum(thread.is_alive() for thread in threads)
        problems = []
        if self.failures.spans:
            problems.append(f"{self.failures.spans} span(s) not delivered")
        if self.failures.metric_exports:
            problems.append(f"{self.failures.metric_exports} metric export(s) failed")
        if unfinished:
            problems.append(f"flushing did not finish within {self.close_timeout_s:g} s")
        if problems:
            raise ExporterError(
                f"OpenTelemetry export to {self.endpoint or 'the given providers'}: " + "; ".join(problems)
            )


def _logged(step: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            step()
        except Exception as exc:  # a provider failing to shut down must not break the run
            log.warning("OpenTelemetry shutdown: %s: %s", type(exc).__name__, exc)

    return run


__all__ = ["OTelExporter", "otlp_base", "risk_label", "span_attributes", "span_times_ns"]
