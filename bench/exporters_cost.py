"""Cost of the exporters per report: the time of ``export(report)`` one report at a time (batch 1).

Each exporter in :data:`EXPORTERS` (name -> factory taking a scratch directory) gets ``--reports``
reports after ``--warmup`` unmeasured ones; each call is timed alone, twice over: ``export(report)``
(the exporter alone, making the encodings it needs) and ``export_encoded`` after a store made the
report's JSON (what a run with a store does: one encoding for every destination, whose own cost
is printed above the table). Besides the wall time, the calling thread's own CPU time (median)
tells the exporter's work from waiting for a core or for the GIL on a busy machine. The reports
are the sample report
(``tests/data/golden_report_small.json``) with its generated steps repeated to ``--steps`` steps
(256: about 200 KB of JSON, a full capture of 256 steps; ``--steps 8``: about 7 KB), each with its
own trace id, one of four model ids, a risk score and flags, so that the exporters see realistic,
varied input. ``close()`` (where a textfile is written or a
push is made) is timed once. Acceptance (issue 15): the median and p99 below 2 ms after a store
(the exit status is 1 when one is not).

The second table is ``corevital serve``'s ``/metrics`` over a SQLite store of ``--store-runs``
runs (0: left out): the first scrape (every row read) and a scrape after 10 more runs.

    .venv/bin/python bench/exporters_cost.py [--reports 2000] [--steps 256] [--only prometheus]

To add an exporter, add a factory to :data:`EXPORTERS`; it is measured with the others.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corevital.exporters.base import Exporter
from corevital.report.encoding import report_from_json, report_to_json
from corevital.report.schema import HealthFlags, Report, RiskExtension
from corevital.sinks.encoded import EncodedReport

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "golden_report_small.json"
MODELS = ("org/model-a", "org/model-b", "org/model-c", "org/model-d")
BUDGET_MS = 2.0


def prometheus_textfile(directory: Path) -> Exporter:
    from corevital.exporters.prometheus import PrometheusExporter

    return PrometheusExporter(textfile=directory / "corevital.prom")


def prometheus_registry(directory: Path) -> Exporter:
    from prometheus_client import CollectorRegistry

    from corevital.exporters.prometheus import PrometheusExporter

    return PrometheusExporter(registry=CollectorRegistry())


class WithReceiver:
    """An exporter and the local HTTP receiver (tests/support/receiver.py) it sends to, closed together.

    The receiver runs in this process, so its threads and the exporter's sender thread compete with
    ``export()`` for the GIL: a pessimistic figure for a service whose endpoint is elsewhere.
    """

    def __init__(self, make: Callable[[str], Exporter], *, up: bool) -> None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from tests.support.receiver import Receiver

        self.receiver = Receiver()
        if up:
            self.receiver.start()
        self.exporter = make(self.receiver.url)

    def export(self, report: Report) -> None:
        self.exporter.export(report)

    def export_encoded(self, encoded: EncodedReport) -> None:
        export_encoded = getattr(self.exporter, "export_encoded", None)
        if export_encoded is None:
            self.exporter.export(encoded.report)
        else:
            export_encoded(encoded)

    def close(self) -> None:
        self.exporter.close()
        self.receiver.stop()


def http_up(directory: Path) -> Exporter:
    from corevital.exporters.http import HttpExporter

    return WithReceiver(lambda url: HttpExporter(url, directory / "spool", timeout=2.0), up=True)


def http_up_background(directory: Path) -> Exporter:
    from corevital.exporters.http import HttpExporter

    return WithReceiver(
        lambda url: HttpExporter(url, directory / "spool", timeout=2.0, write_in_background=True), up=True
    )


def http_down(directory: Path) -> Exporter:
    from corevital.exporters.http import HttpExporter

    # nothing listens: every report stays in the spool (close() does not wait)
    return WithReceiver(lambda url: HttpExporter(url, directory / "spool", close_wait_s=0.0), up=False)


def datadog_up(directory: Path) -> Exporter:
    from corevital.exporters.datadog import DatadogExporter

    return WithReceiver(
        lambda url: DatadogExporter(url, "bench-key", directory / "spool", timeout=2.0), up=True
    )


class WithOtlpReceiver:
    """The OpenTelemetry exporter and a local OTLP/HTTP receiver (tests/support/otlp.py), closed together.

    ``up`` False: nothing listens at the endpoint; ``close()`` then reports the undelivered data
    (an ExporterError, which the bench expects). Same process: the receiver's and the SDK's export
    threads compete with ``export()`` for the GIL, a pessimistic figure.
    """

    def __init__(self, *, up: bool) -> None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from corevital.exporters.otel import OTelExporter
        from tests.support.otlp import OtlpReceiver, free_port

        self.receiver = OtlpReceiver().__enter__() if up else None
        url = self.receiver.url if self.receiver is not None else f"http://127.0.0.1:{free_port()}"
        self.exporter = OTelExporter(url, timeout_s=2.0, close_timeout_s=5.0)

    def export(self, report: Report) -> None:
        self.exporter.export(report)

    def close(self) -> None:
        from corevital.errors import ExporterError

        try:
            self.exporter.close()
        except ExporterError:
            if self.receiver is not None:
                raise
        finally:
            if self.receiver is not None:
                self.receiver.__exit__(None, None, None)


def otel_up(directory: Path) -> Exporter:
    return WithOtlpReceiver(up=True)


def otel_down(directory: Path) -> Exporter:
    return WithOtlpReceiver(up=False)


EXPORTERS: dict[str, Callable[[Path], Exporter]] = {
    "prometheus (textfile)": prometheus_textfile,
    "prometheus (registry)": prometheus_registry,
    "otel (receiver up, same process)": otel_up,
    "otel (collector down)": otel_down,
    "http (receiver up, same process)": http_up,
    "http (receiver up, write_in_background)": http_up_background,
    "http (endpoint down, spool only)": http_down,
    "datadog (receiver up, same process)": datadog_up,
}
"""Exporter name -> factory, given a scratch directory of its own. Each is measured twice: alone
(``export(report)``: it makes whatever encoding it needs) and after a store (``export_encoded``
with the report's JSON made already, as :class:`~corevital.exporters.base.Outputs` hands it on
when the run has a store: the encoding is the store's, made once for every destination)."""


class Plain:
    """``export(report)``: the exporter alone, making the encodings it needs itself."""

    label = "alone"

    @staticmethod
    def prepare(made: list[Report]) -> list[Any]:
        return list(made)

    @staticmethod
    def call(exporter: Any, item: Any) -> None:
        exporter.export(item)


class AfterStore:
    """``export_encoded(encoded)`` with the JSON made beforehand (by the store, in a real run)."""

    label = "after a store"

    @staticmethod
    def prepare(made: list[Report]) -> list[Any]:
        encoded = [EncodedReport(report) for report in made]
        for item in encoded:
            item.json_bytes  # noqa: B018 - what the store's write made
        return encoded

    @staticmethod
    def call(exporter: Any, item: Any) -> None:
        export_encoded = getattr(exporter, "export_encoded", None)
        if export_encoded is None:
            exporter.export(item.report)
        else:
            export_encoded(item)


def sample_report(steps: int) -> Report:
    """The sample report with its generated steps repeated to ``steps`` steps."""
    report = report_from_json(SAMPLE.read_bytes())
    prompt = [step for step in report.timeline if step.token.is_prompt_token]
    generated = [step for step in report.timeline if not step.token.is_prompt_token]
    first = report.summary.prompt_tokens
    timeline = prompt + [
        generated[index % len(generated)].model_copy(update={"step_index": first + index})
        for index in range(steps)
    ]
    summary = report.summary.model_copy(update={"generated_tokens": steps})
    return report.model_copy(update={"timeline": timeline, "summary": summary})


def reports(base: Report, count: int) -> list[Report]:
    """``count`` variants of ``base``: own ids, four models, risks 0 to 1, a flag in one run of five."""
    made = []
    for number in range(count):
        risk = (number * 37 % 100) / 100
        made.append(
            base.model_copy(
                update={
                    "trace_id": f"{number:08x}-2222-4000-8000-000000000000",
                    "model": base.model.model_copy(update={"hf_id": MODELS[number % len(MODELS)]}),
                    "health_flags": HealthFlags(repetition_loop_detected=number % 5 == 0),
                    "extensions": base.extensions.model_copy(update={"risk": RiskExtension(risk_score=risk)}),
                }
            )
        )
    return made


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(
    name: str,
    factory: Callable[[Path], Exporter],
    made: list[Report],
    warmup: int,
    mode: type[Plain | AfterStore],
) -> dict[str, Any]:
    items = mode.prepare(made)
    with tempfile.TemporaryDirectory(prefix="corevital-bench-") as scratch:
        exporter = factory(Path(scratch))
        for item in items[:warmup]:
            mode.call(exporter, item)
        times_ms, cpu_ms = [], []
        for item in items[warmup:]:
            started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
            mode.call(exporter, item)
            times_ms.append((time.perf_counter_ns() - started) / 1e6)
            cpu_ms.append((time.thread_time_ns() - cpu_started) / 1e6)
        started = time.perf_counter_ns()
        exporter.close()
        close_ms = (time.perf_counter_ns() - started) / 1e6
    return {
        "name": name,
        "median": statistics.median(times_ms),
        "cpu": statistics.median(cpu_ms),
        "cpu_p99": percentile(cpu_ms, 0.99),
        "p99": percentile(times_ms, 0.99),
        "max": max(times_ms),
        "close": close_ms,
    }


def encoding_ms(made: list[Report]) -> tuple[list[float], list[float]]:
    """Milliseconds (wall, thread CPU) of each report's JSON encoding (text and UTF-8 bytes), the
    part the destinations share."""
    times, cpu = [], []
    for report in made:
        started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
        EncodedReport(report).json_bytes  # noqa: B018
        times.append((time.perf_counter_ns() - started) / 1e6)
        cpu.append((time.thread_time_ns() - cpu_started) / 1e6)
    return times, cpu


def store_scrapes(base: Report, runs: int) -> tuple[float, float]:
    """Milliseconds of the first ``/metrics`` scrape over a store of ``runs`` runs, then of one
    after 10 more runs (``StoreMetrics.exposition``, what the route calls)."""
    from corevital.exporters.prometheus import StoreMetrics
    from corevital.sinks.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory(prefix="corevital-bench-") as scratch:
        small = base.model_copy(update={"timeline": base.timeline[:8]})
        with SQLiteStore(Path(scratch) / "corevital.db") as writer:
            for report in reports(small, runs + 10)[:runs]:
                writer.write(report)
            with SQLiteStore(writer.path, read_only=True) as store:
                metrics = StoreMetrics(store)
                started = time.perf_counter()
                metrics.exposition()
                first = (time.perf_counter() - started) * 1000
                for report in reports(small, runs + 10)[runs:]:
                    writer.write(report)
                started = time.perf_counter()
                metrics.exposition()
                again = (time.perf_counter() - started) * 1000
                assert metrics.rows_read == runs + 10, metrics.rows_read
    return first, again


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000, help="Measured reports per exporter.")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--steps", type=int, default=256, help="Generated steps per report.")
    parser.add_argument("--only", action="append", help="Measure only exporters whose name has this.")
    parser.add_argument(
        "--store-runs", type=int, default=10_000, help="Runs in the /metrics store (0: skip)."
    )
    args = parser.parse_args()

    base = sample_report(args.steps)
    made = reports(base, args.warmup + args.reports)
    size_kb = len(report_to_json(made[0]).encode("utf-8")) / 1000
    print(
        f"# export() per report, batch 1: {args.reports} reports of {args.steps} steps "
        f"({size_kb:.0f} KB of JSON each)"
    )
    print(f"# Python {platform.python_version()}, {platform.machine()}, {platform.processor() or ''}")
    encoding, encoding_cpu = encoding_ms(made[: min(len(made), 200)])
    print(
        f"# the report's JSON encoding, made once per report for every destination: median "
        f"{statistics.median(encoding):.2f} ms, p99 {percentile(encoding, 0.99):.2f} ms "
        f"(thread CPU median {statistics.median(encoding_cpu):.2f} ms)\n"
    )
    print(
        "| exporter | called | median ms | p99 ms | max ms | thread CPU median, p99 ms | close ms | < 2 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    failed = False
    modes: tuple[type[Plain | AfterStore], ...] = (Plain, AfterStore)
    for name, factory in EXPORTERS.items():
        if args.only and not any(part in name for part in args.only):
            continue
        for mode in modes:
            row = measure(name, factory, made, args.warmup, mode)
            ok = row["median"] < BUDGET_MS and row["p99"] < BUDGET_MS
            failed = failed or (mode is AfterStore and not ok)
            print(
                f"| {name} | {mode.label} | {row['median']:.3f} | {row['p99']:.3f} | {row['max']:.2f} | "
                f"{row['cpu']:.3f}, {row['cpu_p99']:.3f} | {row['close']:.1f} | {'yes' if ok else 'NO'} |"
            )
    if args.store_runs:
        first, again = store_scrapes(base, args.store_runs)
        print(f"\n# /metrics over a SQLite store of {args.store_runs} runs\n")
        print("| scrape | ms |\n|---|---|")
        print(f"| first (every row read) | {first:.0f} |\n| after 10 more runs | {again:.1f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
