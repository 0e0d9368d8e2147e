"""The built-in dashboard: static files shipped in the package, and the three routes it adds.

``/`` is the page and ``/static/...`` its scripts, styles and the vendored uPlot. The files are
read into memory when the application is built, so that serving opens no file but the store's;
they are answered with a Content-Security-Policy that allows scripts, styles, images and
connections from the server's own origin only (no inline script, nothing remote). Every string
of a report is written into the page as text by the scripts, never as HTML.

Routes the page uses besides the ``/api/v1`` ones:

- ``/api/v1/runs/{id}/view``: what the run page draws first
  (:func:`~corevital.server.dashboard_view.run_view`).
- ``/api/v1/runs/{id}/layers``: its layer × step heat maps, downsampled on the server to at most
  400 step columns (:func:`~corevital.server.dashboard_view.layer_view`).
- ``/api/v1/runs/{id}/report.html``: the self-contained HTML report (``corevital report``), as a download.
- ``/api/v1/risk-histogram``: counts of risk scores in 20 bins over the runs matching the list's filters.
- ``/api/v1/runs/{id}/attention``: the attention explorer (one prompt token's sparse attention in a
  layer and head, and the basin anomalies; :func:`~corevital.server.dashboard_detail.attention_view`).
- ``/api/v1/runs/{id}/layers/{layer}/steps/{step}``: one layer at one generated step, shown when a
  heat-map cell is clicked (:func:`~corevital.server.dashboard_detail.layer_detail`).
"""

from __future__ import annotations

import json
import mimetypes
from datetime import datetime
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Annotated

from fastapi import APIRouter, Query, Response

from corevital.errors import CoreVitalError
from corevital.server.common import Served, checked_trace_id, in_thread, json_response, report_text
from corevital.server.dashboard_detail import DetailError, attention_view, layer_detail
from corevital.server.dashboard_view import layer_view, read_document, run_view
from corevital.server.errors import ApiError
from corevital.sinks.base import MAX_PAGE_SIZE, HealthFlag, ReportStore, TraceQuery

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
STATIC_TYPES = {".html", ".js", ".css", ".txt", ".md"}
HISTOGRAM_BINS = 20
HISTOGRAM_CAP = 10_000


def static_files() -> dict[str, tuple[bytes, str]]:
    """Every file under ``static/`` as ``{relative path: (bytes, content type)}``."""
    files: dict[str, tuple[bytes, str]] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, f"{name}/")
            elif any(name.endswith(suffix) for suffix in STATIC_TYPES) or child.name == "LICENSE":
                kind = mimetypes.guess_type(name)[0] or "text/plain"
                if kind.startswith("text/") or kind == "application/javascript":
                    kind += "; charset=utf-8"
                files[name] = (child.read_bytes(), kind)

    walk(resources.files("corevital.server") / "static", "")
    return files


def _histogram(store: ReportStore, query: TraceQuery) -> dict[str, object]:
    counts = [0] * HISTOGRAM_BINS
    runs = unscored = 0
    cursor: str | None = None
    while runs < HISTOGRAM_CAP:
        page = store.page(query, cursor)
        for row in page.rows:
            runs += 1
            risk = row.risk_score
            if risk is None or not 0.0 <= risk <= 1.0:
                unscored += 1
            else:
                counts[min(int(risk * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    edges = [i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)]
    return {
        "edges": edges,
        "counts": counts,
        "runs": runs,
        "unscored": unscored,
        "capped": cursor is not None,
    }


def _view_json(text: str) -> bytes:
    return json.dumps(run_view(read_document(text)), separators=(",", ":"), allow_nan=False).encode("utf-8")


def _layers_json(text: str) -> bytes:
    view = layer_view(read_document(text, layers=True))
    return json.dumps(view, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _html(text: str) -> bytes:
    from corevital.report.encoding import report_from_json
    from corevital.views.html_report import render_html

    return render_html(report_from_json(text)).encode("utf-8")


def dashboard_router(served: Served) -> APIRouter:
    """The page, its static files and the routes it adds over ``served``."""
    files = static_files()
    store = served.store
    router = APIRouter()
    page_headers = {"content-security-policy": CSP, "cache-control": "no-cache"}

    @router.get("/", include_in_schema=False)
    async def index() -> Response:
        body, kind = files["index.html"]
        return Response(body, media_type=kind, headers=page_headers)

    @router.get("/static/{path:path}", include_in_schema=False)
    async def static(path: str) -> Response:
        found = files.get(path)
        if found is None:
            raise ApiError(404, "no such file")
        return Response(found[0], media_type=found[1], headers=page_headers)

    async def report_of(trace_id: str) -> tuple[str, str]:
        found = await report_text(served, checked_trace_id(trace_id))
        if found is None:
            raise ApiError(404, "no run with this id")
        return found

    @router.get(
        "/api/v1/runs/{trace_id}/view", summary="What the dashboard draws of one run", tags=["dashboard"]
    )
    async def view(trace_id: str) -> Response:
        """Digest, per-step series, tokens, fired steps, prompt analysis and performance of one run."""
        _, text = await report_of(trace_id)
        return Response(await in_thread(_view_json, text), media_type="application/json")

    @router.get(
        "/api/v1/runs/{trace_id}/layers", summary="One run's layer x step heat maps", tags=["dashboard"]
    )
    async def layers(trace_id: str) -> Response:
        """Attention entropy, hidden-state norm and collapsed-head rate per layer and step; at most
        400 step columns (each the mean of a block of consecutive steps, ``block`` wide)."""
        _, text = await report_of(trace_id)
        return Response(await in_thread(_layers_json, text), media_type="application/json")

    @router.get(
        "/api/v1/runs/{trace_id}/attention",
        summary="One prompt token's sparse attention, and the basin anomalies",
        tags=["dashboard"],
    )
    async def attention(
        trace_id: str,
        token: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
        layer: Annotated[int | None, Query(ge=0, le=10_000)] = None,
        head: Annotated[int | None, Query(ge=0, le=10_000)] = None,
    ) -> Response:
        """Without ``token``: the prompt's token ids, layers and heads, and the heads whose basin score
        is below 0.3. With it: in ``layer`` (default 0) and ``head`` (default: all the layer's heads,
        weights averaged over them), the prompt tokens it attends to and those that attend to it."""
        _, text = await report_of(trace_id)
        try:
            return json_response(await in_thread(attention_view, text, token, layer, head))
        except DetailError as error:
            raise ApiError(404, str(error)) from None

    @router.get(
        "/api/v1/runs/{trace_id}/layers/{layer}/steps/{step}",
        summary="One layer at one generated step",
        tags=["dashboard"],
    )
    async def layer_at_step(trace_id: str, layer: int, step: int) -> Response:
        """The layer's attention and hidden-state statistics at generated step ``step`` (0-based)."""
        _, text = await report_of(trace_id)
        try:
            return json_response(await in_thread(layer_detail, text, layer, step))
        except DetailError as error:
            raise ApiError(404, str(error)) from None

    @router.get("/api/v1/runs/{trace_id}/report.html", summary="One run's HTML report", tags=["dashboard"])
    async def report_html(trace_id: str) -> Response:
        """The self-contained HTML report of ``corevital report``, as a download."""
        full_id, text = await report_of(trace_id)
        try:
            body = await in_thread(_html, text)
        except CoreVitalError:
            raise ApiError(422, "this report cannot be rendered as HTML") from None
        return Response(
            body,
            media_type="text/html; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="corevital-{full_id[:8]}.html"'},
        )

    @router.get(
        "/api/v1/risk-histogram", summary="Risk scores of the matching runs in 20 bins", tags=["dashboard"]
    )
    async def risk_histogram(
        model_id: Annotated[str | None, Query(max_length=512)] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        min_risk: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        max_risk: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        flag: Annotated[list[str] | None, Query(max_length=len(HealthFlag))] = None,
    ) -> Response:
        """Counts of ``risk_score`` in [0, 0.05), …, [0.95, 1] over at most 10,000 matching runs."""
        try:
            query = TraceQuery(
                model_id=model_id,
                min_risk=min_risk,
                max_risk=max_risk,
                flags=frozenset(HealthFlag.from_name(name) for name in flag or []),
                since=since,
                until=until,
                limit=MAX_PAGE_SIZE,
            )
        except (CoreVitalError, ValueError, OverflowError) as error:
            raise ApiError(400, str(error).splitlines()[0] if str(error) else "invalid query") from None
        return json_response(await in_thread(_histogram, store, query))

    return router
