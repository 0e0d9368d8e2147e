"""SQLiteStore migrations: added migrations run once and in order, a failing one changes nothing, and
the databases of earlier store versions are brought up to the latest schema with their rows backfilled."""

from __future__ import annotations

import hashlib
import sqlite3
import zlib
from pathlib import Path

import pytest

from corevital.errors import StoreError
from corevital.report.encoding import report_to_json
from corevital.report.schema import Report
from corevital.sinks import sqlite_schema
from corevital.sinks.base import TraceQuery, trace_row_from_report
from corevital.sinks.sqlite import SQLiteStore
from corevital.sinks.sqlite_schema import APPLICATION_ID, LATEST_VERSION, MIGRATIONS
from tests.support.golden import golden_report, numbered_report


@pytest.fixture(scope="module")
def base() -> Report:
    return golden_report()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_database_at_an_older_version_is_migrated_in_order(
    tmp_path: Path, base: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SQLiteStore(tmp_path / "c.db") as store:
        store.write(base)
    applied: list[int] = []

    def add_note_column(conn: sqlite3.Connection) -> None:
        applied.append(2)
        conn.execute("ALTER TABLE reports ADD COLUMN note TEXT")

    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", (*MIGRATIONS, add_note_column))
    monkeypatch.setattr(sqlite_schema, "LATEST_VERSION", LATEST_VERSION + 1)
    for _ in range(2):
        with SQLiteStore(tmp_path / "c.db") as store:
            assert store.get(base.trace_id) == base
    assert applied == [2], "a migration runs once"
    conn = sqlite3.connect(tmp_path / "c.db")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION + 1
        assert "note" in {row[1] for row in conn.execute("PRAGMA table_info(reports)")}
    finally:
        conn.close()


def test_a_failing_migration_leaves_the_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SQLiteStore(tmp_path / "c.db").close()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE reports ADD COLUMN half_done TEXT")
        raise sqlite3.OperationalError("disk on fire")

    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", (*MIGRATIONS, broken))
    monkeypatch.setattr(sqlite_schema, "LATEST_VERSION", LATEST_VERSION + 1)
    with pytest.raises(StoreError, match="disk on fire"):
        SQLiteStore(tmp_path / "c.db")
    conn = sqlite3.connect(tmp_path / "c.db")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        assert "half_done" not in {row[1] for row in conn.execute("PRAGMA table_info(reports)")}
    finally:
        conn.close()


_V1_COLUMNS = sqlite_schema.REPORT_COLUMNS[:17]  # the columns of database version 1


def _version_1_database(path: Path, reports: list[Report]) -> None:
    """A database as version 1 of the store wrote it (before the read interface's columns)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        MIGRATIONS[0](conn)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 1")
        for report in reports:
            row = trace_row_from_report(report)
            values = [getattr(row, column) for column in _V1_COLUMNS]
            blob = zlib.compress(report_to_json(report).encode("utf-8"))
            marks = ", ".join("?" for _ in range(len(_V1_COLUMNS) + 1))
            conn.execute(
                f"INSERT INTO reports ({', '.join(_V1_COLUMNS)}, report_zlib) VALUES ({marks})",
                (*values, blob),
            )
    finally:
        conn.close()


def test_version_2_backfills_the_read_interface_columns_of_existing_rows(
    tmp_path: Path, base: Report
) -> None:
    reports = [numbered_report(base, 1, index) for index in (3, 1, 2)]
    path = tmp_path / "c.db"
    _version_1_database(path, reports)
    with SQLiteStore(path) as store:
        rows = {row.trace_id: row for row in store.list(TraceQuery(limit=None))}
        assert [rows[report.trace_id].seq for report in reports] == [1, 2, 3]  # insertion order
        for report in reports:
            assert rows[report.trace_id] == trace_row_from_report(report)
        store.write(numbered_report(base, 2, 0))
        assert store.follow(3)[0][0].seq == 4
    conn = sqlite3.connect(path)
    try:  # the blob last: reading a scalar column never walks the blob's overflow pages
        assert [row[1] for row in conn.execute("PRAGMA table_info(reports)")][-1] == "report_zlib"
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(reports)")}
        assert {"idx_model_time_desc", "idx_reports_seq", "idx_reports_nan_detected"} <= indexes
    finally:
        conn.close()


def _version_3_database(path: Path, blobs: list[tuple[Report, bytes]]) -> None:
    """A database as version 3 of the store wrote it (no sampling weight), with these report blobs."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for migration in MIGRATIONS[:3]:
            migration(conn)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 3")
        columns = sqlite_schema.REPORT_COLUMNS[:23]
        for seq, (report, blob) in enumerate(blobs, start=1):
            row = trace_row_from_report(report)
            marks = ", ".join("?" for _ in range(len(columns) + 2))
            conn.execute(
                f"INSERT INTO reports ({', '.join(columns)}, seq, report_zlib) VALUES ({marks})",
                (*(getattr(row, column) for column in columns), seq, blob),
            )
    finally:
        conn.close()


def _schema(path: Path) -> set[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return set(
            conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        )
    finally:
        conn.close()


def test_version_4_backfills_the_sampling_weight_from_the_stored_reports(
    tmp_path: Path, base: Report
) -> None:
    from corevital.report.schema import SamplingInfo

    sampled = numbered_report(base, 1, 1).model_copy(deep=True)
    sampled.extensions.sampling = SamplingInfo(
        policy="every 5", kept_fraction=0.2, weight=5.0, runs_seen=6, runs_kept=2
    )
    plain, broken = numbered_report(base, 1, 2), numbered_report(base, 1, 3)
    blobs = [
        (sampled, zlib.compress(report_to_json(sampled).encode("utf-8"))),
        (plain, zlib.compress(report_to_json(plain).encode("utf-8"))),
        (broken, zlib.compress(b'{"extensions": {"sampling": {"weight": ')),  # unreadable: counts once
    ]
    path = tmp_path / "c.db"
    _version_3_database(path, blobs)
    with SQLiteStore(path) as store:
        rows = {row.trace_id: row for row in store.list(TraceQuery(limit=None))}
        assert rows[sampled.trace_id].sampling_weight == 5.0
        assert rows[sampled.trace_id] == trace_row_from_report(sampled)
        assert rows[plain.trace_id].sampling_weight == 1.0 and rows[broken.trace_id].sampling_weight == 1.0
        assert [rows[report.trace_id].seq for report, _ in blobs] == [1, 2, 3]  # positions kept
        assert store.get(sampled.trace_id) == sampled
    conn = sqlite3.connect(path)
    try:  # the blob stays last; the same indexes as a new database
        assert [row[1] for row in conn.execute("PRAGMA table_info(reports)")][-3:] == [
            "sampling_weight",
            "seq",
            "report_zlib",
        ]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION == 4
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    SQLiteStore(tmp_path / "new.db").close()
    assert _schema(path) == _schema(tmp_path / "new.db")


def test_a_read_only_store_never_creates_or_migrates(tmp_path: Path, base: Report) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="no CoreVital database at"):
        SQLiteStore(missing, read_only=True)
    assert not missing.exists()
    old = tmp_path / "old.db"
    _version_1_database(old, [base])
    before = _digest(old)
    with pytest.raises(
        StoreError, match=r"older CoreVital .* open it once with a writer .*corevital runs --db"
    ):
        SQLiteStore(old, read_only=True)
    assert _digest(old) == before
    SQLiteStore(old).close()  # a writer upgrades it
    with SQLiteStore(old, read_only=True) as store:
        assert store.get(base.trace_id) == base and store.count() == 1
        with pytest.raises(StoreError, match="read-only"):
            store.write(numbered_report(base, 1, 1))
