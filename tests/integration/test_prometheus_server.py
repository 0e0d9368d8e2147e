"""A real Prometheus server (Debian's ``prometheus``) scrapes ``corevital serve``'s ``/metrics``.

The store holds a few known runs; Prometheus scrapes every second with the bearer token, loads the
alert rules of ``deploy/prometheus/alerts.yml``, and its HTTP API answers the values the store
holds, then the new ones after a run is written. Every query of the Grafana dashboard is run
through the same server: each must evaluate without an error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from corevital.report.schema import Report
from corevital.sinks.base import HealthFlag, TraceQuery
from corevital.sinks.sqlite import SQLiteStore
from tests.support.components import PROMETHEUS, require
from tests.support.golden import golden_report, report_variant
from tests.support.processes import stop_process
from tests.support.served import ServerProcess, free_port, start_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TOKEN = "prometheus-scrapes-with-this-token-0123456789"
NOW = datetime.now(UTC).replace(microsecond=0)


def variant(
    base: Report, number: int, model: str, risk: float | None, flags: tuple[HealthFlag, ...] = ()
) -> Report:
    return report_variant(
        base,
        number,
        risk=risk,
        id_group="1111",
        created=NOW - timedelta(minutes=10 - number),
        model=model,
        flags=flags,
        drop_fingerprint=True,
    )


@pytest.fixture
def base() -> Report:
    return golden_report()


@pytest.fixture
def store_path(tmp_path: Path, base: Report) -> Path:
    """Five runs: model a (risks 0.2, 0.8 with NaN, 0.9 with a loop), model b (0.1, none)."""
    (tmp_path / "store").mkdir()
    with SQLiteStore.in_directory(tmp_path / "store") as store:
        store.write(variant(base, 1, "org/a", 0.2))
        store.write(variant(base, 2, "org/a", 0.8, (HealthFlag.NAN,)))
        store.write(variant(base, 3, "org/a", 0.9, (HealthFlag.REPETITION_LOOP,)))
        store.write(variant(base, 4, "org/b", 0.1))
        store.write(variant(base, 5, "org/b", None))
        return Path(store.path)


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """``check()``'s first truthy answer, polled every 0.2 s for at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as error:
            last = error
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


class Prometheus:
    """Debian's Prometheus server in a subprocess, its data in a temporary directory."""

    def __init__(self, binary: Path, directory: Path, target_port: int) -> None:
        self.port = free_port()
        self.directory = directory
        (directory / "token").write_text(TOKEN, encoding="utf-8")
        shutil.copyfile(DEPLOY / "prometheus" / "alerts.yml", directory / "alerts.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {
                    "job_name": "corevital",
                    "scrape_interval": "1s",
                    "authorization": {"type": "Bearer", "credentials_file": "token"},
                    "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                }
            ],
        }
        (directory / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}: {self.log.read_text()}")
        return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now (an error answer fails the test)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, expr: str, by: str = "model") -> dict[str, float]:
        return {item["metric"].get(by, ""): float(item["value"][1]) for item in self.query(expr)}

    def stop(self) -> None:
        stop_process(self.proc, kill_timeout=None)


@pytest.fixture
def served(tmp_path: Path, store_path: Path) -> Iterator[ServerProcess]:
    token_file = tmp_path / "serve-token"
    token_file.write_text(TOKEN, encoding="utf-8")
    server = start_server(["--db", str(store_path), "--token-file", str(token_file)], tmp_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus(tmp_path: Path, served: ServerProcess) -> Iterator[Prometheus]:
    binary = require(PROMETHEUS)
    directory = tmp_path / "prometheus"
    directory.mkdir()
    server = Prometheus(binary, directory, served.port)
    try:
        wait_for("prometheus ready", server.ready)
        yield server
    finally:
        server.stop()


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "corevital.json").read_text(encoding="utf-8"))
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    substitutions = {"$model": ".*", "$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}
    for name, value in substitutions.items():
        found = [expr.replace(name, value) for expr in found]
    return found


def test_prometheus_scrapes_the_stores_runs(
    prometheus: Prometheus, served: ServerProcess, store_path: Path, base: Report
) -> None:
    wait_for(
        "a successful scrape with the runs",
        lambda: (
            prometheus.values('up{job="corevital"}', by="job") == {"corevital": 1.0}
            and prometheus.query("corevital_runs_total")
        ),
    )
    with SQLiteStore(store_path, read_only=True) as store:
        aggregates = {aggregate.key: aggregate for aggregate in store.aggregate(TraceQuery(limit=None))}
        rows = store.list(TraceQuery(limit=None))

    assert prometheus.values("sum by (model) (corevital_runs_total)") == {
        key: float(aggregate.runs) for key, aggregate in aggregates.items()
    }
    assert prometheus.values("sum by (model) (corevital_generated_tokens_total)") == {
        key: float(aggregate.generated_tokens) for key, aggregate in aggregates.items()
    }
    flags = prometheus.query("corevital_flag_total")
    assert {(item["metric"]["flag"], item["metric"]["model"], item["value"][1]) for item in flags} == {
        ("nan", "org/a", "1"),
        ("repetition_loop", "org/a", "1"),
    }
    assert prometheus.values("sum by (model) (corevital_nonfinite_runs_total)") == {
        "org/a": 1.0,
        "org/b": 0.0,
    }
    scored = prometheus.values("sum by (model) (corevital_risk_score_count)")
    assert scored == {"org/a": 3.0, "org/b": 1.0}
    risk_sums = prometheus.values("sum by (model) (corevital_risk_score_sum)")
    assert risk_sums["org/a"] == pytest.approx(0.2 + 0.8 + 0.9) and risk_sums["org/b"] == pytest.approx(0.1)
    below_half = prometheus.values('sum by (model) (corevital_risk_score_bucket{le="0.5"})')
    assert below_half == {"org/a": 1.0, "org/b": 1.0}
    newest = max(row.created_at_ms for row in rows if row.model_id == "org/a") / 1000
    assert prometheus.values("max by (model) (corevital_last_run_timestamp_seconds)")["org/a"] == newest
    labels = prometheus.query("corevital_runs_total")[0]["metric"]
    assert set(labels) == {"__name__", "job", "instance", "model", "device", "quantization", "capture_mode"}

    # a new run: the next scrapes read it (and only it) from the store
    with SQLiteStore(store_path) as store:
        store.write(variant(base, 6, "org/b", 0.95, (HealthFlag.NAN,)))
    wait_for(
        "the new run in Prometheus",
        lambda: prometheus.values("sum by (model) (corevital_runs_total)").get("org/b") == 3.0,
    )
    assert prometheus.values('corevital_flag_total{flag="nan"}') == {"org/a": 1.0, "org/b": 1.0}

    # the dashboard's queries and the alert rules evaluate in a real server
    for expr in dashboard_queries():
        prometheus.query(expr)

    def evaluated_rules() -> list[dict[str, Any]]:
        answer = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()
        rules = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
        firing = {alert["labels"]["alertname"] for rule in rules for alert in rule.get("alerts", [])}
        return rules if "CoreVitalNonFiniteValues" in firing else []  # the NaN run written above

    rules = wait_for("the NaN alert firing", evaluated_rules)
    assert len(rules) == 4 and all(rule["health"] == "ok" for rule in rules), rules
