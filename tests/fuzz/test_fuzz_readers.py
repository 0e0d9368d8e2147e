"""Fuzzing every reader of user-supplied data with hypothesis: the report loader, migrate (a
directory of generated files and a generated SQLite database), the config loader and the prompts
and labels readers.

The property is the same for each: whatever the input, the reader returns or raises one of
CoreVital's own errors (:class:`~corevital.errors.CoreVitalError`) with a one-line message; any
other exception fails. Inputs are raw bytes, generated JSON and YAML documents, and mutations of
valid documents (a value replaced anywhere in the golden report, bytes flipped, cut or inserted),
sometimes zlib- or gzip-compressed.

The normal test run tries ``COREVITAL_FUZZ_EXAMPLES`` (200 by default) inputs per reader; ``make
fuzz`` sets it to 100,000. Runs are derandomized (the same inputs every time; with
``COREVITAL_FUZZ_SEED`` set, the inputs of that fixed seed, so that a reader can be fuzzed in shards
side by side) and each test prints how many inputs it tried and how long it took.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from corevital.cli.common import read_prompts_file
from corevital.config import Settings, load_settings
from corevital.errors import CoreVitalError
from corevital.report.encoding import load_report, report_from_json
from corevital.sinks.base import MemorySink
from corevital.sinks.migrate import MigrationResult, migrate_directory, migrate_sqlite
from corevital.sinks.sqlite import SQLiteStore
from corevital.validation.labels import load_labelled
from tests.support.hostile import GOLDEN, store_with_body

EXAMPLES = int(os.environ.get("COREVITAL_FUZZ_EXAMPLES", "200"))
PROGRESS_LOG = os.environ.get("COREVITAL_FUZZ_LOG")
PROGRESS_EVERY = int(os.environ.get("COREVITAL_FUZZ_LOG_EVERY", "5000"))
GOLDEN_TEXT = GOLDEN.read_text(encoding="utf-8")
GOLDEN_DOCUMENT: dict[str, Any] = json.loads(GOLDEN_TEXT)
SETTING_NAMES = sorted(Settings.model_fields)


SEED = os.environ.get("COREVITAL_FUZZ_SEED")  # a fixed seed instead of the derandomized sequence (shards)


def _settings() -> Callable[[Callable[..., None]], Callable[..., None]]:
    chosen = settings(
        max_examples=EXAMPLES,
        derandomize=SEED is None,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    if SEED is None:
        return chosen
    return lambda test: seed(int(SEED))(chosen(test))


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory reused by every input of one test (hypothesis does not reset fixtures)."""
    memory = Path("/dev/shm")  # tmpfs where there is one: 10^5 small files, no disk syncs
    where = str(memory) if memory.is_dir() and os.access(memory, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="corevital-fuzz-", dir=where) as directory:
        yield Path(directory)


class Tally:
    """Counts the inputs a fuzzer tried and the CoreVital errors they gave; prints the totals."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inputs = 0
        self.refused = 0
        self.started = time.perf_counter()

    def call(self, reader: Callable[[], object]) -> None:
        self.inputs += 1
        try:
            reader()
        except CoreVitalError as error:
            self.refused += 1
            assert "\n" not in str(error), f"a multi-line error: {error!r}"
        except BaseException as error:
            self.log(f"UNEXPECTED {type(error).__name__}: {' '.join(str(error).split())[:300]}")
            raise
        if self.inputs % PROGRESS_EVERY == 0:
            self.log("so far")

    def log(self, what: str) -> None:
        """With ``COREVITAL_FUZZ_LOG`` set, append the counts so far (long runs can be followed)."""
        if PROGRESS_LOG:
            seconds = time.perf_counter() - self.started
            with open(PROGRESS_LOG, "a", encoding="utf-8") as handle:
                handle.write(
                    f"{self.name}: {self.inputs} inputs, {self.refused} refused, {seconds:.0f} s: {what}\n"
                )

    def report(self, capsys: pytest.CaptureFixture[str]) -> None:
        seconds = time.perf_counter() - self.started
        self.log("done, 0 other exceptions")
        with capsys.disabled():
            print(
                f"\nfuzz {self.name}: {self.inputs} inputs in {seconds:.1f} s, "
                f"{self.refused} refused with a CoreVital error, 0 other exceptions"
            )
        assert self.inputs >= min(EXAMPLES, 50)


# --- strategies -----------------------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document[:3]):
            found += _paths(value, (*prefix, index))
    return found


GOLDEN_PATHS = _paths(GOLDEN_DOCUMENT)


_DROP = object()


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    """``document`` with the value at ``path`` replaced (dropped for ``_DROP``); unchanged when a
    previous change removed the path."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict) and head in document:
        copy: Any = dict(document)
    elif isinstance(document, list) and isinstance(head, int) and head < len(document):
        copy = list(document)
    else:
        return document
    if not rest and value is _DROP:
        del copy[head]
    else:
        copy[head] = _replaced(copy[head], rest, value)
    return copy


@st.composite
def mutated_reports(draw: st.DrawFn) -> bytes:
    """The golden report with values replaced or dropped, nested deeply, given a huge number, or
    its bytes cut, flipped or extended."""
    kind = draw(st.sampled_from(["replace", "drop", "bytes", "deep", "number"]))
    if kind in ("replace", "drop"):
        document: Any = GOLDEN_DOCUMENT
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(GOLDEN_PATHS[1:]))
            document = _replaced(document, path, _DROP if kind == "drop" else draw(JSON_VALUES))
        return json.dumps(document, allow_nan=True).encode()
    if kind == "deep":
        depth = draw(st.integers(200, 20_000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        return (GOLDEN_TEXT.rstrip()[:-1] + ', "x": ' + opener * depth + "1" + closer * depth + "}").encode()
    if kind == "number":
        digits = draw(st.integers(300, 6_000))
        return GOLDEN_TEXT.replace('"trace_id"', f'"n": {"9" * digits}, "trace_id"', 1).encode()
    data = bytearray(GOLDEN_TEXT.encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["cut", "flip", "insert"]))
        if operation == "cut":
            del data[at : at + draw(st.integers(1, 200))]
        elif operation == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def _compressed(data: bytes, how: str) -> bytes:
    if how == "zlib":
        return zlib.compress(data)
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "truncated-gzip":
        return gzip.compress(data, mtime=0)[: max(1, len(data) // 3)]
    return data


REPORT_BYTES = st.one_of(
    st.binary(max_size=512),
    JSON_VALUES.map(lambda value: json.dumps(value, allow_nan=True).encode()),
    mutated_reports(),
)
COMPRESSION = st.sampled_from(["plain", "zlib", "gzip", "truncated-gzip"])


# --- the report loader ----------------------------------------------------------------------------


def test_fuzz_report_from_json(capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("report_from_json")

    @_settings()
    @given(data=REPORT_BYTES, as_text=st.booleans())
    def run(data: bytes, as_text: bool) -> None:
        text: str | bytes = data.decode("utf-8", "replace") if as_text else data
        tally.call(lambda: report_from_json(text))

    run()
    tally.report(capsys)


def test_fuzz_load_report(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("load_report")
    path = scratch / "report.json"

    @_settings()
    @given(data=REPORT_BYTES, how=COMPRESSION)
    def run(data: bytes, how: str) -> None:
        path.write_bytes(_compressed(data, how))
        tally.call(lambda: load_report(path, limit=1 << 20))

    run()
    tally.report(capsys)


# --- migrate ----------------------------------------------------------------------------------


def test_fuzz_migrate_directory(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("migrate --from-dir")
    counter = iter(range(10**9))

    @_settings()
    @given(files=st.lists(st.tuples(REPORT_BYTES, COMPRESSION), min_size=1, max_size=4))
    def run(files: list[tuple[bytes, str]]) -> None:
        directory = scratch / f"d{next(counter)}"
        directory.mkdir()
        for index, (data, how) in enumerate(files):
            (directory / f"trace_{index}.json").write_bytes(_compressed(data, how))

        def migrate() -> None:
            result = migrate_directory(directory, MemorySink())
            assert isinstance(result, MigrationResult)
            assert len(result.imported) + len(result.skipped) + len(result.failed) == len(files)

        tally.call(migrate)
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()

    run()
    tally.report(capsys)


CELL_VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=64),
    REPORT_BYTES,
    REPORT_BYTES.map(lambda data: data.decode("utf-8", "replace")),
    st.tuples(REPORT_BYTES, COMPRESSION).map(lambda pair: _compressed(*pair)),
)
TABLES = {
    "original": "CREATE TABLE reports (trace_id, created_at_utc, model_id, schema_version, report_json, "
    "report_blob, prompt_hash, risk_score)",
    "first-original": "CREATE TABLE reports (trace_id, created_at_utc, model_id, schema_version, "
    "report_json)",
    "blob-only": "CREATE TABLE reports (trace_id, report_blob)",
}


def test_fuzz_migrate_from_db(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("migrate --from-db")
    counter = iter(range(10**9))
    ours = scratch / "ours.db"
    with SQLiteStore(ours) as store:
        store.write(report_from_json(GOLDEN_TEXT))
    trace_id = GOLDEN_DOCUMENT["trace_id"]

    @_settings()
    @given(
        layout=st.sampled_from([*TABLES, "corevital", "garbage"]),
        rows=st.lists(st.tuples(CELL_VALUES, CELL_VALUES, CELL_VALUES), min_size=1, max_size=3),
    )
    def run(layout: str, rows: list[tuple[Any, Any, Any]]) -> None:
        path = scratch / f"source{next(counter)}.db"
        if layout == "corevital":
            path.write_bytes(ours.read_bytes())
            store_with_body(path, trace_id, 0 if rows[0][2] is None else rows[0][2])  # a NOT NULL column
        elif layout == "garbage":
            header = ours.read_bytes()[:4096]
            path.write_bytes(header + bytes(rows[0][2]) if isinstance(rows[0][2], bytes) else header)
        else:
            conn = sqlite3.connect(path)
            conn.execute(TABLES[layout])
            width = len(conn.execute("SELECT * FROM reports").description)
            for trace, text, blob in rows:
                values: tuple[Any, ...] = (
                    trace,
                    "2026-01-01T00:00:00Z",
                    "m",
                    "0.4.0",
                    text,
                    blob,
                    None,
                    None,
                )
                if layout == "blob-only":
                    values = (trace, blob)
                conn.execute(f"INSERT INTO reports VALUES ({', '.join('?' * width)})", values[:width])
            conn.commit()
            conn.close()
        tally.call(lambda: migrate_sqlite(path, MemorySink()))
        path.unlink()

    run()
    tally.report(capsys)


# --- the config loader ----------------------------------------------------------------------------

YAML_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["auto", "cpu", "sqlite", "full", "summary", "inf", "-1", "1e999", "0x10"])
)
YAML_VALUES = st.recursive(
    YAML_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)
SECTIONS = ["model", "generation", "summaries", "sink", "device", "logging", "capture", "prompt_telemetry"]


@st.composite
def config_texts(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["settings", "original", "text", "bytes", "deep"]))
    if kind == "settings":
        keys = st.sampled_from(SETTING_NAMES) | st.text(max_size=10)
        mapping = draw(st.dictionaries(keys, YAML_VALUES, max_size=5))
        return yaml.safe_dump(mapping).encode()
    if kind == "original":
        keys = st.sampled_from(["hf_id", "max_new_tokens", "temperature", "seed", "requested", "type"])
        mapping = draw(
            st.dictionaries(st.sampled_from(SECTIONS), st.dictionaries(keys, YAML_VALUES), max_size=4)
        )
        return yaml.safe_dump(mapping).encode()
    if kind == "deep":
        depth = draw(st.integers(50, 20_000))
        return ("thresholds: " + "[" * depth + "]" * depth).encode()
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    return draw(st.binary(max_size=200))


def test_fuzz_config_loader(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("config file")
    path = scratch / "config.yaml"

    @_settings()
    @given(data=config_texts())
    def run(data: bytes) -> None:
        path.write_bytes(data)
        tally.call(lambda: load_settings(config_file=path, environ={}))

    run()
    tally.report(capsys)


# --- the prompts and labels readers ---------------------------------------------------------------

LABEL_RECORDS = st.fixed_dictionaries(
    {},
    optional={
        "id": YAML_SCALARS,
        "prompt": YAML_SCALARS,
        "answer": YAML_SCALARS,
        "split": st.sampled_from(["train", "test", None, 3]),
        "match": st.sampled_from(["exact", "contains", "numeric", "x"]),
        "messages": YAML_VALUES,
    },
)


@st.composite
def line_files(draw: st.DrawFn, records: st.SearchStrategy[Any]) -> bytes:
    """A text file of lines: JSON records, plain text, deep or huge JSON, or raw bytes."""
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["record", "text", "deep", "bytes"]))
        if kind == "record":
            lines.append(json.dumps(draw(records), allow_nan=True).encode())
        elif kind == "text":
            lines.append(draw(st.text(max_size=60)).encode("utf-8", "surrogatepass"))
        elif kind == "deep":
            lines.append(b'{"prompt": ' + b"[" * draw(st.integers(100, 5000)) + b"}")
        else:
            lines.append(draw(st.binary(max_size=60)))
    return b"\n".join(lines)


def test_fuzz_prompts_file(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("prompts file")
    path = scratch / "prompts.txt"
    records = st.fixed_dictionaries({}, optional={"prompt": YAML_SCALARS, "id": YAML_SCALARS})

    @_settings()
    @given(data=line_files(records))
    def run(data: bytes) -> None:
        path.write_bytes(data)
        tally.call(lambda: read_prompts_file(str(path)))

    run()
    tally.report(capsys)


def test_fuzz_labels_file(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("labels file")
    path = scratch / "labels.jsonl"

    @_settings()
    @given(data=line_files(LABEL_RECORDS), split=st.sampled_from([None, "test"]))
    def run(data: bytes, split: str | None) -> None:
        path.write_bytes(data)
        tally.call(lambda: load_labelled(path, split=split))

    run()
    tally.report(capsys)
