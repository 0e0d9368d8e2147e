"""Several processes writing to one SQLite store at once (bench/sqlite_writers.py and its test)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_report_small.json"
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class SQLiteWritersResult:
    processes: int
    runs_each: int
    expected: int
    rows: int
    distinct_trace_ids: int
    distinct_seqs: int
    integrity: str
    wall_s: float
    writes_per_s: float

    @property
    def ok(self) -> bool:
        return (
            self.rows == self.distinct_trace_ids == self.distinct_seqs == self.expected
            and self.integrity == "ok"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _write_many(path: str, first: int, count: int, start: Barrier, done: Connection) -> None:
    from corevital.report.encoding import report_from_json
    from corevital.sinks.sqlite import SQLiteStore

    base = report_from_json(GOLDEN.read_bytes())
    store = SQLiteStore(path)
    try:
        start.wait(TIMEOUT_S)
        for number in range(first, first + count):
            store.write(base.model_copy(update={"trace_id": f"{number:08x}-0000-4000-8000-00000000abcd"}))
    finally:
        store.close()
    done.send(count)


def concurrent_sqlite_writes(path: Path, processes: int, runs_each: int) -> SQLiteWritersResult:
    """``processes`` processes write ``runs_each`` reports each into one SQLite file at once."""
    from corevital.sinks.sqlite import SQLiteStore

    SQLiteStore(path).close()  # created (and migrated) once, as `corevital run` would
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes + 1)
    pipes = [context.Pipe(duplex=False) for _ in range(processes)]
    workers = [
        context.Process(target=_write_many, args=(str(path), i * runs_each, runs_each, start, pipes[i][1]))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    start.wait(TIMEOUT_S)
    began = time.perf_counter()
    for receiver, _ in pipes:
        if not receiver.poll(TIMEOUT_S):
            raise AssertionError(f"a writer did not finish within {TIMEOUT_S} s")
        receiver.recv()
    wall_s = time.perf_counter() - began
    for worker in workers:
        worker.join(TIMEOUT_S)
        if worker.exitcode != 0:
            raise AssertionError(f"a writer exited with {worker.exitcode}")
    with sqlite3.connect(path) as conn:
        rows, ids, seqs = conn.execute(
            "SELECT count(*), count(DISTINCT trace_id), count(DISTINCT seq) FROM reports"
        ).fetchone()
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    expected = processes * runs_each
    return SQLiteWritersResult(
        processes=processes,
        runs_each=runs_each,
        expected=expected,
        rows=rows,
        distinct_trace_ids=ids,
        distinct_seqs=seqs,
        integrity=integrity,
        wall_s=round(wall_s, 2),
        writes_per_s=round(expected / wall_s, 1),
    )
