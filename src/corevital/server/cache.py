"""A small response cache for the listing routes, kept valid by watching the store's position.

Dashboards poll the same few lists; the store changes only when a run lands. A successful
``GET`` of a listing route (runs, the original ``/api/traces``, aggregates) is kept, keyed by its
request target, for at most ``ttl_s`` and only while the store's last position (``follow(None)``)
is what it was when the entry was made. Concurrent requests for a target that is not kept wait
for the first one's answer instead of each asking the store. The position is read at most every
``check_s`` (in a worker thread, one read at a time), so a new run shows in every list within
about ``check_s``; a report rewritten under the same id (which keeps its position) within
``ttl_s``. Reports, events and errors are never cached. Runs inside
:class:`~corevital.server.guard.Guard`: the token and every other check come first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import anyio

from corevital.server.common import in_thread
from corevital.server.errors import ApiError
from corevital.server.guard import ASGIApp, Message, Receive, Scope, Send
from corevital.sinks.base import ReportStore

CACHED_PATHS = frozenset({"/api/v1/runs", "/api/v1/models", "/api/v1/prompts", "/api/traces"})


@dataclass(frozen=True, slots=True)
class Entry:
    position: int
    made: float
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ResponseCache:
    """ASGI middleware serving repeated listing requests from memory (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        store: ReportStore,
        *,
        ttl_s: float = 1.0,
        check_s: float = 0.25,
        max_entries: int = 256,
        max_body_bytes: int = 1 << 20,
    ) -> None:
        self.app = app
        self.store = store
        self.ttl_s = ttl_s
        self.check_s = check_s
        self.max_entries = max_entries
        self.max_body_bytes = max_body_bytes
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()
        self.position: int | None = None
        self.checked = -float("inf")
        self.checking = anyio.Lock()
        self.filling: dict[bytes, anyio.Event] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in CACHED_PATHS:
            await self.app(scope, receive, send)
            return
        position = await self._position()
        if position is None:
            await self.app(scope, receive, send)
            return
        key = scope["path"].encode() + b"?" + scope.get("query_string", b"")
        for _ in range(2):
            entry = self.entries.get(key)
            if (
                entry is not None
                and entry.position == position
                and time.monotonic() - entry.made < self.ttl_s
            ):
                start = {
                    "type": "http.response.start",
                    "status": entry.status,
                    "headers": list(entry.headers),
                }
                await send(start)
                await send({"type": "http.response.body", "body": entry.body})
                return
            pending = self.filling.get(key)
            if pending is None:
                break
            await pending.wait()  # the same answer is being made for another client: share it
        filled = anyio.Event()
        self.filling[key] = filled
        try:
            await self._fill(scope, receive, send, key, position, time.monotonic())
        finally:
            if self.filling.get(key) is filled:
                del self.filling[key]
            filled.set()

    async def _position(self) -> int | None:
        if time.monotonic() - self.checked < self.check_s:
            return self.position
        if self.checking.locked():  # being read: use the last one, or wait for the first
            if self.position is None:
                async with self.checking:
                    pass
            return self.position
        async with self.checking:
            try:
                _, self.position = await in_thread(self.store.follow, None)
            except ApiError:
                self.position = None
            self.checked = time.monotonic()
        return self.position

    async def _fill(
        self, scope: Scope, receive: Receive, send: Send, key: bytes, position: int, now: float
    ) -> None:
        status: int | None = None
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        whole = True

        async def keeping_send(message: Message) -> None:
            nonlocal status, headers, whole
            if message["type"] == "http.response.start":  # copied now: outer layers add their own
                status, headers = message["status"], list(message.get("headers", ()))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                whole = whole and not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, keeping_send)
        if status != 200 or not whole:
            return
        body = b"".join(chunks)
        if len(body) > self.max_body_bytes:
            return
        self.entries[key] = Entry(position, now, 200, headers, body)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
