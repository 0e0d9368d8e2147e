"""The original CoreVital dashboard's three routes, answering with the original shapes.

``GET /api/traces`` lists ``{trace_id, created_at_utc, model_id, schema_version, prompt_hash,
risk_score}`` newest first (``order_asc=true``: oldest first); ``GET /api/traces/{id}`` and
``GET /api/reports/{id}`` return the report JSON (an id or a unique prefix). The dashboard sends
``db_path`` with every request: the store is the one chosen at start, so a ``db_path`` naming
another is refused (checked for every route by the application).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from corevital.server.api import ModelId, PromptHash
from corevital.server.common import (
    LEGACY_ROW_FIELDS,
    Served,
    checked_trace_id,
    in_thread,
    json_response,
    raw_json_response,
    report_text,
    row_dict,
)
from corevital.server.errors import ApiError
from corevital.server.models import ERROR_RESPONSES, LegacyTrace
from corevital.sinks.base import MAX_PAGE_SIZE, TraceQuery

REPORT_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}}}
}
DB_PATH_NOTE = (
    " The original dashboard also sends db_path: it may name the served store (or be empty); "
    "any other store is refused with 400."
)


def legacy_router(served: Served) -> APIRouter:
    """The original dashboard's routes over ``served``."""
    store = served.store
    router = APIRouter(prefix="/api", tags=["original dashboard"], responses=ERROR_RESPONSES)

    @router.get("/traces", response_model=list[LegacyTrace], summary="List traces (original dashboard)")
    async def list_traces(
        limit: Annotated[int, Query(ge=0, le=MAX_PAGE_SIZE)] = 100,
        model_id: ModelId = None,
        prompt_hash: PromptHash = None,
        order_asc: bool = False,
    ) -> Response:
        """Trace metadata, newest first (oldest first with order_asc)."""
        query = TraceQuery(model_id=model_id, prompt_hash=prompt_hash, limit=limit, ascending=order_asc)
        rows = await in_thread(store.list, query)
        return json_response([row_dict(row, LEGACY_ROW_FIELDS) for row in rows])

    async def report(trace_id: str) -> Response:
        found = await report_text(served, checked_trace_id(trace_id))
        if found is None:
            raise ApiError(404, f"Trace not found: {trace_id}")
        return raw_json_response(found[1])

    @router.get(
        "/traces/{trace_id}", summary="One trace's report (original dashboard)", responses=REPORT_RESPONSE
    )
    async def get_trace(trace_id: str) -> Response:
        """The full report JSON of the trace with this id or unique prefix."""
        return await report(trace_id)

    @router.get("/reports/{trace_id}", summary="One report (original dashboard)", responses=REPORT_RESPONSE)
    async def get_report(trace_id: str) -> Response:
        """The same as /api/traces/{trace_id}, under the path the dashboard calls."""
        return await report(trace_id)

    for route in router.routes:
        route.description = (getattr(route, "description", "") or "") + DB_PATH_NOTE  # type: ignore[attr-defined]
    return router
