"""The checks every request passes before it reaches a route, as one plain ASGI middleware.

In order: the ``Host`` header (a loopback server answers only loopback names, so a page that
rebinds its DNS name to 127.0.0.1 gets nothing), the length of the request target, the body size,
the bearer token (compared in constant time; ``/healthz`` and the dashboard's page and static files,
which hold no data, are open: the page asks for the token), then the route runs under the
time limit (event streams excepted). Every response gets headers that keep browsers from sniffing,
framing or caching it.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import anyio

from corevital.server.config import ServeConfig

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("corevital.server")

OPEN_PATHS = frozenset({"/healthz", "/"})
OPEN_PREFIX = "/static/"
UNTIMED_PATHS = frozenset({"/api/v1/events"})
LIVE_EVENTS = ("/api/live/runs/", "/events")  # a live run's event stream: prefix and suffix

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)
NO_STORE = (b"cache-control", b"no-store")


def is_open(path: str) -> bool:
    """Whether ``path`` is answered without the bearer token."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIX)


def is_untimed(path: str) -> bool:
    """Whether ``path`` is an event stream, which runs past the request time limit."""
    return path in UNTIMED_PATHS or (path.startswith(LIVE_EVENTS[0]) and path.endswith(LIVE_EVENTS[1]))


class BodyTooLarge(Exception):
    """A chunked request body went past the limit while the route read it."""


async def send_json(
    send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with ``{"detail": detail}`` and ``status``."""
    body = json.dumps({"detail": detail}).encode("utf-8")
    start_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Host, size, token and time checks around the application (see the module docstring)."""

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app = app
        self.limits = config.limits
        self.allowed_hosts = (
            None
            if config.allowed_hosts is None
            else {host.encode("latin-1") for host in config.allowed_hosts}
        )
        self.token = None if config.token is None else config.token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, detail, extra = refusal
            await send_json(send, status, detail, [*SECURITY_HEADERS, NO_STORE, *extra])
            return
        if b"transfer-encoding" in headers:
            receive = self._bounded(receive)
        path = scope["path"]
        send = _with_headers(send)
        if is_untimed(path):
            await self.app(scope, receive, send)
            return
        await self._timed(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str, list[Any]] | None:
        if self.allowed_hosts is not None and headers.get(b"host", b"").lower() not in self.allowed_hosts:
            return 400, "invalid Host header: this server answers only to its loopback names", []
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if target > self.limits.max_url_chars:
            return 414, f"the request target is longer than {self.limits.max_url_chars} characters", []
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return 400, "malformed Content-Length header", []
            if int(length) > self.limits.max_body_bytes:
                return 413, f"the request body is larger than {self.limits.max_body_bytes} bytes", []
        if self.token is not None and not is_open(scope["path"]):
            scheme, _, credential = headers.get(b"authorization", b"").partition(b" ")
            matches = hmac.compare_digest(credential.strip(), self.token)  # constant time
            if not (matches and scheme.lower() == b"bearer"):
                detail = "missing or wrong bearer token: send 'Authorization: Bearer <token>'"
                return 401, detail, [(b"www-authenticate", b'Bearer realm="corevital"')]
        return None

    def _bounded(self, receive: Receive) -> Receive:
        limit = self.limits.max_body_bytes
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
            return message

        return bounded_receive

    async def _timed(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        limit = self.limits.request_timeout_s
        try:
            with anyio.move_on_after(limit) as deadline:
                await self.app(scope, receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_json(
                    send, 413, f"the request body is larger than {self.limits.max_body_bytes} bytes"
                )
            return
        if deadline.cancelled_caught:
            logger.warning("%s %s took longer than %.1f s", scope.get("method"), scope["path"], limit)
            if not started:
                await send_json(
                    send, 503, f"the request took longer than {limit:g} s", [(b"retry-after", b"5")]
                )


def _with_headers(send: Send) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            names = {name.lower() for name, _ in headers}
            headers.extend(header for header in SECURITY_HEADERS if header[0] not in names)
            if b"cache-control" not in names:
                headers.append(NO_STORE)
            message["headers"] = headers
        await send(message)

    return send_with_headers
