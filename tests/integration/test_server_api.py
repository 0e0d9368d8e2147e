"""``corevital serve``: every endpoint on a store of real reports (the six original CoreVital traces
after ``corevital migrate``, and tiny-model runs), through FastAPI's TestClient."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corevital.server.app import create_app
from corevital.server.config import Limits, ServeConfig
from corevital.server.models import Aggregates, Info, LegacyTrace, RunPage, RunSummary
from corevital.sinks.base import HealthFlag, MemorySink, Page, TraceQuery
from corevital.sinks.rows import TraceRow
from corevital.sinks.sqlite import SQLiteStore
from tests.support.served import copy_store, original_documents, serve_config, served_store


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Callable[[str], Path]) -> Path:
    return served_store(tmp_path_factory.mktemp, tiny_model_dir)


@pytest.fixture(scope="module")
def store(db: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(db, read_only=True)
    yield store
    store.close()


@pytest.fixture(scope="module")
def client(db: Path, store: SQLiteStore) -> Iterator[TestClient]:
    with TestClient(create_app(store, serve_config(db))) as client:
        yield client


def all_rows(client: TestClient, **params: str | float | list[str]) -> list[dict[str, Any]]:
    response = client.get("/api/v1/runs", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["runs"]
    return rows


def test_the_store_holds_the_originals_and_tiny_runs(store: SQLiteStore) -> None:
    rows = store.list(TraceQuery(limit=None))
    originals = set(original_documents())
    assert originals <= {row.trace_id for row in rows}
    assert {row.migrated_from for row in rows if row.trace_id in originals} == {"0.4.0"}
    assert len(rows) == len(originals) + 4  # two tiny models, two prompts each


def test_list_runs_newest_first_with_every_row_field(client: TestClient, store: SQLiteStore) -> None:
    response = client.get("/api/v1/runs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    page = RunPage.model_validate(response.json())
    expected = store.list(TraceQuery(limit=50))
    assert [row.trace_id for row in page.runs] == [row.trace_id for row in expected]
    assert [row.seq for row in page.runs] == [row.seq for row in expected]
    times = [row.created_at_ms for row in page.runs]
    assert times == sorted(times, reverse=True)
    assert page.next_cursor is None and page.next_url is None
    assert set(response.json()["runs"][0]) == {field.name for field in dataclasses.fields(TraceRow)}


def test_list_filters_match_the_store(client: TestClient, store: SQLiteStore) -> None:
    rows = store.list(TraceQuery(limit=None))
    model = "meta-llama/Llama-3.1-8B-Instruct"
    assert {row["trace_id"] for row in all_rows(client, model_id=model)} == {
        row.trace_id for row in rows if row.model_id == model
    }
    risky = all_rows(client, min_risk=0.5)
    assert risky and all(row["risk_score"] >= 0.5 for row in risky)
    assert {row["trace_id"] for row in risky} == {
        row.trace_id for row in rows if row.risk_score is not None and row.risk_score >= 0.5
    }
    calm = all_rows(client, max_risk=0.5)
    assert all(row["risk_score"] <= 0.5 for row in calm)
    collapsed = all_rows(client, flag="attention_collapse")
    assert collapsed and all(row["attention_collapse_detected"] for row in collapsed)
    both = all_rows(client, flag=["attention_collapse", "mid_layer_anomaly_detected"])
    assert {row["trace_id"] for row in both} == {
        row.trace_id
        for row in rows
        if row.flag(HealthFlag.ATTENTION_COLLAPSE) and row.flag(HealthFlag.MID_LAYER_ANOMALY)
    }
    recent = all_rows(client, since="2026-03-01T04:58:00Z")
    assert {row["trace_id"] for row in recent} == {
        row.trace_id for row in rows if row.created_at_utc >= "2026-03-01T04:58:00Z"
    }
    older = all_rows(client, until="2026-03-01T04:58:00")  # naive: UTC
    assert {row["trace_id"] for row in older} == {
        row.trace_id for row in rows if row.created_at_utc < "2026-03-01T04:58:00Z"
    }
    prompt = rows[0].prompt_hash
    assert {row["trace_id"] for row in all_rows(client, prompt_hash=prompt)} == {
        row.trace_id for row in rows if row.prompt_hash == prompt
    }


def test_sort_by_risk_both_ways(client: TestClient) -> None:
    riskiest = [row["risk_score"] for row in all_rows(client, sort="risk") if row["risk_score"] is not None]
    assert riskiest == sorted(riskiest, reverse=True)
    calmest = all_rows(client, sort="risk", order="asc")
    scores = [row["risk_score"] if row["risk_score"] is not None else -1.0 for row in calmest]
    assert scores == sorted(scores)
    oldest = [row["created_at_ms"] for row in all_rows(client, order="asc")]
    assert oldest == sorted(oldest)


@pytest.mark.parametrize("params", [{}, {"sort": "risk"}, {"order": "asc"}, {"min_risk": 0.1}])
def test_cursor_pages_visit_every_run_once(client: TestClient, params: dict[str, str | float]) -> None:
    expected = [row["trace_id"] for row in all_rows(client, **params)]
    seen: list[str] = []
    response = client.get("/api/v1/runs", params={**params, "limit": 3})
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["runs"]) <= 3
        seen.extend(row["trace_id"] for row in page["runs"])
        if page["next_url"] is None:
            assert page["next_cursor"] is None
            break
        assert page["next_url"].startswith("/api/v1/runs?") and "cursor=" in page["next_url"]
        response = client.get(page["next_url"])
    assert seen == expected


def test_page_size_is_capped(client: TestClient) -> None:
    assert client.get("/api/v1/runs", params={"limit": 500}).status_code == 200
    for limit in (0, 501, 10**9, -1):
        response = client.get("/api/v1/runs", params={"limit": limit})
        assert response.status_code == 422
        assert "limit" in response.json()["detail"]


def test_a_cursor_of_another_order_is_refused(client: TestClient) -> None:
    cursor = client.get("/api/v1/runs", params={"limit": 2}).json()["next_cursor"]
    response = client.get("/api/v1/runs", params={"limit": 2, "sort": "risk", "cursor": cursor})
    assert response.status_code == 400 and "cursor" in response.json()["detail"]


def test_each_report_is_the_stored_json(client: TestClient, store: SQLiteStore) -> None:
    for row in store.list(TraceQuery(limit=None)):
        response = client.get(f"/api/v1/runs/{row.trace_id}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == json.loads(store.get_json(row.trace_id) or "null")
        assert response.headers["content-location"] == f"/api/v1/runs/{row.trace_id}"


def test_a_report_by_unique_prefix(client: TestClient) -> None:
    response = client.get("/api/v1/runs/7c1c62d1")
    assert response.status_code == 200
    assert response.json()["trace_id"] == "7c1c62d1-ffa1-4e69-b865-0466f55dc1bf"
    assert response.headers["content-location"] == "/api/v1/runs/7c1c62d1-ffa1-4e69-b865-0466f55dc1bf"


def test_an_ambiguous_prefix_is_a_400_and_unknown_ids_404(store: SQLiteStore) -> None:
    report = store.get("7c1c62d1")
    assert report is not None
    memory = MemorySink()
    for trace_id in ("abc-1", "abc-2"):
        memory.write(report.model_copy(update={"trace_id": trace_id}))
    with TestClient(create_app(memory, ServeConfig(store_label="memory"))) as client:
        response = client.get("/api/v1/runs/abc")
        assert response.status_code == 400 and "matches 2 reports" in response.json()["detail"]
        assert client.get("/api/v1/runs/abc-2").json()["trace_id"] == "abc-2"
        assert client.get("/api/v1/runs/zzz").status_code == 404


def test_models_and_prompts_aggregates(client: TestClient, store: SQLiteStore) -> None:
    response = client.get("/api/v1/models")
    assert response.status_code == 200
    models = Aggregates.model_validate(response.json())
    assert models.by == "model" and models.total_runs == store.count()
    expected = store.aggregate(TraceQuery(), by="model")
    assert [(group.key, group.runs) for group in models.groups] == [
        (group.key, group.runs) for group in expected
    ]
    assert sum(group.runs for group in models.groups) == store.count()
    llama = next(group for group in models.groups if group.key == "meta-llama/Llama-3.1-8B-Instruct")
    assert llama.runs == 2 and llama.risk_p50 is not None
    assert set(llama.flag_rates) == {flag.value for flag in HealthFlag}
    recent = Aggregates.model_validate(client.get("/api/v1/models", params={"since": "2026-03-01"}).json())
    assert sum(group.runs for group in recent.groups) < store.count()
    prompts = Aggregates.model_validate(client.get("/api/v1/prompts").json())
    assert prompts.by == "prompt"
    assert sum(group.runs for group in prompts.groups) == store.count()


def test_compare_runs_side_by_side(client: TestClient) -> None:
    ids = ["7c1c62d1-ffa1-4e69-b865-0466f55dc1bf", "01aeafe3", "8d0bad87"]
    response = client.get("/api/v1/compare", params={"id": ids})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [run["trace_id"][:8] for run in body["runs"]] == ["7c1c62d1", "01aeafe3", "8d0bad87"]
    assert body["shared_prompt"] is False and body["divergence"] is None
    assert {"risk_score", "flags", "entropy", "surprisal", "blamed_layers"} <= set(body["runs"][0])
    same_prompt = client.get("/api/v1/compare", params={"id": ["f7de7f4d", "f28f1386"]}).json()
    assert same_prompt["shared_prompt"] is True
    assert same_prompt["divergence"]["common_prefix"] >= 0
    assert client.get("/api/v1/compare", params={"id": ids[:1]}).status_code == 422
    assert client.get("/api/v1/compare", params={"id": ["01aeafe3"] * 21}).status_code == 422
    missing = client.get("/api/v1/compare", params={"id": ["01aeafe3", "ffffffff"]})
    assert missing.status_code == 404 and "ffffffff" in missing.json()["detail"]


def test_run_summary_is_the_show_digest(client: TestClient, store: SQLiteStore) -> None:
    response = client.get("/api/v1/runs/8d0bad87/summary")
    assert response.status_code == 200
    summary = RunSummary.model_validate(response.json())
    row = store.list(TraceQuery(model_id="google/flan-t5-large"))[0]
    assert summary.trace_id == row.trace_id and summary.risk_score == row.risk_score
    assert summary.flags_set == [flag.value for flag in row.flags_set()]
    assert len(summary.entropy) == row.generated_tokens
    assert client.get("/api/v1/runs/deadbeef/summary").status_code == 404


def test_export_csv_and_jsonl(client: TestClient, store: SQLiteStore) -> None:
    import csv
    import io

    response = client.get("/api/v1/export", params={"min_risk": 0.5})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="corevital-runs.csv"'
    records = list(csv.DictReader(io.StringIO(response.text)))
    expected = store.list(TraceQuery(min_risk=0.5, limit=None))
    assert [record["trace_id"] for record in records] == [row.trace_id for row in expected]
    assert set(records[0]) == {field.name for field in dataclasses.fields(TraceRow)}
    lines = client.get("/api/v1/export", params={"format": "jsonl", "model_id": "google/flan-t5-large"})
    assert lines.headers["content-type"] == "application/x-ndjson"
    reports = [json.loads(line) for line in lines.text.splitlines()]
    assert [report["trace_id"] for report in reports] == ["8d0bad87-608d-4e87-b74f-0bb74cfa0c77"]
    steps = client.get("/api/v1/export", params={"rows": "step", "model_id": "google/flan-t5-large"})
    step_rows = list(csv.DictReader(io.StringIO(steps.text)))
    assert len(step_rows) == 21 and {row["trace_id"] for row in step_rows} == {reports[0]["trace_id"]}
    refused: tuple[dict[str, str | int], ...] = (
        {"format": "jsonl", "limit": 101},
        {"format": "parquet"},
        {"rows": "token"},
        {"limit": 10_001},
    )
    for params in refused:
        assert client.get("/api/v1/export", params=params).status_code == 422, params


def test_info_and_health(client: TestClient, store: SQLiteStore) -> None:
    info = Info.model_validate(client.get("/api/v1").json())
    assert info.runs == store.count() and info.read_only and not info.token_required
    assert info.store == "corevital.db"
    assert client.get("/healthz").json() == {"status": "ok"}


def test_openapi_document_and_no_docs_pages(client: TestClient) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    paths = set(document["paths"])
    assert {
        "/healthz",
        "/api/v1",
        "/api/v1/runs",
        "/api/v1/runs/{trace_id}",
        "/api/v1/runs/{trace_id}/summary",
        "/api/v1/models",
        "/api/v1/prompts",
        "/api/v1/compare",
        "/api/v1/export",
        "/api/v1/events",
        "/api/traces",
        "/api/traces/{trace_id}",
        "/api/reports/{trace_id}",
    } <= paths
    assert "TraceRow" in document["components"]["schemas"]
    for page in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert client.get(page).status_code == 404
    assert "cdn" not in response.text.lower()


# The original dashboard's routes -------------------------------------------------------------

LEGACY_KEYS = ["trace_id", "created_at_utc", "model_id", "schema_version", "prompt_hash", "risk_score"]


def test_original_traces_route_shape(client: TestClient, store: SQLiteStore, db: Path) -> None:
    response = client.get("/api/traces", params={"db_path": str(db)})
    assert response.status_code == 200
    traces = response.json()
    assert isinstance(traces, list) and len(traces) == store.count()
    for trace in traces:
        assert list(trace) == LEGACY_KEYS
        LegacyTrace.model_validate(trace)
    assert [trace["trace_id"] for trace in traces] == [
        row.trace_id for row in store.list(TraceQuery(limit=100))
    ]
    oldest = client.get("/api/traces", params={"order_asc": "true", "limit": 3}).json()
    assert [trace["trace_id"] for trace in oldest] == [
        row.trace_id for row in store.list(TraceQuery(limit=3, ascending=True))
    ]
    model = "google/flan-t5-large"
    only = client.get("/api/traces", params={"model_id": model}).json()
    assert [trace["trace_id"] for trace in only] == ["8d0bad87-608d-4e87-b74f-0bb74cfa0c77"]
    prompt = only[0]["prompt_hash"]
    assert client.get("/api/traces", params={"prompt_hash": prompt}).json() == only
    assert client.get("/api/traces", params={"limit": 0}).json() == []


@pytest.mark.parametrize("route", ["/api/traces/{}", "/api/reports/{}"])
def test_original_report_routes_answer_for_the_six_traces(client: TestClient, db: Path, route: str) -> None:
    for trace_id, original in original_documents().items():
        for asked in (trace_id, trace_id[:8]):
            response = client.get(route.format(asked), params={"db_path": str(db)})
            assert response.status_code == 200, response.text
            report = response.json()
            assert report["trace_id"] == trace_id
            assert set(original) <= set(report)  # fields are added, never renamed
            assert report["model"]["hf_id"] == original["model"]["hf_id"]
            assert report["prompt"]["text"] == original["prompt"]["text"]
            assert report["generated"]["output_text"] == original["generated"]["output_text"]
            assert len(report["timeline"]) == len(original["timeline"])
    missing = client.get(route.format("deadbeef"))
    assert missing.status_code == 404 and missing.json() == {"detail": "Trace not found: deadbeef"}


def test_db_path_naming_the_served_store_is_accepted(client: TestClient, db: Path) -> None:
    for spelling in (str(db), str(db.resolve()), "", str(db).replace("/", "\\"), f'"{db}"'):
        assert client.get("/api/traces", params={"db_path": spelling}).status_code == 200, spelling


def test_limits_are_configurable(db: Path, store: SQLiteStore) -> None:
    config = serve_config(db, limits=Limits(max_compare=2))
    with TestClient(create_app(store, config)) as client:
        ids = ["7c1c62d1", "01aeafe3", "8d0bad87"]
        response = client.get("/api/v1/compare", params={"id": ids})
        assert response.status_code == 422 and "at most 2" in response.json()["detail"]


def test_a_new_run_shows_in_cached_lists_at_once(db: Path, tmp_path: Path) -> None:
    copy = copy_store(db, tmp_path / "copy")
    writer = SQLiteStore(copy)
    reader = SQLiteStore(copy, read_only=True)
    limits = Limits(cache_ttl_s=60.0, cache_check_s=0.05)
    try:
        with TestClient(create_app(reader, serve_config(copy, limits=limits))) as client:
            before = client.get("/api/traces").json()
            assert client.get("/api/traces").json() == before
            report = writer.get("7c1c62d1")
            assert report is not None
            writer.write(
                report.model_copy(update={"trace_id": "fresh-run", "created_at_utc": "2027-01-01T00:00:00Z"})
            )
            time.sleep(0.1)
            after = client.get("/api/traces").json()
            assert after[0]["trace_id"] == "fresh-run" and after[1:] == before
            assert client.get("/api/v1/runs").json()["runs"][0]["trace_id"] == "fresh-run"
    finally:
        writer.close()
        reader.close()


def test_docs_name_every_flag_route_and_limit(client: TestClient) -> None:
    import argparse

    from corevital.cli.serve import configure

    text = (Path(__file__).resolve().parents[2] / "docs" / "server.md").read_text(encoding="utf-8")
    parser = argparse.ArgumentParser()
    configure("serve", parser)
    flags = [action.option_strings[0] for action in parser._actions if action.option_strings[0] != "-h"]
    assert [flag for flag in flags if f"`{flag}" not in text] == []
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    documented = [path.replace("{trace_id}", "{id}") for path in paths]
    assert [path for path in documented if f"`{path}" not in text] == []
    limits = Limits()
    for phrase in (
        f"over {limits.max_body_bytes // 1024} KiB",
        f"over {limits.max_url_chars // 1024} KiB",
        f"at most {limits.max_compare} runs",
        f"longer than {limits.request_timeout_s:g} s",
        f"at most {limits.max_connections}",
        f"At most {limits.max_event_clients} streams",
        f"every {limits.event_poll_s:g} s",
        f"after {limits.heartbeat_s:g} s of silence",
        f"every {limits.cache_check_s:g} s",
        f"at most {limits.cache_ttl_s:g} s old",
        "1 to 500",
    ):
        assert phrase in " ".join(text.split()), phrase


def test_concurrent_identical_listings_ask_the_store_once(store: SQLiteStore) -> None:
    import asyncio
    import threading

    import httpx

    class CountingStore(MemorySink):
        def __init__(self) -> None:
            super().__init__()
            self.pages = 0
            self.counting = threading.Lock()

        def page(self, query: TraceQuery | None = None, cursor: str | None = None) -> Page:
            with self.counting:
                self.pages += 1
            time.sleep(0.3)
            return super().page(query, cursor)

    counting = CountingStore()
    report = store.get("7c1c62d1")
    assert report is not None
    counting.write(report)
    app = create_app(counting, ServeConfig(store_label="memory"))

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            responses = await asyncio.gather(*(client.get("/api/v1/runs") for _ in range(12)))
        assert len({response.content for response in responses}) == 1
        return [response.status_code for response in responses]

    assert asyncio.run(burst()) == [200] * 12
    assert counting.pages == 1
