"""``corevital proxy``: an OpenAI-compatible reverse proxy that writes a report per choice.

Requests to ``/v1/chat/completions`` and ``/v1/completions`` are forwarded to the upstream engine
with ``logprobs`` (and ``top_logprobs``) added when the client did not ask for them; those fields are
removed again (written as ``null``, as OpenAI writes them when not asked) from what the client
receives, so the client sees what it would have seen without the proxy. Streams (server-sent
events) are passed on event by event as they arrive, never buffered whole. When a response ends,
its reports are built and written by one worker thread, off the request path.

Everything else (other paths, methods, bodies that are not JSON objects) is passed through
untouched. Headers go both ways unchanged except hop-by-hop ones (and ``content-length`` /
``content-encoding`` of a body the proxy rewrote). The ``Authorization`` header is forwarded to the
upstream and never stored or logged: logs name the method, path, status and timings only.

CoreVital's own failures never fail a request: an error while observing is logged and counted, and
the response is passed through. An upstream that cannot be reached is answered 502 with an
OpenAI-style error body; an upstream's error responses are passed through as they are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corevital.analysis.online import OnlineSequenceMonitor
from corevital.analysis.policies import StopDecision, StopPolicy, first_decision
from corevital.analysis.profiles import load_profile
from corevital.capture.logprobs import (
    ObservedRequest,
    StreamAccumulator,
    TokenIds,
    choice_tokens,
    logit_stats,
)
from corevital.report.timestamps import utc_now

if TYPE_CHECKING:
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from corevital.proxy.reports import LogprobReporter

log = logging.getLogger(__name__)

OBSERVED_PATHS = ("/v1/chat/completions", "/v1/completions")
DEFAULT_TOP_LOGPROBS = 20
DEFAULT_LISTEN = "127.0.0.1:8322"
# Hop-by-hop headers (RFC 9110 §7.6.1) are the connection's, not the message's; host names the proxy.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0  # between two reads of the upstream's response (a long generation streams slowly)
MAX_PENDING_RESPONSES = 1000  # responses waiting for their reports; beyond it a response is not observed
NO_RETRY = frozenset({429, 503})  # upstream errors not asked again with the client's own body
LATENCY_SAMPLES = 100_000  # per-chunk added latencies kept for the percentiles (the most recent)


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


@dataclass(frozen=True)
class Injection:
    """What the proxy added to a request body (removed again from the response)."""

    logprobs: bool  # the client did not ask for logprobs: they are removed from what it receives


def prepare_body(
    body: Mapping[str, Any], *, chat: bool, top_logprobs: int
) -> tuple[dict[str, Any], Injection]:
    """The body sent upstream: ``logprobs`` (and ``top_logprobs``) added when the client did not ask."""
    upstream = dict(body)
    if chat:
        if body.get("logprobs"):
            return upstream, Injection(logprobs=False)
        upstream["logprobs"] = True
        upstream["top_logprobs"] = top_logprobs
        return upstream, Injection(logprobs=True)
    if body.get("logprobs") is not None:
        return upstream, Injection(logprobs=False)
    upstream["logprobs"] = top_logprobs
    return upstream, Injection(logprobs=True)


def well_formed(document: Any, *, chat: bool) -> bool:
    """Whether a request body has the shape a generation needs (chat: a list of message objects;
    completions: a prompt string or list); only those get logprobs added and are observed."""
    if not isinstance(document, dict):
        return False
    if chat:
        messages = document.get("messages")
        return isinstance(messages, list) and bool(messages) and all(isinstance(m, dict) for m in messages)
    return isinstance(document.get("prompt"), str | list)


def strip_logprobs(document: Any) -> bool:
    """Set each choice's ``logprobs`` to null (where present); whether anything changed."""
    changed = False
    if isinstance(document, dict):
        for choice in document.get("choices") or []:
            if isinstance(choice, dict) and choice.get("logprobs") is not None:
                choice["logprobs"] = None
                changed = True
    return changed


def dumps_like(document: Any, original: bytes) -> bytes:
    """``document`` serialised in the style of ``original``: compact (vLLM, SGLang, llama.cpp,
    FastAPI), indented by 2 (OpenAI's own API) or Python's default ``", "`` and ``": "``
    (llama-cpp-python's streamed events), non-ASCII escaped or not."""
    ascii_only = b"\\u" in original and original.isascii()
    if b"\n  " in original.strip():
        text = json.dumps(document, indent=2, ensure_ascii=ascii_only)
    elif _spaced(original):
        text = json.dumps(document, ensure_ascii=ascii_only)
    else:
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=ascii_only)
    return text.encode("utf-8")


_FIRST_KEY = re.compile(rb'\s*\{\s*"(?:[^"\\]|\\.)*"\s*:( ?)')


def _spaced(original: bytes) -> bool:
    """Whether a JSON object's first key is followed by ``": "`` (Python's default separators)."""
    match = _FIRST_KEY.match(original)
    return match is not None and match.group(1) == b" "


def forward_headers(headers: Mapping[str, str] | Any, *, drop: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Headers minus hop-by-hop ones (and those ``connection`` names) and ``drop``."""
    items = list(headers.items())
    named = {
        token.strip().lower()
        for key, value in items
        if key.lower() == "connection"
        for token in value.split(",")
    }
    skip = HOP_BY_HOP | named | set(drop)
    return [(key, value) for key, value in items if key.lower() not in skip]


def error_body(message: str, kind: str = "upstream_unavailable") -> bytes:
    """An OpenAI-style error object."""
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()


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


class StreamWatch:
    """The intervention policies over a stream's tokens, choice by choice, as chunks arrive.

    Each token's logit tier (the entropy's lower bound, surprisal, margin, top-k mass) goes to an
    online monitor per choice (running risk, early warnings, repetition); the first policy that
    fires is the :attr:`decision`. Tokens without a finite value (no logprob listed) are skipped.
    """

    def __init__(self, policies: Sequence[StopPolicy], *, mass_k: int = 10) -> None:
        self.policies = tuple(policies)
        self.mass_k = mass_k
        self._profile = load_profile("unknown")
        self._monitors: dict[int, OnlineSequenceMonitor] = {}
        self._ids: dict[int, TokenIds] = {}
        self.decision: tuple[int, StopDecision] | None = None
        self.head: dict[str, Any] = {}  # id, object, created, model of the last chunk
        self.indices: set[int] = set()

    def __call__(self, chunk: Mapping[str, Any]) -> None:
        self.head = {key: chunk[key] for key in ("id", "object", "created", "model") if key in chunk}
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, Mapping):
                continue
            index = choice.get("index", 0) if isinstance(choice.get("index", 0), int) else 0
            self.indices.add(index)
            if self.decision is not None:
                continue
            for token in choice_tokens(choice):
                ids = self._ids.setdefault(index, TokenIds())
                stats, chosen = logit_stats([token], ids, topk=1, mass_k=self.mass_k, vocab_size=None)
                values = [float(stats.entropy[0]), float(chosen.surprisal[0]), float(stats.top_k_margin[0])]
                if not all(math.isfinite(v) for v in values):
                    continue
                monitor = self._monitors.setdefault(index, OnlineSequenceMonitor(self._profile))
                step = monitor.update(
                    token_id=int(chosen.token_ids[0]),
                    entropy=values[0],
                    surprisal=values[1],
                    margin=values[2],
                    topk_mass=float(stats.topk_mass[0]),
                    token_text=token.token,
                )
                decision = first_decision(self.policies, step)
                if decision is not None:
                    self.decision = (index, decision)
                    break

    def final_event(self, chat: bool) -> bytes:
        """The event that ends the client's stream: each choice's finish reason names the policy."""
        assert self.decision is not None
        reason = stop_finish_reason(self.decision[1])
        choices: list[dict[str, Any]] = []
        for index in sorted(self.indices or {0}):
            if chat:
                choices.append({"index": index, "delta": {}, "logprobs": None, "finish_reason": reason})
            else:
                choices.append({"index": index, "text": "", "logprobs": None, "finish_reason": reason})
        chunk = {**self.head, "choices": choices}
        return b"data: " + json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def stop_finish_reason(decision: StopDecision) -> str:
    """The finish reason a stream stopped by CoreVital ends with: ``corevital:<policy>``."""
    return f"corevital:{decision.policy}"


ReportSink = Callable[[Mapping[str, Any], ObservedRequest, float, str], None]


class ProxyApp:
    """The proxy's state: the upstream, the HTTP client, the report worker and the statistics."""

    def __init__(
        self,
        upstream: str,
        reporter: LogprobReporter | None,
        *,
        top_logprobs: int = DEFAULT_TOP_LOGPROBS,
        policies: Sequence[StopPolicy] = (),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = upstream.rstrip("/")
        self.upstream = base.removesuffix("/v1")
        self.reporter = reporter
        self.top_logprobs = top_logprobs
        self.policies = tuple(policies)
        self.stats = ProxyStats()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corevital-proxy-reports")
        self._pending = 0
        self._idle = threading.Condition()

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        import httpx

        self._client = httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            follow_redirects=False,
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await asyncio.to_thread(self._worker.shutdown, wait=True)
        if self.reporter is not None:
            try:
                self.reporter.close()
            except Exception as exc:  # noqa: BLE001 - closing the sinks must not hide the shutdown
                self.stats.count("failures")
                log.error("closing the report sinks failed: %s", _one_line(exc))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued response's reports are written (True) or ``timeout`` passed."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    # --- reports ---------------------------------------------------------------------------------
    def _queue_report(
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
            log.error("no report for a response: %s", _one_line(exc))
        finally:
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    # --- HTTP ------------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        self.stats.count("requests")
        body = await request.body()
        received = time.perf_counter()
        observed = request.method == "POST" and request.url.path in OBSERVED_PATHS
        document: Any = None
        injection = Injection(logprobs=False)
        upstream_body = body
        if observed:
            try:
                document = json.loads(body)
                chat = request.url.path.endswith("/chat/completions")
                if not well_formed(document, chat=chat):
                    observed = False  # the upstream refuses it as it would, from the client's own body
                else:
                    prepared, injection = prepare_body(document, chat=chat, top_logprobs=self.top_logprobs)
                    if injection.logprobs:
                        upstream_body = json.dumps(prepared).encode("utf-8")
            except (ValueError, RecursionError):
                observed = False  # not JSON: the upstream answers it as it would
        started = time.perf_counter()
        started_utc = utc_now()
        try:
            upstream = await self._send(request, upstream_body)
        except Exception as exc:  # noqa: BLE001 - every transport failure is the upstream's
            return self._unreachable(request, exc)
        if injection.logprobs and upstream.status_code >= 400 and upstream.status_code not in NO_RETRY:
            # refused: an error message may quote the request (llama-cpp-python's 500s do), so the
            # client gets the upstream's answer to its own body, asked again unchanged; not when the
            # upstream says it is overloaded (429, 503): asking again would add to its load
            await upstream.aclose()
            try:
                upstream = await self._send(request, body)
            except Exception as exc:  # noqa: BLE001 - as for the first call
                return self._unreachable(request, exc)
        content_type = upstream.headers.get("content-type", "")
        if not observed or upstream.status_code >= 400:
            return await self._pass_through(request, upstream)
        observation = _Observation(
            ObservedRequest.from_body(document),
            injection,
            started,
            started_utc,
            request.url.path,
            (started - received) * 1000.0,
        )
        if content_type.startswith("text/event-stream"):
            return self._stream(upstream, observation)
        return await self._whole(upstream, observation)

    def _unreachable(self, request: Request, exc: Exception) -> Response:
        """A transport failure towards the upstream: counted, logged, a 502 naming its kind."""
        from starlette.responses import Response

        self.stats.count("upstream_errors")
        log.warning("%s %s: upstream unreachable: %s", request.method, request.url.path, type(exc).__name__)
        return Response(
            error_body(f"the upstream server could not be reached ({type(exc).__name__})"),
            status_code=502,
            media_type="application/json",
        )

    async def _send(self, request: Request, body: bytes) -> httpx.Response:
        assert self._client is not None, "the proxy is not started"
        url = self.upstream + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        outgoing = self._client.build_request(
            request.method, url, headers=forward_headers(request.headers), content=body
        )
        return await self._client.send(outgoing, stream=True)

    async def _pass_through(self, request: Request, upstream: httpx.Response) -> Response:
        """The upstream's response as it came (status, headers, body bytes), streamed."""
        from starlette.background import BackgroundTask
        from starlette.responses import StreamingResponse

        log.info("%s %s -> %d (passed through)", request.method, request.url.path, upstream.status_code)
        return StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            headers=dict(forward_headers(upstream.headers)),
            background=BackgroundTask(upstream.aclose),
        )

    async def _whole(self, upstream: httpx.Response, observation: _Observation) -> Response:
        from starlette.responses import Response

        try:
            content = await upstream.aread()
        finally:
            await upstream.aclose()
        arrived = time.perf_counter()
        drop: tuple[str, ...] = ("content-encoding",)
        body = content
        try:
            document = json.loads(content)
            if isinstance(document, dict):
                response = json.loads(content)  # the copy observed (logprobs kept)
                if observation.injection.logprobs and strip_logprobs(document):
                    body = dumps_like(document, content)
                self._finish(response, observation)
        except Exception as exc:  # noqa: BLE001 - pass the body through unobserved
            self.stats.count("failures")
            log.error("%s: response not observed: %s", observation.path, _one_line(exc))
        log.info("POST %s -> %d", observation.path, upstream.status_code)
        response = Response(
            body, status_code=upstream.status_code, headers=dict(forward_headers(upstream.headers, drop=drop))
        )
        self.stats.request_ms.append(observation.prepare_ms + (time.perf_counter() - arrived) * 1000.0)
        return response

    def _stream(self, upstream: httpx.Response, observation: _Observation) -> Response:
        from starlette.responses import StreamingResponse

        return StreamingResponse(
            self._events(upstream, observation),
            status_code=upstream.status_code,
            headers=dict(forward_headers(upstream.headers, drop=("content-encoding",))),
        )

    async def _events(self, upstream: httpx.Response, observation: _Observation) -> AsyncIterator[bytes]:
        parser = SSEParser()
        accumulator = StreamAccumulator()
        watch = StreamWatch(self.policies) if self.policies and self.reporter is not None else None
        healthy = True
        complete = False
        handled_ms = observation.prepare_ms
        try:
            async for data in upstream.aiter_bytes():
                arrived = time.perf_counter()
                if not healthy:
                    yield data
                    continue
                unsent = parser.pending + data
                try:
                    pieces = []
                    for event in parser.feed(data):
                        pieces.append(rewrite_event(event, accumulator, observation.injection, watch))
                        if watch is not None and watch.decision is not None:
                            break  # the events after the stop are not the client's
                    out = b"".join(pieces)
                except Exception as exc:  # noqa: BLE001 - from here on the stream passes through as is
                    healthy = False
                    self.stats.count("failures")
                    log.error("%s: stream not observed: %s", observation.path, _one_line(exc))
                    parser.rest()
                    out = unsent
                stop = watch is not None and healthy and watch.decision is not None
                if stop and watch is not None:
                    out += watch.final_event(accumulator.chat) + b"data: [DONE]\n\n"
                if out:
                    added = (time.perf_counter() - arrived) * 1000.0
                    handled_ms += added
                    self.stats.chunk_ms.append(added)
                    yield out
                if stop:
                    break
            rest = parser.rest()
            if watch is not None and watch.decision is not None:
                rest = (
                    b""  # the stream ended at the stop: what the upstream sent after it is not the client's
                )
            if rest:
                yield rest
            complete = True
        finally:
            await upstream.aclose()
            if complete and healthy:
                ending = time.perf_counter()
                try:
                    stopped = watch.decision if watch is not None else None
                    self._finish(accumulator.response(), observation, stopped)
                except Exception as exc:  # noqa: BLE001
                    self.stats.count("failures")
                    log.error("%s: stream not observed: %s", observation.path, _one_line(exc))
                self.stats.request_ms.append(handled_ms + (time.perf_counter() - ending) * 1000.0)
            log.info(
                "POST %s -> %d (stream%s)",
                observation.path,
                upstream.status_code,
                "" if complete else ", cut short",
            )

    def _finish(
        self,
        response: Mapping[str, Any],
        observation: _Observation,
        stopped: tuple[int, StopDecision] | None = None,
    ) -> None:
        elapsed = (time.perf_counter() - observation.started) * 1000.0
        self._queue_report(response, observation.request, elapsed, observation.started_utc, stopped)

    def app(self) -> Starlette:
        """The ASGI application: every path and method goes through :meth:`handle`."""
        from contextlib import asynccontextmanager

        from starlette.applications import Starlette
        from starlette.routing import Route

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=methods)], lifespan=lifespan)


@dataclass(frozen=True)
class _Observation:
    request: ObservedRequest
    injection: Injection
    started: float
    started_utc: str
    path: str
    prepare_ms: float = 0.0  # reading and rewriting the request body


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
