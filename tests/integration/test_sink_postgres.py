"""The PostgreSQL store against a real server: the same answers as MemorySink and the SQLite store,
migrations, identity checks, read-only mode, idempotent and concurrent writes, connection errors,
and every command that opens a store by ``--db`` (runs, show, compare, export, report, serve,
migrate, run --sink postgres).

The server comes from tests/support/postgres.py (one per session, a new database per test);
without the postgresql package these tests skip locally and fail in CI.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from corevital.cli import main
from corevital.errors import ReportError, StoreError
from corevital.report.schema import HealthFlags, Report, RiskExtension, SamplingInfo
from corevital.report.timestamps import format_utc
from corevital.sinks.base import HealthFlag, MemorySink, ReportStore, SortOrder, TraceQuery
from corevital.sinks.encoded import EncodedReport
from corevital.sinks.postgres import PostgresStore
from corevital.sinks.postgres_schema import LATEST_VERSION, REPORTS_TABLE, VERSION_TABLE
from corevital.sinks.sqlite import SQLiteStore
from tests.support.cli import run_cli
from tests.support.golden import golden_report
from tests.support.postgres import PASSWORD, PostgresServer, concurrent_writes
from tests.support.served import original_files, start_server

pytest_plugins = ("tests.support.postgres",)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MODELS = ("org/alpha", "org/beta", "org/gamma")
PROMPTS = ("Explain why the sky is blue", "Write a haiku", "List three colours")


@pytest.fixture(scope="module")
def base() -> Report:
    return golden_report()


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    made = PostgresStore(postgres_url)
    yield made
    made.close()


def variant(base: Report, rng: random.Random, number: int) -> Report:
    """A copy of the sample report with its own id and a random model, prompt, time, risk and flags
    (few distinct values, so that ties in time and risk are common)."""
    flags = {flag.value: rng.random() < 0.3 for flag in HealthFlag}
    risk = None if rng.random() < 0.2 else rng.choice((0.1, 0.25, 0.5, 0.5, 0.75, 0.9))
    return base.model_copy(
        update={
            "trace_id": f"{rng.getrandbits(32):08x}-{number:04x}-4000-8000-000000000000",
            "created_at_utc": format_utc(T0 + timedelta(minutes=rng.randrange(40))),
            "model": base.model.model_copy(update={"hf_id": rng.choice(MODELS)}),
            "prompt": base.prompt.model_copy(update={"text": rng.choice(PROMPTS)}),
            "health_flags": None if rng.random() < 0.1 else HealthFlags(**flags),
            "extensions": base.extensions.model_copy(
                update={"risk": None if risk is None else RiskExtension(risk_score=risk), "fingerprint": None}
            ),
        }
    )


def random_query(rng: random.Random) -> TraceQuery:
    def maybe(value: Any) -> Any:
        return value if rng.random() < 0.3 else None

    low = maybe(rng.choice((0.0, 0.25, 0.5)))
    return TraceQuery(
        model_id=maybe(rng.choice(MODELS)),
        min_risk=low,
        max_risk=maybe(rng.choice((0.5, 0.75, 1.0))),
        flags=frozenset(rng.sample(list(HealthFlag), rng.choice((0, 0, 0, 1, 2)))),
        since=maybe(T0 + timedelta(minutes=rng.randrange(20))),
        until=maybe(T0 + timedelta(minutes=rng.randrange(20, 45))),
        limit=rng.choice((None, 1, 5, 17, 100)),
        offset=rng.choice((0, 0, 3)),
        sort=rng.choice(list(SortOrder)),
        ascending=rng.random() < 0.5,
    )


def all_pages(store: ReportStore, query: TraceQuery) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = store.page(query, cursor)
        pages.append([row.trace_id for row in page.rows])
        cursor = page.next_cursor
        if cursor is None or len(pages) > 200:
            return pages


def test_the_store_answers_every_query_as_memory_and_sqlite_do(
    store: PostgresStore, base: Report, tmp_path: Path
) -> None:
    rng = random.Random(20260301)
    memory, sqlite = MemorySink(), SQLiteStore.in_directory(tmp_path)
    stores: list[ReportStore] = [memory, sqlite, store]
    reports = [variant(base, rng, number) for number in range(150)]
    for report in [*reports, *rng.sample(reports, 15)]:  # some written again: replaced, same seq
        rewritten = report.model_copy(
            update={"created_at_utc": format_utc(T0 + timedelta(minutes=rng.randrange(40)))}
        )
        for each in stores:
            each.write(rewritten)
    try:
        for _ in range(60):
            query = random_query(rng)
            expected = memory.list(query)
            for each in (sqlite, store):
                assert each.list(query) == expected, query
                assert [row.seq for row in each.list(query)] == [row.seq for row in expected]
                assert each.count(query) == memory.count(query)
                if query.limit is None or query.limit <= 500:
                    assert all_pages(each, query) == all_pages(memory, query), query
                for by in ("model", "prompt"):
                    assert each.aggregate(query, by=by) == memory.aggregate(query, by=by)
        for after in (None, 0, 7, 149, 150):
            assert store.follow(after) == memory.follow(after)
            rows, _ = store.follow(after)
            assert [row.seq for row in rows] == [row.seq for row in memory.follow(after)[0]]
        for report in rng.sample(reports, 10):
            assert store.get(report.trace_id[:8]) == memory.get(report.trace_id[:8])
            assert store.get_json(report.trace_id) == sqlite.get_json(report.trace_id)
    finally:
        sqlite.close()


def _version(url: str) -> int | None:
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
        if exists is None or not exists[0]:
            return None
        row = conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
        return None if row is None else int(row[0])


def _indexes(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (REPORTS_TABLE,))
        return {name for (name,) in rows}


def test_a_new_store_has_the_latest_version_and_the_indexes_of_every_order(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    assert _version(postgres_url) == LATEST_VERSION
    indexes = _indexes(postgres_url)
    for name in ("time", "risk"):
        for suffix in ("asc", "desc"):
            assert f"{REPORTS_TABLE}_{name}_{suffix}" in indexes
            assert f"{REPORTS_TABLE}_model_{name}_{suffix}" in indexes
    assert {f"{REPORTS_TABLE}_{flag.value}" for flag in HealthFlag} <= indexes
    assert f"{REPORTS_TABLE}_seq" in indexes and f"{REPORTS_TABLE}_pkey" in indexes


def test_an_older_store_is_migrated_by_a_writer_and_refused_by_a_reader(
    postgres_url: str, base: Report
) -> None:
    with PostgresStore(postgres_url) as store:
        store.write(base)
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # back to version 1: no read indexes
        for name in _indexes(postgres_url) - {f"{REPORTS_TABLE}_pkey", f"{REPORTS_TABLE}_seq"}:
            conn.execute(f"DROP INDEX {name}")
        conn.execute(f"ALTER TABLE {REPORTS_TABLE} DROP COLUMN sampling_weight")
        conn.execute(f"UPDATE {VERSION_TABLE} SET version = 1")
    with pytest.raises(StoreError, match="older CoreVital .version 1.*open it once with a writer"):
        PostgresStore(postgres_url, read_only=True)
    assert _version(postgres_url) == 1
    with PostgresStore(postgres_url) as store:
        assert store.get(base.trace_id) == base and store.list()[0].seq == 1
    assert _version(postgres_url) == LATEST_VERSION
    assert f"{REPORTS_TABLE}_risk_desc" in _indexes(postgres_url)


def test_version_3_backfills_the_sampling_weight_from_the_stored_reports(
    postgres_url: str, base: Report
) -> None:
    sampled = base.model_copy(deep=True, update={"trace_id": "5a5a5a5a-0000-4000-8000-000000000000"})
    sampled.extensions.sampling = SamplingInfo(
        policy="every 3", kept_fraction=1 / 3, weight=3.0, runs_seen=4, runs_kept=2
    )
    with PostgresStore(postgres_url) as store:
        store.write(base)
        store.write(sampled)
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # back to version 2: no weight column
        conn.execute(f"ALTER TABLE {REPORTS_TABLE} DROP COLUMN sampling_weight")
        conn.execute(f"UPDATE {VERSION_TABLE} SET version = 2")
    with pytest.raises(StoreError, match="older CoreVital .version 2"):
        PostgresStore(postgres_url, read_only=True)
    with PostgresStore(postgres_url) as store:
        weights = {row.trace_id: row.sampling_weight for row in store.list()}
        assert weights == {base.trace_id: 1.0, sampled.trace_id: 3.0}
        assert store.get(sampled.trace_id) == sampled
    assert _version(postgres_url) == LATEST_VERSION == 3


def test_databases_that_are_not_a_store_are_refused_and_left_untouched(
    postgres_server: PostgresServer,
) -> None:
    empty = postgres_server.create_database()
    with pytest.raises(StoreError, match="holds no CoreVital store"):
        PostgresStore(empty, read_only=True)
    with pytest.raises(StoreError, match="holds no CoreVital store"):
        PostgresStore(empty, create=False)
    assert _version(empty) is None
    foreign = postgres_server.create_database()
    with psycopg.connect(foreign, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {REPORTS_TABLE} (id int)")
        conn.execute(f"INSERT INTO {REPORTS_TABLE} VALUES (42)")
    with pytest.raises(StoreError, match="CoreVital did not make; it was left untouched"):
        PostgresStore(foreign)
    with psycopg.connect(foreign) as conn:
        assert conn.execute(f"SELECT id FROM {REPORTS_TABLE}").fetchall() == [(42,)]
    newer = postgres_server.create_database()
    PostgresStore(newer).close()
    with psycopg.connect(newer, autocommit=True) as conn:
        conn.execute(f"UPDATE {VERSION_TABLE} SET version = 99")
    for read_only in (False, True):
        with pytest.raises(StoreError, match="newer CoreVital .store version 99"):
            PostgresStore(newer, read_only=read_only)


def test_a_read_only_store_reads_and_refuses_writes(store: PostgresStore, base: Report) -> None:
    store.write(base)
    reader = PostgresStore(store.url, read_only=True, pool_size=3)
    try:
        assert reader.get(base.trace_id) == base and reader.count() == 1
        with pytest.raises(StoreError, match="is open read-only"):
            reader.write(base)
        with pytest.raises(StoreError, match="read-only transaction"):  # the server refuses too
            reader._query(f"DELETE FROM {REPORTS_TABLE}")
    finally:
        reader.close()
    assert store.count() == 1


def test_writing_a_report_twice_from_two_stores_stores_it_once_and_keeps_its_seq(
    store: PostgresStore, base: Report
) -> None:
    other = PostgresStore(store.url)
    try:
        first = base.model_copy(update={"trace_id": "aaaaaaaa-0000-4000-8000-000000000000"})
        second = base.model_copy(update={"trace_id": "bbbbbbbb-0000-4000-8000-000000000000"})
        store.write(first)
        other.write(second)
        again = first.model_copy(update={"extensions": base.extensions.model_copy(update={"risk": None})})
        assert other.write(again) == f"{store.location}#{first.trace_id}"
        assert store.count() == 2
        assert {row.trace_id: row.seq for row in store.list()} == {first.trace_id: 1, second.trace_id: 2}
        assert store.get(first.trace_id) == again
        assert store.follow(0)[1] == 2
    finally:
        other.close()


def test_a_closed_store_is_a_store_error(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.count()


def test_connection_failures_are_one_line_store_errors_without_the_password(
    postgres_server: PostgresServer,
) -> None:
    good = postgres_server.url()
    wrong_password = good.replace(PASSWORD, "not-the-pw-123")
    refused = f"postgresql://corevital:{PASSWORD}@127.0.0.1:1/corevital"
    missing_database = postgres_server.url("no_such_database")
    for url, expected in (
        (wrong_password, "password authentication failed"),
        (refused, "Connection refused|connection to server"),
        (missing_database, 'database "no_such_database" does not exist'),
    ):
        with pytest.raises(StoreError, match=expected) as caught:
            PostgresStore(url)
        message = str(caught.value)
        assert "\n" not in message and "corevital:***@127.0.0.1" in message
        assert PASSWORD not in message and "not-the-pw-123" not in message


def test_query_values_postgres_cannot_hold_match_nothing(store: PostgresStore, base: Report) -> None:
    store.write(base)
    assert store.get("\x00") is None and not store.contains("a\x00b") and store.get_json("\x00") is None
    assert store.list(TraceQuery(model_id="a\x00")) == [] and store.count(TraceQuery(prompt_hash="\x00")) == 0


@pytest.mark.slow
def test_many_processes_write_at_once_and_nothing_is_lost_or_duplicated(postgres_url: str) -> None:
    result = concurrent_writes(postgres_url, processes=4, runs_each=25, rewrites_each=5)
    assert result.problems() == []
    assert result.stored == 100 and sorted(result.followed) == list(range(1, 101))


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
    assert _version(empty) is None
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


def test_a_corrupt_or_oversized_stored_report_is_a_report_error(store: PostgresStore, base: Report) -> None:
    store.write(base)
    small = PostgresStore(store.url, max_report_bytes=1000)
    try:
        with pytest.raises(ReportError, match="inflates beyond 1000 bytes; refused"):
            small.get_json(base.trace_id)
    finally:
        small.close()
    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute(f"UPDATE {REPORTS_TABLE} SET report_zlib = %s", (b"not zlib",))
    with pytest.raises(ReportError, match="the stored report is corrupt .not zlib data"):
        store.get(base.trace_id[:8])
    assert store.count() == 1  # the index row is still listed


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("postgresql://h/db?sslmode=require&password=pw", "postgresql://h/db?sslmode=require&password=***"),
        ("postgresql://u:p@w@h/db?password=x", "postgresql://u:***@h/db?password=***"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    from corevital.sinks.open import redact_url

    assert redact_url(url) == shown


def test_a_write_postgres_refuses_is_a_store_error_and_the_store_goes_on(
    store: PostgresStore, base: Report
) -> None:
    bad = base.model_copy(update={"model": base.model.model_copy(update={"hf_id": "bad\x00model"})})
    with pytest.raises(
        StoreError, match=f"cannot write report {base.trace_id} to postgresql://corevital:\\*\\*\\*@"
    ):
        store.write(bad)
    store.write(base)
    assert store.count() == 1 and store.list()[0].seq == 1


def test_a_batch_is_stored_whole_or_not_at_all(store: PostgresStore, base: Report) -> None:
    good = base.model_copy(update={"trace_id": "cccccccc-0000-4000-8000-000000000000"})
    bad = base.model_copy(update={"model": base.model.model_copy(update={"hf_id": "bad\x00model"})})
    with pytest.raises(StoreError, match="cannot write reports .*postgresql://corevital:\\*\\*\\*@"):
        store.write_batch_encoded([EncodedReport(good), EncodedReport(bad)])
    assert store.count() == 0  # the good report rolled back with the bad one
    where = store.write_batch_encoded([EncodedReport(good), EncodedReport(base)])
    assert where == [f"{store.location}#{good.trace_id}", f"{store.location}#{base.trace_id}"]
    assert {row.trace_id: row.seq for row in store.list()} == {good.trace_id: 1, base.trace_id: 2}
