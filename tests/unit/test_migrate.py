"""Importing trace directories and SQLite databases (original CoreVital and ours) into a store."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sqlite3
import zlib
from pathlib import Path

import pytest

from corevital.errors import StoreError
from corevital.report.encoding import load_report, report_from_json, report_to_json
from corevital.report.schema import Report
from corevital.sinks.base import MemorySink, TraceQuery
from corevital.sinks.migrate import (
    MigrationResult,
    migrate_directory,
    migrate_original_in_place,
    migrate_path,
    migrate_sqlite,
)
from corevital.sinks.sqlite import SQLiteStore
from tests.support.golden import GOLDEN, ORIGINAL_TRACES
from tests.support.original_store import FIRST_ORIGINAL_DDL, ORIGINAL_DDL

FIXTURES = ORIGINAL_TRACES
DATA = Path(__file__).resolve().parents[1] / "data"
SMALL_FIXTURE = FIXTURES / "trace_8d0bad87.json"
LEGACY_030 = DATA / "legacy_0.3.0_gpt2.json"
LEGACY_040 = DATA / "legacy_0.4.0_flan_t5.json"


def _trace_id(path: Path) -> str:
    return load_report(path).trace_id


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six original traces as ``trace_*.json`` files (sample_report.json renamed like the others)."""
    assert FIXTURES.is_dir(), f"fixtures not found at {FIXTURES.resolve()}"
    directory = tmp_path_factory.mktemp("original-traces")
    for source in sorted(FIXTURES.glob("*.json")):
        name = source.name if source.name.startswith("trace_") else "trace_f28f1386.json"
        shutil.copyfile(source, directory / name)
    return directory


@pytest.fixture(scope="module")
def originals(fixture_dir: Path) -> dict[str, Report]:
    """Each fixture read directly, by trace id."""
    reports = [load_report(path) for path in sorted(fixture_dir.glob("trace_*.json"))]
    return {report.trace_id: report for report in reports}


@pytest.fixture(scope="module")
def migrated(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MigrationResult]:
    """The six fixtures migrated once into a fresh SQLite store."""
    db_path = tmp_path_factory.mktemp("migrated") / "corevital.db"
    with SQLiteStore(db_path) as store:
        result = migrate_directory(fixture_dir, store)
    return db_path, result


def test_the_six_fixtures_migrate_into_sqlite_and_read_back_equal(
    migrated: tuple[Path, MigrationResult], originals: dict[str, Report]
) -> None:
    db_path, result = migrated
    assert result.ok and len(result.imported) == 6 and result.skipped == []
    assert result.summary() == "imported 6, skipped 0, failed 0"
    with SQLiteStore(db_path) as store:
        assert store.count() == 6
        for trace_id, original in originals.items():
            assert store.get(trace_id) == original
        rows = store.list(TraceQuery(limit=None))
    assert {row.migrated_from for row in rows} == {"0.4.0"}
    by_id = {row.trace_id: row for row in rows}
    flan = by_id["8d0bad87-608d-4e87-b74f-0bb74cfa0c77"]
    assert (flan.model_id, flan.risk_score, flan.mid_layer_anomaly_detected) == (
        "google/flan-t5-large",
        1.0,
        True,
    )
    assert flan.prompt_hash == "db877e2575005f86fd6c444de8d76d458cf7d76f9e49a65538786dfdde7e8fa5"


def test_a_second_migration_skips_what_is_there(tmp_path: Path) -> None:
    shutil.copyfile(LEGACY_030, tmp_path / "trace_a.json")
    shutil.copyfile(LEGACY_040, tmp_path / "trace_b.json")
    with SQLiteStore(tmp_path / "corevital.db") as store:
        first = migrate_directory(tmp_path, store)
        again = migrate_directory(tmp_path, store)
        assert store.count() == 2
    assert len(first.imported) == 2
    assert again.imported == [] and again.skipped == first.imported and again.ok


def test_failures_are_reported_per_file_and_the_rest_is_imported(tmp_path: Path) -> None:
    shutil.copyfile(LEGACY_030, tmp_path / "trace_a.json")
    shutil.copyfile(LEGACY_040, tmp_path / "trace_b.json")
    shutil.copyfile(DATA / "legacy_0.2.0_rejected.json", tmp_path / "trace_c.json")
    (tmp_path / "trace_d.json").write_text('{"schema_version": "0.4.0", "trace_id"', encoding="utf-8")
    (tmp_path / "notes.json").write_text("not a trace", encoding="utf-8")
    (tmp_path / "trace_dir.json").mkdir()
    store = MemorySink()
    result = migrate_directory(tmp_path, store)
    assert result.imported == [_trace_id(LEGACY_030), _trace_id(LEGACY_040)]
    assert [Path(failure.source).name for failure in result.failed] == ["trace_c.json", "trace_d.json"]
    assert "unsupported report schema_version '0.2.0'" in result.failed[0].reason
    assert result.failed[1].reason.startswith("invalid report JSON")
    assert not result.ok and result.summary() == "imported 2, skipped 0, failed 2"
    stored = store.get(_trace_id(LEGACY_030))
    assert stored is not None and report_to_json(stored) == report_to_json(load_report(LEGACY_030))


def test_migrating_from_something_that_is_not_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is not a directory"):
        migrate_directory(tmp_path / "missing", MemorySink())


def _original_db(path: Path, ddl: str = ORIGINAL_DDL) -> None:
    conn = sqlite3.connect(path)
    conn.execute(ddl)
    conn.commit()
    conn.close()


def _insert(path: Path, trace_id: str, report_json: str | None, report_blob: bytes | None) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO reports VALUES (?, '2026-03-01T04:58:53Z', 'm', '0.4.0', ?, ?, NULL, NULL)",
        (trace_id, report_json, report_blob),
    )
    conn.commit()
    conn.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_original_corevital_database_is_imported_without_loss(tmp_path: Path) -> None:
    source = tmp_path / "original.db"
    _original_db(source)
    small_id, gpt2_id = _trace_id(SMALL_FIXTURE), _trace_id(LEGACY_030)
    _insert(
        source, small_id, None, gzip.compress(SMALL_FIXTURE.read_bytes(), mtime=0)
    )  # the default: gzip blob
    _insert(source, gpt2_id, LEGACY_030.read_text(encoding="utf-8"), None)  # compress=False: JSON text
    _insert(source, "bad-blob", None, b"\x1f\x8b not really gzip")
    _insert(source, "empty-row", None, None)
    _insert(source, "too-old", (DATA / "legacy_0.2.0_rejected.json").read_text(encoding="utf-8"), None)
    before = _digest(source)
    with SQLiteStore(tmp_path / "new.db") as store:
        result = migrate_sqlite(source, store)
        assert sorted(result.imported) == sorted([small_id, gpt2_id])
        assert store.get(small_id) == load_report(SMALL_FIXTURE)
        # the 0.3.0 document holds NaN and Infinity: stored as null, they read back as None
        assert store.get(gpt2_id) == report_from_json(report_to_json(load_report(LEGACY_030)))
    reasons = {failure.source.rsplit("#", 1)[1]: failure.reason for failure in result.failed}
    assert set(reasons) == {"bad-blob", "empty-row", "too-old"}
    assert reasons["bad-blob"].startswith("the stored report is corrupt")
    assert reasons["empty-row"] == "the row holds no report"
    assert "unsupported report schema_version '0.2.0'" in reasons["too-old"]
    assert _digest(source) == before, "the source database is only read"


def test_the_first_original_layout_with_json_text_only_is_imported(tmp_path: Path) -> None:
    source = tmp_path / "original.db"
    _original_db(source, FIRST_ORIGINAL_DDL)
    conn = sqlite3.connect(source)
    conn.execute(
        "INSERT INTO reports VALUES (?, '2026-02-20T19:34:50Z', 'm', '0.4.0', ?)",
        (_trace_id(LEGACY_040), LEGACY_040.read_text(encoding="utf-8")),
    )
    conn.commit()
    conn.close()
    store = MemorySink()
    assert migrate_sqlite(source, store).imported == [_trace_id(LEGACY_040)]
    migrated = store.get(_trace_id(LEGACY_040))
    assert migrated is not None and migrated.extensions.migrated_from == "0.4.0"


def test_a_corevital_database_can_be_merged_into_another_store(tmp_path: Path) -> None:
    report = report_from_json(GOLDEN.read_bytes())
    with SQLiteStore(tmp_path / "one.db") as one:
        one.write(report)
    with SQLiteStore(tmp_path / "two.db") as two:
        result = migrate_path(tmp_path / "one.db", two)
        assert result.imported == [report.trace_id]
        assert two.get(report.trace_id) == report
        assert migrate_path(tmp_path / "one.db", two).skipped == [report.trace_id]


def test_an_empty_database_imports_nothing(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "empty.db").close()
    (tmp_path / "empty.db").write_bytes(b"")
    conn = sqlite3.connect(tmp_path / "empty.db")
    conn.execute("PRAGMA user_version = 0")
    conn.execute("VACUUM")
    conn.close()
    assert migrate_sqlite(tmp_path / "empty.db", MemorySink()).summary() == "imported 0, skipped 0, failed 0"


def test_a_foreign_database_or_file_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE reports (id INTEGER, body TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="no reports table of a known layout"):
        migrate_sqlite(foreign, MemorySink())
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"hello")
    with pytest.raises(StoreError, match="is not an SQLite database"):
        migrate_path(garbage, MemorySink())
    with pytest.raises(StoreError, match="neither a directory nor an SQLite database file"):
        migrate_path(tmp_path / "missing.db", MemorySink())


def test_migrate_path_reads_directories(tmp_path: Path) -> None:
    shutil.copyfile(LEGACY_040, tmp_path / f"trace_{_trace_id(LEGACY_040)}.json")
    assert migrate_path(tmp_path, MemorySink()).imported == [_trace_id(LEGACY_040)]


def test_a_zlib_body_is_recognised(tmp_path: Path) -> None:
    source = tmp_path / "original.db"
    _original_db(source)
    report = report_from_json(GOLDEN.read_bytes())
    _insert(source, report.trace_id, None, zlib.compress(report_to_json(report).encode("utf-8")))
    store = MemorySink()
    migrate_sqlite(source, store)
    assert store.get(report.trace_id) == report


def test_an_original_database_at_the_default_path_is_replaced_in_place(tmp_path: Path) -> None:
    path = tmp_path / "corevital.db"
    _original_db(path)
    _insert(path, _trace_id(LEGACY_040), LEGACY_040.read_text(encoding="utf-8"), None)
    before = _digest(path)
    done = migrate_original_in_place(path)
    assert done.original_kept_at == tmp_path / "corevital.db.original"
    assert _digest(done.original_kept_at) == before, "the original is renamed, never modified"
    assert done.result.imported == [_trace_id(LEGACY_040)]
    with SQLiteStore(path) as store:
        assert store.get(_trace_id(LEGACY_040)) == load_report(LEGACY_040)
    with pytest.raises(StoreError, match="corevital.db.original exists"):
        migrate_original_in_place(path)


def test_in_place_migration_refuses_other_databases(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "ours.db").close()
    with pytest.raises(StoreError, match="is not a database of the original CoreVital"):
        migrate_original_in_place(tmp_path / "ours.db")
    assert not (tmp_path / "ours.db.original").exists()
