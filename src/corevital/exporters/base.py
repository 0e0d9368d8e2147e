"""The exporter protocol, the registry of built-in exporters, and the fan-out to stores and exporters.

An :class:`Exporter` sends finished reports to an observability system (``export(report)``,
``close()``); one that also has ``export_encoded(encoded)`` (:class:`EncodedExporter`) gets the
report with its shared encodings (:class:`~corevital.sinks.encoded.EncodedReport`). A built-in
exporter is a class with ``from_settings(settings)``, named in ``--sink``
(:data:`BUILTIN_EXPORTERS`) and imported only when used, so its optional extra is needed only
then. A custom sink is any object with ``write(report)`` (the :class:`~corevital.sinks.base.Sink`
protocol) or ``export(report)``, given as an object to ``CoreVitalMonitor(sink=...)`` or named
``package.module:Class`` in ``--sink``.

:class:`Outputs` writes one report everywhere and encodes its JSON once for all of them: stores
first (a store failure is a :class:`~corevital.errors.StoreError`: the report would be lost),
then exporters and custom sinks, whose failures are logged and counted in
:attr:`Outputs.failures`, never raised.
"""

from __future__ import annotations

import importlib
import logging
import sqlite3
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from corevital.closing import ClosesOnExit
from corevital.config import EXPORTER_SINKS, STORE_SINKS, Settings
from corevital.errors import ConfigError, CoreVitalError, NotAvailableError, StoreError
from corevital.exporters.sampling import Sampler
from corevital.sinks.encoded import EncodedReport
from corevital.sinks.open import store_location

if TYPE_CHECKING:
    from corevital.report.schema import Report
    from corevital.sinks.base import Sink

log = logging.getLogger(__name__)

# --sink name -> (module:Class, the extra that provides its dependencies)
BUILTIN_EXPORTERS: dict[str, tuple[str, str]] = {
    "prometheus": ("corevital.exporters.prometheus:PrometheusExporter", "prometheus"),
    "otel": ("corevital.exporters.otel:OTelExporter", "otel"),
    "datadog": ("corevital.exporters.datadog:DatadogExporter", "datadog"),
    "wandb": ("corevital.exporters.wandb:WandbExporter", "wandb"),
    "http": ("corevital.exporters.http:HttpExporter", "http"),
}
assert set(BUILTIN_EXPORTERS) == set(EXPORTER_SINKS)


@runtime_checkable
class Exporter(Protocol):
    """Sends finished reports somewhere; must not raise into a generation (:class:`Outputs` guards)."""

    def export(self, report: Report) -> None:
        """Send one finished report (called from the thread that finished it)."""
        ...

    def close(self) -> None:
        """Flush what is pending and release resources; called once, at the end of the run."""
        ...


@runtime_checkable
class EncodedExporter(Exporter, Protocol):
    """An :class:`Exporter` that can also take the report with its shared encodings.

    :class:`Outputs` calls ``export_encoded`` instead of ``export`` when an exporter has it: the
    report's JSON (and its index row, its gzip) is then made once for every destination instead of
    once per destination. Optional: a sink with ``export(report)`` alone keeps working.
    """

    def export_encoded(self, encoded: EncodedReport) -> None:
        """Send ``encoded.report``, reusing ``encoded``'s JSON, row or gzip where it needs them."""
        ...


def _import_object(spec: str, *, extra: str | None = None) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is not None and (exc.name or "").split(".")[0] != "corevital":
            raise NotAvailableError(
                f"--sink {extra} needs the {extra} extra: pip install 'corevital[{extra}]' "
                f"({exc.name} is missing)"
            ) from exc
        raise ConfigError(f"cannot import the sink {spec!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"cannot import the sink {spec!r}: {module_name} has no {attr}") from None


def open_exporter(name: str, settings: Settings) -> Exporter:
    """The built-in exporter named ``name``, set up from ``settings`` (a bad setting raises now)."""
    spec, extra = BUILTIN_EXPORTERS[name]
    cls = _import_object(spec, extra=extra)
    exporter: Exporter = cls.from_settings(settings)
    return exporter


def open_custom(spec: str, settings: Settings) -> Exporter | Sink:
    """A user's sink named ``package.module:Class``: built with ``from_settings(settings)`` when the
    class has it, else with no arguments; it must have ``write(report)`` or ``export(report)``."""
    cls = _import_object(spec)
    obj = cls.from_settings(settings) if hasattr(cls, "from_settings") else cls()
    if not (callable(getattr(obj, "write", None)) or callable(getattr(obj, "export", None))):
        raise ConfigError(f"the sink {spec!r} has neither write(report) nor export(report)")
    return obj  # type: ignore[no-any-return]


class Outputs(ClosesOnExit):
    """Every destination of a run's reports: stores, exporters and custom sinks, behind a sampler.

    ``write(report)`` returns the stores' locations (empty when the sampler drops the report or
    there is no store). Thread-safe: the library may finish reports on several threads.
    """

    def __init__(
        self,
        stores: Sequence[Sink] = (),
        exporters: Sequence[Exporter | Sink] = (),
        *,
        sampler: Sampler | None = None,
        names: Sequence[str] = (),
    ) -> None:
        self.stores = list(stores)
        self.exporters = list(exporters)
        self.sampler = sampler or Sampler()
        self.names = list(names) or [type(e).__name__ for e in self.exporters]
        self.failures: Counter[str] = Counter()
        self.exported: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def empty(self) -> bool:
        return not self.stores and not self.exporters

    def write(self, report: Report | EncodedReport) -> list[str]:
        """Sample, then store and export ``report``; the stores' locations.

        A caller that writes the report elsewhere too (``--write-json``'s files) passes an
        :class:`EncodedReport` and reuses its encoding afterwards.
        """
        return self.write_batch([report])[0]

    def write_batch(self, reports: Sequence[Report | EncodedReport]) -> list[list[str]]:
        """:meth:`write` for each of ``reports``, the kept ones stored together: a store that
        writes a batch in one transaction (SQLite, PostgreSQL) keeps all of them or none, so an
        interrupted run never keeps half a batch. The stores' locations, report by report."""
        batch = [EncodedReport.of(report) for report in reports]  # encoded once, on first use
        kept: list[EncodedReport] = []
        for encoded in batch:
            with self._lock:
                sampling = self.sampler.decide(encoded.report)
            if sampling is not None:
                encoded.report.extensions.sampling = sampling
                if not sampling.kept:
                    continue
            kept.append(encoded)
        stored = [_store_batch(store, kept) for store in self.stores]
        where = {id(encoded): [locations[i] for locations in stored] for i, encoded in enumerate(kept)}
        for encoded in kept:
            self._export(encoded)
        return [where.get(id(encoded), []) for encoded in batch]

    def _export(self, encoded: EncodedReport) -> None:
        """Send one report to every exporter; a failure is logged and counted, never raised."""
        for name, exporter in zip(self.names, self.exporters, strict=True):
            try:
                _export(exporter, encoded)
            except Exception as exc:  # an exporter never breaks a generation
                self.failures[name] += 1
                log.warning(
                    "exporter %s failed on report %s: %s", name, encoded.report.trace_id, _one_line(exc)
                )
            else:
                self.exported[name] += 1

    def close(self) -> None:
        """Close every destination once; exporters' failures logged, a store's failure raised last."""
        if self._closed:
            return
        self._closed = True
        for name, exporter in zip(self.names, self.exporters, strict=True):
            try:
                exporter.close()
            except Exception as exc:
                self.failures[name] += 1
                log.warning("exporter %s failed to close: %s", name, _one_line(exc))
        error: BaseException | None = None
        for store in self.stores:
            try:
                store.close()
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    def close_quietly(self) -> None:
        """Close after a failed setup: what fails to close is logged, the setup's error stands."""
        try:
            self.close()
        except (CoreVitalError, OSError) as exc:
            log.debug("closing after a failed setup: %s", exc)


def _encoded_method(obj: object, plain: str) -> Callable[[EncodedReport], object] | None:
    """``obj``'s ``<plain>_encoded`` method, unless a subclass overrides ``plain`` below the class that
    defines it (a subclass's own ``write``/``export`` is what it means to be called)."""
    call = getattr(obj, f"{plain}_encoded", None)
    if not callable(call):
        return None
    mro = type(obj).__mro__
    owner_plain = next((i for i, c in enumerate(mro) if plain in vars(c)), len(mro))
    owner_encoded = next((i for i, c in enumerate(mro) if f"{plain}_encoded" in vars(c)), len(mro))
    return call if owner_encoded <= owner_plain else None


def _store_batch(store: Sink, batch: list[EncodedReport]) -> list[str]:
    """``store``'s ``write_batch_encoded`` (one transaction) where it has one and does not
    override ``write`` itself, else one write per report."""
    write_batch = getattr(store, "write_batch_encoded", None)
    if callable(write_batch) and _encoded_method(store, "write") is not None:
        return [str(where) for where in write_batch(batch)]
    return [_store(store, encoded) for encoded in batch]


def _store(store: Sink, encoded: EncodedReport) -> str:
    write_encoded = _encoded_method(store, "write")
    if write_encoded is not None:
        return str(write_encoded(encoded))
    return store.write(encoded.report)


def _export(exporter: Exporter | Sink, encoded: EncodedReport) -> None:
    """``export`` (``export_encoded`` when there is one), else ``write`` (or ``write_encoded``)."""
    if hasattr(exporter, "export"):
        call = _encoded_method(exporter, "export")
        if call is not None:
            call(encoded)
        else:
            cast(Exporter, exporter).export(encoded.report)
    else:
        _store(exporter, encoded)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def check_writable(name: str, settings: Settings) -> None:
    """Write to the store the way a report will be written, and take it back: a read-only file or
    directory fails now, before a model is loaded, instead of after the generation. A SQLite store
    is also checked page by page (``PRAGMA quick_check``, about 0.1 s per 200 MB): a damaged page
    that a later write would reach fails now too."""
    if name == "sqlite":
        path = Path(store_location("sqlite", settings))
        try:
            conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                conn.execute(f"PRAGMA user_version = {version}")  # rewrites the header page
                conn.execute("ROLLBACK")
                found = str(conn.execute("PRAGMA quick_check(1)").fetchone()[0])
                problem = " ".join(found.replace("*** in database main ***", "").split())
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the SQLite store {path}: {exc}") from exc
        if problem != "ok":
            raise StoreError(
                f"the SQLite store {path} is damaged ({problem}); `corevital migrate --from-db` "
                "copies its readable reports into a new store"
            )
    elif name == "local":
        directory = Path(settings.out)
        try:
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".corevital-write-check-"):
                pass
        except OSError as exc:
            raise StoreError(f"cannot write report files to {directory}: {exc.strerror or exc}") from exc


def open_outputs(
    settings: Settings, *, extra: Sequence[Any] = (), stores: bool = True, named: bool = True
) -> Outputs:
    """The destinations ``settings.sink`` names, plus the ``extra`` objects (custom sinks).

    ``stores`` False leaves out the named stores; ``named`` False leaves out every named sink.

    Everything is set up now, so that a bad endpoint, a missing extra or an unwritable store fails
    before any model is loaded; what was opened is closed again when a later one fails.
    """
    from corevital.sinks.open import open_store

    opened_stores: list[Sink] = []
    exporters: list[Exporter | Sink] = []
    names: list[str] = []
    try:
        for name in settings.sink if named else ():
            if name in STORE_SINKS:
                if stores:
                    opened_stores.append(open_store(name, settings))
                    check_writable(name, settings)
            elif name in BUILTIN_EXPORTERS:
                exporters.append(open_exporter(name, settings))
                names.append(name)
            else:
                exporters.append(open_custom(name, settings))
                names.append(name)
    except BaseException:
        Outputs(opened_stores, exporters, names=names).close_quietly()
        raise
    for obj in extra:
        exporters.append(obj)
        names.append(type(obj).__name__)
    return Outputs(opened_stores, exporters, sampler=Sampler.from_settings(settings), names=names)


__all__ = [
    "BUILTIN_EXPORTERS",
    "EncodedExporter",
    "Exporter",
    "Outputs",
    "open_custom",
    "open_exporter",
    "open_outputs",
]
