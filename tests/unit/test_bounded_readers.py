"""Readers bounded against hostile data (issue 17): bombs, deep JSON, huge numbers, non-blob cells,
hostile files in an import, read-only and WAL databases, text files that are not UTF-8 text."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from corevital.cli.common import read_prompts_file
from corevital.config import read_config_file
from corevital.errors import ConfigError, InputError, ReportError, StoreError
from corevital.report.encoding import load_report, report_from_json, report_to_json
from corevital.report.limits import MAX_JSON_DEPTH, check_json_text, inflate, stored_bytes
from corevital.report.rag import read_rag_context
from corevital.report.schema import Report
from corevital.sinks.migrate import migrate_directory, migrate_into, migrate_sqlite
from corevital.sinks.sqlite import SQLiteStore
from corevital.validation.labels import load_labelled
from tests.support.hostile import (
    GOLDEN,
    deep_json,
    gzip_bomb,
    huge_integer_json,
    run_as_nobody,
    store_with_body,
    zlib_bomb,
)
from tests.support.original_store import ORIGINAL_DDL

MIB = 1 << 20


@pytest.fixture(scope="module")
def report() -> Report:
    return report_from_json(GOLDEN.read_bytes())


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


# --- decompression ------------------------------------------------------------------------------


def test_a_zlib_bomb_is_refused_at_the_limit() -> None:
    with pytest.raises(ReportError, match=r"^the report inflates beyond 1 MB; refused$"):
        inflate(zlib_bomb(8), "the report", limit=MIB)


def test_a_gzip_bomb_is_refused_at_the_limit() -> None:
    with pytest.raises(ReportError, match="inflates beyond 1 MB; refused"):
        inflate(gzip_bomb(8), "the report", limit=MIB)


def test_inflate_reads_zlib_gzip_members_and_plain_bytes() -> None:
    text = b'{"a": 1}' * 1000
    assert inflate(zlib.compress(text), "r") == text
    assert inflate(gzip.compress(text) + gzip.compress(text), "r") == text * 2
    assert inflate(text, "r") == text
    assert inflate(zlib_bomb(3), "r") == bytes(3 * MIB)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (zlib.compress(b"x" * 5000)[:-20], "is truncated"),
        (b"\x78\x9c\xff\xff\xff", "is corrupt"),
        (gzip.compress(b"{}") + b"garbage", "has trailing garbage"),
    ],
)
def test_a_corrupt_or_truncated_stream_is_a_one_line_error(data: bytes, problem: str) -> None:
    with pytest.raises(ReportError, match=problem) as caught:
        inflate(data, "the report")
    _one_line(caught.value)


def test_an_integer_where_a_blob_is_expected_is_refused_without_allocating() -> None:
    with pytest.raises(ReportError, match="holds a int value where a stored report is expected"):
        stored_bytes(10**13, "the report_blob cell")


# --- JSON -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 3_000, 100_000])
def test_deep_json_is_a_report_error_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(ReportError, match=f"nested deeper than {MAX_JSON_DEPTH} levels") as caught:
        report_from_json(deep_json(depth))
    _one_line(caught.value)


def test_json_at_the_depth_limit_is_parsed() -> None:
    check_json_text("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, "x")
    check_json_text('"' + "[" * 10_000 + '"', "x")  # brackets inside a string do not count


def test_a_5000_digit_integer_is_a_report_error_not_a_value_error() -> None:
    with pytest.raises(ReportError, match="a number has more than 4300 digits") as caught:
        report_from_json(huge_integer_json(5_000))
    _one_line(caught.value)


def _fastest_check(text: str | bytes) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        check_json_text(text, "x")
        times.append(time.perf_counter() - started)
    return min(times)


def test_the_number_check_is_linear_on_numbers_just_under_the_bound() -> None:
    """Found by profiling the fuzzer: ``[0-9]{4301,}`` rescanned a run of digits from each of its
    digits, so 100 numbers of 4,300 digits (430 kB) took 11 s to check. The scan starts only where a
    run starts: as fast as the same size of short numbers, and the bound is unchanged."""
    long_numbers = "[" + ",".join(["9" * 4300] * 200) + "]"
    short_numbers = "[" + ",".join(["0.12345678901234"] * (len(long_numbers) // 17)) + "]"
    for text in (long_numbers, long_numbers.encode()):
        assert _fastest_check(text) < 10 * _fastest_check(short_numbers) + 0.05
    check_json_text("[" + "1" * 4300 + "]", "x")
    check_json_text('["' + "1" * 5000 + '"]', "x")  # digits inside a string are text
    for text in ("[" + "1" * 4301 + "]", "[a" + "1" * 4301 + "]", "-" + "1" * 4301, "1" * 9000):
        with pytest.raises(ReportError, match="a number has more than 4300 digits"):
            check_json_text(text, "x")


@pytest.mark.parametrize("text", ["[1, 2]", '"text"', "42", "null"])
def test_a_report_json_that_is_not_an_object_is_a_report_error(text: str) -> None:
    with pytest.raises(ReportError, match="not a CoreVital report: the JSON document is a"):
        report_from_json(text)


def test_load_report_reads_gzip_and_refuses_bombs_deep_json_and_huge_numbers(
    tmp_path: Path, report: Report
) -> None:
    packed = tmp_path / "report.json.gz"
    packed.write_bytes(gzip.compress(GOLDEN.read_bytes()))
    assert load_report(packed) == report
    for name, data, problem in (
        ("bomb.json", gzip_bomb(8), "inflates beyond 1 MB"),
        ("deep.json", deep_json(100_000).encode(), "nested deeper than 256 levels"),
        ("huge.json", huge_integer_json(5_000).encode(), "more than 4300 digits"),
        ("big.json", b" " * (MIB + 1), "is larger than 1 MB"),
    ):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ReportError, match=problem) as caught:
            load_report(tmp_path / name, limit=MIB)
        assert _one_line(caught.value).startswith(str(tmp_path / name))


# --- SQLiteStore.get ----------------------------------------------------------------------------


@pytest.fixture
def stored(tmp_path: Path, report: Report) -> Iterator[tuple[Path, str]]:
    path = tmp_path / "corevital.db"
    with SQLiteStore(path) as store:
        store.write(report)
    yield path, report.trace_id


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (zlib_bomb(8), "inflates beyond 1 MB; refused"),
        (10**13, "holds a int value where a stored report is expected"),
        (zlib.compress(deep_json(100_000).encode()), "nested deeper than 256 levels"),
        (zlib.compress(huge_integer_json(5_000).encode()), "more than 4300 digits"),
        (b"not zlib at all", "is corrupt (not zlib data)"),
        (zlib.compress(b"\xff\xfe{}"), "is corrupt"),
    ],
    ids=["zlib-bomb", "integer-body", "deep-json", "5000-digit-integer", "not-zlib", "not-utf8"],
)
def test_sqlite_get_refuses_a_hostile_body_with_a_one_line_report_error(
    stored: tuple[Path, str], body: object, problem: str
) -> None:
    path, trace_id = stored
    store_with_body(path, trace_id, body)
    with SQLiteStore(path, read_only=True, max_report_bytes=MIB) as store:
        with pytest.raises(ReportError, match=re.escape(problem)) as caught:
            store.get(trace_id)
        assert _one_line(caught.value).startswith(f"{path}#{trace_id}")
        if problem.startswith(("inflates", "holds")):
            with pytest.raises(ReportError, match=problem):
                store.get_json(trace_id)


# --- migrate --------------------------------------------------------------------------------------


def _hostile_files(directory: Path) -> None:
    (directory / "trace_0_deep.json").write_text(deep_json(100_000), encoding="utf-8")
    (directory / "trace_1_huge.json").write_text(huge_integer_json(5_000), encoding="utf-8")
    (directory / "trace_2_bomb.json").write_bytes(gzip_bomb(300))
    (directory / "trace_3_latin1.json").write_bytes(b'{"schema_version": "0.5.0", "x": "\xe9"}')
    (directory / "trace_4_list.json").write_text("[1, 2, 3]", encoding="utf-8")
    (directory / "trace_5_binary.json").write_bytes(os.urandom(4096))


def test_migrate_goes_on_after_every_hostile_file(tmp_path: Path, report: Report) -> None:
    source = tmp_path / "source"
    source.mkdir()
    _hostile_files(source)
    shutil.copyfile(GOLDEN, source / "trace_9_good.json")
    with SQLiteStore(tmp_path / "target.db") as store:
        result = migrate_directory(source, store)
        assert result.imported == [report.trace_id] and store.get(report.trace_id) == report
    reasons = {Path(failure.source).name: failure.reason for failure in result.failed}
    assert sorted(reasons) == [
        f"trace_{n}"
        for n in (
            "0_deep.json",
            "1_huge.json",
            "2_bomb.json",
            "3_latin1.json",
            "4_list.json",
            "5_binary.json",
        )
    ]
    assert "nested deeper than 256" in reasons["trace_0_deep.json"]
    assert "more than 4300 digits" in reasons["trace_1_huge.json"]
    assert "inflates beyond 256 MB; refused" in reasons["trace_2_bomb.json"]
    assert "not UTF-8" in reasons["trace_3_latin1.json"]
    assert "the JSON document is a list" in reasons["trace_4_list.json"]
    assert all("\n" not in reason for reason in reasons.values())


def test_migrate_from_db_goes_on_after_every_hostile_row(tmp_path: Path, report: Report) -> None:
    source = tmp_path / "original.db"
    conn = sqlite3.connect(source)
    conn.execute(ORIGINAL_DDL)
    rows = [
        ("a-bomb", None, zlib_bomb(300)),
        ("b-gzip-bomb", None, gzip_bomb(300)),
        ("c-integer", None, 10**13),
        ("d-deep", deep_json(100_000), None),
        ("e-huge", None, gzip.compress(huge_integer_json(5_000).encode())),
        ("f-real", None, 1.5),
        ("g-good", None, gzip.compress(GOLDEN.read_bytes())),
    ]
    conn.executemany("INSERT INTO reports VALUES (?, 't', 'm', '0.5.0', ?, ?, NULL, NULL)", rows)
    conn.commit()
    conn.close()
    with SQLiteStore(tmp_path / "target.db") as store:
        result = migrate_sqlite(source, store)
    assert result.imported == [report.trace_id]
    reasons = {failure.source.rsplit("#", 1)[1]: failure.reason for failure in result.failed}
    assert (
        "inflates beyond 256 MB" in reasons["a-bomb"] and "inflates beyond 256 MB" in reasons["b-gzip-bomb"]
    )
    assert "holds a int value" in reasons["c-integer"] and "holds a float value" in reasons["f-real"]
    assert "nested deeper" in reasons["d-deep"] and "4300 digits" in reasons["e-huge"]


def test_a_failed_migrate_leaves_no_empty_target_database(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    _hostile_files(source)
    target = tmp_path / "new" / "corevital.db"
    result = migrate_into(source, target)
    assert not result.ok and result.imported == []
    assert sorted(p.name for p in target.parent.iterdir()) == []
    with pytest.raises(StoreError, match="neither a directory nor an SQLite database"):
        migrate_into(tmp_path / "missing.db", target)
    assert not target.exists()


def test_a_migrate_into_an_existing_database_keeps_it(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    _hostile_files(source)
    target = tmp_path / "corevital.db"
    SQLiteStore(target).close()
    migrate_into(source, target)
    assert target.exists()


# --- read-only and WAL databases ------------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory under /tmp that an unprivileged user can reach (pytest's tmp_path is private)."""
    directory = Path(tempfile.mkdtemp(prefix="corevital-ro-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        for path in directory.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(directory)


def _needs_an_unprivileged_user() -> None:
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and there is no user 'nobody' to drop to")


def test_a_wal_database_in_a_directory_the_reader_cannot_write_is_readable(
    shared_dir: Path, report: Report
) -> None:
    _needs_an_unprivileged_user()
    locked = shared_dir / "locked"
    locked.mkdir()
    path = locked / "corevital.db"
    with SQLiteStore(path) as store:
        store.write(report)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sorted(p.name for p in locked.iterdir()) == ["corevital.db"]  # closed: no -wal, no -shm
    path.chmod(0o644)
    locked.chmod(0o555)

    def read() -> str:
        with SQLiteStore(path, read_only=True, readers=2) as store:
            got = store.get(report.trace_id)
            return f"{store.count()} {got == report}"

    assert run_as_nobody(read) == "1 True"
    assert sorted(p.name for p in locked.iterdir()) == ["corevital.db"]  # no -shm was made


def test_a_leftover_shm_of_a_read_only_database_does_not_keep_writes_failing(
    shared_dir: Path, report: Report
) -> None:
    _needs_an_unprivileged_user()
    directory = shared_dir / "db"
    directory.mkdir()
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    path = directory / "corevital.db"

    def scenario() -> str:
        def variant(number: int) -> Report:
            return report.model_copy(update={"trace_id": f"{number:08x}-0000-4000-8000-000000000000"})

        SQLiteStore(path).close()
        path.chmod(0o444)
        store = SQLiteStore(path)  # opens read-only: the file is; -wal and -shm are made read-only too
        steps = []
        try:
            store.write(variant(1))
        except StoreError as error:
            steps.append(f"refused: {error}")
        steps.append(" ".join(sorted(oct(p.stat().st_mode & 0o777) for p in directory.iterdir())))
        path.chmod(0o644)
        store.write(variant(2))  # the same store: reopened once
        store.close()
        with SQLiteStore(path) as again:  # a new store: the leftover sidecars are writable again
            again.write(variant(3))
            steps.append(str(again.count()))
        return " | ".join(steps)

    steps = run_as_nobody(scenario).split(" | ")
    assert steps[0] == f"refused: cannot write to {path}: the database file is read-only"
    assert steps[1] == "0o444 0o444 0o444"
    assert steps[2] == "2"


def test_a_too_long_out_path_is_a_one_line_store_error(tmp_path: Path) -> None:
    for path in (tmp_path / ("a" * 300), tmp_path / "/".join(["b" * 200] * 30)):
        with pytest.raises(StoreError, match="File name too long") as caught:
            SQLiteStore.in_directory(path)
        _one_line(caught.value)
    with pytest.raises(StoreError, match="File name too long"):
        SQLiteStore(tmp_path / ("c" * 300), read_only=True)


# --- text files ---------------------------------------------------------------------------------


def test_a_prompts_file_that_is_not_utf8_names_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"first prompt\nsecond \xff prompt\n")
    with pytest.raises(InputError, match=r"is not UTF-8 text: byte 0xff at offset 20") as caught:
        read_prompts_file(str(path))
    assert _one_line(caught.value).startswith(f"prompts file {path}")


def test_a_binary_prompts_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "prompts.bin"
    path.write_bytes(b"ok\n\x00\x01\x02")
    with pytest.raises(InputError, match=r"is not text: a NUL byte at offset 3"):
        read_prompts_file(str(path))
    path.write_bytes(b'{"prompt": ' + b"[" * 5000 + b"}\n")
    with pytest.raises(InputError, match=r"prompts.bin:1: JSON nested deeper"):
        read_prompts_file(str(path))


def test_a_labels_file_that_is_not_utf8_names_the_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b'{"id": "a", "prompt": "p", "answer": "x"}\n{"id": "b", "prompt": "\xc3\x28"}\n')
    with pytest.raises(InputError, match=r"labels.jsonl:2 is not UTF-8 text: byte 0xc3 at offset 65"):
        load_labelled(path)
    path.write_bytes(b'{"id": "a", "prompt": "p", "answer": ' + b"9" * 5000 + b"}\n")
    with pytest.raises(InputError, match=r"labels.jsonl:1: a number has more than 4300 digits"):
        load_labelled(path)


def test_a_rag_context_file_that_is_binary_or_deep_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "rag.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InputError, match=r"RAG context file .* is not UTF-8 text: byte 0x89 at offset 0"):
        read_rag_context(path)
    path.write_text('{"retrieval_metadata": ' + "[" * 10_000 + "]" * 10_000 + "}", encoding="utf-8")
    with pytest.raises(InputError, match=r"RAG context file .* JSON nested deeper"):
        read_rag_context(path)


def test_a_config_file_that_is_not_utf8_deep_or_with_a_huge_number_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    for data, problem in (
        (b"seed: 1\n\xff\n", r"is not UTF-8 text: byte 0xff at offset 8"),
        (b"seed: 1\x00", r"is not text: a NUL byte at offset 7"),
        (b"thresholds: " + b"[" * 5000 + b"]" * 5000, "nested deeper than 64 levels"),
        (b"a:\n" + b"".join(b" " * n + b"- \n" for n in range(1, 2000, 2)), "nested too deeply"),
        (b"seed: " + b"9" * 5000, "is not valid YAML: Exceeds the limit"),
    ):
        path.write_bytes(data)
        with pytest.raises(ConfigError, match=problem) as caught:
            read_config_file(path)
        _one_line(caught.value)


def test_report_json_round_trip_is_unchanged_by_the_bounds(report: Report) -> None:
    assert report_from_json(report_to_json(report)) == report
    assert report_from_json(report_to_json(report).encode()) == report


def test_a_report_key_with_a_line_break_gives_a_one_line_error() -> None:
    """Found by fuzzing load_report: the validation error named the key, line break and all."""
    document = json.loads(GOLDEN.read_text(encoding="utf-8"))
    document["timeline"][0]["layers"][0]["hidden_summary"] = {"\n": None}
    with pytest.raises(ReportError, match=r"hidden_summary\.\\n: Extra inputs are not permitted") as caught:
        report_from_json(json.dumps(document))
    _one_line(caught.value)


def test_config_keys_with_a_line_break_or_of_mixed_types_give_a_one_line_error(tmp_path: Path) -> None:
    """Found by fuzzing the config loader."""
    path = tmp_path / "config.yaml"
    for data, shown in ((b'"a\\nb": 1\n', r"'a\\nb'"), (b"1: x\nzz: y\n", "1, zz")):
        path.write_bytes(data)
        with pytest.raises(ConfigError, match=f"unknown setting\\(s\\) in .*: {shown}") as caught:
            read_config_file(path)
        _one_line(caught.value)
