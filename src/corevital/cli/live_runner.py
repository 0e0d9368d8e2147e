"""The generator behind the dashboard's "Try a prompt" form (``corevital serve --model M``).

:class:`PipelineGenerator` implements :class:`corevital.server.live.LiveGenerator` above the server
layer: it loads the model once (:meth:`load`, before the server listens), and for each live run
builds a :class:`~corevital.pipeline.Pipeline` over that model with the run's settings, observes
the generation with a :class:`~corevital.live.LiveSession` (one ``step`` event per token: token,
entropy, surprisal, running risk, early warnings as they fire) and stores the report through its
own writable handle on the served store. The Stop button is a stop policy that fires when the
server's stop flag is set: capture stops at that step and the report's finish reason is
``stopped_by_callback`` (``stop_policy`` ``stop_button``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from corevital.analysis.online import OnlineStep
from corevital.analysis.policies import StopWhen
from corevital.analysis.profiles import load_profile
from corevital.config import Settings, load_settings
from corevital.exporters.base import Outputs
from corevital.live import LiveSession, StreamEvent
from corevital.pipeline import Pipeline
from corevital.server.live import LiveOptions
from corevital.sinks.open import is_postgres_url, open_location
from corevital.summary import summarize_report

STOP_POLICY = "stop_button"
STOP_REASON = "stopped from the dashboard"


class PipelineGenerator:
    """Live runs of one model, stored in the store at ``location`` (a SQLite path or a URL)."""

    def __init__(self, model: str, location: str) -> None:
        self.settings: Settings = load_settings(
            {"model": model, "sink": ["postgres" if is_postgres_url(location) else "sqlite"], "db": location}
        )
        self._location = location
        self._loaded: Any = None
        self._outputs: Outputs | None = None

    def open_store(self) -> None:
        """Open the store for writing (a SQLite file is created when there is none)."""
        if self._outputs is None:
            self._outputs = Outputs([open_location(self._location)])

    def load(self) -> None:
        """Load the model (seconds to minutes)."""
        from corevital.capture.loading import ModelSpec, load_model

        self.open_store()
        self._loaded = load_model(ModelSpec.from_settings(self.settings))

    @property
    def model_id(self) -> str:
        return str(self._loaded.resolved.hf_id) if self._loaded is not None else self.settings.model

    def close(self) -> None:
        if self._outputs is not None:
            self._outputs.close()
            self._outputs = None

    def generate(
        self,
        prompt: str,
        options: LiveOptions,
        emit: Callable[[str, Mapping[str, Any]], None],
        stop_requested: Callable[[], bool],
    ) -> None:
        if self._loaded is None or self._outputs is None:
            raise RuntimeError("the live model is not loaded")
        loaded = self._loaded
        settings = self.settings.model_copy(
            update={
                "max_new_tokens": options.max_new_tokens,
                "temperature": options.temperature,
                "seed": options.seed,
                "ignore_eos": options.ignore_eos,
            }
        )
        pipeline = Pipeline(settings, outputs=self._outputs)
        pipeline.use_model(loaded)

        def stop(step: OnlineStep) -> bool:
            return stop_requested()

        def step_event(event: StreamEvent) -> None:
            emit("step", event.as_dict())

        session = LiveSession(
            load_profile(loaded.capabilities.model_type, settings.thresholds or None),
            policies=(StopWhen(stop, name=STOP_POLICY, reason=STOP_REASON),),
            token_text=lambda token: str(loaded.tokenizer.decode([token])),
            emit=step_event,
            prompt_text=lambda index: prompt,
            calibration=pipeline.calibration(),
        )
        run = pipeline.capture([prompt], callback=session)
        session.annotate(run)
        (report,) = pipeline.build(run)
        pipeline.write([report])
        summary = summarize_report(report, "", float(report.summary.elapsed_ms)).as_dict()
        emit("final", {**summary, "stop_policy": run.sequences[0].stop_policy})
