"""A local HTTP receiver for the HTTP sink and Datadog tests, and a sending process for kill tests.

:class:`Receiver` is a real ``ThreadingHTTPServer`` on 127.0.0.1 (a free port, kept across
:meth:`Receiver.stop` / :meth:`Receiver.start`; stop also drops open keep-alive connections, so a
stopped receiver refuses connections at the same URL). It records every request (gzip bodies
decoded) and answers what its ``responder`` says: a status, headers and body, after an optional
delay (a slow endpoint). Without a responder it answers 200.

``python -m tests.support.receiver --url URL --spool DIR --count N --prefix P`` is a sending
process: it exports N reports (the fixture report with trace ids ``P-000000``, ``P-000001``, ...)
through :class:`~corevital.exporters.http.HttpExporter`, prints ``exported N`` and, with
``--hold``, waits to be killed instead of closing.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "golden_report_small.json"

__all__ = ["FIXTURE", "Answer", "Receiver", "Request", "fixture_reports"]


@dataclass
class Request:
    """One request as received: the path, headers (lower-case names), decoded body, our answer."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: bytes
    status: int = 0
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0


Responder = Callable[[Request], Answer]


class Receiver:
    """A real HTTP server on 127.0.0.1 recording requests; ``responder`` picks each answer."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or (lambda request: Answer())
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.port = self._bind().server_address[1]
        self._server = None  # bound once to get a free port; started by start()

    def _bind(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with receiver.lock:
                    receiver._connections.add(self.connection)

            def finish(self) -> None:
                with receiver.lock:
                    receiver._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    raw = self.rfile.read(length) if length else b""
                except OSError:
                    raw = b""
                if len(raw) < length:  # the connection dropped mid-request (stop()): no request
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
                request = Request(self.command, self.path, headers, raw, body)
                answer = receiver.responder(request)
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                request.status = answer.status
                with receiver.lock:
                    receiver.requests.append(request)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_POST = _handle
            do_PUT = _handle
            do_GET = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                if not isinstance(sys.exc_info()[1], OSError):  # a dropped connection is expected
                    super().handle_error(request, client_address)

        server = Server(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.port == 0:
            server.server_close()
        return server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Receiver:
        if self._server is None:
            deadline = time.monotonic() + 5.0
            while True:
                try:
                    self._server = self._bind()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open (keep-alive) connection: the endpoint is gone."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self.lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what was received ----------------------------------------------------------------
    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def delivered(self) -> list[Request]:
        return [r for r in self.snapshot() if r.delivered]

    def delivered_keys(self) -> list[str]:
        return [r.headers.get("idempotency-key", "") for r in self.delivered()]

    def wait_for(self, predicate: Callable[[list[Request]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.02)
        return predicate(self.snapshot())


def fixture_reports(count: int, prefix: str) -> Iterator[Any]:
    """``count`` copies of the fixture report with trace ids ``<prefix>-000000``, ..."""
    from corevital.report.encoding import report_from_json

    base = report_from_json(FIXTURE.read_bytes())
    for number in range(count):
        yield base.model_copy(update={"trace_id": f"{prefix}-{number:06d}"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--prefix", default="p")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--close-wait", type=float, default=None)
    parser.add_argument("--backoff-cap", type=float, default=0.5)
    parser.add_argument("--hold", action="store_true", help="wait to be killed instead of closing")
    args = parser.parse_args(argv)

    from corevital.exporters.http import HttpExporter
    from corevital.exporters.spool import Backoff

    exporter = HttpExporter(
        args.url,
        args.spool,
        timeout=args.timeout,
        close_wait_s=args.close_wait,
        backoff=Backoff(base=0.05, cap=args.backoff_cap),
        rescan_s=0.5,
    )
    for report in fixture_reports(args.count, args.prefix):
        exporter.export(report)
    print(f"exported {args.count}", flush=True)
    if args.hold:
        time.sleep(3600)
    exporter.close()
    stats = exporter.sender.stats
    print(f"closed delivered={stats.delivered} left={len(exporter.spool.pending())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
