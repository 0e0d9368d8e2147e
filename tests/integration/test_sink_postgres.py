"""The PostgreSQL store against a real server: the same answers as MemorySink and the SQLite store,
migrations, identity checks, read-only mode, idempotent and concurrent writes, connection errors
(the commands that open a store by ``--db`` on a PostgreSQL URL are test_postgres_cli.py).

The server comes from tests/support/postgres.py (one per session, a new database per test);
without the postgresql package these tests skip locally and fail in CI.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from corevital.errors import ReportError, StoreError
from corevital.report.schema import HealthFlags, Report, RiskExtension, SamplingInfo
from corevital.report.timestamps import format_utc
from corevital.sinks.base import HealthFlag, MemorySink, ReportStore, SortOrder, TraceQuery
from corevital.sinks.encoded import EncodedReport
from corevital.sinks.postgres import PostgresStore
from corevital.sinks.postgres_schema import LATEST_VERSION, REPORTS_TABLE, VERSION_TABLE
from corevital.sinks.sqlite import SQLiteStore
from tests.support.golden import golden_report
from tests.support.postgres import PASSWORD, PostgresServer, concurrent_writes, store_version

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


def _indexes(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (REPORTS_TABLE,))
        return {name for (name,) in rows}


def test_a_new_store_has_the_latest_version_and_the_indexes_of_every_order(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    assert store_version(postgres_url) == LATEST_VERSION
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
    assert store_version(postgres_url) == 1
    with PostgresStore(postgres_url) as store:
        assert store.get(base.trace_id) == base and store.list()[0].seq == 1
    assert store_version(postgres_url) == LATEST_VERSION
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
    assert store_version(postgres_url) == LATEST_VERSION == 3


def test_databases_that_are_not_a_store_are_refused_and_left_untouched(
    postgres_server: PostgresServer,
) -> None:
    empty = postgres_server.create_database()
    with pytest.raises(StoreError, match="holds no CoreVital store"):
        PostgresStore(empty, read_only=True)
    with pytest.raises(StoreError, match="holds no CoreVital store"):
        PostgresStore(empty, create=False)
    assert store_version(empty) is None
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
