"""Prometheus: the runs as metrics, pulled from a store, a registry or a port, or pushed after a run.

Three ways, one set of metrics (:mod:`corevital.exporters.prometheus_metrics`):

* :class:`StoreMetrics`: the metrics of everything in a :class:`~corevital.sinks.base.ReportStore`,
  for ``corevital serve``'s ``/metrics``. Each scrape reads only the rows stored since the last
  one (``store.follow``), so a scrape of a large store is cheap after the first.
* :class:`PrometheusExporter` in a long-lived process: ``PrometheusExporter(registry=r)`` adds a
  collector to the caller's registry, ``PrometheusExporter(port=9464)`` serves its own registry on
  127.0.0.1. ``export(report)`` only adds the report's numbers to counters (no I/O).
* :class:`PrometheusExporter` for a one-off CLI run (``--sink prometheus``): at ``close()`` the
  metrics go to a node_exporter textfile-collector file (``--prometheus-textfile``; written
  atomically, adding to the counts already in the file, so counters keep growing from run to
  run) and/or to a Pushgateway (``--prometheus-pushgateway``; job ``--prometheus-job``, grouping
  key ``instance`` = the host name; the gateway keeps the last run's values).

``prometheus_client`` (the ``prometheus`` extra) is imported when one of these is built; nothing
is registered with its global registry.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from corevital.errors import ConfigError, ExporterError, import_extra
from corevital.exporters.prometheus_metrics import (
    DEFAULT_MAX_MODELS,
    METRICS,
    MetricSpec,
    RunMetrics,
    report_latency,
    samples,
)
from corevital.sinks.encoded import EncodedReport
from corevital.sinks.rows import MAX_PAGE_SIZE

if TYPE_CHECKING:
    from corevital.config import Settings
    from corevital.report.schema import Report
    from corevital.sinks.base import ReportStore

INSTALL_HINT = "Prometheus metrics need the prometheus extra: pip install 'corevital[prometheus]'"
DEFAULT_PORT = 9464
SCRAPE_BUDGET_S = 5.0
"""The longest one scrape spends reading new rows from a store; the rest is read by the next ones."""

Sample = tuple[str, dict[str, str], float]


def client() -> ModuleType:
    """The ``prometheus_client`` package; :class:`NotAvailableError` without the extra."""
    return import_extra("prometheus_client", hint=INSTALL_HINT)


def _families(metrics: dict[MetricSpec, list[Sample]]) -> list[Any]:
    from prometheus_client.metrics_core import Metric

    families = []
    for spec in METRICS:
        family = Metric(spec.family, spec.help, spec.kind)
        for name, labels, value in metrics.get(spec, ()):
            family.add_sample(name, labels, value)
        families.append(family)
    return families


class RunCollector:
    """A ``prometheus_client`` collector of a :class:`RunMetrics` (``refresh`` runs before each scrape)."""

    def __init__(self, metrics: RunMetrics, refresh: Callable[[], object] | None = None) -> None:
        self.metrics = metrics
        self.refresh = refresh

    def describe(self) -> list[Any]:
        """The families without samples (what a registry checks names against)."""
        return _families({})

    def collect(self) -> Iterator[Any]:
        if self.refresh is not None:
            self.refresh()
        yield from _families(samples(self.metrics.snapshot()))


def content_type() -> str:
    """The content type of the text exposition format (version 0.0.4) that :func:`exposition` writes."""
    exposition = client().exposition
    return str(getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST))


def exposition(registry: Any) -> bytes:
    """The registry's metrics in the text exposition format."""
    data: bytes = client().generate_latest(registry)
    return data


class StoreMetrics:
    """The metrics of the runs in ``store``, read incrementally (see the module docstring).

    The first scrape reads every row (:data:`~corevital.sinks.rows.MAX_PAGE_SIZE` at a time, at
    most ``budget_s`` seconds per scrape); later ones read the rows stored since. Each row counts
    with its sampling weight (:attr:`~corevital.sinks.rows.TraceRow.sampling_weight`), as the
    exporters count a report, so ``corevital_runs_total`` estimates all runs and
    ``corevital_runs_kept_total`` counts the stored ones; compound signals are not in the index, so
    ``flag`` holds the health flags only. A report stored again under its trace id is not counted
    again.
    """

    def __init__(
        self, store: ReportStore, *, budget_s: float = SCRAPE_BUDGET_S, max_models: int = DEFAULT_MAX_MODELS
    ) -> None:
        prometheus_client = client()
        self.store = store
        self.budget_s = budget_s
        self.metrics = RunMetrics(max_models=max_models)
        self.after = 0
        self.rows_read = 0
        self._lock = threading.Lock()
        self.registry = prometheus_client.CollectorRegistry()
        self.registry.register(RunCollector(self.metrics, self.refresh))

    def refresh(self) -> int:
        """Read the rows stored since the last call; how many were read."""
        read = 0
        with self._lock:
            deadline = time.monotonic() + self.budget_s
            while True:
                rows, after = self.store.follow(self.after)
                for row in rows:
                    self.metrics.add_row(row, weight=row.sampling_weight)
                self.after = after
                read += len(rows)
                if len(rows) < MAX_PAGE_SIZE or time.monotonic() > deadline:
                    break
            self.rows_read += read
        return read

    def exposition(self) -> bytes:
        """The metrics as a scrape answers them (:func:`content_type`)."""
        return exposition(self.registry)


class PrometheusExporter:
    """``--sink prometheus``: each finished report counted into Prometheus metrics.

    ``registry``: a ``prometheus_client`` registry to add the collector to (the caller exposes
    it). ``port``: serve an own registry on ``host`` (127.0.0.1) at this port. ``textfile``: a
    ``.prom`` file written at :meth:`close`. ``pushgateway``: a Pushgateway URL pushed to at
    :meth:`close` under ``job`` and ``instance`` (default: the host name). Without ``registry``
    the exporter's own registry is :attr:`registry`.
    """

    def __init__(
        self,
        *,
        registry: Any = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        textfile: str | os.PathLike[str] | None = None,
        pushgateway: str | None = None,
        job: str = "corevital",
        instance: str | None = None,
        max_models: int = DEFAULT_MAX_MODELS,
        push_timeout_s: float = 10.0,
    ) -> None:
        prometheus_client = client()
        self.metrics = RunMetrics(max_models=max_models)
        self.collector = RunCollector(self.metrics)
        self.registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        self._users_registry = registry is not None
        try:
            self.registry.register(self.collector)
        except ValueError as exc:
            raise ConfigError(f"the registry already has CoreVital's metrics: {exc}") from None
        self.textfile = None if textfile is None else Path(textfile)
        self.pushgateway = pushgateway
        self.job = job
        self.instance = instance or socket.gethostname()
        self.push_timeout_s = push_timeout_s
        self.exported = 0
        self._server: Any = None
        self._closed = False
        if port is not None:
            try:
                started = prometheus_client.start_http_server(port, addr=host, registry=self.registry)
            except OSError as exc:
                self.registry.unregister(self.collector)
                raise ExporterError(f"cannot serve the Prometheus metrics on {host}:{port}: {exc}") from None
            self._server = started[0] if isinstance(started, tuple) else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The exporter of a CLI run: a textfile and/or a Pushgateway (one of them is required)."""
        textfile, gateway = settings.prometheus_textfile, settings.prometheus_pushgateway
        if not textfile and not gateway:
            raise ConfigError(
                "--sink prometheus needs somewhere to put a run's metrics: --prometheus-textfile "
                "FILE.prom (node_exporter's textfile collector) or --prometheus-pushgateway URL "
                "(in a long-lived process, pass PrometheusExporter(registry=...) or (port=...) as the sink)"
            )
        if textfile:
            _check_textfile(Path(textfile))
        if gateway:
            _check_gateway(gateway)
        return cls(textfile=textfile, pushgateway=gateway, job=settings.prometheus_job)

    def export(self, report: Report) -> None:
        """Count ``report`` (with its sampling weight) into the metrics; no I/O."""
        self.export_encoded(EncodedReport(report))

    def export_encoded(self, encoded: EncodedReport) -> None:
        """:meth:`export`, with the report's index row made once for every destination."""
        report, row = encoded.report, encoded.row
        signals = [signal.name for signal in report.extensions.compound_signals or ()]
        self.metrics.add_row(
            row,
            weight=row.sampling_weight,
            signals=signals,
            latency=report_latency(report),
        )
        self.exported += 1

    def exposition(self) -> bytes:
        """This exporter's metrics in the text exposition format."""
        return exposition(_Only(self.collector))

    def close(self) -> None:
        """Write the textfile and push to the Pushgateway (as configured); stop the own server and
        leave the user's registry (whose scrapes then no longer show CoreVital's metrics)."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        if self.textfile is not None:
            try:
                write_textfile(self.textfile, samples(self.metrics.snapshot()))
            except OSError as exc:
                errors.append(f"cannot write {self.textfile}: {exc}")
        if self.pushgateway is not None:
            try:
                client().push_to_gateway(
                    self.pushgateway,
                    job=self.job,
                    registry=_Only(self.collector),
                    grouping_key={"instance": self.instance},
                    timeout=self.push_timeout_s,
                )
            except OSError as exc:  # URLError and HTTPError are OSErrors
                errors.append(f"cannot push to the Pushgateway {self.pushgateway}: {exc}")
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._users_registry:
            self.registry.unregister(self.collector)
        if errors:
            raise ExporterError("; ".join(errors))


class _Only:
    """A registry-like object of one collector (what ``generate_latest`` and ``push_to_gateway`` take)."""

    def __init__(self, collector: RunCollector) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Any]:
        return self.collector.collect()


class _Fixed:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        return iter(self.families)


def _check_textfile(path: Path) -> None:
    if path.suffix != ".prom":
        raise ConfigError(f"--prometheus-textfile {path}: node_exporter reads only files ending in .prom")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ConfigError(f"--prometheus-textfile {path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise ConfigError(f"--prometheus-textfile {path}: the directory {directory} is not writable")


def _check_gateway(url: str) -> None:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--prometheus-pushgateway {url!r}: give an http(s)://host:port URL")


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def merge_samples(ours: dict[MetricSpec, list[Sample]], text: str) -> dict[MetricSpec, list[Sample]]:
    """``ours`` added to the CoreVital samples in the exposition ``text`` (counters and histograms
    summed, the last-run gauge the later of the two); other metrics in ``text`` are dropped."""
    from prometheus_client.parser import text_string_to_metric_families

    by_series = {name: spec for spec in METRICS for name in spec.series}
    merged: dict[MetricSpec, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {
        spec: {(name, _key(labels)): (name, labels, value) for name, labels, value in ours.get(spec, ())}
        for spec in METRICS
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            spec = by_series.get(sample.name)
            if spec is None:
                continue
            key = (sample.name, _key(sample.labels))
            known = merged[spec].get(key)
            if known is None:
                value = sample.value
            elif spec.kind == "gauge":
                value = max(known[2], sample.value)
            else:
                value = known[2] + sample.value
            merged[spec][key] = (sample.name, dict(sample.labels), value)
    return {spec: [merged[spec][key] for key in sorted(merged[spec])] for spec in METRICS}


def write_textfile(path: Path, ours: dict[MetricSpec, list[Sample]]) -> None:
    """Add ``ours`` to the metrics in the textfile at ``path`` and write it back atomically.

    Writers of the same file take turns (an advisory lock on ``path`` + ``.lock``, which
    node_exporter does not read), so that concurrent runs lose no count.
    """
    with _locked(Path(f"{path}.lock")):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        families = _families(merge_samples(ours, text))
        client().write_to_textfile(str(path), _Fixed(families))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): writes are still atomic
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


__all__ = [
    "DEFAULT_PORT",
    "PrometheusExporter",
    "RunCollector",
    "StoreMetrics",
    "content_type",
    "exposition",
    "merge_samples",
    "write_textfile",
]
