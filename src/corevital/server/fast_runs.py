"""``GET /api/v1/runs`` answered without FastAPI's per-parameter machinery, for plain requests.

The route in :mod:`corevital.server.api` declares the parameters (and so the OpenAPI document and
every error a client can cause). Checking them costs more than the store's answer, so this ASGI
layer, inside :class:`~corevital.server.guard.Guard` and the response cache, reads a request
whose parameters are all plainly valid itself and answers it exactly as the route would. Anything
else (an unusual spelling of a number or time, a repeated parameter, ``db_path``, an invalid
value, a cursor that does not decode, a failing store) goes to the route, which gives the
answer or the error.
"""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import parse_qsl

from fastapi import Response
from pydantic import TypeAdapter, ValidationError

from corevital.errors import StoreError
from corevital.server.common import Served, in_thread, runs_page_response
from corevital.server.guard import ASGIApp, Receive, Scope, Send
from corevital.sinks.base import MAX_PAGE_SIZE, HealthFlag, SortOrder, TraceQuery
from corevital.sinks.rows import decode_cursor

PATH = "/api/v1/runs"
DEFAULT_PAGE_SIZE = 50
_NUMBER = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?")
_LIMIT = re.compile(r"[1-9][0-9]{0,2}")
_SINGLE = frozenset(
    {"model_id", "prompt_hash", "since", "until", "min_risk", "max_risk", "sort", "order", "limit", "cursor"}
)
_MAX_CHARS = {"model_id": 512, "prompt_hash": 128, "cursor": 1024}
_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


class Unusual(Exception):
    """The request is left to the route."""


def plain_query(query_string: bytes) -> tuple[TraceQuery, str | None, list[tuple[str, str]]]:
    """The query, cursor and parameters of a plainly valid listing request; else :class:`Unusual`."""
    try:
        items = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        raise Unusual from None
    single: dict[str, str] = {}
    flags: list[HealthFlag] = []
    for key, value in items:
        if key == "flag":
            flags.append(_flag(value))
        elif key in _SINGLE:
            if key in single or len(value) > _MAX_CHARS.get(key, 64):
                raise Unusual
            single[key] = value
        elif key == "db_path":
            raise Unusual  # the route compares it with the served store
    if len(flags) > len(HealthFlag) or single.get("sort", "time") not in ("time", "risk"):
        raise Unusual
    if single.get("order", "desc") not in ("asc", "desc"):
        raise Unusual
    try:
        query = TraceQuery(
            model_id=single.get("model_id"),
            prompt_hash=single.get("prompt_hash"),
            min_risk=_risk(single.get("min_risk")),
            max_risk=_risk(single.get("max_risk")),
            flags=frozenset(flags),
            since=_time(single.get("since")),
            until=_time(single.get("until")),
            limit=_limit(single.get("limit")),
            sort=SortOrder(single.get("sort", "time")),
            ascending=single.get("order") == "asc",
        )
        cursor = single.get("cursor")
        if cursor is not None:
            decode_cursor(cursor, query)
    except (StoreError, ValueError, OverflowError):
        raise Unusual from None
    return query, cursor, items


def _flag(value: str) -> HealthFlag:
    try:
        return HealthFlag.from_name(value)
    except StoreError:
        raise Unusual from None


def _risk(value: str | None) -> float | None:
    if value is None:
        return None
    if _NUMBER.fullmatch(value) is None:
        raise Unusual
    return float(value)


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_PAGE_SIZE
    if _LIMIT.fullmatch(value) is None or int(value) > MAX_PAGE_SIZE:
        raise Unusual
    return int(value)


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return _DATETIME.validate_python(value)
    except ValidationError:
        raise Unusual from None


class FastRuns:
    """ASGI layer answering plain ``GET /api/v1/runs`` requests (see the module docstring)."""

    def __init__(self, app: ASGIApp, served: Served) -> None:
        self.app = app
        self.served = served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == PATH:
            response = await self._answer(scope.get("query_string", b""))
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(self, query_string: bytes) -> Response | None:
        try:
            query, cursor, items = plain_query(query_string)
            page = await in_thread(self.served.store.page, query, cursor)
        except Exception:  # noqa: BLE001 - the route answers it, or says what is wrong
            return None
        return runs_page_response(self.served, page, PATH, items)
