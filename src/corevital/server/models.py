"""Response shapes of the HTTP API, for the OpenAPI document.

The routes write their JSON directly (no validation on the way out, which keeps listing fast);
these models describe it, and a test checks that real responses validate against them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from corevital.sinks.rows import ModelAggregate, TraceRow


class RunPage(BaseModel):
    """One page of runs; follow ``next_url`` (or pass ``next_cursor`` as ``cursor``) for the next."""

    runs: list[TraceRow]
    next_cursor: str | None = Field(description="Opaque; null when no run follows.")
    next_url: str | None = Field(description="This query's next page, relative to the server.")


class Aggregates(BaseModel):
    """Per-group statistics, most runs first; ``total_runs`` over every group."""

    by: str
    groups: list[ModelAggregate]
    total_runs: int


class RunSummary(BaseModel):
    """One run's digest (``corevital show``); every field of ``views.digest.RunDigest``."""

    model_config = {"extra": "allow"}

    trace_id: str
    created_at_utc: str
    model_id: str
    prompt_hash: str
    prompt_text: str
    output_text: str
    narrative: str | None
    risk_score: float | None
    flags: dict[str, bool]
    flags_set: list[str]
    entropy: list[float | None]
    surprisal: list[float | None]
    entropy_stats: dict[str, Any]
    surprisal_stats: dict[str, Any]


class Info(BaseModel):
    """What this server serves."""

    name: str
    version: str
    store: str
    read_only: bool
    runs: int
    token_required: bool
    endpoints: dict[str, str]


class Health(BaseModel):
    """Liveness: the store answers."""

    status: str


class LegacyTrace(BaseModel):
    """A row of the original dashboard's ``GET /api/traces``."""

    trace_id: str
    created_at_utc: str
    model_id: str
    schema_version: str
    prompt_hash: str | None
    risk_score: float | None


class ErrorBody(BaseModel):
    """Every error: one line, never a traceback or a file path."""

    detail: str
    errors: list[dict[str, Any]] | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A malformed query, cursor or ambiguous id prefix."},
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token (when one is configured)."},
    404: {"model": ErrorBody, "description": "No such run."},
    422: {"model": ErrorBody, "description": "A parameter out of range or of the wrong type."},
    503: {"model": ErrorBody, "description": "The store could not be read, or the time limit passed."},
}
