"""Error bodies of the HTTP API: ``{"detail": "<one line>"}``, never a traceback or a file path.

Every error a client can cause is answered by an :class:`ApiError` (or FastAPI's validation) with
a 4xx status before it can reach the catch-all handler, which answers any other exception with a
generic 500 and logs the exception on the server's side only. ``detail`` is a string, as the
original dashboard's client reads it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("corevital.server")

INTERNAL_ERROR = "internal server error; the server's log has the details"
STORE_UNAVAILABLE = "the store could not be read; the server's log has the details"


class ApiError(Exception):
    """An error answered with ``status`` and a one-line ``detail`` meant for the client."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


def error_response(
    status: int, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> Response:
    """A JSON error response: ``{"detail": detail, **extra}``."""
    body = json.dumps({"detail": detail, **extra}, ensure_ascii=False).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json", headers=dict(headers or {}))


def _describe_validation(error: Mapping[str, Any]) -> dict[str, Any]:
    location = [str(part) for part in error.get("loc", ())]
    where = f"{location[0]} parameter {location[-1]!r}" if len(location) > 1 else "request"
    return {"loc": location, "msg": f"{where}: {error.get('msg', 'invalid')}"}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.detail, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    return error_response(exc.status_code, detail, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [_describe_validation(error) for error in exc.errors()]
    detail = "; ".join(error["msg"] for error in errors) or "invalid request"
    return error_response(422, detail, errors=errors)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(500, INTERNAL_ERROR)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that shape every error body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
