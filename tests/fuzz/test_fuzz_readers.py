"""Fuzzing every reader of user-supplied data with hypothesis: the report loader, migrate (a
directory of generated files and a generated SQLite database), the config loader and the prompts
and labels readers.

The property is the same for each: whatever the input, the reader returns or raises one of
CoreVital's own errors (:class:`~corevital.errors.CoreVitalError`) with a one-line message; any
other exception fails. Inputs are raw bytes, generated JSON and YAML documents, and mutations of
valid documents (a value replaced anywhere in the golden report, bytes flipped, cut or inserted),
sometimes zlib- or gzip-compressed (:mod:`tests.support.fuzz_inputs`).

Hypothesis draws the seed of each batch of :data:`BATCH` inputs, which are made from that seed
(drawing every value through hypothesis costs more than the readers themselves); each reader is
called in this process on the input's bytes (a file in ``/dev/shm`` where a reader takes a path).
The normal test run tries ``COREVITAL_FUZZ_EXAMPLES`` (200 by default) inputs per reader; ``make
fuzz`` sets it to 100,000. Runs are derandomized (the same inputs every time; with
``COREVITAL_FUZZ_SEED`` set, the inputs of that fixed seed, so that a reader can be fuzzed in shards
side by side) and each test prints how many inputs it tried and how long it took. A failure names
the batch's seed and the input's number in it, and logs the input (``COREVITAL_FUZZ_LOG``).
"""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from corevital.cli.common import read_prompts_file
from corevital.config import Settings, load_settings
from corevital.errors import CoreVitalError
from corevital.report.encoding import load_report, report_from_json
from corevital.sinks.base import MemorySink
from corevital.sinks.migrate import MigrationResult, migrate_directory, migrate_sqlite
from corevital.sinks.sqlite import SQLiteStore
from corevital.validation.labels import load_labelled
from tests.support import fuzz_inputs as make
from tests.support.hostile import store_with_body

EXAMPLES = int(os.environ.get("COREVITAL_FUZZ_EXAMPLES", "200"))
BATCH = 20
"""Inputs made from one seed drawn by hypothesis."""
PROGRESS_LOG = os.environ.get("COREVITAL_FUZZ_LOG")
PROGRESS_EVERY = int(os.environ.get("COREVITAL_FUZZ_LOG_EVERY", "5000"))
SETTING_NAMES = sorted(Settings.model_fields)
SEED = os.environ.get("COREVITAL_FUZZ_SEED")  # a fixed seed instead of the derandomized sequence (shards)


def _settings() -> Callable[[Callable[..., None]], Callable[..., None]]:
    chosen = settings(
        max_examples=math.ceil(EXAMPLES / BATCH),
        derandomize=SEED is None,
        database=None,
        deadline=None,
        print_blob=True,
        phases=[Phase.explicit, Phase.generate],  # a shrunk seed is another batch: keep the failing one
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

    def batch(self, batch_seed: int, test: Callable[[random.Random], None]) -> None:
        """Run ``test`` on each of the :data:`BATCH` inputs made from ``batch_seed`` (never more
        than :data:`EXAMPLES` in all)."""
        rng = random.Random(batch_seed)
        for number in range(min(BATCH, max(EXAMPLES - self.inputs, 1))):
            self.inputs += 1
            try:
                test(rng)
            except CoreVitalError as error:
                self.refused += 1
                assert "\n" not in str(error), (
                    f"input {number} of seed {batch_seed}: a multi-line error: {error!r}"
                )
            except BaseException as error:
                what = f"input {number} of seed {batch_seed}: {type(error).__name__}"
                self.log(f"UNEXPECTED {what}: {' '.join(str(error).split())[:300]}")
                raise AssertionError(f"{what}: {error}") from error
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
        assert self.inputs >= EXAMPLES


SEEDS = st.integers(min_value=0, max_value=2**64 - 1)


# --- the report loader ----------------------------------------------------------------------------


def test_fuzz_report_from_json(capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("report_from_json")

    def one(rng: random.Random) -> None:
        data = make.report_bytes(rng)
        report_from_json(data.decode("utf-8", "replace") if rng.random() < 0.5 else data)

    @_settings()
    @given(batch_seed=SEEDS)
    def run(batch_seed: int) -> None:
        tally.batch(batch_seed, one)

    run()
    tally.report(capsys)


def test_fuzz_load_report(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("load_report")
    path = scratch / "report.json"

    def one(rng: random.Random) -> None:
        path.write_bytes(make.report_file(rng))
        load_report(path, limit=1 << 20)

    @_settings()
    @given(batch_seed=SEEDS)
    def run(batch_seed: int) -> None:
        tally.batch(batch_seed, one)

    run()
    tally.report(capsys)


# --- migrate ----------------------------------------------------------------------------------


def test_fuzz_migrate_directory(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("migrate --from-dir")
    directory = scratch / "traces"
    directory.mkdir()

    def one(rng: random.Random) -> None:
        for path in directory.iterdir():
            path.unlink()
        files = rng.randint(1, 4)
        for index in range(files):
            (directory / f"trace_{index}.json").write_bytes(make.report_file(rng))
        result = migrate_directory(directory, MemorySink())
        assert isinstance(result, MigrationResult)
        assert len(result.imported) + len(result.skipped) + len(result.failed) == files

    @_settings()
    @given(batch_seed=SEEDS)
    def run(batch_seed: int) -> None:
        tally.batch(batch_seed, one)

    run()
    tally.report(capsys)


TABLES = {
    "original": "CREATE TABLE reports (trace_id, created_at_utc, model_id, schema_version, report_json, "
    "report_blob, prompt_hash, risk_score)",
    "first-original": "CREATE TABLE reports (trace_id, created_at_utc, model_id, schema_version, "
    "report_json)",
    "blob-only": "CREATE TABLE reports (trace_id, report_blob)",
}


def _several_reports(path: Path) -> bytes:
    """A CoreVital database of 12 reports over many pages, in one file (no -wal)."""
    with SQLiteStore(path) as store:
        for number in range(12):
            document = dict(make.GOLDEN_DOCUMENT, trace_id=f"trace-{number:02d}")
            store.write(report_from_json(json.dumps(document)))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    return path.read_bytes()


def test_fuzz_migrate_from_db(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("migrate --from-db")
    ours = scratch / "ours.db"
    with SQLiteStore(ours) as store:
        store.write(report_from_json(make.GOLDEN_TEXT))
    ours_bytes = ours.read_bytes()
    trace_id = make.GOLDEN_DOCUMENT["trace_id"]
    path = scratch / "source.db"
    several = _several_reports(scratch / "several.db")

    def one(rng: random.Random) -> None:
        path.unlink(missing_ok=True)
        layout = rng.choice([*TABLES, "corevital", "garbage", "damaged"])
        if layout == "damaged":  # pages of a real database overwritten, cut or flipped
            path.write_bytes(make.damaged_pages(rng, several, page_size=4096))
        elif layout == "corevital":
            path.write_bytes(ours_bytes)
            body = make.cell_value(rng)
            store_with_body(path, trace_id, 0 if body is None else body)  # a NOT NULL column
        elif layout == "garbage":
            path.write_bytes(ours_bytes[:4096] + make.binary(rng, 512))
        else:
            conn = sqlite3.connect(path)
            conn.execute(TABLES[layout])
            width = len(conn.execute("SELECT * FROM reports").description)
            for _ in range(rng.randint(1, 3)):
                trace, text, blob = (make.cell_value(rng) for _ in range(3))
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
        migrate_sqlite(path, MemorySink())

    @_settings()
    @given(batch_seed=SEEDS)
    def run(batch_seed: int) -> None:
        tally.batch(batch_seed, one)

    run()
    tally.report(capsys)


# --- the config loader ----------------------------------------------------------------------------


def test_fuzz_config_loader(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("config file")
    path = scratch / "config.yaml"

    def one(rng: random.Random) -> None:
        path.write_bytes(make.config_file(rng, SETTING_NAMES))
        load_settings(config_file=path, environ={})

    @_settings()
    @given(batch_seed=SEEDS)
    def run(batch_seed: int) -> None:
        tally.batch(batch_seed, one)

    run()
    tally.report(capsys)


# --- the prompts and labels readers ---------------------------------------------------------------


def test_fuzz_prompts_file(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("prompts file")
    path = scratch / "prompts.txt"

    def one(rng: random.Random) -> None:
        path.write_bytes(make.line_file(rng, make.prompt_record))
        read_prompts_file(str(path))

    @_settings()
    @given(batch_seed=SEEDS)
    def run(batch_seed: int) -> None:
        tally.batch(batch_seed, one)

    run()
    tally.report(capsys)


def test_fuzz_labels_file(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("labels file")
    path = scratch / "labels.jsonl"

    def one(rng: random.Random) -> None:
        path.write_bytes(make.line_file(rng, make.label_record))
        load_labelled(path, split=rng.choice([None, "test"]))

    @_settings()
    @given(batch_seed=SEEDS)
    def run(batch_seed: int) -> None:
        tally.batch(batch_seed, one)

    run()
    tally.report(capsys)
