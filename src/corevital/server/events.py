"""``GET /api/v1/events``: a server-sent-event feed of runs as they land in the store.

Each new run is one event (``event: run``, ``id:`` its store position ``seq``, ``data:`` its
list-row JSON). The stream polls :meth:`~corevital.sinks.base.ReportStore.follow` every
``event_poll_s``, sends a comment line when it has been silent for ``heartbeat_s``, and ends when
the client goes away. A client resumes with ``?after=SEQ`` or the ``Last-Event-ID`` header that
EventSource sends on reconnecting; without either the feed starts from now. The number of open
streams is bounded (503 beyond); every stream ends when the server is stopping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from corevital.server.common import EventClients, Served, in_thread, json_bytes, row_dict
from corevital.server.errors import ApiError
from corevital.server.models import ERROR_RESPONSES
from corevital.sinks.base import ReportStore

RETRY_MS = 2000
MAX_SEQ = 2**63 - 1  # SQLite's largest integer


class EventStreamResponse(StreamingResponse):
    """A streaming response that gives its slot back to ``clients`` however the stream ends."""

    def __init__(self, content: AsyncIterator[bytes], clients: EventClients) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )
        self.clients = clients

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.clients.release()


def run_event(row_seq: int, data: bytes) -> bytes:
    """One ``run`` event."""
    return b"event: run\nid: %d\ndata: %s\n\n" % (row_seq, data)


async def _stream(
    request: Request,
    store: ReportStore,
    after: int | None,
    poll_s: float,
    heartbeat_s: float,
    stopping: threading.Event,
) -> AsyncIterator[bytes]:
    rows, position = await in_thread(store.follow, after)
    yield b"retry: %d\n: following runs after %d\n\n" % (RETRY_MS, position)
    quiet_since = time.monotonic()
    while True:
        for row in rows:
            yield run_event(row.seq, json_bytes(row_dict(row)))
            quiet_since = time.monotonic()
        if rows:  # a full batch may have more behind it: ask again at once
            rows, position = await in_thread(store.follow, position)
            continue
        if time.monotonic() - quiet_since >= heartbeat_s:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await anyio.sleep(poll_s)
        if stopping.is_set() or await request.is_disconnected():
            return
        rows, position = await in_thread(store.follow, position)


def events_router(served: Served) -> APIRouter:
    """The event feed over ``served``."""
    limits = served.config.limits
    router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

    @router.get(
        "/events",
        summary="Runs as they land (server-sent events)",
        tags=["runs"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "event: run, data: a run row"}},
    )
    async def events(
        request: Request,
        after: Annotated[
            int | None, Query(ge=0, le=MAX_SEQ, description="Send runs stored after this seq.")
        ] = None,
        last_event_id: Annotated[int | None, Header(ge=0, le=MAX_SEQ, include_in_schema=False)] = None,
    ) -> StreamingResponse:
        """Each run stored from now on (or after ``after``) as an event whose data is its list row."""
        start = after if after is not None else last_event_id
        if not served.events.try_acquire():
            raise ApiError(503, f"too many open event streams (at most {limits.max_event_clients})")
        try:
            stream = _stream(
                request, served.store, start, limits.event_poll_s, limits.heartbeat_s, served.stopping
            )
            return EventStreamResponse(stream, served.events)
        except BaseException:
            served.events.release()
            raise

    return router
