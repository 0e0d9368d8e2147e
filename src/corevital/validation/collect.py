"""Running many prompts through the pipeline and keeping only what calibration and validation need.

Each run keeps its :class:`~corevital.analysis.signals.SequenceSignals`, its
:class:`~corevital.analysis.diagnose.Diagnosis` and the generated text; no report is built or
stored. Prompts given as chat messages are rendered with the model's chat template here and run
with ``chat_template: off`` so the template is not applied twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from corevital.analysis.diagnose import Diagnosis
from corevital.analysis.signals import SequenceSignals
from corevital.errors import InputError
from corevital.pipeline import Pipeline
from corevital.progress import Progress


@dataclass(frozen=True)
class PromptItem:
    key: str
    text: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content)


@dataclass(frozen=True)
class CollectedRun:
    key: str
    signals: SequenceSignals
    diagnosis: Diagnosis
    output_text: str
    finish_reason: str
    basin_scores: np.ndarray | None = None  # [L, H] from prompt telemetry, for re-diagnosis


def _render(pipeline: Pipeline, item: PromptItem) -> str:
    tokenizer = pipeline.loaded.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"record {item.key}: chat messages need a model with a chat template")
    messages = [{"role": role, "content": content} for role, content in item.messages or ()]
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def collect_runs(
    pipeline: Pipeline, items: Sequence[PromptItem], *, progress: Progress | None = None
) -> list[CollectedRun]:
    """Generate for every item, ``settings.batch_size`` prompts per ``generate()`` call, in input order."""
    plain = [i for i, item in enumerate(items) if item.messages is None]
    chat = [i for i, item in enumerate(items) if item.messages is not None]
    results: dict[int, CollectedRun] = {}
    if progress is not None:
        progress.start()
    try:
        _run_group(pipeline, items, plain, results, progress, render=False)
        if chat:
            pipeline.loaded  # noqa: B018 - load once, shared by the derived pipeline
            _run_group(pipeline.derived(chat_template="off"), items, chat, results, progress, render=True)
    finally:
        if progress is not None:
            progress.close()
    return [results[i] for i in range(len(items))]


def _run_group(
    pipeline: Pipeline,
    items: Sequence[PromptItem],
    indices: list[int],
    results: dict[int, CollectedRun],
    progress: Progress | None,
    *,
    render: bool,
) -> None:
    size = max(1, pipeline.settings.batch_size)
    for start in range(0, len(indices), size):
        chunk = indices[start : start + size]
        if render:
            texts = [_render(pipeline, items[i]) for i in chunk]
        else:
            texts = [items[i].text or "" for i in chunk]
        run = pipeline.capture(texts)
        for index, seq in zip(chunk, run.sequences, strict=True):
            signals, diagnosis = pipeline.diagnose_one(run, seq)
            results[index] = CollectedRun(
                key=items[index].key,
                signals=signals,
                diagnosis=diagnosis,
                output_text=seq.generated_text,
                finish_reason=seq.finish_reason,
                basin_scores=None if seq.prompt_telemetry is None else seq.prompt_telemetry.basin_scores,
            )
        if progress is not None:
            progress.advance(len(chunk))
