"""The Prometheus metrics: names, values from reports and from stores, the exporter's four outlets
(a registry, a port, a textfile, a Pushgateway), and the ``/metrics`` route. The deploy files and
docs are checked in test_prometheus_deploy.py."""

from __future__ import annotations

import http.server
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from corevital.config import Settings
from corevital.errors import ConfigError, ExporterError
from corevital.exporters.base import open_exporter
from corevital.exporters.prometheus import PrometheusExporter, StoreMetrics
from corevital.exporters.prometheus_metrics import (
    FLAG_LABELS,
    MAX_FLAG_NAMES,
    METRIC_NAMES,
    METRICS,
    RUN_LABELS,
    RunMetrics,
)
from corevital.report.schema import Report
from corevital.server.app import create_app
from corevital.server.config import ServeConfig
from corevital.sinks.base import MAX_PAGE_SIZE, HealthFlag, MemorySink, ReportStore, TraceQuery
from corevital.sinks.rows import trace_row_from_report
from corevital.sinks.sqlite import SQLiteStore
from tests.support.golden import golden_report, report_variant
from tests.support.ports import free_port

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LABELS = {"device": "cpu", "quantization": "none", "capture_mode": "full"}

Values = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def base() -> Report:
    return golden_report()


def variant(
    base: Report,
    number: int,
    *,
    model: str = "m/a",
    risk: float | None = None,
    flags: tuple[HealthFlag, ...] = (),
    signals: tuple[str, ...] = (),
    weight: float | None = None,
    minute: int = 0,
) -> Report:
    """A copy of the sample report with its own id, time, model, risk, flags, signals and weight."""
    return report_variant(
        base,
        number,
        risk=risk,
        created=T0 + timedelta(minutes=minute),
        model=model,
        flags=flags,
        signals=signals,
        weight=weight,
        drop_fingerprint=True,
    )


def values(text: str | bytes) -> Values:
    """Every sample of an exposition, by name and labels."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    found: Values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def run_key(name: str, model: str, **extra: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted({**LABELS, "model": model, **extra}.items()))


def flag_key(flag: str, model: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return "corevital_flag_total", (("flag", flag), ("model", model))


def some_reports(base: Report) -> list[Report]:
    """Five runs of two models: risks, flags, a compound signal, one sampled run standing for four."""
    return [
        variant(base, 1, model="m/a", risk=0.05, minute=0),
        variant(base, 2, model="m/a", risk=0.55, flags=(HealthFlag.NAN,), minute=1),
        variant(base, 3, model="m/a", risk=0.95, flags=(HealthFlag.REPETITION_LOOP,), weight=4.0, minute=2),
        variant(base, 4, model="m/b", risk=None, signals=("context_loss",), minute=3),
        variant(base, 5, model="m/b", risk=0.3, flags=(HealthFlag.INF, HealthFlag.NAN), minute=4),
    ]


# Names -----------------------------------------------------------------------------------


def test_metric_names_follow_prometheus_conventions() -> None:
    assert len({spec.name for spec in METRICS}) == len(METRICS)
    for spec in METRICS:
        assert re.fullmatch(r"corevital_[a-z][a-z0-9_]*", spec.name), spec.name
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert spec.labels in (RUN_LABELS, FLAG_LABELS), spec.name
        assert spec.help and "\n" not in spec.help
        if spec.kind == "histogram":
            assert list(spec.buckets) == sorted(spec.buckets) and spec.buckets, spec.name
    names = {spec.name for spec in METRICS}
    assert {"corevital_runs_total", "corevital_flag_total", "corevital_generated_tokens_total"} <= names
    assert {"corevital_risk_score", "corevital_last_run_timestamp_seconds"} <= names
    assert any(name.endswith("_bits") for name in names)  # entropy in bits: the unit is in the name


# Values from reports -----------------------------------------------------------------------


def test_exporter_counts_reports_with_their_sampling_weight(base: Report) -> None:
    exporter = PrometheusExporter()
    for report in some_reports(base):
        exporter.export(report)
    got = values(exporter.exposition())

    assert got[run_key("corevital_runs_total", "m/a")] == 1 + 1 + 4
    assert got[run_key("corevital_runs_kept_total", "m/a")] == 3
    assert got[run_key("corevital_runs_total", "m/b")] == 2
    assert got[flag_key("nan", "m/a")] == 1
    assert got[flag_key("repetition_loop", "m/a")] == 4
    assert got[flag_key("context_loss", "m/b")] == 1  # a compound signal, from the report
    assert got[flag_key("inf", "m/b")] == 1 and got[flag_key("nan", "m/b")] == 1
    assert got[run_key("corevital_nonfinite_runs_total", "m/a")] == 1
    assert got[run_key("corevital_nonfinite_runs_total", "m/b")] == 1
    assert not any(name == "corevital_flag_total" and dict(labels)["model"] == "m/c" for name, labels in got)

    tokens = base.summary.generated_tokens
    assert got[run_key("corevital_generated_tokens_total", "m/a")] == 6 * tokens
    assert got[run_key("corevital_prompt_tokens_total", "m/b")] == 2 * base.summary.prompt_tokens

    # risk histogram of m/a: 0.05 (weight 1), 0.55 (1), 0.95 (4); cumulative buckets
    buckets = [
        got[run_key("corevital_risk_score_bucket", "m/a", le=le)]
        for le in ("0.1", "0.5", "0.6", "0.9", "1.0")
    ]
    assert buckets == [1, 1, 2, 2, 6]
    assert (
        got[run_key("corevital_risk_score_bucket", "m/a", le="+Inf")]
        == got[run_key("corevital_risk_score_count", "m/a")]
        == 6
    )
    assert got[run_key("corevital_risk_score_sum", "m/a")] == pytest.approx(0.05 + 0.55 + 4 * 0.95)
    # m/b: one run without a risk score is not observed
    assert got[run_key("corevital_risk_score_count", "m/b")] == 1

    row = trace_row_from_report(base)
    assert row.mean_entropy is not None and row.mean_surprisal is not None
    assert got[run_key("corevital_entropy_bits_sum", "m/a")] == pytest.approx(6 * row.mean_entropy)
    assert got[run_key("corevital_surprisal_bits_count", "m/b")] == 2
    newest_a = (T0 + timedelta(minutes=2)).timestamp()
    assert got[run_key("corevital_last_run_timestamp_seconds", "m/a")] == newest_a

    every_name = {name for name, _ in got}
    assert every_name <= METRIC_NAMES
    for name, labels in got:
        keys = {key for key, _ in labels} - {"le"}
        assert keys in (set(RUN_LABELS), set(FLAG_LABELS)), (name, keys)


def test_models_and_flag_names_are_capped(base: Report) -> None:
    metrics = RunMetrics(max_models=2)
    for number, model in enumerate(("a", "b", "c", "d", "a")):
        metrics.add_row(trace_row_from_report(variant(base, number, model=model)), signals=("Not A Name",))
    snapshot = metrics.snapshot()
    assert sorted({key[0] for key in snapshot.series}) == ["a", "b", "other"]
    assert snapshot.series[("other", "cpu", "none", "full")].runs == 2
    assert {flag for flag, _ in snapshot.flags} == {"other"}  # not a flag name: never a label value

    many = [f"signal_{number}" for number in range(MAX_FLAG_NAMES + 5)]
    metrics.add_row(trace_row_from_report(variant(base, 9)), signals=many)
    names = {flag for flag, _ in metrics.snapshot().flags}
    assert len(names - {"other"}) == MAX_FLAG_NAMES and "other" in names


# Values from a store ----------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReportStore]:
    made: ReportStore = MemorySink() if request.param == "memory" else SQLiteStore.in_directory(tmp_path)
    yield made
    made.close()


def test_store_metrics_equal_the_exporters_for_the_same_runs(store: ReportStore, base: Report) -> None:
    """Sampled runs included: the store keeps each run's sampling weight and counts with it."""
    reports = [report.model_copy(update={"extensions": report.extensions.model_copy(
        update={"compound_signals": None})}) for report in some_reports(base)]  # fmt: skip
    exporter = PrometheusExporter()
    for report in reports:
        exporter.export(report)
        store.write(report)
    from_store = values(StoreMetrics(store).exposition())
    assert from_store == values(exporter.exposition())
    assert from_store[run_key("corevital_runs_total", "m/a")] == 1 + 1 + 4
    assert from_store[run_key("corevital_runs_kept_total", "m/a")] == 3
    assert from_store[run_key("corevital_runs_total", "m/b")] == 2


def test_the_metrics_route_weights_runs_kept_by_a_sampling_policy(tmp_path: Path, base: Report) -> None:
    """Runs kept by `--sample-every 4` and by a seeded `--sample-rate 0.25` go through Outputs into a
    SQLite store; /metrics then counts each kept run as the runs it stands for, as the exporter
    given the same runs does: the totals estimate all runs, the kept counter the stored ones."""
    from corevital.exporters.base import Outputs
    from corevital.exporters.sampling import Sampler

    runs = 40
    for sampler, expected_kept in ((Sampler(every=4), 10), (Sampler(rate=0.25, seed=3), None)):
        path = tmp_path / f"every{sampler.every}-rate{sampler.rate}.db"
        exporter = PrometheusExporter()
        with Outputs([SQLiteStore(path)], [exporter], sampler=sampler) as outputs:
            for number in range(runs):
                outputs.write(variant(base, number, risk=0.5))
        kept = sampler.kept
        assert expected_kept is None or kept == expected_kept
        with SQLiteStore(path, read_only=True) as store:
            assert store.count() == kept and 0 < kept < runs
            assert {row.sampling_weight for row in store.list(TraceQuery(limit=None))} == {4.0}
            got = values(make_client(store).get("/metrics").text)
        assert got[run_key("corevital_runs_total", "m/a")] == pytest.approx(4.0 * kept)
        assert got[run_key("corevital_runs_kept_total", "m/a")] == kept
        assert got[run_key("corevital_risk_score_count", "m/a")] == pytest.approx(4.0 * kept)
        assert got == values(exporter.exposition())


def test_store_metrics_read_only_new_rows_on_each_scrape(store: ReportStore, base: Report) -> None:
    for number in range(3):
        store.write(variant(base, number, risk=0.2))
    metrics = StoreMetrics(store)
    assert metrics.refresh() == 3
    assert metrics.refresh() == 0
    store.write(variant(base, 10, risk=0.8, flags=(HealthFlag.NAN,)))
    store.write(variant(base, 1, risk=0.9))  # written again under its id: not counted again
    got = values(metrics.exposition())
    assert metrics.rows_read == 4
    assert got[run_key("corevital_runs_total", "m/a")] == 4
    assert got[flag_key("nan", "m/a")] == 1


def test_store_metrics_page_through_more_rows_than_one_follow_returns(base: Report) -> None:
    store = MemorySink()
    runs = MAX_PAGE_SIZE * 2 + 7
    for number in range(runs):
        store.write(variant(base, number, model=f"m/{number % 3}", risk=(number % 10) / 10))
    got = values(StoreMetrics(store).exposition())
    total = sum(value for (name, _), value in got.items() if name == "corevital_runs_total")
    assert total == runs


def test_a_large_first_scrape_is_spread_over_scrapes_by_its_time_budget(base: Report) -> None:
    store = MemorySink()
    for number in range(MAX_PAGE_SIZE * 3):
        store.write(variant(base, number))
    metrics = StoreMetrics(store, budget_s=0.0)  # one follow page per scrape
    assert [metrics.refresh() for _ in range(4)] == [MAX_PAGE_SIZE] * 3 + [0]


# The exporter's outlets ------------------------------------------------------------------------


def test_a_users_registry_gets_the_collector_and_the_global_one_is_untouched(base: Report) -> None:
    registry = CollectorRegistry()
    exporter = PrometheusExporter(registry=registry)
    exporter.export(variant(base, 1, risk=0.4))
    got = values(generate_latest(registry))
    assert got[run_key("corevital_runs_total", "m/a")] == 1
    assert not any(name.startswith("corevital_") for name, _ in values(generate_latest(REGISTRY)))
    with pytest.raises(ConfigError, match="already has CoreVital's metrics"):
        PrometheusExporter(registry=registry)
    exporter.close()  # leaves the registry: a new exporter (a new monitor) may take its place
    assert not any(name.startswith("corevital_") for name, _ in values(generate_latest(registry)))
    PrometheusExporter(registry=registry).close()


def test_an_own_port_serves_the_metrics_on_loopback_until_closed(base: Report) -> None:
    port = free_port()
    exporter = PrometheusExporter(port=port)
    try:
        exporter.export(variant(base, 1))
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert response.status_code == 200
        assert values(response.text)[run_key("corevital_runs_total", "m/a")] == 1
        with pytest.raises(ExporterError, match="cannot serve"):
            PrometheusExporter(port=port)
    finally:
        exporter.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_the_textfile_is_written_atomically_and_counts_add_up_over_runs(tmp_path: Path, base: Report) -> None:
    path = tmp_path / "corevital.prom"
    settings = Settings(sink=["prometheus"], prometheus_textfile=str(path))
    for run in range(2):
        exporter = open_exporter("prometheus", settings)
        exporter.export(variant(base, 1, model="m/a", risk=0.3, flags=(HealthFlag.NAN,), minute=run))
        exporter.export(variant(base, 2, model=f"m/run{run}", risk=0.9))
        exporter.close()
    got = values(path.read_text(encoding="utf-8"))
    assert got[run_key("corevital_runs_total", "m/a")] == 2
    assert got[flag_key("nan", "m/a")] == 2
    assert got[run_key("corevital_risk_score_bucket", "m/a", le="0.3")] == 2
    assert got[run_key("corevital_runs_total", "m/run0")] == 1  # a model of an earlier run stays
    assert got[run_key("corevital_runs_total", "m/run1")] == 1
    assert (
        got[run_key("corevital_last_run_timestamp_seconds", "m/a")] == (T0 + timedelta(minutes=1)).timestamp()
    )
    assert sorted(item.name for item in tmp_path.iterdir()) == ["corevital.prom", "corevital.prom.lock"]


def test_concurrent_writers_of_one_textfile_lose_no_count(tmp_path: Path, base: Report) -> None:
    path = tmp_path / "corevital.prom"
    exporters = [PrometheusExporter(textfile=path) for _ in range(6)]
    for exporter in exporters:
        exporter.export(variant(base, 1))
    threads = [threading.Thread(target=exporter.close) for exporter in exporters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert values(path.read_text(encoding="utf-8"))[run_key("corevital_runs_total", "m/a")] == 6


class Gateway(http.server.BaseHTTPRequestHandler):
    """A Pushgateway's push endpoint: records each request's method, path and body."""

    received: list[tuple[str, str, bytes]] = []
    status = 200

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        Gateway.received.append((self.command, self.path, self.rfile.read(length)))
        self.send_response(Gateway.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[str]:
    Gateway.received, Gateway.status = [], 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_pushgateway_gets_the_runs_metrics_at_close(gateway: str, base: Report) -> None:
    settings = Settings(sink=["prometheus"], prometheus_pushgateway=gateway, prometheus_job="nightly")
    exporter = open_exporter("prometheus", settings)
    exporter.export(variant(base, 1, risk=0.6))
    assert Gateway.received == []  # nothing is sent per report
    exporter.close()
    [(method, path, body)] = Gateway.received
    assert method == "PUT" and path == f"/metrics/job/nightly/instance/{socket.gethostname()}"
    assert values(body)[run_key("corevital_runs_total", "m/a")] == 1


def test_a_failing_pushgateway_is_an_exporter_error(gateway: str, base: Report) -> None:
    Gateway.status = 503
    exporter = PrometheusExporter(pushgateway=gateway)
    exporter.export(variant(base, 1))
    with pytest.raises(ExporterError, match="cannot push to the Pushgateway"):
        exporter.close()
    refused = PrometheusExporter(pushgateway=f"http://127.0.0.1:{free_port()}", push_timeout_s=2)
    with pytest.raises(ExporterError, match="cannot push"):
        refused.close()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "--prometheus-textfile FILE.prom .* or --prometheus-pushgateway URL"),
        ({"prometheus_textfile": "metrics.txt"}, "only files ending in .prom"),
        ({"prometheus_textfile": "/nonexistent-dir/x.prom"}, "does not exist"),
        ({"prometheus_pushgateway": "ftp://gateway:9091"}, r"give an http\(s\)://host:port URL"),
    ],
)
def test_from_settings_refuses_a_cli_run_without_a_usable_outlet(given: dict[str, str], message: str) -> None:
    settings = Settings.model_validate({"sink": ["prometheus"], **given})
    with pytest.raises(ConfigError, match=message):
        open_exporter("prometheus", settings)


def test_importing_the_exporter_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, corevital.exporters.prometheus, corevital.server.metrics\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# /metrics ----------------------------------------------------------------------------------------

TOKEN = "metrics-token-for-the-tests-0123456789"


def make_client(store: ReportStore, **overrides: Any) -> TestClient:
    config = ServeConfig(store_label="memory", **overrides)
    return TestClient(create_app(store, config), raise_server_exceptions=False)


def test_the_metrics_route_answers_the_text_format_under_the_token(base: Report) -> None:
    store = MemorySink()
    store.write(variant(base, 1, risk=0.4))
    client = make_client(store, token=TOKEN)
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert values(response.text)[run_key("corevital_runs_total", "m/a")] == 1
    store.write(variant(base, 2, risk=0.4))
    again = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert values(again.text)[run_key("corevital_runs_total", "m/a")] == 2
    assert (
        "/metrics"
        not in client.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()[
            "paths"
        ]
    )


def test_without_prometheus_client_the_route_is_a_one_line_404(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # what `import` sees when it is absent
    response = make_client(MemorySink()).get("/metrics")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert "pip install 'corevital[prometheus]'" in detail and "\n" not in detail
