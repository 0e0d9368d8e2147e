"""A FastAPI service that generates with CoreVital watching (docs/library.md; tested in the suite).

Run it with ``uvicorn docs.examples.fastapi_app:app`` (pip install "corevital[serve]"), or build an
app around your own monitor with :func:`create_app`.

- ``POST /generate`` returns the generated text with its risk score, health flags and narrative.
- ``POST /generate/stream`` forwards the live per-token events as server-sent events, ending with
  an ``event: final`` that carries the finished report's summary.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from corevital import CoreVitalMonitor, StopOnNonFinite, StopOnRepetition


class GenerateRequest(BaseModel):
    prompt: str = Field(min_length=1)
    max_new_tokens: int = Field(default=64, ge=1, le=1024)
    temperature: float = Field(default=0.0, ge=0.0)


class GenerateResponse(BaseModel):
    trace_id: str
    text: str
    finish_reason: str | None
    risk_score: float
    health_flags: dict[str, object]
    narrative: str


def create_app(monitor: CoreVitalMonitor) -> FastAPI:
    app = FastAPI(title="Generation with CoreVital health signals")

    @app.post("/generate", response_model=GenerateResponse)
    def generate(request: GenerateRequest) -> GenerateResponse:
        # A plain `def` endpoint: FastAPI runs it in a worker thread, so generation never blocks
        # the event loop; the monitor serialises generations on the same model.
        report = monitor.run(
            prompt=request.prompt, max_new_tokens=request.max_new_tokens, temperature=request.temperature
        )
        risk = report.extensions.risk
        return GenerateResponse(
            trace_id=report.trace_id,
            text=report.generated.output_text,
            finish_reason=report.generated.finish_reason,
            risk_score=risk.risk_score if risk is not None and risk.risk_score is not None else 0.0,
            health_flags=report.health_flags.model_dump() if report.health_flags else {},
            narrative=report.extensions.narrative.summary if report.extensions.narrative else "",
        )

    @app.post("/generate/stream")
    async def generate_stream(request: GenerateRequest) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            async for event in monitor.stream(
                prompt=request.prompt, max_new_tokens=request.max_new_tokens, temperature=request.temperature
            ):
                yield f"event: {event.kind}\ndata: {json.dumps(event.as_dict())}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def default_monitor() -> CoreVitalMonitor:
    """The embedded default model, summary capture, stopping loops and NaN/Inf as they happen."""
    return CoreVitalMonitor(capture="summary", policies=[StopOnNonFinite(), StopOnRepetition()])


app = create_app(default_monitor())  # creating a monitor loads nothing: the model loads on first use
