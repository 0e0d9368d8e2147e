"""Live runs of the dashboard's "Try a prompt" form (``corevital serve --model M``).

The server sits below the pipeline and never generates by itself: the command line hands
:func:`~corevital.server.app.create_app` a :class:`LiveGenerator` (``corevital.cli.live_runner``
implements it over the pipeline and the live step callback). :class:`LiveRuns` runs one
generation at a time in a worker thread, keeps each run's events in memory (the last
:data:`KEPT_RUNS` runs) and sets the stop flag the generator checks at every step.

Routes (every one behind the same guard as the API: host, size and bearer token)::

    GET  /api/live                    {"enabled", "model", "busy", "current", "limits", "defaults"}
    POST /api/live/runs               JSON {prompt, max_new_tokens, temperature, seed, ignore_eos}
                                      -> 201 {"run_id": ...}; 429 while another run generates
    GET  /api/live/runs/{id}/events   server-sent events: step (one per token), final, error
    POST /api/live/runs/{id}/stop     asks the run to stop at its next step -> 202

Without a generator every route but ``GET /api/live`` answers 404 with a JSON error. The two
POST routes take only ``Content-Type: application/json`` (a page of another origin cannot send
that without a CORS preflight, which this server refuses) and, when the browser names an
``Origin``, only this server's own origin or one of ``--allow-origin``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import StreamingResponse

from corevital.server.common import Served, json_response
from corevital.server.errors import ApiError
from corevital.server.events import RETRY_MS, EventStreamResponse

logger = logging.getLogger("corevital.server")

MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS = 1024
DEFAULT_NEW_TOKENS = 64
MAX_TEMPERATURE = 2.0
KEPT_RUNS = 8
WAIT_S = 0.5
DISABLED = (
    "live runs are off: this server was started without a model "
    "(start it with corevital serve --model M, for example --model default)"
)
RUN_ID_CHARS = 64


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """What one live run may change of the generator's settings."""

    max_new_tokens: int = DEFAULT_NEW_TOKENS
    temperature: float = 0.8
    seed: int = 42
    ignore_eos: bool = False


Emit = Callable[[str, Mapping[str, Any]], None]


class LiveGenerator(Protocol):
    """Generates one run and stores its report; implemented above the server (the CLI's runner).

    ``generate`` blocks until the run is finished: it calls ``emit("step", {...})`` once per
    generated token (``step_index``, ``token_text``, ``entropy``, ``surprisal``, ``running_risk``,
    ``warning_signals``, ...) and ``emit("final", {...})`` once the report is stored (``trace_id``,
    ``finish_reason``, ``risk_score``, ...). It checks ``stop_requested()`` at every step and, when
    it is true, stops the generation there (finish reason ``stopped_by_callback``).
    """

    @property
    def model_id(self) -> str:
        """The model's name as reports record it."""
        ...

    def generate(
        self, prompt: str, options: LiveOptions, emit: Emit, stop_requested: Callable[[], bool]
    ) -> None: ...


class LiveBusy(Exception):
    """Another live run is generating."""


@dataclass
class _Run:
    run_id: str
    events: list[bytes] = field(default_factory=list)
    done: bool = False
    stop: threading.Event = field(default_factory=threading.Event)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


class LiveRuns:
    """One generation at a time over ``generator``; each run's events kept for its streams."""

    def __init__(
        self, generator: LiveGenerator, *, stopping: threading.Event | None = None, kept: int = KEPT_RUNS
    ) -> None:
        self.generator = generator
        self._stopping = stopping or threading.Event()
        self._kept = kept
        self._runs: dict[str, _Run] = {}
        self._current: _Run | None = None
        self._changed = threading.Condition()

    @property
    def busy(self) -> bool:
        with self._changed:
            return self._current is not None

    @property
    def current(self) -> str | None:
        """The id of the run generating now, if any (a page opened meanwhile can watch or stop it)."""
        with self._changed:
            return None if self._current is None else self._current.run_id

    def start(self, prompt: str, options: LiveOptions) -> str:
        """Start a run in a worker thread; its id. LiveBusy while another run generates."""
        with self._changed:
            if self._current is not None:
                raise LiveBusy
            run = _Run(uuid.uuid4().hex)
            self._current = run
            self._runs[run.run_id] = run
            while len(self._runs) > self._kept:
                del self._runs[next(iter(self._runs))]
        worker = threading.Thread(
            target=self._work, args=(run, prompt, options), name="corevital-live", daemon=True
        )
        worker.start()
        return run.run_id

    def _emit(self, run: _Run, kind: str, data: Mapping[str, Any]) -> None:
        body = json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        with self._changed:
            seq = len(run.events) + 1
            lines = "".join(f"data: {line}\n" for line in body.split("\n"))
            run.events.append(f"event: {kind}\nid: {seq}\n{lines}\n".encode())
            self._changed.notify_all()

    def _work(self, run: _Run, prompt: str, options: LiveOptions) -> None:
        try:
            self.generator.generate(
                prompt,
                options,
                lambda kind, data: self._emit(run, kind, data),
                lambda: run.stop.is_set() or self._stopping.is_set(),  # the server stopping ends it too
            )
        except Exception as error:  # noqa: BLE001 - reported to the page, logged here
            logger.warning("live run %s failed: %s: %s", run.run_id, type(error).__name__, error)
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self._emit(run, "error", {"detail": detail})
        finally:
            with self._changed:
                run.done = True
                if self._current is run:
                    self._current = None
                self._changed.notify_all()

    def read(self, run_id: str, after: int, wait_s: float = WAIT_S) -> tuple[list[bytes], bool] | None:
        """The run's events after the ``after``-th, waiting up to ``wait_s`` for one; and whether the
        run is over (all its events sent). None for an unknown run."""
        deadline = time.monotonic() + wait_s
        with self._changed:
            while True:
                run = self._runs.get(run_id)
                if run is None:
                    return None
                if len(run.events) > after or run.done:
                    return run.events[after:], run.done
                left = deadline - time.monotonic()
                if left <= 0:
                    return [], False
                self._changed.wait(left)

    def stop(self, run_id: str) -> bool | None:
        """Ask the run to stop; whether it was still generating (None: no such run)."""
        with self._changed:
            run = self._runs.get(run_id)
            if run is None:
                return None
            run.stop.set()
            return not run.done


class LiveRequest(BaseModel):
    """The body of ``POST /api/live/runs``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    max_new_tokens: int = Field(DEFAULT_NEW_TOKENS, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(0.8, ge=0.0, le=MAX_TEMPERATURE, allow_inf_nan=False)
    seed: int = Field(42, ge=0, le=2**31 - 1)
    ignore_eos: bool = False


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def _check_post(request: Request, served: Served) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, "send the request body as JSON (Content-Type: application/json)")
    origin = request.headers.get("origin")
    if origin is not None and origin != _own_origin(request) and origin not in served.config.allow_origins:
        raise ApiError(403, f"live runs are not started from the origin {origin[:200]}")


async def _read_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "the request body is not JSON") from None


def live_router(served: Served, runs: LiveRuns | None) -> APIRouter:
    """The live routes over ``runs`` (None: the server has no model, and the routes say so)."""
    router = APIRouter(prefix="/api/live", tags=["live"])
    limits = served.config.limits

    def enabled() -> LiveRuns:
        if runs is None:
            raise ApiError(404, DISABLED)
        return runs

    def checked_run_id(run_id: str) -> str:
        if len(run_id) > RUN_ID_CHARS or not run_id.isalnum():
            raise ApiError(404, "no live run with this id")
        return run_id

    @router.get("", summary="Whether live runs are on, and their limits")
    async def live_info() -> Any:
        """``enabled`` is false when the server was started without ``--model``."""
        return json_response(
            {
                "enabled": runs is not None,
                "model": runs.generator.model_id if runs is not None else None,
                "busy": runs.busy if runs is not None else False,
                "current": runs.current if runs is not None else None,
                "limits": {
                    "max_prompt_chars": MAX_PROMPT_CHARS,
                    "max_new_tokens": MAX_NEW_TOKENS,
                    "max_temperature": MAX_TEMPERATURE,
                },
                "defaults": LiveRequest(prompt="-").model_dump(exclude={"prompt"}),
            }
        )

    @router.post("/runs", status_code=201, summary="Start a live run of the server's model")
    async def start(request: Request) -> Any:
        """Generate for ``prompt`` (one run at a time: 429 while another generates); the run's id."""
        live = enabled()
        _check_post(request, served)
        try:
            body = LiveRequest.model_validate(await _read_body(request))
        except ValidationError as error:
            first = error.errors()[0]
            raise ApiError(
                422, f"{'.'.join(str(p) for p in first['loc']) or 'body'}: {first['msg']}"
            ) from None
        options = LiveOptions(body.max_new_tokens, body.temperature, body.seed, body.ignore_eos)
        try:
            run_id = live.start(body.prompt, options)
        except LiveBusy:
            raise ApiError(
                429, "another live run is generating: stop it or wait for it", {"retry-after": "2"}
            ) from None
        return json_response(
            {
                "run_id": run_id,
                "events": f"/api/live/runs/{run_id}/events",
                "stop": f"/api/live/runs/{run_id}/stop",
            },
            status=201,
        )

    @router.post("/runs/{run_id}/stop", status_code=202, summary="Stop a live run at its next step")
    async def stop(run_id: str, request: Request) -> Any:
        """The run stops at its next step; its report records the finish reason ``stopped_by_callback``."""
        live = enabled()
        _check_post(request, served)
        running = live.stop(checked_run_id(run_id))
        if running is None:
            raise ApiError(404, "no live run with this id")
        return json_response({"run_id": run_id, "stopping": running}, status=202)

    @router.get(
        "/runs/{run_id}/events",
        summary="A live run's steps (server-sent events)",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "event: step | final | error"}},
    )
    async def events(
        run_id: str,
        request: Request,
        after: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
        last_event_id: Annotated[int | None, Header(ge=0, le=1_000_000, include_in_schema=False)] = None,
    ) -> StreamingResponse:
        """``step`` events (one per generated token), then ``final`` (the stored run) or ``error``.

        Events are numbered from 1 (``id:``); ``?after=N`` or ``Last-Event-ID`` resumes after the Nth.
        """
        live = enabled()
        run_id = checked_run_id(run_id)
        if await anyio.to_thread.run_sync(live.read, run_id, 0, 0.0) is None:
            raise ApiError(404, "no live run with this id")
        if not served.events.try_acquire():
            raise ApiError(503, f"too many open event streams (at most {limits.max_event_clients})")
        start = after if after is not None else (last_event_id or 0)
        try:
            return EventStreamResponse(_stream(request, live, run_id, start, served), served.events)
        except BaseException:
            served.events.release()
            raise

    return router


async def _stream(
    request: Request, live: LiveRuns, run_id: str, after: int, served: Served
) -> AsyncIterator[bytes]:
    yield b"retry: %d\n: live run %s\n\n" % (RETRY_MS, run_id.encode())
    position = after
    quiet_since = time.monotonic()
    heartbeat = served.config.limits.heartbeat_s
    while True:
        found = await anyio.to_thread.run_sync(live.read, run_id, position, WAIT_S, abandon_on_cancel=True)
        if found is None:
            return
        events, done = found
        for event in events:
            yield event
        position += len(events)
        if events:
            quiet_since = time.monotonic()
        if done:
            return
        if time.monotonic() - quiet_since >= heartbeat:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        if served.stopping.is_set() or await request.is_disconnected():
            return
