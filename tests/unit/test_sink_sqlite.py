"""SQLiteStore specifics: file layout, WAL, refusing foreign files, concurrent writers, read-only
stores (the migrations are test_sink_sqlite_migrations.py)."""

from __future__ import annotations

import gzip
import hashlib
import multiprocessing
import os
import sqlite3
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from corevital.errors import ReportError, StoreError
from corevital.report.encoding import report_from_json, report_to_json
from corevital.report.schema import Report
from corevital.sinks.base import HealthFlag, SortOrder, TraceQuery
from corevital.sinks.encoded import EncodedReport
from corevital.sinks.sqlite import SQLiteStore
from corevital.sinks.sqlite_schema import APPLICATION_ID, LATEST_VERSION, MIGRATIONS
from tests.support.golden import GOLDEN, golden_report, numbered_report
from tests.support.original_store import ORIGINAL_DDL


@pytest.fixture(scope="module")
def base() -> Report:
    return golden_report()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _siblings(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.parent.iterdir())


def test_default_file_is_corevital_db_in_the_output_directory(tmp_path: Path) -> None:
    with SQLiteStore.in_directory(tmp_path / "runs") as store:
        assert store.path == tmp_path / "runs" / "corevital.db"
    assert (tmp_path / "runs" / "corevital.db").is_file()


def test_new_database_is_in_wal_mode_with_version_and_application_id(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "c.db").close()
    conn = sqlite3.connect(tmp_path / "c.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION == len(MIGRATIONS)
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        listing = {
            f"idx_{kind}_{key}_{way}"
            for kind in ("list", "model")
            for key in ("time", "risk")
            for way in ("asc", "desc")
        }
        assert {"idx_reports_prompt_hash", "idx_reports_seq", *listing} <= indexes
        assert not {"idx_reports_created", "idx_reports_model", "idx_reports_risk"} & indexes
    finally:
        conn.close()


def test_the_report_is_stored_as_zlib_compressed_json(tmp_path: Path, base: Report) -> None:
    with SQLiteStore(tmp_path / "c.db") as store:
        store.write(base)
    conn = sqlite3.connect(tmp_path / "c.db")
    try:
        blob, model_id, risk = conn.execute(
            "SELECT report_zlib, model_id, risk_score FROM reports"
        ).fetchone()
    finally:
        conn.close()
    assert zlib.decompress(blob).decode("utf-8") == report_to_json(base)
    assert (model_id, risk) == ("tiny/causal-lm", 1.0)


def test_reports_survive_reopening(tmp_path: Path, base: Report) -> None:
    with SQLiteStore(tmp_path / "c.db") as store:
        store.write(base)
    with SQLiteStore(tmp_path / "c.db") as store:
        assert store.get(base.trace_id) == base


def test_an_empty_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    path.write_bytes(b"")
    with SQLiteStore(path) as store:
        assert store.count() == 0


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is my thesis, not a database\n" * 300)


def _corrupt_sqlite(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    conn.commit()
    conn.close()


def _original_corevital(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(ORIGINAL_DDL)
    conn.execute(
        "INSERT INTO reports VALUES ('t', '2026-01-01T00:00:00Z', 'gpt2', '0.4.0', NULL, ?, NULL, NULL)",
        (gzip.compress(b"{}"),),
    )
    conn.commit()
    conn.close()


def _newer_corevital(path: Path) -> None:
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 5}")
    conn.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_garbage, r"is not a CoreVital SQLite database \(not an SQLite file\); it was left untouched$"),
        (_corrupt_sqlite, r"is not a CoreVital SQLite database \(file is not a database\)"),
        (_foreign_sqlite, r"is not a CoreVital SQLite database \(tables: invoices\)"),
        (_original_corevital, r"is a database of the original CoreVital .* `corevital migrate`"),
        (_newer_corevital, rf"was written by a newer CoreVital \(database version {LATEST_VERSION + 5},"),
    ],
    ids=["garbage", "corrupt", "foreign", "original", "newer"],
)
def test_a_file_that_is_not_ours_is_refused_and_never_changed(
    tmp_path: Path, make: Callable[[Path], None], message: str
) -> None:
    path = tmp_path / "corevital.db"
    make(path)
    before, siblings = _digest(path), _siblings(path)
    with pytest.raises(StoreError, match=message) as caught:
        SQLiteStore(path)
    assert "\n" not in str(caught.value)
    assert _digest(path) == before, "the file must not be overwritten or truncated"
    assert _siblings(path) == siblings, "no journal or WAL file may be left beside it"


def test_a_directory_at_the_database_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "corevital.db").mkdir()
    with pytest.raises(StoreError, match="not a regular file"):
        SQLiteStore.in_directory(tmp_path)


def test_an_output_directory_that_cannot_be_created_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the directory should be", encoding="utf-8")
    with pytest.raises(StoreError, match=r"^cannot create directory .*blocker.*: ") as caught:
        SQLiteStore.in_directory(tmp_path / "blocker" / "runs")
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to read-only directories"
)
def test_an_unwritable_directory_is_one_line_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match=r"^cannot open SQLite database .*locked") as caught:
            SQLiteStore.in_directory(locked)
        assert "\n" not in str(caught.value)
    finally:
        locked.chmod(0o700)


def test_a_closed_store_refuses_work(tmp_path: Path, base: Report) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    store.close()
    store.close()  # closing twice is fine
    with pytest.raises(StoreError, match="is closed"):
        store.write(base)
    with pytest.raises(StoreError, match="is closed"):
        store.list()


def test_a_corrupt_stored_report_is_a_report_error_naming_the_trace(tmp_path: Path, base: Report) -> None:
    with SQLiteStore(tmp_path / "c.db") as store:
        store.write(base)
        conn = sqlite3.connect(tmp_path / "c.db")
        conn.execute("UPDATE reports SET report_zlib = ?", (b"not zlib",))
        conn.commit()
        conn.close()
        with pytest.raises(ReportError, match=rf"#{base.trace_id}: the stored report is corrupt"):
            store.get(base.trace_id)
        assert store.list()[0].trace_id == base.trace_id, "listing does not need the body"


WORKERS = 4
PER_WORKER = 25


def _write_many(db_path: str, worker: int, barrier: Any) -> None:
    base = report_from_json(GOLDEN.read_bytes())
    barrier.wait(timeout=30)  # every process creates/opens the fresh database at the same moment
    with SQLiteStore(db_path) as store:
        for index in range(PER_WORKER):
            store.write(numbered_report(base, worker, index))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_concurrent_writers_in_several_processes_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    db_path = tmp_path / "one-store" / "corevital.db"
    barrier = context.Barrier(WORKERS)
    processes = [
        context.Process(target=_write_many, args=(str(db_path), worker, barrier)) for worker in range(WORKERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * WORKERS
    with SQLiteStore(db_path) as store:
        assert store.count() == WORKERS * PER_WORKER
        expected = {
            f"{w:04d}{i:04d}-0000-4000-8000-000000000000" for w in range(WORKERS) for i in range(PER_WORKER)
        }
        assert {row.trace_id for row in store.list(TraceQuery(limit=None))} == expected


LISTING_FILTERS: list[dict[str, Any]] = [
    {},
    {"model_id": "m"},
    {"flags": frozenset({HealthFlag.NAN})},
    {"flags": frozenset({HealthFlag.NAN, HealthFlag.REPETITION_LOOP})},
    {"min_risk": 0.2},
    {"min_risk": 0.2, "max_risk": 0.5},
    {"since": datetime(2026, 1, 1, tzinfo=UTC), "until": datetime(2026, 2, 1, tzinfo=UTC)},
    {"model_id": "m", "flags": frozenset({HealthFlag.ATTENTION_COLLAPSE})},
    {"model_id": "m", "max_risk": 0.3},
]


@pytest.mark.parametrize("sort", list(SortOrder))
@pytest.mark.parametrize("ascending", [False, True])
@pytest.mark.parametrize("with_cursor", [False, True])
def test_every_listing_walks_an_index_in_order(
    tmp_path: Path, sort: SortOrder, ascending: bool, with_cursor: bool
) -> None:
    """No filter, sort or page of a listing sorts rows or scans the table (the prompt-hash filter
    is left out: it searches its own index and sorts that prompt's few runs)."""
    from corevital.sinks import sqlite as sqlite_module
    from corevital.sinks.rows import order_clause

    SQLiteStore(tmp_path / "c.db").close()
    conn = sqlite3.connect(tmp_path / "c.db")
    try:
        for filters in LISTING_FILTERS:
            query = TraceQuery(**filters, sort=sort, ascending=ascending, limit=50)
            where, params = sqlite_module._where(query)
            if with_cursor:
                key = sqlite_module._SORT_SQL[sort]
                keyset = f"{key} >= ? AND ({key} > ? OR trace_id > ?)"
                where = f"{where} AND {keyset}" if where else f" WHERE {keyset}"
                params = (*params, 1, 1, "x")
            order = order_clause(query, sqlite_module._SORT_SQL)
            sql = f"{sqlite_module._SELECT_ROWS}{where} ORDER BY {order} LIMIT 51"
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            assert all("USING" in step and "TEMP B-TREE" not in step for step in plan), (filters, plan)
    finally:
        conn.close()


def test_a_read_only_store_reads_on_several_connections_at_once(tmp_path: Path, base: Report) -> None:
    import threading

    from corevital.sinks import sqlite as sqlite_module

    with SQLiteStore(tmp_path / "c.db") as writer:
        for index in range(3):
            writer.write(numbered_report(base, 1, index))
    assert len(SQLiteStore(tmp_path / "c.db", read_only=True)._readers) == 1
    store = SQLiteStore(tmp_path / "c.db", read_only=True, readers=sqlite_module.SERVER_READERS)
    assert len(store._readers) == sqlite_module.SERVER_READERS
    inside = threading.Barrier(sqlite_module.SERVER_READERS, timeout=10)
    results: list[int] = []

    def read() -> None:  # every reader holds a connection at the same moment
        free = store._free
        assert free is not None
        conn = free.get()
        try:
            inside.wait()
            results.append(len(conn.execute("SELECT trace_id FROM reports").fetchall()))
        finally:
            free.put(conn)

    threads = [threading.Thread(target=read) for _ in range(sqlite_module.SERVER_READERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [3] * sqlite_module.SERVER_READERS
    assert [row.trace_id for row in store.list()] == [
        row.trace_id for row in SQLiteStore(tmp_path / "c.db").list()
    ]
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.count()


def test_a_batch_is_stored_whole_or_not_at_all(tmp_path: Path, base: Report) -> None:
    db = tmp_path / "c.db"
    first, second, third = (numbered_report(base, 7, i) for i in range(3))
    with SQLiteStore(db) as store:
        store.write(first)
        # Another connection makes the database refuse one row of the next batch.
        with sqlite3.connect(db) as other:
            other.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON reports "
                f"WHEN NEW.trace_id = '{third.trace_id}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        with pytest.raises(StoreError, match="cannot write reports .*refused"):
            store.write_batch_encoded([EncodedReport(second), EncodedReport(third)])
        assert [row.trace_id for row in store.list()] == [first.trace_id]  # the good row rolled back too
        with sqlite3.connect(db) as other:
            other.execute("DROP TRIGGER refuse")
        where = store.write_batch_encoded([EncodedReport(second), EncodedReport(third)])
        assert where == [f"{db}#{second.trace_id}", f"{db}#{third.trace_id}"]
        rows = {row.trace_id: row.seq for row in store.list()}
        assert rows == {first.trace_id: 1, second.trace_id: 2, third.trace_id: 3}
