"""Every command that opens a store by ``--db`` on a PostgreSQL URL (runs, show, compare, export,
report, serve, migrate, run --sink postgres), against a real server: the same answers as on the same reports
in SQLite, no store created by a reading command, the password never shown.

The server comes from tests/support/postgres.py (one per session, a new database per test);
without the postgresql package these tests skip locally and fail in CI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from corevital.cli import main
from corevital.sinks.postgres import PostgresStore
from corevital.sinks.sqlite import SQLiteStore
from tests.support.cli import run_cli
from tests.support.postgres import PASSWORD, PostgresServer, store_version
from tests.support.served import original_files, start_server

pytest_plugins = ("tests.support.postgres",)

# The commands, on the same reports in SQLite and in PostgreSQL: the same answers.


@pytest.fixture(scope="module")
def originals_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original CoreVital traces imported into a SQLite store (once: upgrading them is slow)."""
    directory = tmp_path_factory.mktemp("originals")
    staging = directory / "traces"
    staging.mkdir()
    for path in original_files():
        name = path.name if path.name.startswith("trace_") else f"trace_{path.stem}.json"
        (staging / name).write_bytes(path.read_bytes())
    db = directory / "corevital.db"
    assert main(["migrate", "--from-dir", str(staging), "--to-db", str(db)]) == 0
    return db


@pytest.fixture
def both(originals_db: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """The original CoreVital traces in a SQLite store and, imported from it, in PostgreSQL."""
    capsys.readouterr()
    code, out, err = run_cli(capsys, "migrate", "--from-db", str(originals_db), "--to-db", postgres_url)
    assert code == 0 and out.strip() == "imported 6, skipped 0, failed 0", err
    return str(originals_db), postgres_url


def _without_seq(text: str) -> Any:
    document = json.loads(text)
    for row in document["runs"]:
        del row["seq"]
    return document


@pytest.mark.slow
def test_runs_show_compare_export_and_report_read_postgres_as_they_read_sqlite(
    both: tuple[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sqlite, postgres = both
    code, out, _ = run_cli(capsys, "migrate", "--from-db", sqlite, "--to-db", postgres)
    assert code == 0 and out.strip() == "imported 0, skipped 6, failed 0"
    commands = (
        ["runs", "--json", "--limit", "4"],
        ["runs", "--json", "--sort", "risk", "--min-risk", "0.3"],
        ["runs", "--json", "--flag", "attention_collapse", "--asc"],
        ["show", "8d0bad87", "--json"],
        ["show", "8d0bad87"],
        ["compare", "--by", "model", "--json"],
        ["compare", "--by", "prompt", "--json"],
        ["compare", "7c1c62d1", "01aeafe3", "--json"],
        ["export", "--format", "jsonl", "--out", "-"],
        ["export", "--format", "csv", "--rows", "step", "--out", "-", "--limit", "2"],
    )
    for command in commands:
        code, from_sqlite, _ = run_cli(capsys, *command, "--db", sqlite)
        assert code == 0
        code, from_postgres, err = run_cli(capsys, *command, "--db", postgres)
        assert code == 0, err
        if command[0] == "runs":  # seq is the order of import: by time from a database, by name from files
            assert _without_seq(from_postgres) == _without_seq(from_sqlite), command
        else:
            assert from_postgres == from_sqlite, command
    cursor = json.loads(run_cli(capsys, "runs", "--json", "--limit", "4", "--db", postgres)[1])["next_cursor"]
    code, out, _ = run_cli(capsys, "runs", "--json", "--limit", "4", "--cursor", cursor, "--db", postgres)
    assert code == 0 and len(json.loads(out)["runs"]) == 2
    pages = [tmp_path / "sqlite.html", tmp_path / "postgres.html"]
    for db, page in zip((sqlite, postgres), pages, strict=True):
        code, _, err = run_cli(capsys, "report", "8d0bad87", "--html", str(page), "--db", db)
        assert code == 0, err
    assert pages[0].read_bytes() == pages[1].read_bytes()


def test_reading_commands_never_create_a_store_and_hide_the_password(
    postgres_server: PostgresServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = postgres_server.create_database()
    for command in (["runs"], ["show", "abc"], ["compare"], ["export", "--format", "jsonl", "--out", "-"]):
        code, _, err = run_cli(capsys, *command, "--db", empty)
        assert code == 6 and "holds no CoreVital store" in err and PASSWORD not in err, err
    code, _, err = run_cli(capsys, "report", "abc", "--html", str(tmp_path / "x.html"), "--db", empty)
    assert code == 6 and "holds no CoreVital store" in err and PASSWORD not in err
    assert store_version(empty) is None
    with PostgresStore(empty):
        pass
    code, _, err = run_cli(capsys, "show", "abc", "--db", empty)
    assert code == 6 and "no stored run with trace id 'abc' in postgresql://corevital:***@" in err


@pytest.mark.slow
def test_serve_answers_from_postgres_as_from_sqlite(both: tuple[str, str], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from corevital.server.app import create_app
    from corevital.server.config import ServeConfig

    sqlite, postgres = both
    paths = (
        "/api/v1/runs?limit=4",
        "/api/v1/runs?sort=risk&order=asc&flag=attention_collapse",
        "/api/v1/runs/8d0bad87",
        "/api/v1/runs/8d0bad87/summary",
        "/api/v1/models",
        "/api/v1/prompts",
        "/api/v1/compare?id=7c1c62d1&id=01aeafe3",
        "/api/v1/export?format=jsonl",
        "/api/v1/export?format=csv&rows=step&limit=2",
        "/api/traces",
    )
    answers = []
    for store in (SQLiteStore(sqlite, read_only=True), PostgresStore(postgres, read_only=True, pool_size=2)):
        with store, TestClient(create_app(store, ServeConfig(store_label="store"))) as client:
            responses = [client.get(path) for path in paths]
            # seq is the order of import (by time from a database, by name from files): left out
            answers.append([(got.status_code, re.sub(rb'"seq":\d+', b"", got.content)) for got in responses])
    for path, from_sqlite, from_postgres in zip(paths, *answers, strict=True):
        assert from_sqlite[0] == 200 and from_postgres == from_sqlite, path


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_corevital_serve_serves_a_postgres_url_read_only(
    both: tuple[str, str], tmp_path: Path, workers: str
) -> None:
    _, postgres = both
    server = start_server(["--db", postgres, "--workers", workers], tmp_path)
    try:
        server.wait_ready()
        assert "postgresql://corevital:***@127.0.0.1" in server.stdout() and PASSWORD not in server.stdout()
        info = httpx.get(f"{server.url}/api/v1", timeout=10).json()
        assert info["runs"] == 6 and info["read_only"] is True and PASSWORD not in info["store"]
        runs = httpx.get(f"{server.url}/api/v1/runs?limit=2", timeout=10).json()
        assert len(runs["runs"]) == 2 and runs["next_cursor"]
        report = httpx.get(f"{server.url}/api/v1/runs/8d0bad87", timeout=10)
        assert report.status_code == 200 and report.json()["trace_id"].startswith("8d0bad87")
        refused = httpx.get(f"{server.url}/api/traces?db_path=/tmp/other.db", timeout=10)
        assert refused.status_code == 400
    finally:
        assert server.stop() == 0, server.stderr()


@pytest.mark.slow
def test_run_with_the_postgres_sink_stores_every_report(
    postgres_url: str,
    tiny_model_dir: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["run", "--model", str(tiny_model_dir("llama")), "--device", "cpu", "--out", str(tmp_path)]
    argv += ["--chat-template", "off", "--max_new_tokens", "4", "--temperature", "0", "--json"]
    argv += ["--sink", "postgres", "--db", postgres_url, "--prompt", "The capital of France is"]
    code, out, err = run_cli(capsys, *argv, "--prompt", "Count: one, two,")
    assert code == 0, err
    assert PASSWORD not in out and PASSWORD not in err
    with PostgresStore(postgres_url, read_only=True) as store:
        rows = store.list()
        assert len(rows) == 2 and [row.seq for row in sorted(rows, key=lambda row: row.seq)] == [1, 2]
        report = store.get(rows[0].trace_id)
        assert report is not None and report.run_config.sink.type == "postgres"
        assert report.run_config.sink.target == store.location
        assert PASSWORD not in (store.get_json(rows[0].trace_id) or "")
    code, out, _ = run_cli(capsys, "runs", "--json", "--db", postgres_url)
    assert code == 0 and json.loads(out)["total"] == 2
    assert not list(tmp_path.glob("*.db"))  # nothing went to the default SQLite store
