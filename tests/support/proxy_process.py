"""``corevital proxy`` as users run it (its own process, the CLI) and the reports it stored, for the
engine benches; and the proxy tests' shared helpers (the stored reports, the fields an engine
makes new for every response)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from corevital.report.schema import Report
from tests.support.llama_server import free_port
from tests.support.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
FRESH = re.compile(rb'"(id|created)": ?("[^"]*"|\d+)')  # new in every response, proxied or not


def same_apart_from_fresh_fields(content: bytes) -> bytes:
    """A response body with its ``id`` and ``created`` values blanked (they differ every time)."""
    return FRESH.sub(rb'"\1": _', content)


def stored_reports(db: Path) -> list[Report]:
    """Every report of a SQLite store, oldest first."""
    from corevital.sinks.open import open_location
    from corevital.sinks.rows import TraceQuery

    store = open_location(str(db), read_only=True)
    try:
        reports = [store.get(row.trace_id) for row in store.list(TraceQuery(limit=None))]
    finally:
        store.close()
    return sorted((r for r in reports if r is not None), key=lambda r: r.created_at_utc)


class ProxyProcess:
    """``corevital proxy --upstream URL`` on a free port of 127.0.0.1, storing into SQLite under ``out``."""

    def __init__(
        self,
        upstream: str,
        out: Path,
        *,
        vocab_size: int | None = None,
        top_logprobs: int = 20,
        extra: Sequence[str] = (),
        timeout: float = 120.0,
    ) -> None:
        self.port = free_port()
        self.out = out
        self.args = [
            sys.executable, "-m", "corevital", "proxy", "--upstream", upstream,
            "--listen", f"127.0.0.1:{self.port}", "--out", str(out), "--sink", "sqlite",
            "--top-logprobs", str(top_logprobs),
            *(("--vocab-size", str(vocab_size)) if vocab_size else ()), *extra,
        ]  # fmt: skip
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - read after the process ends
        self.process = subprocess.Popen(
            self.args,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the proxy exited: {self.output()[-2000:]}")
            try:
                httpx.get(self.url + "/v1/models", timeout=2)  # any answer: the proxy listens
                return
            except httpx.HTTPError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError("the proxy did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", errors="replace")

    def stop(self) -> str:
        """Ctrl-C (the proxy writes the reports of ended responses and prints its figures); its output."""
        stop_process(self.process, signal.SIGINT, timeout=120)
        return self.output()
