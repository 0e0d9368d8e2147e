"""The JSON API under ``/api/v1``: runs (filtered, sorted, paged by cursor), one report and its
digest, exports, per-model and per-prompt aggregates, comparisons and the server's description.

Every store call runs in a worker thread (:func:`~corevital.server.common.in_thread`); inputs are
checked here first, so that what reaches the store is valid and a store error means the store
itself failed (503), never the client (4xx).
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from corevital import __version__
from corevital.errors import StoreError
from corevital.server.common import (
    Served,
    checked_trace_id,
    in_thread,
    json_response,
    raw_json_response,
    report_text,
    runs_page_response,
)
from corevital.server.comparison import run_comparison, run_digest
from corevital.server.errors import ApiError
from corevital.server.models import ERROR_RESPONSES, Aggregates, Info, RunPage, RunSummary
from corevital.sinks.base import MAX_PAGE_SIZE, HealthFlag, ReportStore, SortOrder, TraceQuery
from corevital.sinks.rows import decode_cursor
from corevital.views.compare import group_summary
from corevital.views.export import export_runs

DEFAULT_PAGE_SIZE = 50
EXPORT_RUNS_CAP = 10_000
EXPORT_REPORTS_CAP = 100
FLAG_HELP = "Only runs with this health flag set (repeatable): " + ", ".join(
    flag.short_name for flag in HealthFlag
)


def _flags(names: list[str]) -> frozenset[HealthFlag]:
    try:
        return frozenset(HealthFlag.from_name(name) for name in names)
    except StoreError as error:
        raise ApiError(400, str(error)) from None


def _query(
    *,
    model_id: str | None = None,
    prompt_hash: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    min_risk: float | None = None,
    max_risk: float | None = None,
    flag: list[str] | None = None,
    sort: SortOrder = SortOrder.TIME,
    ascending: bool = False,
    limit: int | None = None,
) -> TraceQuery:
    try:
        return TraceQuery(
            model_id=model_id,
            prompt_hash=prompt_hash,
            min_risk=min_risk,
            max_risk=max_risk,
            flags=_flags(flag or []),
            since=since,
            until=until,
            limit=limit,
            sort=sort,
            ascending=ascending,
        )
    except (StoreError, OverflowError, ValueError) as error:
        raise ApiError(400, str(error).splitlines()[0] if str(error) else "invalid query") from None


ModelId = Annotated[str | None, Query(max_length=512, description="Only runs of this model id.")]
PromptHash = Annotated[str | None, Query(max_length=128, description="Only runs of this prompt hash.")]
Since = Annotated[
    datetime | None, Query(description="Only runs created at or after (ISO 8601; UTC if naive).")
]
Until = Annotated[datetime | None, Query(description="Only runs created before (ISO 8601; UTC if naive).")]
MinRisk = Annotated[
    float | None, Query(allow_inf_nan=False, description="Only runs with risk_score >= this.")
]
MaxRisk = Annotated[
    float | None, Query(allow_inf_nan=False, description="Only runs with risk_score <= this.")
]
Flags = Annotated[list[str] | None, Query(max_length=len(HealthFlag), description=FLAG_HELP)]
Sort = Annotated[SortOrder, Query(description="Order by creation time or risk score.")]
Order = Annotated[str, Query(pattern="^(asc|desc)$", description="desc (default) or asc.")]


def api_router(served: Served) -> APIRouter:
    """The ``/api/v1`` routes over ``served``."""
    store = served.store
    limits = served.config.limits
    router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

    @router.get("", response_model=Info, summary="What this server serves", tags=["server"])
    async def info() -> Response:
        runs = await in_thread(store.count)
        return json_response(
            {
                "name": "corevital",
                "version": __version__,
                "store": served.config.store_label,
                "read_only": True,
                "runs": runs,
                "token_required": served.config.token is not None,
                "endpoints": {
                    "runs": "/api/v1/runs",
                    "run": "/api/v1/runs/{trace_id}",
                    "summary": "/api/v1/runs/{trace_id}/summary",
                    "models": "/api/v1/models",
                    "prompts": "/api/v1/prompts",
                    "compare": "/api/v1/compare?id=A&id=B",
                    "export": "/api/v1/export?format=csv",
                    "events": "/api/v1/events",
                    "openapi": "/api/v1/openapi.json",
                },
            }
        )

    @router.get("/runs", response_model=RunPage, summary="List runs", tags=["runs"])
    async def list_runs(
        request: Request,
        model_id: ModelId = None,
        prompt_hash: PromptHash = None,
        since: Since = None,
        until: Until = None,
        min_risk: MinRisk = None,
        max_risk: MaxRisk = None,
        flag: Flags = None,
        sort: Sort = SortOrder.TIME,
        order: Order = "desc",
        limit: Annotated[
            int, Query(ge=1, le=MAX_PAGE_SIZE, description="Runs per page.")
        ] = DEFAULT_PAGE_SIZE,
        cursor: Annotated[
            str | None, Query(max_length=1024, description="next_cursor of the previous page.")
        ] = None,
    ) -> Response:
        """Runs matching every filter given, newest (or riskiest) first, one page at a time."""
        query = _query(
            model_id=model_id,
            prompt_hash=prompt_hash,
            since=since,
            until=until,
            min_risk=min_risk,
            max_risk=max_risk,
            flag=flag,
            sort=sort,
            ascending=order == "asc",
            limit=limit,
        )
        if cursor is not None:
            try:
                decode_cursor(cursor, query)
            except StoreError as error:
                raise ApiError(400, str(error)) from None
        page = await in_thread(store.page, query, cursor)
        return runs_page_response(served, page, request.url.path, request.query_params.multi_items())

    @router.get(
        "/runs/{trace_id}",
        summary="One run's report",
        tags=["runs"],
        response_description="The stored report JSON (schema: report.schema.json).",
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    async def get_run(trace_id: str) -> Response:
        """The full report of the run with this trace id, or a unique prefix of it."""
        found = await report_text(served, checked_trace_id(trace_id))
        if found is None:
            raise ApiError(404, "no run with this id")
        full_id, text = found
        return raw_json_response(text, {"content-location": f"/api/v1/runs/{full_id}"})

    @router.get(
        "/runs/{trace_id}/summary", response_model=RunSummary, summary="One run's digest", tags=["runs"]
    )
    async def get_run_summary(trace_id: str) -> Response:
        """What ``corevital show`` shows: narrative, risk and its factors, flags, warnings, blamed
        layers, and the per-step entropy and surprisal with their statistics."""
        return json_response(await run_digest(served, checked_trace_id(trace_id)))

    @router.get(
        "/export",
        summary="Download runs as CSV or JSON lines",
        tags=["runs"],
        responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
    )
    async def export(
        model_id: ModelId = None,
        prompt_hash: PromptHash = None,
        since: Since = None,
        until: Until = None,
        min_risk: MinRisk = None,
        max_risk: MaxRisk = None,
        flag: Flags = None,
        sort: Sort = SortOrder.TIME,
        order: Order = "desc",
        format: Annotated[str, Query(pattern="^(csv|jsonl)$", description="csv or jsonl.")] = "csv",
        rows: Annotated[
            str, Query(pattern="^(run|step)$", description="One row per run or per step.")
        ] = "run",
        limit: Annotated[
            int | None, Query(ge=1, description="Runs to export (default and most: the cap).")
        ] = None,
    ) -> Response:
        """The matching runs as ``corevital export`` writes them: CSV of one row per run (at most
        10,000) or per generated step, or JSON lines of the stored reports (at most 100 runs
        whenever reports are read)."""
        cap = EXPORT_RUNS_CAP if format == "csv" and rows == "run" else EXPORT_REPORTS_CAP
        if limit is not None and limit > cap:
            raise ApiError(422, f"this export takes at most {cap} runs (limit {limit})")
        query = _query(
            model_id=model_id,
            prompt_hash=prompt_hash,
            since=since,
            until=until,
            min_risk=min_risk,
            max_risk=max_risk,
            flag=flag,
            sort=sort,
            ascending=order == "asc",
            limit=cap if limit is None else limit,
        )
        text = await in_thread(_export_text, store, query, format, rows)
        media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
        name = f"corevital-{'runs' if rows == 'run' else 'steps'}.{format}"
        return Response(
            text.encode("utf-8"),
            media_type=media,
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    async def aggregates(by: str, **filters: Any) -> Response:
        query = _query(**filters)
        groups = await in_thread(store.aggregate, query, by=by)
        return json_response(group_summary(groups, by).to_json())

    @router.get("/models", response_model=Aggregates, summary="Statistics per model", tags=["aggregates"])
    async def models(
        model_id: ModelId = None,
        since: Since = None,
        until: Until = None,
        min_risk: MinRisk = None,
        max_risk: MaxRisk = None,
        flag: Flags = None,
    ) -> Response:
        """Runs, risk (mean, p50, p90), flag rates, mean entropy and tokens of each model's runs."""
        return await aggregates(
            "model",
            model_id=model_id,
            since=since,
            until=until,
            min_risk=min_risk,
            max_risk=max_risk,
            flag=flag,
        )

    @router.get("/prompts", response_model=Aggregates, summary="Statistics per prompt", tags=["aggregates"])
    async def prompts(
        model_id: ModelId = None,
        prompt_hash: PromptHash = None,
        since: Since = None,
        until: Until = None,
        flag: Flags = None,
    ) -> Response:
        """The same statistics grouped by prompt hash: how one prompt fares across runs and models."""
        return await aggregates(
            "prompt", model_id=model_id, prompt_hash=prompt_hash, since=since, until=until, flag=flag
        )

    @router.get("/compare", summary="Compare runs side by side", tags=["runs"])
    async def compare(
        id: Annotated[list[str], Query(min_length=2, description="Trace ids or unique prefixes (repeat).")],
    ) -> Response:
        """Runs side by side (risk, flags, entropy and surprisal statistics, blamed layers) and, when
        they share a prompt, the first generated step where their tokens diverge: ``corevital compare``."""
        if len(id) > limits.max_compare:
            raise ApiError(422, f"compare takes at most {limits.max_compare} runs (got {len(id)})")
        ids = [checked_trace_id(trace_id) for trace_id in id]
        return json_response(await run_comparison(served, ids))

    return router


def _export_text(store: ReportStore, query: TraceQuery, fmt: str, rows: str) -> str:
    buffer = io.StringIO(newline="")
    export_runs(store, query, fmt=fmt, rows=rows, out=buffer)
    return buffer.getvalue()
