"""``GET /metrics``: the served store's runs as Prometheus metrics, in the text exposition format.

The metrics are :class:`~corevital.exporters.prometheus.StoreMetrics` over the served store: each
scrape reads only the runs stored since the previous one. The route is under the same
:class:`~corevital.server.guard.Guard` as the API (the bearer token when one is required). Without
the ``prometheus`` extra it answers 404 with a one-line JSON error naming the extra.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from corevital.errors import NotAvailableError
from corevital.exporters.prometheus import StoreMetrics, content_type
from corevital.server.common import Served, in_thread
from corevital.server.errors import ApiError


def metrics_router(served: Served) -> APIRouter:
    """The ``/metrics`` route over ``served``'s store (left out of the OpenAPI document)."""
    router = APIRouter(include_in_schema=False)
    try:
        metrics: StoreMetrics | None = StoreMetrics(served.store)
        media_type = content_type()
        unavailable = ""
    except NotAvailableError as error:
        metrics, media_type, unavailable = None, "", f"/metrics is not available: {error}"

    @router.get("/metrics")
    async def prometheus_metrics() -> Response:
        """The runs' metrics (``corevital_runs_total``, ...) for a Prometheus scrape."""
        if metrics is None:
            raise ApiError(404, unavailable)
        body = await in_thread(metrics.exposition)
        return Response(body, media_type=media_type)

    return router
