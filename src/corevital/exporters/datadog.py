"""The Datadog exporter (``--sink datadog``): metrics over the series v2 API, events for risky runs.

Everything goes over Datadog's HTTP API (no agent needed): ``POST {api}/api/v2/series`` (gzip
JSON, ``DD-API-KEY`` header) with these series per run, tagged ``model``, ``device``,
``quantization`` and ``capture_mode`` (low cardinality: no trace ids, no prompts)::

    corevital.runs             count   runs (a sampled report adds its weight)
    corevital.generated_tokens count   generated tokens (times the weight)
    corevital.flags            count   runs with a health flag, tagged flag:<name>
    corevital.high_risk_runs   count   runs at or above datadog_event_risk
    corevital.risk_score       gauge   the run's risk score, 0-1
    corevital.entropy          gauge   mean entropy of the generated steps (bits)
    corevital.surprisal        gauge   mean surprisal of the generated tokens (bits)

Points are stamped with the second of export; within a batch, counts of one series and second
are summed and gauges averaged (Datadog keeps one value per series and second). Series are sent
in batches, every ``flush_every`` reports, every ``flush_interval_s`` seconds, and at close.

A run at or above ``datadog_event_risk`` also posts an event (``POST {api}/api/v1/events``):
title, risk, flags, the narrative summary and the trace id (never the prompt or the output),
``alert_type`` error at risk >= 0.9 or on NaN/Inf, else warning, aggregated per model.

The payloads go through the same on-disk spool and sender as the HTTP sink
(:mod:`corevital.exporters.spool`, default ``<out>/datadog-spool``; the key is never written
there): 5xx, 408, 429 (Retry-After honoured), timeouts and refused connections are retried with
backoff; 403 (a bad API key) is logged once as one line, other 4xx are logged; nothing is raised
into a run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from corevital.errors import ConfigError, ExporterError
from corevital.exporters.http import Poster, check_url, import_httpx
from corevital.exporters.spool import Attempt, Backoff, Outcome, Spool, SpoolSender
from corevital.sinks.encoded import EncodedReport
from corevital.sinks.rows import HealthFlag, trace_row_from_report

if TYPE_CHECKING:
    from corevital.config import Settings
    from corevital.report.schema import Report
    from corevital.sinks.rows import TraceRow

log = logging.getLogger(__name__)

API_KEY_ENV = "DD_API_KEY"
SERIES_PATH = "/api/v2/series"
EVENTS_PATH = "/api/v1/events"
COUNT, GAUGE = 1, 3  # MetricIntakeType of series v2 (0 unspecified, 1 count, 2 rate, 3 gauge)
ERROR_RISK = 0.9
MAX_TAG_CHARS = 200
MAX_TITLE_CHARS = 100
MAX_TEXT_CHARS = 4000
MAX_AGGREGATION_KEY_CHARS = 100
TIMEOUT_S = 10.0
_SITE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
_TAG_CHARS = re.compile(r"[^a-z0-9_:./-]")

SeriesKey = tuple[str, int, tuple[str, ...], int]  # metric, type, tags, timestamp


def api_base(site: str) -> str:
    """The API base URL of a Datadog site (``datadoghq.eu`` -> ``https://api.datadoghq.eu``);
    a full http(s):// URL is taken as the API base itself."""
    site = site.strip()
    if site.startswith(("http://", "https://")):
        return check_url(site, "--datadog-site").rstrip("/")
    site = site.lower().removeprefix("app.")
    if not _SITE.match(site):
        raise ConfigError(
            f"--datadog-site must be a Datadog site such as datadoghq.com, datadoghq.eu, us5.datadoghq.com "
            f"or ddog-gov.com (or an https:// API URL), got {site!r}"
        )
    return f"https://api.{site}"


def read_api_key(key_file: str | None, environ: dict[str, str] | None = None) -> str:
    """The API key: from ``key_file`` when given, else from ``DD_API_KEY``; never shown in errors."""
    if key_file:
        try:
            key = Path(key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"--datadog-api-key-file {key_file}: cannot read it ({type(exc).__name__})"
            ) from None
        where = f"--datadog-api-key-file {key_file}"
    else:
        key = (os.environ if environ is None else environ).get(API_KEY_ENV, "").strip()
        where = API_KEY_ENV
    if not key:
        raise ConfigError(
            f"--sink datadog needs an API key: set {API_KEY_ENV} "
            "or --datadog-api-key-file (a file with the key)"
        )
    if any(ch.isspace() for ch in key) or not key.isprintable():
        raise ConfigError(f"the Datadog API key in {where} is not one word (it is not shown here)")
    return key


def tag(name: str, value: str) -> str:
    """A Datadog tag ``name:value``: lower case, other characters as ``_``, at most 200 characters."""
    return _TAG_CHARS.sub("_", f"{name}:{value}".lower())[:MAX_TAG_CHARS]


def base_tags(row: TraceRow) -> tuple[str, ...]:
    return (
        tag("model", row.model_id or "unknown"),
        tag("device", row.device or "unknown"),
        tag("quantization", row.quantization or "none"),
        tag("capture_mode", row.capture_mode or "unknown"),
    )


def fired_flags(row: TraceRow) -> list[str]:
    """Short names of the health flags set on the run (``nan``, ``repetition_loop``, ...)."""
    return [flag.short_name for flag in HealthFlag if row.flag(flag)]


def run_points(
    report: Report, timestamp: int, event_risk: float, *, row: TraceRow | None = None
) -> list[tuple[SeriesKey, float]]:
    """The (series, value) points of one report (``row``: its index row, when made already)."""
    row = row or trace_row_from_report(report)
    weight = row.sampling_weight
    tags = base_tags(row)
    points: list[tuple[SeriesKey, float]] = [
        (("corevital.runs", COUNT, tags, timestamp), weight),
        (("corevital.generated_tokens", COUNT, tags, timestamp), row.generated_tokens * weight),
    ]
    for name in fired_flags(row):
        points.append((("corevital.flags", COUNT, (*tags, tag("flag", name)), timestamp), weight))
    risk = row.risk_score
    if risk is not None and math.isfinite(risk):
        points.append((("corevital.risk_score", GAUGE, tags, timestamp), risk))
        points.append(
            (("corevital.high_risk_runs", COUNT, tags, timestamp), weight if risk >= event_risk else 0.0)
        )
    for metric, value in (
        ("corevital.entropy", row.mean_entropy),
        ("corevital.surprisal", row.mean_surprisal),
    ):
        if value is not None and math.isfinite(value):
            points.append(((metric, GAUGE, tags, timestamp), value))
    return points


def event_payload(
    report: Report, timestamp: int, event_risk: float, host: str, *, row: TraceRow | None = None
) -> dict[str, Any] | None:
    """The event of a run at or above ``event_risk`` (None below it or without a risk score)."""
    row = row or trace_row_from_report(report)
    risk = row.risk_score
    if risk is None or not math.isfinite(risk) or risk < event_risk:
        return None
    flags = fired_flags(row)
    narrative = report.extensions.narrative.summary if report.extensions.narrative is not None else ""
    lines = [
        f"Risk score {risk:.2f} (events from {event_risk:.2f}) on {row.model_id}.",
        f"Flags: {', '.join(flags) if flags else 'none'}.",
        f"Generated tokens: {row.generated_tokens}.",
        f"Trace id: {row.trace_id}",
    ]
    if narrative:
        lines.insert(2, f"Narrative: {narrative}")
    error = risk >= ERROR_RISK or HealthFlag.NAN.short_name in flags or HealthFlag.INF.short_name in flags
    return {
        "title": f"CoreVital: risk {risk:.2f} on {row.model_id}"[:MAX_TITLE_CHARS],
        "text": "\n".join(lines)[:MAX_TEXT_CHARS],
        "alert_type": "error" if error else "warning",
        "date_happened": timestamp,
        "host": host,
        "aggregation_key": f"corevital:{row.model_id}"[:MAX_AGGREGATION_KEY_CHARS],
        "tags": [*base_tags(row), *(tag("flag", f) for f in flags), "source:corevital"],
    }


def series_payload(points: dict[SeriesKey, tuple[float, int]], host: str) -> dict[str, list[dict[str, Any]]]:
    """The series v2 body of aggregated points: counts summed, gauges averaged."""
    by_series: dict[tuple[str, int, tuple[str, ...]], list[dict[str, float | int]]] = defaultdict(list)
    for (metric, kind, tags, timestamp), (total, count) in sorted(points.items()):
        value = total if kind == COUNT else total / count
        by_series[(metric, kind, tags)].append({"timestamp": timestamp, "value": value})
    return {
        "series": [
            {
                "metric": metric,
                "type": kind,
                "points": series_points,
                "tags": list(tags),
                "resources": [{"name": host, "type": "host"}],
            }
            for (metric, kind, tags), series_points in by_series.items()
        ]
    }


class DatadogExporter:
    """Sends each report's metrics (batched) and high-risk events to Datadog's HTTP API."""

    def __init__(
        self,
        api: str,
        api_key: str,
        spool_dir: str | Path,
        *,
        event_risk: float = 0.7,
        flush_every: int = 50,
        flush_interval_s: float = 10.0,
        timeout: float = TIMEOUT_S,
        close_wait_s: float | None = None,
        backoff: Backoff | None = None,
        host: str | None = None,
        rescan_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import_httpx("datadog")
        if flush_every < 1:
            raise ConfigError("flush_every must be at least 1")
        self.api = api.rstrip("/")
        self._api_key = api_key
        self.event_risk = event_risk
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.timeout = timeout
        self.close_wait_s = 2.0 * timeout if close_wait_s is None else close_wait_s
        self.host = host or socket.gethostname()
        self.clock = clock
        self._points: dict[SeriesKey, tuple[float, int]] = {}
        self._batched = 0
        self._batch_started = 0.0
        self._batches = 0
        self._lock = threading.Lock()
        self._poster = Poster(timeout)
        self._key_refused = False
        self._closed = False
        self.spool = Spool(spool_dir)
        self.sender = SpoolSender(
            self.spool,
            self._deliver,
            name="datadog",
            backoff=backoff,
            rescan_s=rescan_s,
            tick=self._flush_if_due,
            logger=log,
        )

    def __repr__(self) -> str:  # never the key
        return f"DatadogExporter(api={self.api!r}, spool={str(self.spool.root)!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        api = api_base(settings.datadog_site)
        key = read_api_key(settings.datadog_api_key_file)
        spool = Path(settings.out) / "datadog-spool"
        try:
            return cls(api, key, spool, event_risk=settings.datadog_event_risk)
        except OSError as exc:
            raise ExporterError(f"{spool}: cannot use it as the Datadog spool directory: {exc}") from exc

    # --- export ----------------------------------------------------------------------------
    def export(self, report: Report) -> None:
        """Add the report's points to the batch (flushed when full or due); spool its event."""
        self.export_encoded(EncodedReport(report))

    def export_encoded(self, encoded: EncodedReport) -> None:
        """:meth:`export`, with the report's index row made once for every destination."""
        report, row, now = encoded.report, encoded.row, int(self.clock())
        points = run_points(report, now, self.event_risk, row=row)
        event = event_payload(report, now, self.event_risk, self.host, row=row)
        if event is not None:
            self.sender.put(f"event:{report.trace_id}", json.dumps(event).encode("utf-8"))
        with self._lock:
            if not self._batched:
                self._batch_started = time.monotonic()
            for key, value in points:
                total, count = self._points.get(key, (0.0, 0))
                self._points[key] = (total + value, count + 1)
            self._batched += 1
            if self._batched >= self.flush_every:
                self._flush_locked()

    def flush(self) -> None:
        """Spool the batched series now (they are sent by the sender thread)."""
        with self._lock:
            self._flush_locked()

    def _flush_if_due(self) -> None:
        with self._lock:
            if self._batched and time.monotonic() - self._batch_started >= self.flush_interval_s:
                self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._points:
            return
        body = json.dumps(series_payload(self._points, self.host)).encode("utf-8")
        self._batches += 1
        self._points = {}
        self._batched = 0
        self.sender.put(f"series:{self._batches}", body)

    def close(self) -> None:
        """Flush, deliver what is queued (bounded wait), leave the rest in the spool."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        left = self.sender.close(self.close_wait_s)
        if left:
            log.warning("datadog: %d payload(s) not delivered yet; kept in %s", left, self.spool.root)
        self._poster.close()

    # --- delivery (sender thread) ----------------------------------------------------------------
    def _deliver(self, key: str, body: bytes) -> Attempt:
        import gzip

        headers = {
            "DD-API-KEY": self._api_key,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        if key.startswith("series:"):
            url, payload = self.api + SERIES_PATH, gzip.compress(body, 6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        else:
            url, payload = self.api + EVENTS_PATH, body
        attempt = self._poster.post(url, payload, headers)
        detail = attempt.detail.replace(self._api_key, "***")
        if attempt.status in (401, 403):
            detail = f"{detail} (Datadog refused the API key: check {API_KEY_ENV} or --datadog-api-key-file)"
            if not self._key_refused:
                self._key_refused = True
                log.error("datadog: %s at %s", detail, self.api)
            return Attempt(Outcome.REJECTED, detail, status=attempt.status, logged=True)
        if attempt.outcome is Outcome.DELIVERED and self._key_refused:
            self._key_refused = False
        return Attempt(attempt.outcome, detail, status=attempt.status, retry_after=attempt.retry_after)


__all__ = [
    "DatadogExporter",
    "api_base",
    "event_payload",
    "read_api_key",
    "run_points",
    "series_payload",
    "tag",
]
