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
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corevital.analysis.policies import StopDecision, StopPolicy
from corevital.capture.openai_api import ObservedRequest, StreamAccumulator
from corevital.proxy.bodies import (
    Injection,
    dumps_like,
    error_body,
    forward_headers,
    prepare_body,
    strip_logprobs,
    well_formed,
)
from corevital.proxy.events import SSEParser, rewrite_event
from corevital.proxy.report_queue import ReportQueue
from corevital.proxy.stats import ProxyStats, one_line
from corevital.proxy.watch import StreamWatch
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
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0  # between two reads of the upstream's response (a long generation streams slowly)
NO_RETRY = frozenset({429, 503})  # upstream errors not asked again with the client's own body


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
        self.reports = ReportQueue(reporter, self.stats)

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
        await asyncio.to_thread(self.reports.close)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued response's reports are written (True) or ``timeout`` passed."""
        return self.reports.wait_idle(timeout)

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
            log.error("%s: response not observed: %s", observation.path, one_line(exc))
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
        watch = (
            StreamWatch(self.policies, vocab_size=self.reporter.vocab_size)
            if self.policies and self.reporter is not None
            else None
        )
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
                    log.error("%s: stream not observed: %s", observation.path, one_line(exc))
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
                    log.error("%s: stream not observed: %s", observation.path, one_line(exc))
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
        self.reports.submit(response, observation.request, elapsed, observation.started_utc, stopped)

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
