"""Reports of a GGUF file run in process by llama.cpp (``corevital run --backend llama-cpp``).

The capture (:mod:`corevital.capture.llama_cpp`) gives a :class:`RunCapture` of the exact logit tier
from llama.cpp's full-vocabulary logits; the pipeline diagnoses each sequence and builds its report
as for a model transformers runs (risk, early warnings, repetition, narrative), and the report
records what was observed: ``capture.source = "llama-cpp"``, the logit tier with exact entropy,
attention and hidden states not observed.

Library use::

    from corevital.config import load_settings
    from corevital.proxy.llama_cpp import LlamaCppRunner

    with LlamaCppRunner(load_settings({"backend": "llama-cpp", "max_new_tokens": 16})) as runner:
        reports = runner.run(["Why is the sky blue?"])  # stored in runs/corevital.db, as by `run`
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from corevital.capture.gguf import LlamaModel, load_llama
from corevital.capture.llama_cpp import StepHook, capture_llama
from corevital.capture.messages import Prompt
from corevital.capture.records import RunCapture
from corevital.config import Settings
from corevital.exporters.base import Outputs
from corevital.pipeline import Pipeline
from corevital.report.schema import CaptureInfo, Report
from corevital.report.timestamps import utc_now

OBSERVED = ["logits"]
NOT_OBSERVED = ["attention", "hidden_states"]


class LlamaCppRunner:
    """Loads a GGUF file with llama.cpp once and turns prompts into stored reports."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: LlamaModel | None = None,
        outputs: Outputs | None = None,
        threads: int | None = None,
        clock: Callable[[], str] = utc_now,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.pipeline = Pipeline(
            settings.model_copy(update={"capture": "summary"}), clock=clock, new_id=new_id, outputs=outputs
        )
        self._model = model
        self._threads = threads
        self.stored = 0
        self.last_capture: RunCapture | None = None

    @property
    def settings(self) -> Settings:
        return self.pipeline.settings

    @property
    def model(self) -> LlamaModel:
        """The loaded GGUF (loaded on first use)."""
        if self._model is None:
            self._model = load_llama(self.settings, threads=self._threads)
        return self._model

    def reports(
        self, prompts: Sequence[Prompt], *, first_index: int = 0, hook: StepHook | None = None
    ) -> list[Report]:
        """Generate for ``prompts`` and build one report each (nothing written)."""
        run = capture_llama(self.model, prompts, self.settings, first_index=first_index, hook=hook)
        self.last_capture = run
        return [self._report(run, i) for i in range(len(run.sequences))]

    def _report(self, run: RunCapture, index: int) -> Report:
        report = self.pipeline.build_one(run, run.sequences[index])
        report.capture = CaptureInfo(
            source="llama-cpp",
            observed=list(OBSERVED),
            not_observed=list(NOT_OBSERVED),
            vocab_size=self.model.vocab_size,
            entropy="exact",
            token_ids="vocabulary",
            prompt_tokens=len(run.sequences[index].prompt.token_ids),
        )
        return report

    def run(
        self,
        prompts: Sequence[Prompt],
        *,
        on_batch: Callable[[list[Report], list[str]], None] | None = None,
    ) -> list[Report]:
        """Generate, build and write, ``batch_size`` prompts at a time (each batch written when built)."""
        self.pipeline.check_inputs()
        reports: list[Report] = []
        size = self.settings.batch_size
        for start in range(0, len(prompts), size):
            built = self.reports(prompts[start : start + size], first_index=start)
            written, _ = self.pipeline.write(built)
            self.stored += sum(1 for where in written if where)
            reports.extend(built)
            if on_batch is not None:
                on_batch(built, written)
        return reports

    def write(self, reports: list[Report]) -> tuple[list[str], list[str]]:
        """Store and export ``reports``; the stores' locations and the JSON files written."""
        return self.pipeline.write(reports)

    def close(self) -> None:
        self.pipeline.close()
        if self._model is not None:
            self._model.close()
            self._model = None

    def __enter__(self) -> LlamaCppRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
