"""Monitoring a model the user already loaded: ``with monitor.watch(model, tokenizer) as w:``.

Inside the block, each of the user's own ``model.generate(...)`` calls is observed exactly as
``monitor.run`` observes its own (same capture, same analysis, same reports), and its reports are
appended to ``w.reports``. The model is not reloaded, moved or changed: the only thing installed
is an instance attribute ``generate`` wrapping the class's method, removed on exit.

A decoder-only call with ``inputs_embeds`` instead of ``input_ids`` is observed too: the prompt's
tokens are unknown then, so its report has an empty prompt, no prompt telemetry and a warning
``PROMPT_AS_EMBEDDINGS``; any other call without ``input_ids`` runs unobserved, with a Python warning.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from corevital.capture.generate_kwargs import stop_strings
from corevital.capture.loading import loaded_from_existing
from corevital.capture.options import CaptureOptions
from corevital.capture.prompts import PreparedBatch, batch_from_inputs
from corevital.capture.records import (
    CaptureWarning,
    GenerationRecord,
    PromptRecord,
    RunCapture,
    picked_generation_record,
)
from corevital.capture.runner import merged_list, model_record, observe_generation
from corevital.config import Settings
from corevital.exporters.base import Outputs
from corevital.pipeline import Pipeline
from corevital.report.schema import Report
from corevital.report.timestamps import utc_now

log = logging.getLogger(__name__)

# generate() keywords that are the inputs or the decoding the report records elsewhere.
_NOT_RECORDED = frozenset(
    {
        "input_ids",
        "inputs",
        "attention_mask",
        "inputs_embeds",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "num_beams",
        "early_stopping",
        "max_new_tokens",
    }
)


def _generation_record(model: Any, kwargs: dict[str, Any], seed: int) -> GenerationRecord:
    config = model.generation_config

    def pick(name: str) -> Any:
        return kwargs[name] if name in kwargs else getattr(config, name, None)

    return picked_generation_record(
        pick,
        max_new_tokens=int(pick("max_new_tokens") or 0),
        seed=seed,
        generate_kwargs={k: v for k, v in kwargs.items() if k not in _NOT_RECORDED},
    )


class Watch:
    """The reports of the ``generate()`` calls made while watching."""

    def __init__(
        self, model: Any, tokenizer: Any, settings: Settings, *, outputs: Outputs | None = None
    ) -> None:
        self.outputs = outputs  # where each report goes too (None: kept in memory only)
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.reports: list[Report] = []
        self._loaded = loaded_from_existing(model, tokenizer)

    @contextmanager
    def installed(self) -> Iterator[Watch]:
        model = self.model
        had_own = "generate" in vars(model)
        previous = vars(model).get("generate")
        original = model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            return self._observed(original, args, kwargs)

        model.generate = generate
        try:
            yield self
        finally:
            if had_own:
                model.generate = previous
            else:
                del model.generate

    def _observed(self, original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        from_embeds = (
            input_ids is None and embeds is not None and not self._loaded.capabilities.is_encoder_decoder
        )
        if input_ids is None and not from_embeds:
            message = (
                "corevital: this generate() call has no input_ids (encoder-decoder inputs_embeds or "
                "another input): it runs unobserved and makes no report"
            )
            warnings.warn(message, stacklevel=3)
            log.warning(message)
            return original(*args, **kwargs)
        if input_ids is None:
            batch = _embeds_batch(embeds, kwargs.get("attention_mask"))
        else:
            batch = batch_from_inputs(self.tokenizer, input_ids, kwargs.get("attention_mask"))
        gen = _generation_record(self.model, kwargs, self.settings.seed)
        options = CaptureOptions.for_generation(self.settings, gen)
        if from_embeds:  # no prompt tokens to score
            options = dataclasses.replace(options, prompt_telemetry=False)
        result: dict[str, Any] = {}

        def call(processors: Any, criteria: Any) -> Any:
            merged = dict(kwargs)
            if processors is not None:
                merged["logits_processor"] = merged_list(kwargs.get("logits_processor"), processors)
                merged["stopping_criteria"] = merged_list(kwargs.get("stopping_criteria"), criteria)
            result["output"] = original(*args, **merged)
            return result["output"]

        started = utc_now()
        t0 = time.perf_counter()
        sequences = observe_generation(
            self._loaded,
            batch,
            options,
            call,
            beam_search=gen.num_beams > 1,
            wrap_errors=False,
            started=t0,
            stops=stop_strings(gen.generate_kwargs),
            max_new_tokens=gen.max_new_tokens or None,
        )
        if from_embeds:
            for seq in sequences:
                seq.warnings.append(
                    CaptureWarning(
                        "PROMPT_AS_EMBEDDINGS",
                        "the prompt was given as inputs_embeds: its tokens are unknown, so the report "
                        "has an empty prompt and no prompt telemetry",
                    )
                )
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        run = RunCapture(
            model=model_record(self._loaded),
            generation=gen,
            capture_mode=options.capture,
            entropy_mode=options.entropy_mode,
            sequences=sequences,
            elapsed_ms=elapsed_ms,
            started_at_utc=started,
        )
        pipeline = Pipeline(self.settings, outputs=self.outputs)
        pipeline.use_model(self._loaded)
        reports = pipeline.build(run)
        if self.outputs is not None:
            pipeline.write(reports)
        self.reports.extend(reports)
        return result["output"]


def _embeds_batch(embeds: Any, attention_mask: Any) -> PreparedBatch:
    """A batch whose prompt is known only as embeddings: no token ids (generate() returns only new tokens)."""
    rows = int(embeds.shape[0])
    mask = attention_mask
    if mask is None:
        mask = embeds.new_ones(embeds.shape[:2]).long()
    return PreparedBatch(
        prompts=[PromptRecord(text="", model_text="", token_ids=[], chat_template_applied=False)] * rows,
        input_ids=mask[:, :0].long(),
        attention_mask=mask,
    )
