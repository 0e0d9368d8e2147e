"""The proxy's report worker: ended responses queued, their reports built and written by one
thread, off the request path; a bounded queue (a response beyond it is passed on unobserved and
counted as dropped) and failures logged and counted, never raised to a request."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from corevital.analysis.policies import StopDecision
from corevital.capture.openai_api import ObservedRequest
from corevital.proxy.stats import ProxyStats, one_line

if TYPE_CHECKING:
    from corevital.proxy.reports import LogprobReporter

log = logging.getLogger(__name__)

MAX_PENDING_RESPONSES = 1000  # responses waiting for their reports; beyond it a response is not observed


class ReportQueue:
    """Builds and writes the reports of ended responses in one worker thread."""

    def __init__(self, reporter: LogprobReporter | None, stats: ProxyStats) -> None:
        self.reporter = reporter
        self.stats = stats
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corevital-proxy-reports")
        self._pending = 0
        self._idle = threading.Condition()

    def submit(
        self,
        response: Mapping[str, Any],
        request: ObservedRequest,
        elapsed_ms: float,
        start: str,
        stopped: tuple[int, StopDecision] | None = None,
    ) -> None:
        if self.reporter is None:
            return
        with self._idle:
            if self._pending >= MAX_PENDING_RESPONSES:
                self.stats.count("dropped")
                log.warning("a response not observed: %d responses wait for their reports", self._pending)
                return
            self._pending += 1
        self.stats.count("observed")
        try:
            self._worker.submit(self._write_reports, response, request, elapsed_ms, start, stopped)
        except RuntimeError:  # shutting down
            self._done()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued response's reports are written (True) or ``timeout`` passed."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    def close(self) -> None:
        """Write the reports of the responses queued, then close the sinks (a failure is counted)."""
        self._worker.shutdown(wait=True)
        if self.reporter is not None:
            try:
                self.reporter.close()
            except Exception as exc:  # noqa: BLE001 - closing the sinks must not hide the shutdown
                self.stats.count("failures")
                log.error("closing the report sinks failed: %s", one_line(exc))

    def _write_reports(
        self,
        response: Mapping[str, Any],
        request: ObservedRequest,
        elapsed_ms: float,
        start: str,
        stopped: tuple[int, StopDecision] | None,
    ) -> None:
        try:
            assert self.reporter is not None
            reports = self.reporter.observe(
                response, request, elapsed_ms=elapsed_ms, started_at_utc=start, stopped=stopped
            )
            self.stats.count("reports", len(reports))
        except Exception as exc:  # noqa: BLE001 - CoreVital's failure never reaches the client
            self.stats.count("failures")
            log.error("no report for a response: %s", one_line(exc))
        finally:
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()
