"""The application factory of ``corevital serve``.

:func:`create_app` builds one FastAPI application over one store: nothing is global, so tests
(and embedders) create as many as they like. Layout::

    /healthz                      liveness (open even when a token is required)
    /api/v1                       what is served
    /api/v1/runs                  runs: filters, sort, cursor pages
    /api/v1/runs/{id}             one report (id or unique prefix)
    /api/v1/models, /prompts      aggregates per model / per prompt hash
    /api/v1/compare?id=A&id=B     runs side by side
    /api/v1/events                runs as they land (server-sent events)
    /api/v1/openapi.json          the OpenAPI document (no docs pages: nothing is fetched from a CDN)
    /api/live, /api/live/runs...  the dashboard's live runs (``--model``; see server/live.py)
    /api/traces, /api/traces/{id}, /api/reports/{id}   the original dashboard's routes
    /metrics                      Prometheus metrics of the stored runs (server/metrics.py)

Middleware, outermost first: CORS, with browsers' Private Network Access preflight (only when
origins are named), then
:class:`~corevital.server.guard.Guard` (host, size, token and time checks), then
:class:`~corevital.server.cache.ResponseCache` (repeated listings answered from memory while the
store has not changed), then :class:`~corevital.server.fast_runs.FastRuns` (plain ``/api/v1/runs``
requests answered without FastAPI's parameter handling; the route answers the rest).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from corevital import __version__
from corevital.server.api import api_router
from corevital.server.cache import ResponseCache
from corevital.server.common import Served, check_db_path, in_thread, json_response
from corevital.server.config import ServeConfig
from corevital.server.dashboard import dashboard_router
from corevital.server.errors import install_error_handlers
from corevital.server.events import events_router
from corevital.server.fast_runs import FastRuns
from corevital.server.guard import Guard
from corevital.server.legacy import legacy_router
from corevital.server.live import LiveGenerator, LiveRuns, live_router
from corevital.server.metrics import metrics_router
from corevital.server.models import Health
from corevital.sinks.base import ReportStore

DESCRIPTION = (
    'Read-only access to the runs CoreVital stored. Errors are `{"detail": "..."}`. '
    "When the server was started with --token-file, send `Authorization: Bearer <token>`."
)


def create_app(
    store: ReportStore,
    config: ServeConfig,
    *,
    stopping: threading.Event | None = None,
    live: LiveGenerator | None = None,
) -> FastAPI:
    """A FastAPI application serving ``store`` (read only) as ``config`` says.

    Setting ``stopping`` ends the open event streams (the runner sets it on Ctrl-C). ``live``: the
    generator of the dashboard's live runs (``corevital serve --model``); None turns them off.
    """
    served = Served(store, config, stopping or threading.Event())
    live_runs = None if live is None else LiveRuns(live, stopping=served.stopping)

    async def refuse_other_store(
        db_path: Annotated[str | None, Query(include_in_schema=False, max_length=4096)] = None,
    ) -> None:
        check_db_path(db_path, config)

    app = FastAPI(
        title="CoreVital",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        dependencies=[Depends(refuse_other_store)],
    )
    install_error_handlers(app)

    @app.get("/healthz", response_model=Health, tags=["server"], summary="Liveness")
    async def healthz() -> Response:
        """``{"status": "ok"}`` when the store answers (503 otherwise)."""
        await in_thread(store.count)
        return json_response({"status": "ok"})

    routers = [
        api_router(served),
        events_router(served),
        legacy_router(served),
        dashboard_router(served),
        metrics_router(served),
        live_router(served, live_runs),
    ]
    for router in routers:
        app.include_router(router)
    app.add_middleware(FastRuns, served=served)
    if config.limits.cache_ttl_s > 0:
        app.add_middleware(
            ResponseCache, store=store, ttl_s=config.limits.cache_ttl_s, check_s=config.limits.cache_check_s
        )
    app.add_middleware(Guard, config=config)
    _prepare(app, [route for router in routers for route in router.routes])
    if config.allow_origins:
        options: dict[str, Any] = {}
        if "allow_private_network" in inspect.signature(CORSMiddleware.__init__).parameters:
            options["allow_private_network"] = True  # a public page calling this loopback server
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.allow_origins),
            allow_credentials=False,
            allow_methods=["GET", "HEAD"],
            allow_headers=["Authorization", "Last-Event-ID"],
            max_age=600,
            **options,
        )
    return app


def _prepare(app: FastAPI, routes: list[BaseRoute]) -> None:
    """Do now what FastAPI would do on a route's first request, so that serving reads no file.

    The OpenAPI document is built (and kept), and each endpoint's source lines are read into
    ``linecache``: FastAPI looks them up when a route is first called, for its error messages.
    """
    app.openapi()
    for route in [*app.routes, *routes]:
        if isinstance(route, APIRoute):
            with contextlib.suppress(OSError, TypeError):
                inspect.getsourcelines(route.endpoint)
