"""The HTTP sink (``--sink http``): POST each finished report, as gzip-encoded JSON, to a URL.

``export(report)`` writes the report to an on-disk spool (:mod:`corevital.exporters.spool`) and
returns; a background thread POSTs the spooled reports in the order they were exported. A
report is deleted from the spool only once the receiver answers 2xx, so nothing is lost when the
endpoint is down, slow or failing, or when the process is killed: the next process that uses the
same spool directory sends what was left, first.

The request::

    POST <http_url>
    Content-Type: application/json
    Content-Encoding: gzip
    Idempotency-Key: <trace id>
    X-CoreVital-Trace-Id: <trace id>

    <the report's JSON, gzip-compressed>

Retried (exponential backoff with full jitter, 0.5 s doubling to 30 s; a Retry-After header is
honoured): connection errors, timeouts (``http_timeout`` per request), 5xx, 408, 425 and 429.
Any other answer (a 4xx, a redirect) is not retried: the report is moved to ``<spool>/rejected/``
with the status in a ``.reason`` file, and an error is logged. Delivery is at least once: a
receiver drops duplicates by ``Idempotency-Key``.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Self
from urllib.parse import urlsplit

from corevital.errors import ConfigError, ExporterError, NotAvailableError
from corevital.exporters.spool import (
    Attempt,
    Backoff,
    Outcome,
    Spool,
    SpoolSender,
    outcome_of_status,
    parse_retry_after,
)
from corevital.report.schema_base import SCHEMA_VERSION
from corevital.sinks.encoded import GZIP_LEVEL, EncodedReport

if TYPE_CHECKING:
    import httpx

    from corevital.config import Settings
    from corevital.report.schema import Report

log = logging.getLogger(__name__)

USER_AGENT = f"corevital-http-sink (report schema {SCHEMA_VERSION})"


def import_httpx(sink: str) -> None:
    """Fail now, with the extra to install, when httpx is missing."""
    try:
        import httpx  # noqa: F401
    except ImportError as exc:
        raise NotAvailableError(
            f"--sink {sink} needs the {sink} extra: pip install 'corevital[{sink}]' (httpx is missing)"
        ) from exc


def check_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} must be an http:// or https:// URL, got {url!r}")
    return url


def post_attempt(client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
    """POST once; the outcome by status (see :func:`~corevital.exporters.spool.outcome_of_status`),
    connection errors and timeouts retried."""
    import httpx

    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.TimeoutException as exc:
        return Attempt(Outcome.RETRY, f"timed out ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        return Attempt(Outcome.RETRY, f"{type(exc).__name__}: {_first_line(str(exc))}")
    status = response.status_code
    text = _first_line(response.text)[:200]
    detail = f"HTTP {status} {response.reason_phrase}" + (f": {text}" if text else "")
    return Attempt(
        outcome_of_status(status),
        detail,
        status=status,
        retry_after=parse_retry_after(response.headers.get("retry-after")) if status in (429, 503) else None,
    )


class Poster:
    """The POSTs of one exporter's sender thread (:func:`post_attempt`), on an httpx client made
    at the first one (redirects not followed) and closed by :meth:`close`."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._client: httpx.Client | None = None

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)
        return post_attempt(self._client, url, body, headers)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


class HttpExporter:
    """POSTs each report (gzip JSON, ``Idempotency-Key: <trace id>``) to ``url`` through a spool.

    ``export()`` writes the report's JSON to the spool before it returns, so a report it accepted
    survives the process being killed; the gzip compression and the POST are done on the sender
    thread. The JSON is the encoding the run's store made already (:class:`Outputs
    <corevital.exporters.base.Outputs>` shares one :class:`~corevital.sinks.encoded.EncodedReport`
    between all destinations): then ``export()`` is one file write (0.5-1 ms of CPU for a 200 KB
    report). Without a store, ``export()`` makes the encoding itself (about 4 ms of CPU for 200 KB).
    ``write_in_background`` moves encoding and writing to a thread of their own, so ``export()``
    only queues the report; a report then reaches the spool a little later, and a process killed
    in between loses the reports not written yet. ``sync_on_export`` fsyncs each report inside
    ``export()`` (see :mod:`corevital.exporters.spool`).

    ``close()`` waits up to ``close_wait_s`` (default twice the timeout) for the queued reports,
    then leaves what is still undelivered in the spool for the next process and logs how many.
    """

    def __init__(
        self,
        url: str,
        spool_dir: str | Path,
        *,
        timeout: float = 10.0,
        close_wait_s: float | None = None,
        backoff: Backoff | None = None,
        rescan_s: float = 5.0,
        sync_on_export: bool = False,
        write_in_background: bool = False,
    ) -> None:
        import_httpx("http")
        self.url = check_url(url, "--http-url")
        self.timeout = timeout
        self.close_wait_s = 2.0 * timeout if close_wait_s is None else close_wait_s
        self._poster = Poster(timeout)
        self.spool = Spool(spool_dir)
        self.sender = SpoolSender(
            self.spool,
            self._deliver,
            name="http sink",
            backoff=backoff,
            rescan_s=rescan_s,
            sync_on_put=sync_on_export,
        )
        self._closed = False
        self._unwritten: deque[EncodedReport] | None = None
        self._writer: threading.Thread | None = None
        self._writer_cond = threading.Condition()
        if write_in_background:
            self._unwritten = deque()
            self._writer = threading.Thread(
                target=self._write_loop, name="corevital-http-writer", daemon=True
            )
            self._writer.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        if not settings.http_url:
            raise ConfigError("--sink http needs --http-url (where to POST the reports)")
        spool = settings.http_spool or str(Path(settings.out) / "http-spool")
        try:
            return cls(settings.http_url, spool, timeout=settings.http_timeout)
        except OSError as exc:
            raise ExporterError(f"--http-spool {spool}: cannot use it as the spool directory: {exc}") from exc

    def export(self, report: Report) -> None:
        """Write ``report`` to the spool and queue it; the POST happens on the sender thread."""
        self.export_encoded(EncodedReport(report))

    def export_encoded(self, encoded: EncodedReport) -> None:
        """:meth:`export`, writing the report's shared JSON encoding (made here if no store made it)."""
        if self._unwritten is not None:
            with self._writer_cond:
                self._unwritten.append(encoded)
                self._writer_cond.notify()
            return
        self._spool(encoded)

    def _spool(self, encoded: EncodedReport) -> None:
        self.sender.put(encoded.trace_id.replace("\n", " "), encoded.json_bytes)

    def _write_loop(self) -> None:
        assert self._unwritten is not None
        while True:
            with self._writer_cond:
                while not self._unwritten and not self._closed:
                    self._writer_cond.wait()
                if not self._unwritten:
                    return
                encoded = self._unwritten.popleft()
            try:
                self._spool(encoded)
            except Exception as exc:  # logged: the run that made the report is not failed
                log.error("http sink: report %s not spooled: %s", encoded.trace_id, exc)

    def close(self) -> None:
        """Deliver what is queued (bounded wait), leave the rest in the spool, stop the sender."""
        if self._closed:
            return
        with self._writer_cond:
            self._closed = True
            self._writer_cond.notify()
        if self._writer is not None:
            self._writer.join()  # every exported report is written to the spool first
        left = self.sender.close(self.close_wait_s)
        if left:
            log.warning(
                "http sink: %d report(s) not delivered to %s yet; kept in %s for the next run",
                left,
                self.url,
                self.spool.root,
            )
        self._poster.close()

    def _deliver(self, key: str, body: bytes) -> Attempt:
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Idempotency-Key": key,
            "X-CoreVital-Trace-Id": key,
            "User-Agent": USER_AGENT,
        }
        return self._poster.post(self.url, gzip.compress(body, GZIP_LEVEL, mtime=0), headers)


__all__ = ["HttpExporter", "Poster", "check_url", "import_httpx", "post_attempt"]
