"""The Prometheus deploy files and docs against the exported metric names: the alert rules and the
example scrape config checked by promtool, the Grafana dashboard's queries, and the Prometheus
section of docs/production.md (its Python example runs, its scrape config passes promtool, it names
every metric and only those)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from corevital.exporters.prometheus_metrics import METRIC_NAMES, METRICS
from tests.support.components import PROMTOOL, require

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "corevital.json"

# deploy/ ---------------------------------------------------------------------------------------------

METRIC_REFERENCE = re.compile(r"\bcorevital_[a-z0-9_]+")


def test_the_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    promtool = require(PROMTOOL)
    for argv in (["check", "rules", str(ALERTS)], ["test", "rules", str(ALERT_TESTS)]):
        done = subprocess.run(
            [str(promtool), *argv], capture_output=True, text=True, timeout=60, cwd=ALERTS.parent
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_example_scrape_config_passes_promtool(tmp_path: Path) -> None:
    promtool = require(PROMTOOL)
    config = tmp_path / "prometheus.yml"
    config.write_text(SCRAPE_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "corevital-token").write_text("x" * 32, encoding="utf-8")
    done = subprocess.run(
        [str(promtool), "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def alert_expressions() -> list[str]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [*dashboard["panels"]]
    for panel in dashboard["panels"]:
        panels += panel.get("panels", [])
    found = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    found += [item.get("query", "") for item in dashboard["templating"]["list"]]
    return [expr if isinstance(expr, str) else expr["query"] for expr in found]


def test_the_grafana_dashboard_is_importable_and_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["title"] and dashboard["schemaVersion"] >= 30 and dashboard.get("id") is None
    assert any(item["type"] == "datasource" for item in dashboard["templating"]["list"])
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    expressions = dashboard_expressions()
    assert len(expressions) >= 8
    used = {name for expr in expressions for name in METRIC_REFERENCE.findall(expr)}
    assert used, expressions
    assert used <= METRIC_NAMES, used - METRIC_NAMES
    # every metric family is on the dashboard
    families = {spec.name for spec in METRICS}
    shown = {name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for name in used}
    assert families - shown <= {"corevital_runs_kept_total", "corevital_prompt_tokens_total"}


def test_the_alert_rules_query_only_exported_metrics() -> None:
    used = {name for expr in alert_expressions() for name in METRIC_REFERENCE.findall(expr)}
    assert used and used <= METRIC_NAMES, used - METRIC_NAMES


# docs/production.md -----------------------------------------------------------------------------------


def prometheus_section() -> str:
    text = (ROOT / "docs" / "production.md").read_text(encoding="utf-8")
    start = text.index("## Prometheus and Grafana")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def fenced(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_the_production_docs_python_example_runs() -> None:
    [example] = fenced(prometheus_section(), "python")
    exec(compile(example, "docs/production.md", "exec"), {})


def test_the_production_docs_scrape_config_passes_promtool(tmp_path: Path) -> None:
    promtool = require(PROMTOOL)
    [config] = fenced(prometheus_section(), "yaml")
    assert yaml.safe_load(config)["scrape_configs"][0]["job_name"] == "corevital"
    (tmp_path / "prometheus.yml").write_text(config, encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "corevital-token").write_text("x" * 32, encoding="utf-8")
    done = subprocess.run(
        [str(promtool), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for command in fenced(prometheus_section(), "bash"):
        if command.startswith("promtool"):
            for line in command.strip().splitlines():
                argv = line.split()
                done = subprocess.run([str(promtool), *argv[1:]], capture_output=True, text=True, cwd=ROOT)
                assert done.returncode == 0, (line, done.stdout + done.stderr)


def test_the_production_docs_name_every_metric_and_only_those() -> None:
    section = prometheus_section()
    for spec in METRICS:
        assert f"| `{spec.name}` |" in section, spec.name
    known = METRIC_NAMES | {spec.name for spec in METRICS}  # a histogram is named as a family too
    used = set(METRIC_REFERENCE.findall(section))
    assert used <= known, used - known
    for alert in re.findall(r"- alert: (\w+)", ALERTS.read_text(encoding="utf-8")):
        assert f"`{alert}`" in section, alert
