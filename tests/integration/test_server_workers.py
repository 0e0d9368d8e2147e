"""``corevital serve --workers N``: processes sharing one port, each serving its own read-only store,
opening no other file, and all stopping on one Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.integration.test_server_process import AUDIT_PRELUDE, AUDIT_REQUESTS, open_files
from tests.support.served import copy_store, served_store, start_server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks, reads /proc")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Callable[[str], Path]) -> Path:
    return served_store(tmp_path_factory.mktemp, tiny_model_dir)


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def test_workers_share_the_port_open_only_the_store_and_stop_together(tmp_path: Path, db: Path) -> None:
    copy = copy_store(db, tmp_path / "store")
    store_files = {str(copy.resolve()) + suffix for suffix in ("", "-wal", "-shm")}
    server = start_server(["--db", str(copy), "--workers", "2"], tmp_path, prelude=AUDIT_PRELUDE)
    try:
        server.wait_ready()
        workers = children(server.proc.pid)
        assert len(workers) == 2
        for pid in (server.proc.pid, *workers):  # the audit hook was inherited: record in each
            os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while server.stdout().count("RECORDING") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.stdout().count("RECORDING") == 3
        with httpx.Client(base_url=server.url, timeout=20) as client:  # new connections: both workers
            statuses = [
                client.get(path, headers={"connection": "close"}).status_code for path in AUDIT_REQUESTS * 2
            ]
        assert all(status < 500 for status in statuses) and statuses.count(200) >= 2 * 10
        held = set().union(*(open_files(pid) for pid in workers))
    finally:
        code = server.stop()
    assert code == 0, server.stderr()
    assert all(
        not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        for pid in workers
    )
    audit = [line.split("\t") for line in server.stdout().splitlines() if line.startswith("AUDIT\t")]
    opened = {eval(path) for _, _, path in audit}  # noqa: S307 - repr() of a str, int or None we wrote
    opened_files = {os.path.realpath(path) for path in opened if isinstance(path, str | bytes)}
    assert opened_files <= store_files, sorted(opened_files - store_files)
    outputs = {str(server.out_path.resolve()), str(server.err_path.resolve())}
    assert held <= store_files | outputs, sorted(held - store_files - outputs)
    assert str(copy.resolve()) in held


def test_workers_out_of_range_is_one_error_line(tmp_path: Path, db: Path) -> None:
    server = start_server(["--db", str(db), "--workers", "0"], tmp_path)
    assert server.proc.wait(timeout=30) == 2
    assert "--workers must be between 1 and 16" in server.stderr()
