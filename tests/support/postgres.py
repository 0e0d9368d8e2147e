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
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.components import POSTGRES, locate, require, require_module

USER = "corevital"
PASSWORD = "s3cret-pw-for-tests"
START_TIMEOUT_S = 60
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
            self.port = _free_port()
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
