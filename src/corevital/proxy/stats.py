"""What the proxy did: requests, reports, failures, and the time it added per request and per chunk."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

LATENCY_SAMPLES = 100_000  # added latencies kept for the percentiles (the most recent)


@dataclass
class ProxyStats:
    """What the proxy did: requests, reports, failures and its added latency per streamed chunk."""

    requests: int = 0
    observed: int = 0  # responses whose reports were queued
    reports: int = 0  # reports built and written
    failures: int = 0  # CoreVital failures (the requests were served regardless)
    upstream_errors: int = 0  # upstream unreachable (answered 502)
    dropped: int = 0  # responses not observed because MAX_PENDING_RESPONSES were waiting
    chunk_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    # per observed request: the proxy's own work on it (reading and rewriting the request body, then
    # the response body, or every event of a stream), the time it added to the request
    request_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str, by: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + by)

    def percentiles(self, of: str = "chunk") -> dict[str, float | None]:
        """p50 and p95 of the added latency, in milliseconds, per streamed chunk (``of="chunk"``) or
        per observed request (``of="request"``)."""
        with self.lock:
            values = sorted(self.chunk_ms if of == "chunk" else self.request_ms)
        if not values:
            return {"p50": None, "p95": None, "n": 0}

        def pick(q: float) -> float:
            return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]

        return {"p50": pick(0.50), "p95": pick(0.95), "n": float(len(values))}


def one_line(exc: BaseException) -> str:
    """An exception as one log line: its type and its message's first line (never a traceback)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
