"""Reports from OpenAI-compatible responses: the logprobs capture through the pipeline's analysis.

The capture (:mod:`corevital.capture.logprobs`) gives a :class:`RunCapture` of the logit tier; the
pipeline diagnoses each sequence and builds its report exactly as for a model CoreVital runs
(risk, early warnings, repetition, narrative), then the report records what was observed:
``capture.source = "logprobs"``, the entropy's bounds per step, no model source or entropy mode
(those describe a model CoreVital loaded).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from corevital.analysis.policies import StopDecision
from corevital.capture.logprobs import LogprobCapture, capture_response
from corevital.capture.openai_api import ObservedRequest
from corevital.config import Settings
from corevital.exporters.base import Outputs
from corevital.pipeline import Pipeline
from corevital.report.schema import CaptureInfo, Report
from corevital.report.timestamps import utc_now

log = logging.getLogger(__name__)

OBSERVED = ["logits"]
NOT_OBSERVED = ["attention", "hidden_states"]


def response_dict(response: Any) -> Mapping[str, Any]:
    """A response as a mapping: a dict, or an object of the openai client (``model_dump()``)."""
    if isinstance(response, Mapping):
        return response
    dump = getattr(response, "model_dump", None)
    if callable(dump):
        dumped = dump()
        if isinstance(dumped, Mapping):
            return dumped
    raise TypeError(
        f"expected an OpenAI response (a dict or an object with model_dump()), not {type(response).__name__}"
    )


def is_chat_response(response: Mapping[str, Any]) -> bool:
    """Whether a response is a chat completion (``object`` chat.completion, or choices with a message)."""
    kind = response.get("object")
    if isinstance(kind, str):
        return kind.startswith("chat.")
    choices = response.get("choices")
    return isinstance(choices, list) and any(isinstance(c, Mapping) and "message" in c for c in choices)


class LogprobReporter:
    """Builds the reports of OpenAI responses with one pipeline's settings (profiles, topk, sinks)."""

    def __init__(
        self,
        settings: Settings,
        *,
        outputs: Outputs | None = None,
        vocab_size: int | None = None,
        clock: Callable[[], str] = utc_now,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.pipeline = Pipeline(
            settings.model_copy(update={"capture": "summary"}), clock=clock, new_id=new_id, outputs=outputs
        )
        self.vocab_size = vocab_size

    def reports(
        self,
        response: Any,
        request: ObservedRequest,
        *,
        elapsed_ms: float = 0.0,
        started_at_utc: str | None = None,
        stopped: tuple[int, StopDecision] | None = None,
    ) -> list[Report]:
        """One report per choice of ``response`` (a :class:`LogprobsError` when it has no logprobs).

        ``stopped``: the choice whose stream a policy stopped, and the decision; every choice of
        that stream ended there and records it (``finish_reason`` stopped_by_callback,
        ``extensions.intervention``).
        """
        settings = self.pipeline.settings
        capture = capture_response(
            response_dict(response),
            request,
            topk=settings.topk,
            mass_k=settings.topk_mass_k,
            vocab_size=self.vocab_size,
            elapsed_ms=elapsed_ms,
            started_at_utc=started_at_utc or utc_now(),
        )
        if stopped is not None:
            index, decision = stopped
            for seq in capture.run.sequences:
                seq.finish_reason = "stopped_by_callback"
                seq.stop_policy = decision.policy
                seq.stopped_at_step = decision.step
                seq.stop_reason = (
                    decision.reason if seq.batch_index == index else f"choice {index}: {decision.reason}"
                )
        return [self._report(capture, i) for i in range(len(capture.run.sequences))]

    def _report(self, capture: LogprobCapture, index: int) -> Report:
        seq = capture.run.sequences[index]
        stats = capture.stats[index]
        report = self.pipeline.build_one(capture.run, seq)
        report.model.source = None
        report.run_config.entropy_mode = None
        report.run_config.summaries.logits.topk = int(np.asarray(stats.topk_ids).shape[1])
        report.capture = CaptureInfo(
            source="logprobs",
            observed=list(OBSERVED),
            not_observed=list(NOT_OBSERVED),
            endpoint=capture.endpoint,
            top_logprobs=capture.alternatives,
            vocab_size=capture.vocab_size,
            entropy="lower_bound" if capture.vocab_size is None else "midpoint",
            token_ids="vocabulary" if capture.vocabulary_ids else "per_report",
            prompt_tokens=capture.prompt_tokens,
            upstream_finish_reason=capture.upstream_finish_reasons[index],
        )
        return report

    def write(self, reports: list[Report]) -> list[str]:
        """Store and export the reports through the pipeline's outputs; the stores' locations."""
        locations, _ = self.pipeline.write(reports)
        return locations

    def observe(
        self,
        response: Any,
        request: ObservedRequest,
        *,
        elapsed_ms: float = 0.0,
        started_at_utc: str | None = None,
        stopped: tuple[int, StopDecision] | None = None,
    ) -> list[Report]:
        """Build and write the reports of one response."""
        t0 = time.perf_counter()
        reports = self.reports(
            response, request, elapsed_ms=elapsed_ms, started_at_utc=started_at_utc, stopped=stopped
        )
        self.write(reports)
        log.debug(
            "%d report(s) built and written in %.1f ms", len(reports), (time.perf_counter() - t0) * 1000.0
        )
        return reports

    def close(self) -> None:
        self.pipeline.close()


def request_of(response: Mapping[str, Any], prompt: str | None) -> ObservedRequest:
    """What a library user's response says of its request: the prompt given, chat or not."""
    return ObservedRequest(prompt=prompt or "", chat=is_chat_response(response))
