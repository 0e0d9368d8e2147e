"""The Datadog exporter against a local server that checks Datadog's documented request schemas.

The checks below are written from Datadog's API reference: "Submit metrics" (POST /api/v2/series,
MetricPayload / MetricSeries / MetricPoint / MetricResource, payload limits, the 1-hour window of
point timestamps, tag and metric-name rules) and "Post an event" (POST /api/v1/events,
EventCreateRequest). The server answers 202 like Datadog, or injects 503s and a 403.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corevital.config import Settings
from corevital.errors import ConfigError
from corevital.exporters.base import Outputs, open_exporter
from corevital.exporters.datadog import DatadogExporter, api_base, read_api_key, run_points, tag
from corevital.exporters.spool import REJECTED_DIR, Backoff
from corevital.report.schema import Report
from corevital.sinks.rows import HealthFlag
from tests.support.golden import report_variant
from tests.support.receiver import Answer, Receiver, Request, fixture_reports

KEY = "0123456789abcdef0123456789abcdef"
FAST = Backoff(base=0.02, cap=0.2)

# --- Datadog's request schemas, from the API reference --------------------------------------------
SERIES_KEYS = {
    "metric",
    "points",
    "type",
    "interval",
    "metadata",
    "resources",
    "source_type_name",
    "tags",
    "unit",
}
EVENT_KEYS = {
    "aggregation_key",
    "alert_type",
    "date_happened",
    "device_name",
    "host",
    "priority",
    "related_event_id",
    "source_type_name",
    "tags",
    "text",
    "title",
}
ALERT_TYPES = {"error", "warning", "info", "success", "user_update", "recommendation", "snapshot"}
METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,199}$")
TAG = re.compile(r"^[a-z][a-z0-9_:./-]{0,199}$")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_tags(tags: Any) -> None:
    assert isinstance(tags, list) and all(isinstance(t, str) and TAG.match(t) for t in tags), tags


def check_series_request(request: Request, now: float) -> list[dict[str, Any]]:
    """POST /api/v2/series: headers, size limits, MetricPayload; the series."""
    assert request.method == "POST" and request.path == "/api/v2/series"
    assert request.headers["dd-api-key"] == KEY
    assert request.headers["content-type"] == "application/json"
    assert request.headers.get("content-encoding") in (None, "gzip", "deflate", "zstd1")
    assert len(request.raw) <= 512_000 and len(request.body) <= 5_242_880
    payload = request.json()
    assert isinstance(payload, dict) and set(payload) == {"series"}
    series = payload["series"]
    assert isinstance(series, list) and series
    for one in series:
        assert isinstance(one, dict) and {"metric", "points"} <= set(one) <= SERIES_KEYS, one
        assert isinstance(one["metric"], str) and METRIC_NAME.match(one["metric"])
        assert one.get("type", 0) in (0, 1, 2, 3)
        assert isinstance(one["points"], list) and one["points"]
        for point in one["points"]:
            assert isinstance(point, dict) and set(point) <= {"timestamp", "value"}
            assert is_int(point["timestamp"]) and now - 3600 <= point["timestamp"] <= now + 600
            value = point["value"]
            assert isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        for resource in one.get("resources", []):
            assert set(resource) == {"name", "type"} and all(isinstance(v, str) for v in resource.values())
        if "tags" in one:
            check_tags(one["tags"])
        if "interval" in one:
            assert is_int(one["interval"])
        if "unit" in one:
            assert isinstance(one["unit"], str)
    return list(series)


def check_event_request(request: Request, now: float) -> dict[str, Any]:
    """POST /api/v1/events: headers, EventCreateRequest; the event."""
    assert request.method == "POST" and request.path == "/api/v1/events"
    assert request.headers["dd-api-key"] == KEY
    event = request.json()
    assert isinstance(event, dict) and {"title", "text"} <= set(event) <= EVENT_KEYS, event
    assert isinstance(event["title"], str) and 0 < len(event["title"]) <= 100
    assert isinstance(event["text"], str) and 0 < len(event["text"]) <= 4000
    if "aggregation_key" in event:
        assert isinstance(event["aggregation_key"], str) and len(event["aggregation_key"]) <= 100
    assert event.get("alert_type", "info") in ALERT_TYPES
    assert event.get("priority", "normal") in ("normal", "low", None)
    if "date_happened" in event:
        assert is_int(event["date_happened"]) and now - 18 * 3600 <= event["date_happened"] <= now + 600
    for name in ("host", "device_name", "source_type_name"):
        assert isinstance(event.get(name, ""), str)
    if "tags" in event:
        check_tags(event["tags"])
    return event


def accepted(request: Request) -> Answer:
    body: dict[str, Any] = {"errors": []} if request.path == "/api/v2/series" else {"status": "ok"}
    return Answer(202, {"Content-Type": "application/json"}, json.dumps(body).encode())


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(accepted)
    yield server.start()
    server.stop()


MakeExporter = Callable[..., DatadogExporter]


@pytest.fixture
def make_exporter(receiver: Receiver, tmp_path: Path) -> Iterator[MakeExporter]:
    made: list[DatadogExporter] = []

    def make(**kwargs: Any) -> DatadogExporter:
        options: dict[str, Any] = {
            "backoff": FAST,
            "rescan_s": 0.1,
            "timeout": 2.0,
            "host": "gpu-7",
            **kwargs,
        }
        exporter = DatadogExporter(receiver.url, KEY, tmp_path / "dd-spool", **options)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.close()


def variant(base: Report, risk: float, *, nan: bool = False, weight: float | None = None) -> Report:
    return report_variant(base, risk=risk, flags=(HealthFlag.NAN,) if nan else (), weight=weight)


def runs() -> list[Report]:
    base = list(fixture_reports(4, "dd"))
    return [
        variant(base[0], 0.95, nan=True),
        variant(base[1], 0.75),
        variant(base[2], 0.2, weight=4.0),
        variant(base[3], 0.3),
    ]


def points_of(series: list[dict[str, Any]], metric: str) -> list[tuple[list[str], float]]:
    return [(s["tags"], p["value"]) for s in series if s["metric"] == metric for p in s["points"]]


# --- tests -------------------------------------------------------------------------------------------
def test_metrics_and_events_follow_datadogs_schemas_and_values(
    receiver: Receiver, make_exporter: MakeExporter, caplog: pytest.LogCaptureFixture
) -> None:
    second = int(time.time())
    exporter = make_exporter(flush_every=2, event_risk=0.7, clock=lambda: second + 0.5)
    sent = runs()
    with caplog.at_level(logging.DEBUG):
        for report in sent:
            exporter.export(report)
        exporter.close()
    now = time.time()
    requests = receiver.snapshot()
    assert all(r.status == 202 for r in requests)
    series_requests = [r for r in requests if r.path == "/api/v2/series"]
    event_requests = [r for r in requests if r.path == "/api/v1/events"]
    assert len(series_requests) == 2  # flush_every=2, four reports
    assert all(r.headers["content-encoding"] == "gzip" for r in series_requests)
    series = [s for r in series_requests for s in check_series_request(r, now)]
    events = [check_event_request(r, now) for r in event_requests]

    assert {s["metric"] for s in series} == {
        "corevital.runs",
        "corevital.generated_tokens",
        "corevital.flags",
        "corevital.high_risk_runs",
        "corevital.risk_score",
        "corevital.entropy",
        "corevital.surprisal",
    }
    types = {s["metric"]: s["type"] for s in series}
    assert types["corevital.runs"] == types["corevital.flags"] == types["corevital.generated_tokens"] == 1
    assert types["corevital.risk_score"] == types["corevital.entropy"] == 3
    assert all(s["resources"] == [{"name": "gpu-7", "type": "host"}] for s in series)
    base_tags = ["model:tiny/causal-lm", "device:cpu", "quantization:none", "capture_mode:full"]
    assert all(s["tags"][:4] == base_tags for s in series)
    # counts add the sampling weight: 1 + 1 + 4 + 1 runs, 2 generated tokens each
    assert sum(v for _, v in points_of(series, "corevital.runs")) == 7.0
    assert sum(v for _, v in points_of(series, "corevital.generated_tokens")) == 14.0
    assert points_of(series, "corevital.flags") == [([*base_tags, "flag:nan"], 1.0)]
    assert sum(v for _, v in points_of(series, "corevital.high_risk_runs")) == 2.0
    # gauges: one value per series and second, the mean of the batch's runs
    risk = [v for _, v in points_of(series, "corevital.risk_score")]
    assert risk == pytest.approx([(0.95 + 0.75) / 2, (0.2 + 0.3) / 2])
    assert all(v > 0 for _, v in points_of(series, "corevital.entropy"))
    assert {p["timestamp"] for s in series for p in s["points"]} == {second}

    assert [e["alert_type"] for e in events] == ["error", "warning"]
    first = events[0]
    assert first["title"] == "CoreVital: risk 0.95 on tiny/causal-lm"
    assert "Flags: nan." in first["text"] and sent[0].trace_id in first["text"]
    assert "Narrative: High risk" in first["text"]
    assert sent[0].prompt.text not in first["text"] and sent[0].generated.output_text not in first["text"]
    assert first["aggregation_key"] == "corevital:tiny/causal-lm" and first["host"] == "gpu-7"
    assert "flag:nan" in first["tags"] and "source:corevital" in first["tags"]
    assert KEY not in caplog.text and KEY not in repr(exporter)


def test_503_is_retried_until_datadog_accepts(receiver: Receiver, make_exporter: MakeExporter) -> None:
    answered = Counter[str]()

    def flaky(request: Request) -> Answer:
        answered[request.path] += 1
        if answered[request.path] <= 2:
            return Answer(503, {"Retry-After": "0"}, b'{"errors":["Service Unavailable"]}')
        return accepted(request)

    receiver.responder = flaky
    exporter = make_exporter(flush_every=10)
    for report in runs():
        exporter.export(report)
    exporter.close()
    statuses = [(r.path, r.status) for r in receiver.snapshot()]
    assert Counter(statuses) == {
        ("/api/v1/events", 503): 2,
        ("/api/v1/events", 202): 2,
        ("/api/v2/series", 503): 2,
        ("/api/v2/series", 202): 1,
    }
    assert exporter.sender.stats.delivered == 3 and exporter.sender.stats.failed_attempts == 4
    check_series_request(receiver.delivered()[-1], time.time())


def test_a_refused_key_is_one_logged_line_and_never_raised(
    receiver: Receiver, make_exporter: MakeExporter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.responder = lambda request: Answer(403, body=b'{"errors":["Forbidden"]}')
    exporter = make_exporter(flush_every=1)
    outputs = Outputs(exporters=[exporter], names=["datadog"])
    with caplog.at_level(logging.DEBUG):
        for report in runs():
            outputs.write(report)
        outputs.close()
    assert outputs.failures == Counter() and outputs.exported["datadog"] == 4
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "403" in message and "API key" in message and "\n" not in message
    assert KEY not in caplog.text
    assert len(receiver.snapshot()) == 6  # 4 series batches + 2 events, each asked once
    assert len(list((tmp_path / "dd-spool" / REJECTED_DIR).glob("*.item"))) == 6


def test_series_are_flushed_on_an_interval_without_close(
    receiver: Receiver, make_exporter: MakeExporter
) -> None:
    exporter = make_exporter(flush_every=1000, flush_interval_s=0.2, event_risk=1.0)
    exporter.export(runs()[3])
    assert receiver.wait_for(lambda requests: len(requests) == 1, timeout=5)
    check_series_request(receiver.snapshot()[0], time.time())


@pytest.mark.parametrize(
    ("site", "base"),
    [
        ("datadoghq.com", "https://api.datadoghq.com"),
        ("datadoghq.eu", "https://api.datadoghq.eu"),
        ("us3.datadoghq.com", "https://api.us3.datadoghq.com"),
        ("us5.datadoghq.com", "https://api.us5.datadoghq.com"),
        ("ap1.datadoghq.com", "https://api.ap1.datadoghq.com"),
        ("ddog-gov.com", "https://api.ddog-gov.com"),
        ("app.datadoghq.eu", "https://api.datadoghq.eu"),
        ("http://127.0.0.1:8126/", "http://127.0.0.1:8126"),
    ],
)
def test_sites_map_to_their_api(site: str, base: str) -> None:
    assert api_base(site) == base


def test_settings_key_and_site_are_checked_and_the_key_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DD_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="DD_API_KEY"):
        DatadogExporter.from_settings(Settings(sink=["datadog"], out=str(tmp_path)))
    with pytest.raises(ConfigError, match="datadog-site"):
        api_base("not a site")
    with pytest.raises(ConfigError, match="cannot read") as missing:
        read_api_key(str(tmp_path / "nope"))
    assert "nope" in str(missing.value)
    secret = "s3cr3t key with spaces"
    with pytest.raises(ConfigError) as bad:
        read_api_key(None, {"DD_API_KEY": secret})
    assert secret not in str(bad.value) and "s3cr3t" not in str(bad.value)

    key_file = tmp_path / "dd.key"
    key_file.write_text(KEY + "\n")
    assert read_api_key(str(key_file), {"DD_API_KEY": "other"}) == KEY
    monkeypatch.setenv("DD_API_KEY", KEY)
    exporter = open_exporter(
        "datadog", Settings(sink=["datadog"], out=str(tmp_path), datadog_site="datadoghq.eu")
    )
    assert isinstance(exporter, DatadogExporter)
    try:
        assert exporter.api == "https://api.datadoghq.eu" and exporter.event_risk == 0.7
        assert exporter.spool.root == tmp_path / "datadog-spool" and KEY not in repr(exporter)
    finally:
        exporter.close()


def test_tags_follow_datadogs_rules() -> None:
    assert tag("model", "Meta-Llama/Llama-3.1 8B@main") == "model:meta-llama/llama-3.1_8b_main"
    assert len(tag("model", "x" * 500)) == 200


# docs/production.md ---------------------------------------------------------------------------------


def datadog_section() -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "production.md").read_text(encoding="utf-8")
    start = text.index("\n## Datadog\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_docs_name_every_metric_sent_and_only_those() -> None:
    second = 1_800_000_000
    emitted = {key[0] for report in runs() for key, _ in run_points(report, second, 0.7)}
    documented = set(re.findall(r"^\| `(corevital\.[a-z_.]+)` \|", datadog_section(), re.M))
    assert documented == emitted
    for flag in HealthFlag:
        assert f"`flag:{flag.short_name}`" in datadog_section()


def test_the_documented_commands_parse() -> None:
    from corevital.cli import build_parser
    from corevital.cli.args import settings_overrides

    section = datadog_section()
    commands = [
        shlex.split(line, comments=True)[1:]
        for block in re.findall(r"```bash\n(.*?)```", section, re.S)
        for line in block.replace("\\\n", " ").splitlines()
        if line.startswith("corevital run")
    ]
    assert commands
    for argv in commands:
        settings = settings_overrides(build_parser("run").parse_args(argv))
        assert (
            "datadog" in settings["sink"] and api_base(settings["datadog_site"]) == "https://api.datadoghq.eu"
        )


def test_without_httpx_both_sinks_name_their_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from corevital.errors import NotAvailableError

    monkeypatch.setitem(sys.modules, "httpx", None)  # as if the extra were not installed
    monkeypatch.setenv("DD_API_KEY", KEY)
    settings = Settings(sink=["datadog", "http"], out=str(tmp_path), http_url="http://127.0.0.1:9/")
    for name in ("datadog", "http"):
        with pytest.raises(NotAvailableError, match=rf"pip install 'corevital\[{name}\]'"):
            open_exporter(name, settings)
