"""Loopback load test of ``corevital serve``: N concurrent clients for a bounded time.

Starts ``corevital serve --db DB`` on a free loopback port in a subprocess, waits until
``/healthz`` answers, then runs ``--clients`` concurrent clients (asyncio, one keep-alive
HTTP/1.1 connection each, a request only after the previous answer) for ``--duration`` seconds or
``--max-requests`` requests, whichever comes first. Each request is one of ``--path`` (cycled; with
``--reports`` also the report of a listed run every few requests). Prints the request count,
errors (any status other than 200, or a broken connection), throughput and latency percentiles,
and stops the server.

    python bench/api_load.py --db runs/corevital.db
    python bench/api_load.py --db store.db --clients 20 --duration 30 --path '/api/v1/runs?limit=50'

The store is made by ``bench/make_store.py`` (or any ``corevital run``/``migrate``). The clients
are deliberately cheap (raw asyncio streams, no HTTP library) so that on a small machine the
figures are the server's, not the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_PATH = "/api/v1/runs?limit=50"


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    bytes_read: int = 0
    sent: int = 0
    by_kind: dict[str, list[float]] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(db: Path, port: int, token_file: Path | None, workers: int = 1) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "corevital", "serve", "--db", str(db), "--port", str(port)]
    if token_file is not None:
        command += ["--token-file", str(token_file)]
    if workers > 1:
        command += ["--workers", str(workers)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise SystemExit(f"the server exited with {proc.returncode}: {out.strip()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not answer /healthz within 60 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def request_bytes(path: str, port: int, token: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """Status, body length and whether the server keeps the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    await reader.readexactly(length)
    return status, length, headers.get("connection", "").lower() != "close"


async def client(
    port: int,
    requests: list[bytes],
    stop_at: float,
    budget: list[int],
    tally: Tally,
    timeout_s: float,
    unique: bool,
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    turn = 0
    while time.monotonic() < stop_at and budget[0] > 0:
        budget[0] -= 1
        request = requests[turn % len(requests)]
        kind = kind_of(request)
        if unique:  # an unused query parameter: every request misses the server's response cache
            request = request.replace(
                b" HTTP/1.1", b"&nocache=%d-%d HTTP/1.1" % (id(tally) % 1000, budget[0]), 1
            )
        turn += 1
        started = time.perf_counter()
        tally.sent += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(request)
            status, length, keep = await asyncio.wait_for(read_response(reader), timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            tally.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        latency_ms = (time.perf_counter() - started) * 1000.0
        tally.latencies_ms.append(latency_ms)
        tally.by_kind.setdefault(kind, []).append(latency_ms)
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        tally.bytes_read += length
        if status != 200:
            tally.errors += 1
        if not keep and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def kind_of(request: bytes) -> str:
    """``list`` or ``report``: what a request asks for (its path without the query)."""
    path = request.split(b" ", 2)[1].split(b"?", 1)[0].decode("ascii")
    return "report" if path.startswith("/api/v1/runs/") else path


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def run_load(args: argparse.Namespace, port: int, paths: list[str]) -> tuple[Tally, float]:
    requests = [request_bytes(path, port, args.token) for path in paths]
    tally = Tally()
    budget = [args.max_requests]
    started = time.monotonic()
    stop_at = started + args.duration
    await asyncio.gather(
        *(
            client(port, requests, stop_at, budget, tally, args.timeout, args.uncached)
            for _ in range(args.clients)
        )
    )
    return tally, time.monotonic() - started


def report_paths(port: int, token: str | None, every: int, base: list[str]) -> list[str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/runs?limit=20")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        ids = [row["trace_id"] for row in json.load(response)["runs"]]
    paths: list[str] = []
    for index, trace_id in enumerate(ids):
        paths.extend(base * (every - 1))
        paths.append(f"/api/v1/runs/{trace_id}")
        if index > 4:
            break
    return paths or base


def get_json(port: int, token: str | None, target: str) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{target}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def varied_paths(port: int, token: str | None, pages: int = 3) -> list[str]:
    """Realistic listings, the same for the same store: each filter (none, every model, each flag,
    risk ranges, the last week, model with flag or risk) in each order (time or risk, descending or
    ascending), 20, 50 or 100 runs a page, and for each its first ``pages`` pages by cursor."""
    models = [group["key"] for group in get_json(port, token, "/api/v1/models")["groups"]][:4]
    newest = get_json(port, token, "/api/v1/runs?limit=1")["runs"][0]["created_at_ms"]
    week_ago = datetime.fromtimestamp(newest / 1000 - 7 * 86400, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    filters: list[list[tuple[str, str]]] = [[]]
    filters += [[("model_id", model)] for model in models]
    filters += [[("flag", flag)] for flag in ("repetition_loop", "attention_collapse", "mid_layer_anomaly")]
    filters += [[("min_risk", "0.5")], [("min_risk", "0.2"), ("max_risk", "0.6")], [("max_risk", "0.1")]]
    filters += [[("since", week_ago)]]
    filters += [[("model_id", model), ("flag", "attention_collapse")] for model in models[:2]]
    filters += [[("model_id", model), ("min_risk", "0.3")] for model in models[:2]]
    orders = [[], [("sort", "risk")], [("order", "asc")], [("sort", "risk"), ("order", "asc")]]
    paths: list[str] = []
    for number, (where, order) in enumerate(itertools.product(filters, orders)):
        limit = ("20", "50", "100")[number % 3]
        target = f"/api/v1/runs?{urllib.parse.urlencode([*where, *order, ('limit', limit)])}"
        for _ in range(pages):
            paths.append(target)
            page = get_json(port, token, target)
            if page["next_url"] is None:
                break
            target = page["next_url"]
    return paths


class Lander:
    """Writes a new run into the store every ``every_s`` seconds while the load runs (a thread)."""

    def __init__(self, db: Path, every_s: float) -> None:
        import threading

        from corevital.sinks.sqlite import SQLiteStore

        self.store = SQLiteStore(db)
        newest = self.store.list()[0]
        self.template = self.store.get(newest.trace_id)
        self.every_s = every_s
        self.landed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import uuid
        from datetime import UTC, datetime

        from corevital.report.timestamps import format_utc

        assert self.template is not None
        while not self.stop.wait(self.every_s):
            update = {"trace_id": str(uuid.uuid4()), "created_at_utc": format_utc(datetime.now(UTC))}
            self.store.write(self.template.model_copy(update=update))
            self.landed += 1

    def __enter__(self) -> Lander:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="The store to serve.")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=30.0, help="Seconds of load (default 30).")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="Stop after this many requests.")
    parser.add_argument("--warmup", type=float, default=2.0, help="Seconds of unmeasured load first.")
    parser.add_argument(
        "--path", action="append", help=f"Request target (repeatable; default {DEFAULT_PATH})."
    )
    parser.add_argument(
        "--reports", type=int, default=0, metavar="N", help="Every Nth request fetches a report."
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="Seconds before a request counts as an error."
    )
    parser.add_argument("--token-file", type=Path, help="Start the server with this token file and send it.")
    parser.add_argument(
        "--uncached",
        action="store_true",
        help="Make every request target distinct, so none is answered from the server's response cache.",
    )
    parser.add_argument(
        "--land-every",
        type=float,
        metavar="S",
        help="Write a new run into the store every S seconds during the load (use a copy of the store).",
    )
    parser.add_argument(
        "--vary",
        action="store_true",
        help="Cycle through realistic filter, sort and page-size combinations and their first cursor "
        "pages (the same list for the same store) instead of --path.",
    )
    parser.add_argument("--workers", type=int, default=1, help="Start the server with --workers N.")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = parser.parse_args(argv)
    args.token = args.token_file.read_text().strip() if args.token_file else None
    if not args.db.is_file():
        raise SystemExit(f"no store at {args.db}")
    port = free_port()
    proc = start_server(args.db, port, args.token_file, args.workers)
    try:
        paths = varied_paths(port, args.token) if args.vary else args.path or [DEFAULT_PATH]
        if args.reports > 1:
            paths = report_paths(port, args.token, args.reports, paths)
        if args.warmup > 0:
            warm = argparse.Namespace(**{**vars(args), "duration": args.warmup})
            asyncio.run(run_load(warm, port, paths))
        if args.land_every:
            with Lander(args.db, args.land_every) as lander:
                tally, elapsed = asyncio.run(run_load(args, port, paths))
            landed = lander.landed
        else:
            tally, elapsed = asyncio.run(run_load(args, port, paths))
            landed = 0
    finally:
        stop_server(proc)
    ordered = sorted(tally.latencies_ms)
    figures = {
        "store": str(args.db),
        "clients": args.clients,
        "duration_s": round(elapsed, 2),
        "paths": sorted(set(paths)) if len(set(paths)) <= 3 else f"{len(set(paths))} targets",
        "requests": tally.sent,
        "uncached": args.uncached,
        "workers": args.workers,
        "runs_landed": landed,
        "errors": tally.errors,
        "statuses": tally.statuses,
        "throughput_rps": round(len(ordered) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(ordered, 0.50), 2),
        "p95_ms": round(percentile(ordered, 0.95), 2),
        "p99_ms": round(percentile(ordered, 0.99), 2),
        "max_ms": round(ordered[-1], 2) if ordered else None,
        "mean_ms": round(statistics.fmean(ordered), 2) if ordered else None,
        "cpus": os.cpu_count(),
    }
    if len(tally.by_kind) > 1:
        for kind, values in sorted(tally.by_kind.items()):
            values.sort()
            figures[f"{kind} p50/p95_ms"] = [
                round(percentile(values, 0.5), 2),
                round(percentile(values, 0.95), 2),
            ]
            figures[f"{kind} requests"] = len(values)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>15}: {value}")
    return 0 if tally.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
