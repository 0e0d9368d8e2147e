"""A real PostgreSQL server for the tests (and the benchmark): Debian's binaries, a temporary cluster.

:class:`PostgresServer` runs ``initdb`` and ``pg_ctl`` from the directory of the ``postgres``
binary (:data:`tests.support.components.POSTGRES`) on a fresh data directory, as a user that is not
root (PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
``postgres`` system user when there is one, else as ``nobody``). It listens on 127.0.0.1 on a free
port, and on a Unix socket in its own directory; the superuser is ``corevital`` with a password
(password authentication over TCP, so that URLs carry one, as they do in real use). Every test gets
an empty database of its own (:meth:`PostgresServer.create_database`).

Fixtures: ``postgres_server`` (one server per test session, stopped at the end) and
``postgres_url`` (the URL of a new, empty database). A test module uses them with::

    pytest_plugins = ("tests.support.postgres",)

Without the PostgreSQL package (or psycopg) the tests skip with a reason locally and fail in CI.

:func:`concurrent_writes` has several processes write to one store at once and checks that no
report is lost or duplicated (``bench/postgres_writers.py`` and a slow test use it).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.components import POSTGRES, locate, require, require_module
from tests.support.ports import free_port

USER = "corevital"
PASSWORD = "s3cret-pw-for-tests"
START_TIMEOUT_S = 60
WRITERS_TIMEOUT_S = 300
_SERVER_USERS = ("postgres", "nobody")


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, started by :meth:`start`, removed by :meth:`stop`."""

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.port = 0
        self.root = Path(tempfile.mkdtemp(prefix="corevital-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log = self.root / "server.log"
        self._uid, self._gid = _server_user()
        self._databases = itertools.count(1)

    @classmethod
    def from_installed(cls, *, durable: bool = False) -> PostgresServer | None:
        """A server of the installed PostgreSQL, or ``None`` when it is not installed.

        ``durable=False`` (tests) turns ``fsync`` and synchronous commits off; ``True`` keeps
        PostgreSQL's defaults, as a benchmark needs.
        """
        postgres = locate(POSTGRES)
        return None if postgres is None else cls(postgres.parent, durable=durable)

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database`` over TCP, with the superuser's password."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        """Initialise the cluster and start the server; returns once it accepts connections."""
        self.socket_dir.mkdir()
        password_file = self.root / "password"
        password_file.write_text(PASSWORD + "\n", encoding="utf-8")
        for path in (self.root, self.socket_dir, password_file):
            os.chown(path, self._uid, self._gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        for attempt in range(5):  # a free port can be taken by someone else before the server binds it
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c max_connections=200"
            )
            if not self.durable:  # tests: nothing needs to survive a crash of the machine
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
                return self
            except RuntimeError:
                if attempt == 4:
                    raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        if self.data.joinpath("postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"test_{os.getpid()}_{next(self._databases)}"
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser in the ``postgres`` database."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.encode("utf-8"))

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin_dir / program), *args],
            user=self._uid,
            group=self._gid,
            cwd=self.root,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}\n{log}")


def _server_user() -> tuple[int, int]:
    """The user and group the server runs as: ourselves, unless we are root."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    for name in _SERVER_USERS:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError(f"running as root and none of the users {', '.join(_SERVER_USERS)} exists")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the test session (skipped locally, failed in CI, when absent)."""
    require(POSTGRES)
    require_module("psycopg", extra="postgres")
    require_module("psycopg_pool", extra="postgres")
    server = PostgresServer.from_installed()
    assert server is not None
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's server."""
    return postgres_server.create_database()


GOLDEN_REPORT = Path(__file__).resolve().parents[1] / "data" / "golden_report_small.json"


@dataclass(frozen=True)
class WritersResult:
    """What :func:`concurrent_writes` did and what the store holds afterwards."""

    processes: int
    runs_each: int
    rewrites_each: int
    wall_s: float
    written: frozenset[str]
    stored: int
    distinct_trace_ids: int
    distinct_seqs: int
    max_seq: int
    followed: tuple[int, ...]
    followed_ids: frozenset[str]

    @property
    def expected(self) -> int:
        return self.processes * self.runs_each

    def problems(self) -> list[str]:
        """Everything that shows a lost, duplicated or misordered report (empty when none)."""
        found: list[str] = []
        if len(self.written) != self.expected:
            found.append(f"{len(self.written)} distinct trace ids written, {self.expected} expected")
        for name, value in (
            ("stored", self.stored),
            ("distinct trace ids", self.distinct_trace_ids),
            ("distinct seqs", self.distinct_seqs),
            ("max seq", self.max_seq),
            ("followed rows", len(self.followed)),
        ):
            if value != self.expected:
                found.append(f"{name}: {value}, {self.expected} expected")
        if list(self.followed) != sorted(set(self.followed)):
            found.append("follow returned rows out of seq order or twice")
        if self.followed_ids != self.written:
            found.append(f"follow missed {len(self.written - self.followed_ids)} reports")
        return found


def store_version(url: str) -> int | None:
    """The schema version the CoreVital store in the database at ``url`` records (None: no store)."""
    import psycopg

    from corevital.sinks.postgres_schema import VERSION_TABLE

    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
        if exists is None or not exists[0]:
            return None
        row = conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
        return None if row is None else int(row[0])


def _write_many(url: str, first: int, runs: int, rewrites: int, start: Any, out: Any) -> None:
    """One writer process: ``runs`` copies of the golden report with new trace ids, and ``rewrites``
    of them written a second time; sends back the trace ids."""
    from corevital.report.encoding import report_from_json
    from corevital.sinks.postgres import PostgresStore

    base = report_from_json(GOLDEN_REPORT.read_bytes())
    reports = [
        base.model_copy(update={"trace_id": str(uuid.UUID(int=(first + number) * 7919 + 1, version=4))})
        for number in range(runs)
    ]
    store = PostgresStore(url)
    try:
        start.wait(WRITERS_TIMEOUT_S)  # every writer connected: all start together
        for report in reports:
            store.write(report)
        for report in reports[:rewrites]:
            store.write(report)  # idempotent: stored once, keeps its seq
    finally:
        store.close()
    out.send([report.trace_id for report in reports])
    out.close()


def concurrent_writes(url: str, processes: int, runs_each: int, rewrites_each: int = 0) -> WritersResult:
    """``processes`` processes write ``runs_each`` reports each to the store at ``url`` at once
    (released together once all are connected), while this process follows the store; then the
    store is counted. The store must be empty."""
    from corevital.sinks.postgres import PostgresStore

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes + 1)
    pipes = [context.Pipe(duplex=False) for _ in range(processes)]
    store = PostgresStore(url)
    try:
        workers = [
            context.Process(
                target=_write_many,
                args=(url, index * runs_each, runs_each, rewrites_each, start, pipes[index][1]),
            )
            for index in range(processes)
        ]
        for worker in workers:
            worker.start()
        followed: list[int] = []
        followed_ids: set[str] = set()
        _, last = store.follow(None)
        start.wait(WRITERS_TIMEOUT_S)  # released with the writers, once each has its store open
        began = time.perf_counter()
        written: set[str] = set()
        pending = {index: pipes[index][0] for index in range(processes)}
        deadline = time.monotonic() + WRITERS_TIMEOUT_S
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"writers did not finish within {WRITERS_TIMEOUT_S} s")
            for index, pipe in list(pending.items()):
                if pipe.poll(0.02):
                    written.update(pipe.recv())
                    del pending[index]
            rows, last = store.follow(last)
            followed += [row.seq for row in rows]
            followed_ids.update(row.trace_id for row in rows)
        wall_s = time.perf_counter() - began
        for worker in workers:
            worker.join(WRITERS_TIMEOUT_S)
            if worker.exitcode != 0:
                raise AssertionError(f"a writer exited with {worker.exitcode}")
        while True:
            rows, last = store.follow(last)
            if not rows:
                break
            followed += [row.seq for row in rows]
            followed_ids.update(row.trace_id for row in rows)
        import psycopg

        with psycopg.connect(url) as conn:
            counts = conn.execute(
                "SELECT count(*), count(DISTINCT trace_id), count(DISTINCT seq), coalesce(max(seq), 0) "
                "FROM corevital_reports"
            ).fetchone()
        assert counts is not None
    finally:
        store.close()
    return WritersResult(
        processes=processes,
        runs_each=runs_each,
        rewrites_each=rewrites_each,
        wall_s=wall_s,
        written=frozenset(written),
        stored=counts[0],
        distinct_trace_ids=counts[1],
        distinct_seqs=counts[2],
        max_seq=counts[3],
        followed=tuple(followed),
        followed_ids=frozenset(followed_ids),
    )
