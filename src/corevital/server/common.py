"""What the routes share: the served store with its configuration, store calls off the event loop,
trace-id checks and JSON bodies written straight from index rows.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial
from operator import attrgetter
from typing import Any, TypeVar
from urllib.parse import urlencode

import anyio.to_thread
from fastapi import Response

from corevital.errors import CoreVitalError, StoreError
from corevital.server.config import ServeConfig
from corevital.server.errors import STORE_UNAVAILABLE, ApiError, logger
from corevital.sinks.base import Page, ReportStore, TraceRow, ambiguous_prefix_message

T = TypeVar("T")

TRACE_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
ROW_FIELDS = tuple(item.name for item in fields(TraceRow))
LEGACY_ROW_FIELDS = ("trace_id", "created_at_utc", "model_id", "schema_version", "prompt_hash", "risk_score")


@dataclass
class EventClients:
    """How many event streams are open, against the configured bound (one event loop: no lock)."""

    limit: int
    open: int = 0

    def try_acquire(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open = max(0, self.open - 1)


class RowJson:
    """The JSON object of each index row (:func:`row_dict`), encoded once and kept.

    Listings are read from the store on every request; what is kept is only the encoding of a row
    already seen, keyed by all its values (its position included), so a run rewritten under its id
    is encoded anew. At most ``max_rows`` are kept (then all are dropped). Used on the event loop
    only.
    """

    def __init__(self, max_rows: int = 20_000) -> None:
        self.max_rows = max_rows
        self._kept: dict[tuple[Any, ...], bytes] = {}
        self._values = attrgetter(*ROW_FIELDS)

    def encode(self, row: TraceRow) -> bytes:
        values: tuple[Any, ...] = self._values(row)
        text = self._kept.get(values)
        if text is None:
            if len(self._kept) >= self.max_rows:
                self._kept.clear()
            text = self._kept[values] = json_bytes(row_dict(row))
        return text


@dataclass
class Served:
    """The store a server answers from and how it was started; passed to every router.

    ``stopping`` is set when the server begins to shut down: open event streams end.
    """

    store: ReportStore
    config: ServeConfig
    stopping: threading.Event = field(default_factory=threading.Event)
    events: EventClients = field(init=False)
    rows_json: RowJson = field(default_factory=RowJson)

    def __post_init__(self) -> None:
        self.events = EventClients(self.config.limits.max_event_clients)


async def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in a worker thread; a store failure becomes a 503.

    The call is abandoned (left to finish on its own) when the request's time limit cancels it.
    """
    try:
        return await anyio.to_thread.run_sync(partial(function, *args, **kwargs), abandon_on_cancel=True)
    except CoreVitalError as error:
        logger.warning("store call %s failed: %s", getattr(function, "__name__", function), error)
        raise ApiError(503, STORE_UNAVAILABLE) from None


def checked_trace_id(trace_id: str) -> str:
    """``trace_id`` if it has the shape of an id or prefix (letters, digits, ``-``, ``_``; at most 64)."""
    if TRACE_ID.fullmatch(trace_id) is None:
        raise ApiError(404, "no run with this id")
    return trace_id


def _ambiguity_pattern(prefix: str) -> re.Pattern[str]:
    marker = "987654321"
    return re.compile(re.escape(ambiguous_prefix_message(prefix, int(marker))).replace(marker, r"\d+"))


def resolve_id(store: ReportStore, trace_id: str) -> str | None:
    """The full id of ``trace_id`` (exact, or a unique prefix); ApiError 400 when ambiguous."""
    try:
        return store.resolve(trace_id)
    except StoreError as error:
        if _ambiguity_pattern(trace_id).fullmatch(str(error)):
            raise ApiError(400, str(error)) from None
        raise


_FLOAT_FIELDS = tuple(item.name for item in fields(TraceRow) if "float" in str(item.type))
_GETTERS: dict[tuple[str, ...], Callable[[TraceRow], tuple[Any, ...]]] = {}


def row_dict(row: TraceRow, names: tuple[str, ...] = ROW_FIELDS) -> dict[str, Any]:
    """The JSON object of an index row (non-finite numbers as ``null``)."""
    getter = _GETTERS.get(names)
    if getter is None:
        getter = _GETTERS[names] = attrgetter(*names)
    document = dict(zip(names, getter(row), strict=True))
    for name in _FLOAT_FIELDS:
        value = document.get(name)
        if value is not None and not math.isfinite(value):
            document[name] = None
    return document


def runs_page_response(served: Served, page: Page, path: str, params: list[tuple[str, str]]) -> Response:
    """The ``/api/v1/runs`` answer of ``page``: its rows, ``next_cursor`` and ``next_url`` (the
    request's parameters with the next cursor)."""
    next_url = None
    if page.next_cursor is not None:
        kept = [(key, value) for key, value in params if key != "cursor"]
        next_url = f"{path}?{urlencode([*kept, ('cursor', page.next_cursor)])}"
    encode = served.rows_json.encode
    body = b"".join(
        (
            b'{"runs":[',
            b",".join([encode(row) for row in page.rows]),
            b'],"next_cursor":',
            json_bytes(page.next_cursor),
            b',"next_url":',
            json_bytes(next_url),
            b"}",
        )
    )
    return Response(body, media_type="application/json")


def json_bytes(document: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def json_response(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response of ``document``, bypassing response-model validation (the routes build it)."""
    return Response(json_bytes(document), status_code=status, media_type="application/json", headers=headers)


def raw_json_response(text: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON response whose body is JSON text already (a stored report)."""
    return Response(text.encode("utf-8"), media_type="application/json", headers=headers)


def check_db_path(db_path: str | None, config: ServeConfig) -> None:
    """Refuse (400) a ``db_path`` naming another store than the served one; empty or absent is fine.

    The comparison is on spellings only (the path given at start, its absolute and resolved
    forms, backslashes taken as slashes): a client's path is never looked up on disk.
    """
    if db_path is None:
        return
    given = db_path.strip().strip('"').replace("\\", "/")
    if not given:
        return
    if given in config.store_paths or os.path.normpath(os.path.abspath(given)) in config.store_paths:
        return
    raise ApiError(
        400,
        f"this server serves the store {config.store_label!r}, chosen when it started; "
        "a client cannot choose another with db_path (leave it out)",
    )


async def report_text(served: Served, trace_id: str) -> tuple[str, str] | None:
    """The full id and stored JSON of the run with this id or unique prefix; ``None`` if none."""
    text = await in_thread(served.store.get_json, trace_id)
    if text is not None:
        return trace_id, text
    full_id = await in_thread(resolve_id, served.store, trace_id)
    if full_id is None or full_id == trace_id:
        return None
    text = await in_thread(served.store.get_json, full_id)
    return None if text is None else (full_id, text)
