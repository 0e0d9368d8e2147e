"""The HTTP sink with its endpoint down half the time: every report arrives, none twice uncounted.

``--processes`` sending processes (default 8) each export ``--reports`` reports (default 250; the
fixture report tests/data/golden_report_small.json with new trace ids, no model; with ``--steps``
its generated steps repeated to that many, a larger report) through
:class:`~corevital.exporters.http.HttpExporter`, all sharing one spool directory, into one local
receiver (127.0.0.1) that is down for half of every ``--cycle`` seconds: ``--mode refuse`` stops
the server (new connections refused, open ones dropped), ``--mode 503`` answers 503. The senders
use the production backoff (0.5 s doubling to 30 s, full jitter) unless told otherwise.

The receiver deduplicates by ``Idempotency-Key`` and counts deliveries. The script prints (or
writes as JSON with ``--json``) the reports expected, received (distinct keys), lost, duplicate
deliveries, requests refused or answered 503, whether each process's reports first arrived in
the order they were exported, the share of time the endpoint was down, the export() cost per
report in the senders (wall time mean and p99, and the exporting thread's CPU time, ms) and the
wall time of the whole run. With ``--after-store`` each sender writes each report to a SQLite store
of its own first (not timed), as a run with a store does, and ``export()`` reuses the JSON the store
made (:class:`~corevital.sinks.encoded.EncodedReport`)::

    .venv/bin/python bench/http_sink_outage.py [--processes 8] [--reports 250] [--cycle 2] [--mode refuse]

Exit status 1 when a report is lost or out of order.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(1, str(REPO))  # tests.support.receiver: the receiver and the fixture reports
sys.path.insert(2, str(REPO / "bench"))  # exporters_cost.sample_report, for --steps

from tests.support.receiver import Answer, Receiver, Request, fixture_reports  # noqa: E402


def worker(args: argparse.Namespace) -> int:
    """One sending process: export, time each export(), close (drain), print a JSON line."""
    from corevital.exporters.http import HttpExporter
    from corevital.exporters.spool import Backoff
    from corevital.sinks.encoded import EncodedReport

    reports = list(fixture_reports(args.reports, args.prefix))
    if args.steps:  # the sample report's generated steps repeated to --steps (a larger report)
        from exporters_cost import sample_report

        big = sample_report(args.steps)
        reports = [big.model_copy(update={"trace_id": report.trace_id}) for report in reports]
    exporter = HttpExporter(
        args.url,
        args.spool,
        timeout=args.timeout,
        close_wait_s=args.close_wait,
        backoff=Backoff(base=args.backoff_base, cap=args.backoff_cap),
        rescan_s=1.0,
    )
    store = None
    if args.after_store:  # the run's store makes the JSON (not timed); export() reuses it
        from corevital.sinks.sqlite import SQLiteStore

        store_dir = tempfile.TemporaryDirectory(prefix="corevital-http-bench-store-")
        store = SQLiteStore(Path(store_dir.name) / "corevital.db")
    costs, cpu = [], []
    for report in reports:
        encoded = EncodedReport(report)
        if store is not None:
            store.write_encoded(encoded)
        started, started_cpu = time.perf_counter(), time.thread_time()
        exporter.export_encoded(encoded)
        costs.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
        time.sleep(args.interval)
    exporter.close()
    if store is not None:
        store.close()
        store_dir.cleanup()
    costs.sort()
    print(
        json.dumps(
            {
                "prefix": args.prefix,
                "delivered": exporter.sender.stats.delivered,
                "failed_attempts": exporter.sender.stats.failed_attempts,
                "left": len(exporter.spool.pending()),
                "export_ms_mean": 1000 * statistics.fmean(costs),
                "export_ms_p99": 1000 * costs[int(0.99 * (len(costs) - 1))],
                "export_cpu_ms_mean": 1000 * statistics.fmean(cpu),
            }
        ),
        flush=True,
    )
    return 0


class Outage:
    """Takes the receiver down for the second half of every cycle, and keeps count."""

    def __init__(self, receiver: Receiver, cycle_s: float, mode: str) -> None:
        self.receiver = receiver
        self.cycle_s = cycle_s
        self.mode = mode
        self.down = False
        self.down_s = 0.0
        self.down_since = 0.0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def answer(self, request: Request) -> Answer:
        return Answer(503) if self.down and self.mode == "503" else Answer(200)

    def _run(self) -> None:
        while not self._stop.wait(self.cycle_s / 2):
            self._switch()

    def _switch(self) -> None:
        self.down = not self.down
        if self.down:
            self.down_since = time.monotonic()
        if self.mode == "refuse":
            if self.down:
                self.receiver.stop()
            else:
                self.receiver.start()
        if not self.down:
            self.down_s += time.monotonic() - self.down_since

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> float:
        """End the outages (the receiver up); the share of the time it was down."""
        self._stop.set()
        self._thread.join()
        if self.down:
            self._switch()
        elapsed = time.monotonic() - self.started
        return self.down_s / elapsed if elapsed else 0.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    receiver = Receiver()
    outage = Outage(receiver, args.cycle, args.mode)
    receiver.responder = outage.answer
    receiver.start()
    temporary = tempfile.TemporaryDirectory(prefix="corevital-http-bench-") if args.spool is None else None
    spool = Path(temporary.name if temporary is not None else args.spool)
    prefixes = [f"w{n}" for n in range(args.processes)]
    python_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    started = time.monotonic()
    outage.start()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                f"--url={receiver.url}/reports",
                f"--spool={spool}",
                f"--reports={args.reports}",
                f"--prefix={prefix}",
                f"--timeout={args.timeout}",
                f"--close-wait={args.close_wait}",
                f"--backoff-base={args.backoff_base}",
                f"--backoff-cap={args.backoff_cap}",
                f"--interval={args.interval}",
                f"--steps={args.steps}",
                *(["--after-store"] if args.after_store else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), *python_path])},
        )
        for prefix in prefixes
    ]
    outputs = []
    for process in workers:
        out, _ = process.communicate(timeout=args.close_wait + 600)
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    down_share = outage.stop()
    wall_s = time.monotonic() - started
    receiver.stop()
    if temporary is not None:
        temporary.cleanup()

    requests = receiver.snapshot()
    delivered = [r for r in requests if r.delivered]
    keys = [r.headers["idempotency-key"] for r in delivered]
    counts = Counter(keys)
    expected = {f"{prefix}-{n:06d}" for prefix in prefixes for n in range(args.reports)}
    in_order = True
    bodies_match = all(r.json()["trace_id"] == r.headers["idempotency-key"] for r in delivered)
    first_seen = list(dict.fromkeys(keys))  # each key once, in the order it first arrived
    for prefix in prefixes:
        own = [key for key in first_seen if key.startswith(prefix + "-")]
        in_order = in_order and own == sorted(own)
    costs = [o["export_ms_mean"] for o in outputs]
    return {
        "processes": args.processes,
        "reports_per_process": args.reports,
        "mode": args.mode,
        "cycle_s": args.cycle,
        "expected": len(expected),
        "received_distinct": len(set(keys) & expected),
        "lost": len(expected - set(keys)),
        "unexpected": len(set(keys) - expected),
        "deliveries": len(delivered),
        "duplicate_deliveries": sum(c - 1 for c in counts.values()),
        "requests_failed": len(requests) - len(delivered),
        "failed_attempts_seen_by_senders": sum(o["failed_attempts"] for o in outputs),
        "left_in_spool": sum(o["left"] for o in outputs),
        "in_order_per_process": in_order,
        "bodies_match_keys": bodies_match,
        "down_share": round(down_share, 3),
        "export_ms_mean": round(statistics.fmean(costs), 3),
        "export_ms_p99_worst": round(max(o["export_ms_p99"] for o in outputs), 3),
        "export_cpu_ms_mean": round(statistics.fmean(o["export_cpu_ms_mean"] for o in outputs), 3),
        "wall_s": round(wall_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--reports", type=int, default=250, help="reports per process")
    parser.add_argument("--cycle", type=float, default=2.0, help="seconds of one up + down cycle")
    parser.add_argument("--mode", choices=("refuse", "503"), default="refuse")
    parser.add_argument("--timeout", type=float, default=2.0, help="the sink's per-request timeout")
    parser.add_argument("--close-wait", type=float, default=300.0, help="how long a sender drains at close")
    parser.add_argument("--backoff-base", type=float, default=0.5)
    parser.add_argument("--backoff-cap", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=0.005, help="seconds between two exports")
    parser.add_argument(
        "--steps", type=int, default=0, help="repeat the report's generated steps to this many (0: as is)"
    )
    parser.add_argument(
        "--after-store",
        action="store_true",
        help="each report written to a SQLite store first, whose JSON encoding export() reuses (as in a run)",
    )
    parser.add_argument("--spool", default=None, help="the shared spool directory (default: a new temp dir)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")
    ok = result["lost"] == 0 and result["in_order_per_process"] and result["left_in_spool"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
