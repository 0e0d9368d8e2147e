"""Server-sent events of a streamed response: split as they arrive, fed to the report's
accumulator, and rewritten without the logprobs the proxy added (nothing else changes)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from corevital.capture.openai_api import StreamAccumulator
from corevital.proxy.bodies import Injection, dumps_like, strip_logprobs


class SSEParser:
    """Splits a byte stream into server-sent events (each with its terminating blank line)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        events: list[bytes] = []
        while True:
            cut = _event_end(self._buffer)
            if cut < 0:
                return events
            events.append(self._buffer[:cut])
            self._buffer = self._buffer[cut:]

    @property
    def pending(self) -> bytes:
        """The bytes of an event not yet complete."""
        return self._buffer

    def rest(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest


def _event_end(buffer: bytes) -> int:
    ends = [
        (i, n) for sep in (b"\n\n", b"\r\n\r\n", b"\r\r") if (i := buffer.find(sep)) >= 0 for n in [len(sep)]
    ]
    if not ends:
        return -1
    index, size = min(ends)
    return index + size


def rewrite_event(
    event: bytes,
    accumulator: StreamAccumulator,
    injection: Injection,
    on_chunk: Callable[[Mapping[str, Any]], None] | None = None,
) -> bytes:
    """One SSE event: its ``data:`` JSON fed to the accumulator and, when the proxy added the
    logprobs, rewritten without them (other lines and the event's own line endings kept)."""
    lines = event.splitlines(keepends=True)
    out = []
    changed = False
    for line in lines:
        stripped = line.rstrip(b"\r\n")
        if not stripped.startswith(b"data:"):
            out.append(line)
            continue
        prefix_len = 6 if stripped.startswith(b"data: ") else 5
        payload = stripped[prefix_len:]
        if payload.strip() == b"[DONE]" or not payload.strip().startswith(b"{"):
            out.append(line)
            continue
        chunk = json.loads(payload)
        if isinstance(chunk, dict):
            accumulator.add(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
        if injection.logprobs and strip_logprobs(chunk):
            changed = True
            out.append(stripped[:prefix_len] + dumps_like(chunk, payload) + line[len(stripped) :])
        else:
            out.append(line)
    return b"".join(out) if changed else event
