"""``corevital serve`` as a real process on a loopback port: start-up refusal, Ctrl-C, the token
over a socket, the event feed, and the files the server opens while serving (none but its store)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from corevital.sinks.sqlite import SQLiteStore
from tests.support.served import copy_store, free_port, port_is_open, served_store, start_server

TOKEN = "another-s3cret-token-0123456789"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Callable[[str], Path]) -> Path:
    return served_store(tmp_path_factory.mktemp, tiny_model_dir)


def test_non_loopback_without_token_is_refused_before_listening(tmp_path: Path, db: Path) -> None:
    port = free_port()
    server = start_server(["--db", str(db), "--host", "0.0.0.0"], tmp_path, port=port)
    assert server.proc.wait(timeout=60) == 2
    assert server.stdout() == ""
    err = server.stderr().strip()
    assert err.startswith("corevital: error: --host 0.0.0.0 is not a loopback address") and "\n" not in err
    assert not port_is_open(port)


NO_TORCH = "import sys\nsys.modules['torch'] = None\nsys.modules['transformers'] = None\n"


def test_serves_without_torch_then_stops_cleanly_on_ctrl_c(tmp_path: Path, db: Path) -> None:
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    server = start_server(["--db", str(db)], tmp_path, prelude=NO_TORCH)
    try:
        server.wait_ready()
        assert server.stdout().strip() == f"Serving {db} at http://127.0.0.1:{server.port} (read-only)"
        runs = httpx.get(f"{server.url}/api/v1/runs", timeout=10).json()["runs"]
        assert len(runs) == 10
        legacy = httpx.get(f"{server.url}/api/traces", params={"db_path": str(db)}, timeout=10)
        assert legacy.status_code == 200 and len(legacy.json()) == 10
        elsewhere = httpx.get(f"{server.url}/api/traces", params={"db_path": "/etc/passwd"}, timeout=10)
        assert elsewhere.status_code == 400
        follower = httpx.Client(timeout=10)  # an open event stream does not hold the server up
        stream = follower.send(follower.build_request("GET", f"{server.url}/api/v1/events"), stream=True)
        assert stream.status_code == 200
    finally:
        started = time.monotonic()
        code = server.stop()
    assert code == 0
    assert time.monotonic() - started < 5
    stream.close()
    follower.close()
    assert server.stderr() == ""
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # read-only: the store is untouched
    assert not port_is_open(server.port)


def test_a_port_in_use_is_one_error_line(tmp_path: Path, db: Path) -> None:
    first = start_server(["--db", str(db)], tmp_path)
    try:
        first.wait_ready()
        second = start_server(["--db", str(db)], tmp_path, port=first.port)
        assert second.proc.wait(timeout=60) == 2
        assert (
            second.stderr().strip().startswith(f"corevital: error: cannot listen on 127.0.0.1:{first.port}")
        )
    finally:
        first.stop()


def test_token_over_a_real_socket(tmp_path: Path, db: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    server = start_server(["--db", str(db), "--token-file", str(token_file)], tmp_path)
    try:
        server.wait_ready()
        assert httpx.get(f"{server.url}/api/v1/runs", timeout=10).status_code == 401
        wrong = httpx.get(f"{server.url}/api/v1/runs", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401
        good = httpx.get(
            f"{server.url}/api/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert good.status_code == 200
    finally:
        assert server.stop() == 0


def read_events(
    response: httpx.Response,
    found: list[dict[str, Any]],
    stop: threading.Event,
    ready: threading.Event | None = None,
) -> None:
    """Collect the stream's run events; ``ready`` is set at its first line (the feed's start)."""
    event: dict[str, str] = {}
    try:
        for line in response.iter_lines():
            if ready is not None:
                ready.set()
            if stop.is_set():
                return
            if not line:
                if event.get("event") == "run":
                    found.append({"id": event["id"], **json.loads(event["data"])})
                event = {}
                continue
            if not line.startswith(":"):
                name, _, value = line.partition(":")
                event[name] = value.removeprefix(" ")
    except httpx.HTTPError:  # the test closed the stream while this thread read it
        if not stop.is_set():
            raise


def test_event_feed_delivers_runs_as_they_land(tmp_path: Path, db: Path) -> None:
    copy = copy_store(db, tmp_path / "store")
    server = start_server(["--db", str(copy)], tmp_path)
    writer = SQLiteStore(copy)
    try:
        server.wait_ready()
        template = writer.get("7c1c62d1")
        assert template is not None
        found: list[dict[str, Any]] = []
        stop = threading.Event()
        with httpx.stream(
            "GET", f"{server.url}/api/v1/events", timeout=httpx.Timeout(10, read=30)
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            ready = threading.Event()
            reader = threading.Thread(target=read_events, args=(response, found, stop, ready), daemon=True)
            reader.start()
            assert ready.wait(15)  # the feed starts from its first line: earlier runs are not sent
            for number in (1, 2):
                writer.write(template.model_copy(update={"trace_id": f"landed-{number}"}))
            deadline = time.monotonic() + 15
            while len(found) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            stop.set()
        assert [event["trace_id"] for event in found] == ["landed-1", "landed-2"]
        assert [int(event["id"]) for event in found] == [event["seq"] for event in found]
        assert found[0]["model_id"] == template.model.hf_id
        after = found[0]["seq"]
        with httpx.stream("GET", f"{server.url}/api/v1/events", params={"after": after}, timeout=10) as again:
            replay: list[dict[str, Any]] = []
            stop_replay = threading.Event()
            thread = threading.Thread(target=read_events, args=(again, replay, stop_replay), daemon=True)
            thread.start()
            deadline = time.monotonic() + 10
            while not replay and time.monotonic() < deadline:
                time.sleep(0.1)
            stop_replay.set()
        assert [event["trace_id"] for event in replay] == ["landed-2"]
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        writer.close()
        assert server.stop() == 0


AUDIT_PRELUDE = """
import os, signal, sys
_recording = False
_log = os.fdopen(os.dup(1), "w", buffering=1)
_EVENTS = ("open", "sqlite3.connect", "os.listdir", "os.scandir", "os.chdir", "shutil.copyfile")
def _hook(event, args):
    if _recording and event in _EVENTS:
        _log.write("AUDIT\\t" + event + "\\t" + repr(args[0] if args else None) + "\\n")
sys.addaudithook(_hook)
def _start(signum, frame):
    global _recording
    _recording = True
    _log.write("RECORDING\\n")
signal.signal(signal.SIGUSR1, _start)
"""

AUDIT_REQUESTS = [
    "/healthz",
    "/api/v1",
    "/api/v1/runs",
    "/api/v1/runs?limit=2&sort=risk&order=asc&flag=attention_collapse&since=2026-01-01",
    "/api/v1/runs/7c1c62d1",
    "/api/v1/runs/8d0bad87-608d-4e87-b74f-0bb74cfa0c77",
    "/api/v1/runs/f7de7f4d/summary",
    "/api/v1/compare?id=f7de7f4d&id=f28f1386",
    "/api/v1/models",
    "/api/v1/prompts",
    "/api/v1/compare?id=7c1c62d1&id=01aeafe3",
    "/api/v1/openapi.json",
    "/api/v1/export?rows=step&limit=2",
    "/api/v1/export?format=jsonl&limit=2",
    "/api/traces?limit=5&order_asc=true",
    "/api/traces/01aeafe3",
    "/api/reports/f28f1386",
    "/api/traces?db_path=/etc/passwd",
    "/api/reports/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/reports/%2e%2e%2f%2e%2e%2fetc%2fpasswd?db_path=../../etc/shadow",
    "/api/v1/runs/..%2Fcorevital.db-wal",
    "/api/v1/runs/%00",
    "/api/v1/runs?cursor=Li4vLi4vZXRjL3Bhc3N3ZA",
    "/api/v1/runs?since=nonsense",
    "/etc/passwd",
    "/static/../../etc/passwd",
    "/docs",
    "/favicon.ico",
]


def open_files(pid: int) -> set[str]:
    """The files (not sockets, pipes or kernel objects) the process has open now."""
    targets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/") and not target.startswith("/dev/"):
            targets.add(target)
    return targets


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sends SIGUSR1")
def test_serving_opens_no_file_but_the_store(tmp_path: Path, db: Path) -> None:
    copy = copy_store(db, tmp_path / "store")
    store_files = {str(copy.resolve()) + suffix for suffix in ("", "-wal", "-shm")}
    server = start_server(["--db", str(copy)], tmp_path, prelude=AUDIT_PRELUDE)
    writer = SQLiteStore(copy)
    try:
        server.wait_ready()
        server.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while "RECORDING" not in server.stdout() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "RECORDING" in server.stdout()
        with httpx.Client(base_url=server.url, timeout=20) as client:
            statuses = {path: client.get(path).status_code for path in AUDIT_REQUESTS}
            with client.stream("GET", "/api/v1/events", params={"after": 0}) as events:
                lines = events.iter_lines()
                assert any(line.startswith("event: run") for line, _ in zip(lines, range(50), strict=False))
            template = writer.get("7c1c62d1")
            assert template is not None
            landed = {"trace_id": "landed-while-audited", "created_at_utc": "2030-01-01T00:00:00Z"}
            writer.write(template.model_copy(update=landed))
            time.sleep(0.4)
            fresh = client.get("/api/v1/runs", params={"limit": 1}).json()["runs"]
            assert fresh[0]["trace_id"] == "landed-while-audited"
        assert statuses["/api/v1/runs/7c1c62d1"] == 200 and statuses["/api/reports/f28f1386"] == 200
        assert statuses["/api/traces?db_path=/etc/passwd"] == 400
        assert all(status < 500 for status in statuses.values()), statuses
        held = open_files(server.proc.pid)
    finally:
        writer.close()
        assert server.stop() == 0
    audit = [line.split("\t") for line in server.stdout().splitlines() if line.startswith("AUDIT\t")]
    opened = {eval(path) for _, _, path in audit}  # noqa: S307 - repr() of a str, int or None we wrote
    opened_files = {os.path.realpath(path) for path in opened if isinstance(path, str | bytes)}
    assert opened_files <= store_files, sorted(opened_files - store_files)
    assert {event for event, _, _ in audit} <= {"open", "sqlite3.connect"}
    outputs = {str(server.out_path.resolve()), str(server.err_path.resolve())}  # its stdout and stderr
    assert held <= store_files | outputs, sorted(held - store_files - outputs)
    assert str(copy.resolve()) in held


def test_event_stream_slots_come_back_when_clients_leave(tmp_path: Path, db: Path) -> None:
    from corevital.server.config import Limits

    bound = Limits().max_event_clients
    server = start_server(["--db", str(db)], tmp_path)

    def open_streams(count: int) -> tuple[list[tuple[httpx.Client, httpx.Response]], list[int]]:
        streams = []
        for _ in range(count):
            client = httpx.Client(timeout=10)
            streams.append(
                (client, client.send(client.build_request("GET", f"{server.url}/api/v1/events"), stream=True))
            )
        return streams, [response.status_code for _, response in streams]

    def close(streams: list[tuple[httpx.Client, httpx.Response]]) -> None:
        for client, response in streams:
            response.close()
            client.close()

    try:
        server.wait_ready()
        streams, codes = open_streams(bound + 1)
        close(streams)
        assert codes == [200] * bound + [503]
        deadline = time.monotonic() + 10
        while True:
            streams, codes = open_streams(bound)
            close(streams)
            if codes == [200] * bound or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert codes == [200] * bound
    finally:
        assert server.stop() == 0


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, return the start of the answer (the status line and some headers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        with contextlib.suppress(OSError):  # refused while sending the rest: read what was answered
            conn.sendall(data)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
    return answer


def test_oversized_and_malformed_requests_on_the_wire(tmp_path: Path, db: Path) -> None:
    server = start_server(["--db", str(db)], tmp_path)
    try:
        server.wait_ready()
        host = b"Host: 127.0.0.1:%d\r\n" % server.port
        big_header = b"GET /api/v1/runs HTTP/1.1\r\n" + host + b"X-Big: " + b"a" * 2_000_000 + b"\r\n\r\n"
        many_headers = (
            b"GET /api/v1/runs HTTP/1.1\r\n" + host + b"".join(b"X-%d: a\r\n" % i for i in range(20_000))
        )
        long_target = b"GET /api/v1/runs?model_id=" + b"m" * 100_000 + b" HTTP/1.1\r\n" + host + b"\r\n"
        body = b"GET /api/v1/runs HTTP/1.1\r\n" + host + b"Content-Length: 1000000\r\n\r\n" + b"x" * 1000
        for data in (
            big_header,
            many_headers + b"\r\n",
            long_target,
            body,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET /api/v1/runs HTTP/1.0\r\n\r\n",
            b"BREW /api/v1/runs HTTP/1.1\r\n" + host + b"\r\n",
            b"GET /api/v1/runs HTTP/1.1\r\n" + host + b"Content-Length: -5\r\n\r\n",
        ):
            answer = raw_exchange(server.port, data)
            status = int(answer.split(b" ", 2)[1])
            assert 400 <= status < 500, answer[:200]
            assert b"Traceback" not in answer
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.stderr()
