"""``corevital serve`` security: token, CORS, the served store only, ids, sizes, malformed
requests, time limits, error bodies, and the checks made before the server starts."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corevital.cli import main
from corevital.errors import StoreError
from corevital.server.app import create_app
from corevital.server.config import (
    Limits,
    ServeConfig,
    check_origin,
    is_loopback,
    loopback_hosts,
    path_spellings,
)
from corevital.sinks.base import MemorySink, Page, ReportStore, TraceQuery
from corevital.sinks.sqlite import SQLiteStore
from tests.support.served import served_store

TOKEN = "s3cret-token-for-the-tests-0123456789"
ORIGIN = "https://dashboard.example"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Callable[[str], Path]) -> Path:
    return served_store(tmp_path_factory.mktemp, tiny_model_dir)


@pytest.fixture(scope="module")
def store(db: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(db, read_only=True)
    yield store
    store.close()


def make_client(store: ReportStore, db: Path | None = None, **overrides: Any) -> TestClient:
    paths = path_spellings(str(db), db.resolve()) if db is not None else frozenset()
    config = ServeConfig(store_label="corevital.db", store_paths=paths, **overrides)
    return TestClient(create_app(store, config), raise_server_exceptions=False)


def assert_clean_error(response: Any, status: int | tuple[int, ...], *secrets: str) -> None:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    for forbidden in ("Traceback", 'File "', "/tmp", "site-packages", "corevital/", *secrets):
        assert forbidden not in response.text, (forbidden, response.text)


# Token -----------------------------------------------------------------------------------


PROTECTED = (
    "/api/v1",
    "/api/v1/runs",
    "/api/v1/runs/7c1c62d1",
    "/api/v1/models",
    "/api/traces",
    "/api/reports/7c1c62d1",
    "/api/v1/openapi.json",
    "/api/v1/events",
)
WRONG_AUTH: tuple[dict[str, str], ...] = (
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": TOKEN},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"bearer {TOKEN[:-1]}"},
)


def test_token_required_on_every_route_but_healthz(store: SQLiteStore, db: Path) -> None:
    with make_client(store, db, token=TOKEN) as client:
        for path in PROTECTED:
            for headers in WRONG_AUTH:
                response = client.get(path, headers=headers)
                assert_clean_error(response, 401, TOKEN)
                assert response.headers["www-authenticate"].startswith("Bearer")
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/v1/runs", headers=good).status_code == 200
        assert client.get("/api/v1/runs", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
        assert client.get("/api/reports/7c1c62d1", headers=good).status_code == 200
        assert client.get("/healthz").status_code == 200
        assert_clean_error(client.get("/api/v1/runs"), 401)  # a listing in the response cache too


# CORS ------------------------------------------------------------------------------------


def test_no_cors_headers_without_allowed_origins(store: SQLiteStore) -> None:
    with make_client(store) as client:
        response = client.get("/api/v1/runs", headers={"Origin": ORIGIN})
        assert response.status_code == 200
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]
        preflight = client.options(
            "/api/v1/runs", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in preflight.headers
        private = client.options(
            "/api/v1/runs",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Private-Network": "true",
            },
        )
        assert not [name for name in private.headers if name.lower().startswith("access-control-")]


def test_cors_only_for_the_named_origin_and_never_with_credentials(store: SQLiteStore) -> None:
    with make_client(store, allow_origins=(ORIGIN,), token=TOKEN) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        allowed = client.get("/api/v1/runs", headers={"Origin": ORIGIN, **auth})
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        assert "access-control-allow-credentials" not in allowed.headers
        other = client.get("/api/v1/runs", headers={"Origin": "https://evil.example", **auth})
        assert not [name for name in other.headers if name.lower().startswith("access-control-")]
        preflight = client.options(
            "/api/v1/runs",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        evil = client.options(
            "/api/v1/runs", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in evil.headers
        private = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Private-Network": "true"}
        allowed = client.options("/api/v1/runs", headers={"Origin": ORIGIN, **private})
        assert allowed.headers["access-control-allow-private-network"] == "true"
        refused = client.options("/api/v1/runs", headers={"Origin": "https://evil.example", **private})
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers


# The served store only -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/traces", "/api/traces/7c1c62d1", "/api/reports/7c1c62d1", "/api/v1/runs"]
)
@pytest.mark.parametrize(
    "db_path", ["/etc/passwd", "runs/corevital.db", "../other.db", "C:\\runs\\x.db", "\x00"]
)
def test_db_path_naming_another_store_is_a_400(store: SQLiteStore, db: Path, path: str, db_path: str) -> None:
    with make_client(store, db) as client:
        response = client.get(path, params={"db_path": db_path})
        assert_clean_error(response, 400, str(db.parent))
        assert "corevital.db" in response.json()["detail"] and "db_path" in response.json()["detail"]


# Ids ---------------------------------------------------------------------------------------

TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%2F..",
    "....//....//etc/passwd",
    "7c1c62d1%00.json",
    "7c1c62d1;DROP TABLE reports",
    "%ff%fe",
    "x" * 65,
    "7c1c62d1'--",
    "%",
    "é",
]


@pytest.mark.parametrize("route", ["/api/v1/runs/", "/api/traces/", "/api/reports/"])
@pytest.mark.parametrize("trace_id", TRAVERSALS)
def test_path_traversal_and_odd_ids_are_404(store: SQLiteStore, route: str, trace_id: str) -> None:
    with make_client(store) as client:
        response = client.get(route + trace_id)
        assert_clean_error(response, 404)


# Sizes and malformed requests --------------------------------------------------------------


def test_oversized_requests_are_refused(store: SQLiteStore) -> None:
    with make_client(store, limits=Limits(max_body_bytes=1024, max_url_chars=2048)) as client:
        assert_clean_error(client.request("GET", "/api/v1/runs", content=b"x" * 4096), 413)
        assert_clean_error(client.get("/api/v1/runs", headers={"content-length": "99999999999"}), 413)

        def chunks() -> Iterator[bytes]:
            for _ in range(8):
                yield b"y" * 512

        assert_clean_error(client.request("POST", "/api/v1/runs", content=chunks()), (405, 413))
        assert_clean_error(client.get("/api/v1/runs", params={"model_id": "m" * 4000}), 414)
        assert client.request("GET", "/api/v1/runs", content=b"{}").status_code == 200


MALFORMED = [
    ("/api/v1/runs", {"limit": "abc"}, 422),
    ("/api/v1/runs", {"limit": "1e3"}, 422),
    ("/api/v1/runs", {"since": "yesterday"}, 422),
    ("/api/v1/runs", {"since": "9999-99-99"}, 422),
    ("/api/v1/runs", {"min_risk": "nan"}, 422),
    ("/api/v1/runs", {"max_risk": "inf"}, 422),
    ("/api/v1/runs", {"sort": "name"}, 422),
    ("/api/v1/runs", {"order": "sideways"}, 422),
    ("/api/v1/runs", {"flag": "bogus"}, 400),
    ("/api/v1/runs", {"flag": ["nan"] * 6}, 422),
    ("/api/v1/runs", {"cursor": "not-a-cursor"}, 400),
    ("/api/v1/runs", {"cursor": "W10"}, 400),
    ("/api/v1/runs", {"cursor": "x" * 2000}, 422),
    ("/api/v1/runs", {"cursor": "WyJ0aW1lIixmYWxzZSwxMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwLCJ4Il0"}, 400),
    ("/api/v1/runs", {"cursor": "WyJ0aW1lIixmYWxzZSwxZTMwOCwieCJd"}, 400),
    ("/api/v1/runs", {"model_id": "x" * 600}, 422),
    ("/api/v1/models", {"until": "0000-00-00"}, 422),
    ("/api/v1/compare", {}, 422),
    ("/api/v1/compare", {"id": "../x"}, 422),
    ("/api/v1/compare", {"id": ["../x", "7c1c62d1"]}, 404),
    ("/api/v1/events", {"after": "-1"}, 422),
    ("/api/traces", {"limit": "-5"}, 422),
    ("/api/traces", {"limit": "100000"}, 422),
    ("/api/traces", {"order_asc": "maybe"}, 422),
    ("/api/v1/nothing-here", {}, 404),
]


@pytest.mark.parametrize(("path", "params", "status"), MALFORMED)
def test_malformed_requests_are_4xx_with_a_clean_body(
    store: SQLiteStore, path: str, params: dict[str, str | list[str]], status: int
) -> None:
    with make_client(store) as client:
        assert_clean_error(client.get(path, params=params), status)


def test_wrong_methods_and_bad_headers(store: SQLiteStore) -> None:
    with make_client(store) as client:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert_clean_error(client.request(method, "/api/v1/runs"), 405)
        assert_clean_error(client.get("/api/v1/runs", headers={"content-length": "abc"}), 400)
        assert_clean_error(client.get("/api/v1/events", headers={"last-event-id": "x"}), 422)


def test_host_header_must_be_a_loopback_name(store: SQLiteStore) -> None:
    hosts = loopback_hosts("127.0.0.1", 8321)
    with make_client(store, allowed_hosts=hosts) as client:
        assert_clean_error(client.get("/api/v1/runs", headers={"host": "evil.example"}), 400)
        assert_clean_error(client.get("/api/v1/runs", headers={"host": "evil.example:8321"}), 400)
        for host in ("127.0.0.1:8321", "localhost:8321", "localhost", "[::1]:8321"):
            assert client.get("/api/v1/runs", headers={"host": host}).status_code == 200, host


# Failures of the store and of the server ---------------------------------------------------


class BrokenStore(MemorySink):
    """A store whose reads fail as a damaged database would, or raise a plain bug."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def page(self, query: TraceQuery | None = None, cursor: str | None = None) -> Page:
        raise self.error

    def count(self, query: TraceQuery | None = None) -> int:
        raise self.error


def test_store_failures_are_503_without_paths() -> None:
    store = BrokenStore(StoreError("cannot read /home/someone/secret/corevital.db: disk I/O error"))
    with make_client(store) as client:
        for path in ("/api/v1/runs", "/api/v1", "/healthz"):
            assert_clean_error(client.get(path), 503, "/home/someone", "secret", "disk I/O")


def test_a_bug_is_a_generic_500() -> None:
    store = BrokenStore(RuntimeError("boom at /srv/app/secret.py line 3"))
    with make_client(store) as client:
        response = client.get("/api/v1/runs")
        assert_clean_error(response, 500, "boom", "/srv", "RuntimeError")


class SlowStore(MemorySink):
    def page(self, query: TraceQuery | None = None, cursor: str | None = None) -> Page:
        time.sleep(1.5)
        return super().page(query, cursor)


def test_the_time_limit_answers_503() -> None:
    with make_client(SlowStore(), limits=Limits(request_timeout_s=0.2)) as client:
        started = time.monotonic()
        response = client.get("/api/v1/runs")
        assert_clean_error(response, 503)
        assert time.monotonic() - started < 1.2
        assert client.get("/api/v1/models").status_code == 200


def test_event_streams_are_bounded(store: SQLiteStore) -> None:
    with make_client(store, limits=Limits(max_event_clients=0)) as client:
        assert_clean_error(client.get("/api/v1/events"), 503)


def test_security_headers_on_answers_and_errors(store: SQLiteStore) -> None:
    with make_client(store) as client:
        for response in (client.get("/api/v1/runs"), client.get("/api/v1/runs/nope"), client.get("/x")):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "no-store"
            assert "default-src 'none'" in response.headers["content-security-policy"]


# Checks before the server starts (none of these binds a socket) -----------------------------


def run_serve(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["serve", *argv])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("corevital: error: "), captured.err
    assert captured.out == ""
    return code, lines[0]


def write_token(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_start_up_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path, db: Path) -> None:
    store = str(db)
    code, line = run_serve(capsys, "--db", store, "--host", "0.0.0.0")
    assert code == 2 and "--token-file" in line and "loopback" in line
    code, line = run_serve(capsys, "--db", store, "--host", "192.168.1.10", "--port", "8321")
    assert code == 2 and "--token-file" in line
    code, line = run_serve(capsys, "--db", store, "--host", "0.0.0.0", "--token-file", str(tmp_path / "none"))
    assert code == 2 and "cannot read --token-file" in line
    empty = write_token(tmp_path / "empty", "  \n")
    code, line = run_serve(capsys, "--db", store, "--host", "0.0.0.0", "--token-file", empty)
    assert code == 2 and "is empty" in line
    short = write_token(tmp_path / "short", "abc")
    code, line = run_serve(capsys, "--db", store, "--host", "0.0.0.0", "--token-file", short)
    assert code == 2 and "at least 16" in line
    good = write_token(tmp_path / "good", TOKEN + "\n")
    code, line = run_serve(capsys, "--db", store, "--token-file", good, "--allow-origin", "*")
    assert code == 2 and "'*'" in line
    for port in ("0", "70000", "-1"):
        code, line = run_serve(capsys, "--db", store, "--port", port)
        assert code == 2 and "--port" in line
    for origin in ("dashboard.example", "ftp://x.example", "https://x.example/path", "https://u@x.example"):
        code, line = run_serve(capsys, "--db", store, "--allow-origin", origin)
        assert code == 2 and "--allow-origin" in line
    code, line = run_serve(capsys, "--db", "postgresql://user:hunter2-secret@127.0.0.1:1/corevital")
    assert code == 6 and "cannot open PostgreSQL store" in line and "user:***@127.0.0.1:1" in line
    assert "hunter2" not in line
    code, line = run_serve(capsys, "--db", str(tmp_path / "missing.db"))
    assert code == 6 and "missing.db" in line
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_text("hello", encoding="utf-8")
    code, line = run_serve(capsys, "--db", str(not_a_store))
    assert code == 6
    assert not_a_store.read_text(encoding="utf-8") == "hello"
    assert not (tmp_path / "missing.db").exists()


def test_without_the_serve_extra_the_command_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    code, line = run_serve(capsys, "--db", str(db))
    assert code == 8 and "pip install 'corevital[serve]'" in line


ODD_VALUES = [
    "",
    "-1",
    "1e400",
    "nan",
    "-inf",
    "9" * 40,
    "0001-01-01",
    "9999-12-31T23:59:59",
    "2026-13-45",
    "\x00",
    "é\u202e",
    "../../etc/passwd",
    "[]",
    "a" * 3000,
    "0x10",
    "2026-03-01T04:58:00+14:00",
]


def test_no_query_value_makes_a_server_error(store: SQLiteStore) -> None:
    with make_client(store) as client:
        paths = client.get("/api/v1/openapi.json").json()["paths"]
        failures = []
        for path, item in paths.items():
            url = path.replace("{trace_id}", "7c1c62d1")
            given = {"id": ["7c1c62d1", "01aeafe3"]} if path.endswith("/compare") else {}
            for parameter in item.get("get", {}).get("parameters", []):
                if parameter["in"] != "query":
                    continue
                for value in ODD_VALUES:
                    if path.endswith("/events") and value.isdigit():
                        continue  # a valid position: the stream would stay open
                    response = client.get(url, params={**given, parameter["name"]: value})
                    if (
                        response.status_code >= 500
                        or "detail" not in response.text
                        and response.status_code >= 400
                    ):
                        failures.append((path, parameter["name"], value[:20], response.status_code))
        assert failures == []
        for value in ("9" * 40, "-1", "x", "1e5"):
            assert_clean_error(client.get("/api/v1/events", headers={"last-event-id": value}), 422)
        assert_clean_error(client.get("/api/v1/events", params={"after": "9" * 40}), 422)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("10.0.0.1", False),
        ("127.0.0.1.nip.io", False),
        ("localhost.example", False),
        ("", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_origins_hosts_and_store_spellings() -> None:
    assert check_origin("https://Dashboard.Example:8443/") == "https://dashboard.example:8443"
    assert check_origin("*") == "*"
    hosts = loopback_hosts("127.0.0.1", 8321)
    assert {"127.0.0.1:8321", "localhost:8321", "[::1]:8321", "localhost"} <= hosts
    assert not any("example" in host for host in hosts)
    spellings = path_spellings("runs/corevital.db", Path("/data/runs/corevital.db"))
    assert {"runs/corevital.db", "/data/runs/corevital.db"} <= spellings
