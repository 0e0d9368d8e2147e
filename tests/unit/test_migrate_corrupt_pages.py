"""``corevital migrate --from-db`` of a database with corrupt pages: every readable report is
imported, every unreadable one is named (by its trace id where the trace-id index still tells it,
else by the range of rowids the damage hides), the exit code is 1 (docs/cli.md) and the target
passes ``PRAGMA integrity_check``.

The damage is real: pages of a real SQLite file are overwritten with seeded random bytes, chosen
from SQLite's own page map (``dbstat``), and the rows a damaged table page held are read from the
page's cells before it is overwritten, so the expected import is known exactly."""

from __future__ import annotations

import gzip
import json
import random
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from corevital.cli import main
from corevital.errors import StoreError
from corevital.report.encoding import report_from_json
from corevital.sinks.base import MemorySink, TraceQuery
from corevital.sinks.migrate import migrate_sqlite
from corevital.sinks.sqlite import SQLiteStore
from tests.support.hostile import GOLDEN
from tests.support.original_store import ORIGINAL_DDL

REPORTS = 40


def _documents() -> list[dict[str, Any]]:
    """``REPORTS`` copies of the golden report with distinct trace ids and some distinct content."""
    rng = random.Random(17)
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    documents = []
    for number in range(REPORTS):
        document = json.loads(json.dumps(golden))
        document["trace_id"] = str(uuid.UUID(int=rng.getrandbits(128)))
        document["created_at_utc"] = f"2026-01-01T00:00:{number:02d}Z"
        document["prompt"]["text"] = rng.randbytes(600).hex()  # ~2 kB stored, incompressible
        documents.append(document)
    return documents


def _original_database(path: Path, documents: list[dict[str, Any]]) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(ORIGINAL_DDL)
        for document in documents:
            blob = gzip.compress(json.dumps(document).encode(), mtime=0)
            conn.execute(
                "INSERT INTO reports VALUES (?, ?, 'm', '0.5.0', NULL, ?, NULL, NULL)",
                (document["trace_id"], document["created_at_utc"], blob),
            )
        conn.commit()


def _corevital_database(path: Path, documents: list[dict[str, Any]]) -> None:
    with SQLiteStore(path) as store:
        for document in documents:
            store.write(report_from_json(json.dumps(document)))
    with closing(sqlite3.connect(path)) as conn:  # everything in the main file, no -wal beside it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")


def _pages(path: Path, name: str, page_type: str) -> list[int]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = ? ORDER BY pageno", (name, page_type)
        )
        return [pageno for (pageno,) in rows]


def _page_size(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        size: int = conn.execute("PRAGMA page_size").fetchone()[0]
        return size


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """SQLite's variable-length integer at ``at``: its value and the offset after it."""
    value = 0
    for index in range(9):
        byte = data[at + index]
        if index == 8:
            return (value << 8) | byte, at + 9
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, at + index + 1
    raise AssertionError("unreachable")


def _rowids_on_leaf(path: Path, pageno: int) -> list[int]:
    """The rowids of the cells of a table leaf page (SQLite's file format, section 1.6)."""
    size = _page_size(path)
    page = path.read_bytes()[(pageno - 1) * size : pageno * size]
    header = 100 if pageno == 1 else 0
    assert page[header] == 0x0D, "not a table leaf page"
    cells = int.from_bytes(page[header + 3 : header + 5], "big")
    rowids = []
    for cell in range(cells):
        pointer = int.from_bytes(page[header + 8 + 2 * cell : header + 10 + 2 * cell], "big")
        _, after_size = _varint(page, pointer)
        rowids.append(_varint(page, after_size)[0])
    return rowids


def _trace_ids_by_rowid(path: Path) -> dict[int, str]:
    with closing(sqlite3.connect(path)) as conn:
        return {rowid: trace_id for rowid, trace_id in conn.execute("SELECT rowid, trace_id FROM reports")}


def _damage(path: Path, pages: list[int], seed: int) -> None:
    """Overwrite ``pages`` with seeded random bytes (none starts like a b-tree page)."""
    size = _page_size(path)
    rng = random.Random(seed)
    with path.open("r+b") as handle:
        for pageno in pages:
            junk = bytearray(rng.randbytes(size))
            junk[0] = 0x77  # not 2, 5, 10 or 13: SQLite finds the page corrupt as soon as it reads it
            handle.seek((pageno - 1) * size)
            handle.write(junk)


def _stored_ids(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with SQLiteStore(path) as store:
        return {row.trace_id for row in store.list(TraceQuery(limit=1000))}


@pytest.mark.parametrize("layout", ["original", "corevital"])
def test_migrate_from_db_imports_every_report_around_corrupt_table_pages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str
) -> None:
    documents = _documents()
    source = tmp_path / "source.db"
    (_original_database if layout == "original" else _corevital_database)(source, documents)
    leaves = _pages(source, "reports", "leaf")
    assert len(leaves) >= 8
    damaged = [leaves[1], leaves[len(leaves) // 2]]
    by_rowid = _trace_ids_by_rowid(source)
    lost = {by_rowid[rowid] for pageno in damaged for rowid in _rowids_on_leaf(source, pageno)}
    assert 2 <= len(lost) <= REPORTS // 4
    _damage(source, damaged, seed=1)
    with closing(sqlite3.connect(source)) as conn, pytest.raises(sqlite3.DatabaseError, match="malformed"):
        conn.execute("SELECT count(*), sum(length(trace_id)) FROM reports NOT INDEXED").fetchone()

    target = tmp_path / "target.db"
    assert main(["migrate", "--from-db", str(source), "--to-db", str(target)]) == 1
    out, err = capsys.readouterr()
    expected = {document["trace_id"] for document in documents} - lost
    assert out.strip() == f"imported {len(expected)}, skipped 0, failed {len(lost)}"
    failed_lines = [line for line in err.splitlines() if line.startswith("  failed: ")]
    assert len(failed_lines) == len(lost)
    assert {line.split("#", 1)[1].split(":", 1)[0] for line in failed_lines} == lost
    assert all("malformed" in line for line in failed_lines)
    assert _stored_ids(target) == expected
    with SQLiteStore(target) as store:  # the imported reports are whole
        golden = {document["trace_id"]: document for document in documents}
        for trace_id in sorted(expected)[:5]:
            stored = store.get(trace_id)
            assert stored is not None and stored.prompt.text == golden[trace_id]["prompt"]["text"]

    # run again into the same target: what is there is skipped, the same reports fail, nothing doubles
    assert main(["migrate", "--from-db", str(source), "--to-db", str(target)]) == 1
    assert capsys.readouterr().out.strip() == f"imported 0, skipped {len(expected)}, failed {len(lost)}"
    assert _stored_ids(target) == expected


def test_with_the_trace_id_index_damaged_too_the_hidden_rowids_are_named(tmp_path: Path) -> None:
    documents = _documents()
    source = tmp_path / "source.db"
    _original_database(source, documents)
    leaves = _pages(source, "reports", "leaf")
    index_pages = _pages(source, "sqlite_autoindex_reports_1", "leaf") or _pages(
        source, "sqlite_autoindex_reports_1", "internal"
    )
    damaged = leaves[3]
    lost_rowids = _rowids_on_leaf(source, damaged)
    by_rowid = _trace_ids_by_rowid(source)
    _damage(source, [damaged, index_pages[0]], seed=2)

    result = migrate_sqlite(source, sink := MemorySink())
    expected = {document["trace_id"] for document in documents} - {by_rowid[rowid] for rowid in lost_rowids}
    assert set(result.imported) == expected
    assert {row.trace_id for row in sink.list(TraceQuery(limit=1000))} == expected
    assert len(result.failed) == 1  # one damaged table page, its rows unknown without the index
    (failure,) = result.failed
    low, high = min(lost_rowids), max(lost_rowids)
    assert failure.source == f"{source}#" + (f"rowid {low}" if low == high else f"rowids {low} to {high}")
    assert "damaged page" in failure.reason


def test_a_database_whose_first_page_is_damaged_is_a_store_error_and_leaves_no_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source.db"
    _original_database(source, _documents()[:4])
    data = bytearray(source.read_bytes())
    data[100:4096] = random.Random(3).randbytes(3996)  # the schema's page after the file header
    source.write_bytes(bytes(data))
    target = tmp_path / "target.db"
    assert main(["migrate", "--from-db", str(source), "--to-db", str(target)]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("corevital: error: ")
    assert not target.exists()


def test_a_damaged_schema_whose_text_is_not_utf8_is_a_store_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by fuzzing damaged databases: SQLite's message for a schema it cannot parse quotes the
    damaged text, which Python could not decode (a UnicodeDecodeError, "internal error")."""
    source = tmp_path / "source.db"
    _original_database(source, _documents()[:3])
    data = source.read_bytes()
    assert data.count(b"CREATE TABLE reports") == 1
    source.write_bytes(data.replace(b"CREATE TABLE reports", b"CREATE TABL\xf0 reports"))
    assert main(["migrate", "--from-db", str(source), "--to-db", str(tmp_path / "target.db")]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err and "malformed" in err
    assert not (tmp_path / "target.db").exists()
    for read_only in (True, False):  # the store's own open says the same in one line
        with pytest.raises(StoreError, match="malformed") as caught:
            SQLiteStore(source, read_only=read_only)
        assert "\n" not in str(caught.value)


def test_text_cells_that_are_not_utf8_fail_alone(tmp_path: Path) -> None:
    documents = _documents()[:3]
    source = tmp_path / "source.db"
    _original_database(source, documents[:2])
    bad_json = json.dumps(documents[2]).encode().replace(b'"text": "', b'"text": "\xf0\x28', 1)
    with closing(sqlite3.connect(source)) as conn:
        conn.execute(
            "INSERT INTO reports VALUES "
            "(CAST(? AS TEXT), 't', 'm', '0.5.0', CAST(? AS TEXT), NULL, NULL, NULL)",
            (b"id-\xff", bad_json),
        )
        conn.commit()
    result = migrate_sqlite(source, MemorySink())
    assert set(result.imported) == {document["trace_id"] for document in documents[:2]}
    (failure,) = result.failed
    assert failure.source == f"{source}#id-\udcff" and "not UTF-8 text" in failure.reason
