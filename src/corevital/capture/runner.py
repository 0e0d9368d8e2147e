"""Instrumented generation: prompts in, one :class:`SequenceCapture` per prompt out.

Greedy decoding and sampling are observed live, step by step (:mod:`.observer`). Beam search
reorders its hypotheses at every step, so the statistics of the beam that is finally returned are
obtained by one teacher-forced pass over that sequence (:mod:`.replay`), which computes exactly
the values the returned beam had at each step. How ``generate()`` is called is
:mod:`.generate_call`; how its output becomes sequences, :mod:`.sequences`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from corevital.capture.generate_call import eos_ids, generate_call_kwargs, merged_list, seeded
from corevital.capture.generate_kwargs import check_generate_kwargs, stop_strings
from corevital.capture.loading import LoadedModel
from corevital.capture.messages import Prompt
from corevital.capture.observer import StepObserver, generation_lock
from corevital.capture.options import CaptureOptions, Tuning
from corevital.capture.prompts import (
    PreparedBatch,
    check_token_budget,
    format_prompt,
    prepare_batch,
    repeat_batch,
)
from corevital.capture.records import (
    GenerationRecord,
    ModelRecord,
    ProgressCallback,
    RunCapture,
    SequenceCapture,
    StepCallback,
    generation_record,
    utc_timestamp,
)
from corevital.capture.sequences import output_sequences, replay_beams, split_sequences, token_texts
from corevital.capture.static_cache import with_kept_static_cache
from corevital.config import Settings
from corevital.errors import CaptureError, CoreVitalError, InputError

log = logging.getLogger(__name__)


def model_record(loaded: LoadedModel) -> ModelRecord:
    return ModelRecord(
        hf_id=loaded.resolved.hf_id,
        revision=loaded.revision,
        source=loaded.resolved.source,
        gguf_file=loaded.resolved.gguf_file,
        dtype=loaded.dtype_name,
        device=str(loaded.device),
        quantization=loaded.quantization,
        capabilities=loaded.capabilities,
    )


def capture_prompts(
    loaded: LoadedModel,
    texts: Sequence[Prompt],
    settings: Settings,
    *,
    callback: StepCallback | None = None,
    context_span: tuple[int, int] | None = None,
    tuning: Tuning | None = None,
    first_index: int = 0,
    generate_kwargs: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> RunCapture:
    """Generate for every prompt (``settings.batch_size`` per ``generate()`` call) and observe it.

    ``texts``: prompt strings or chat messages. ``tuning``: memory budgets and batching (default:
    following the model's size). ``first_index``: the position of ``texts[0]`` among all prompts
    of the run (its batch index). ``generate_kwargs``: further ``generate()`` keywords, checked by
    :func:`~corevital.capture.generate_kwargs.check_generate_kwargs` and recorded in the reports;
    with ``num_return_sequences`` n each prompt gives n sequences.
    """
    gen = generation_record(
        settings, loaded.model.generation_config, check_generate_kwargs(generate_kwargs or {})
    )
    options = CaptureOptions.for_generation(settings, gen, context_span, tuning)
    started = utc_timestamp()
    t0 = time.perf_counter()
    sequences: list[SequenceCapture] = []
    timings = CaptureTimings()
    for start in range(0, len(texts), settings.batch_size):
        chunk = texts[start : start + settings.batch_size]
        sequences.extend(
            capture_batch(
                loaded,
                chunk,
                settings,
                gen,
                options,
                first_index=(first_index + start) * gen.num_return_sequences,
                callback=callback,
                timings=timings,
                progress=progress,
            )
        )
    return RunCapture(
        model=model_record(loaded),
        generation=gen,
        capture_mode=options.capture,
        entropy_mode=options.entropy_mode,
        sequences=sequences,
        elapsed_ms=(time.perf_counter() - t0) * 1000.0,
        started_at_utc=started,
        tokenize_ms=timings.tokenize_ms,
        step_ms=timings.step_ms,
    )


def check_prompts(loaded: LoadedModel, texts: Sequence[Prompt], settings: Settings) -> None:
    """Tokenize every prompt and check it against the context window, before any generation.

    A prompt that cannot be run is an :class:`~corevital.errors.InputError` naming its position,
    so that a long batch does not fail after generating everything before it.
    """
    caps = loaded.capabilities
    if caps.is_encoder_decoder:
        return
    rows = _embedding_rows(loaded.model)
    for number, text in enumerate(texts, start=1):
        try:
            model_text, applied = format_prompt(loaded.tokenizer, text, settings.chat_template)
            ids = loaded.tokenizer(model_text, add_special_tokens=not applied)["input_ids"]
            check_token_budget(len(ids), settings.max_new_tokens, caps.context_length)
            beyond = [i for i in ids if rows is not None and i >= rows]
            if beyond:
                token = loaded.tokenizer.convert_ids_to_tokens(beyond[0])
                raise InputError(
                    f"token {token!r} (id {beyond[0]}) has no row in the model's {rows} input embeddings: "
                    "the tokenizer knows tokens the model was not given weights for"
                )
        except InputError as exc:
            raise InputError(f"prompt {number} of {len(texts)}: {exc}") from None


def _embedding_rows(model: Any) -> int | None:
    """How many token ids the model embeds (None where it cannot say)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    return rows if isinstance(rows, int) else None


@dataclass
class CaptureTimings:
    tokenize_ms: float = 0.0
    step_ms: list[float] = field(default_factory=list)


def capture_batch(
    loaded: LoadedModel,
    texts: Sequence[Prompt],
    settings: Settings,
    gen: GenerationRecord,
    options: CaptureOptions,
    *,
    first_index: int = 0,
    callback: StepCallback | None = None,
    timings: CaptureTimings | None = None,
    progress: ProgressCallback | None = None,
) -> list[SequenceCapture]:
    caps = loaded.capabilities
    started = utc_timestamp()
    t0 = time.perf_counter()
    batch = prepare_batch(
        loaded.tokenizer,
        texts,
        chat_template=settings.chat_template,
        device=loaded.device,
        is_encoder_decoder=caps.is_encoder_decoder,
    )
    if timings is not None:
        timings.tokenize_ms += (time.perf_counter() - t0) * 1000.0
    check_token_budget(
        0 if caps.is_encoder_decoder else batch.padded_length, gen.max_new_tokens, caps.context_length
    )
    kwargs = generate_call_kwargs(loaded, gen, settings.cache)
    beam_search = gen.num_beams > 1
    returned = gen.num_return_sequences
    if returned > 1 and not (beam_search or gen.do_sample):
        raise InputError(
            f"num_return_sequences={returned} needs sampling (temperature > 0) or beam search: "
            "greedy decoding returns the same sequence every time"
        )
    inputs = batch
    if returned > 1:
        if beam_search:
            kwargs["num_return_sequences"] = returned  # the best `returned` beams of each prompt
        else:
            # Sampling: generate() would repeat each prompt `returned` times; done here, so the
            # observer, the reports and the batch indices see one row per returned sequence.
            inputs = repeat_batch(batch, returned)
        batch = repeat_batch(batch, returned)
    user = gen.generate_kwargs

    def generate(processors: Any, criteria: Any) -> Any:
        extra: dict[str, Any] = {}
        if "logits_processor" in user:
            extra["logits_processor"] = user["logits_processor"]
        if "stopping_criteria" in user:
            extra["stopping_criteria"] = user["stopping_criteria"]
        if processors is not None:
            extra["logits_processor"] = merged_list(user.get("logits_processor"), processors)
            extra["stopping_criteria"] = merged_list(user.get("stopping_criteria"), criteria)
        call = _with_kept_cache(loaded, kwargs, inputs.input_ids, gen.max_new_tokens)
        return loaded.model.generate(
            input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, **extra, **call
        )

    with seeded(gen, loaded.device):
        sequences = observe_generation(
            loaded,
            batch,
            options,
            generate,
            beam_search=beam_search,
            first_index=first_index,
            callback=callback,
            timings=timings,
            started=t0,
            stops=stop_strings(user),
            progress=progress,
            max_new_tokens=gen.max_new_tokens,
        )
    generation_ms = (time.perf_counter() - t0) * 1000.0
    for seq in sequences:
        seq.started_at_utc, seq.generation_ms = started, generation_ms
    return sequences


GenerateCall = Callable[[Any, Any], Any]


def observe_generation(
    loaded: LoadedModel,
    batch: PreparedBatch,
    options: CaptureOptions,
    generate: GenerateCall,
    *,
    beam_search: bool = False,
    first_index: int = 0,
    callback: StepCallback | None = None,
    timings: CaptureTimings | None = None,
    wrap_errors: bool = True,
    started: float | None = None,
    stops: tuple[str, ...] = (),
    progress: ProgressCallback | None = None,
    max_new_tokens: int | None = None,
) -> list[SequenceCapture]:
    """Run ``generate(processors, criteria)`` observed and cut the result into sequences.

    ``generate`` receives CoreVital's logits processors and stopping criteria to merge with its
    own (or ``None, None`` for beam search, which is observed afterwards by a teacher-forced pass).
    It returns generate()'s output: a tensor of sequences or an output object with ``sequences``.
    ``started``: ``time.perf_counter()`` at the start of the batch (default: now), from which each
    sequence's step times are measured. ``stops``: the ``stop_strings`` given to generate().
    ``max_new_tokens``: the generation's most steps, when known (the observer prepares its end
    during the last one).
    ``wrap_errors``: a failure of ``generate`` becomes a :class:`CaptureError` (CoreVital's own
    generation); False (the user's ``generate``, observed by ``watch``): it propagates unchanged,
    with a note saying CoreVital was observing, so the user's ``except`` clauses still match.
    """
    # the observer and the beam replay install per-model state for one generation: one at a time
    with generation_lock(loaded.model):
        sites = loaded.constants.sites
        if beam_search:
            try:
                with torch.no_grad():
                    output = output_sequences(generate(None, None))
            except (RuntimeError, ValueError) as exc:
                if not wrap_errors:
                    exc.add_note(
                        "corevital: raised by generate() while CoreVital was observing it (beam search)"
                    )
                    raise
                raise CaptureError(f"beam search failed: {_first_line(exc)}") from exc
            return replay_beams(loaded, batch, output, options, sites, first_index)
        observer = StepObserver(
            loaded.constants,
            sites,
            options,
            callback=callback,
            eos_token_ids=eos_ids(loaded),
            batch_offset=first_index,
            started=started,
            progress=progress,
            max_new_tokens=max_new_tokens,
        )
        try:
            with torch.no_grad(), observer.installed() as (processors, criteria):
                output = output_sequences(generate(processors, criteria))
        except CoreVitalError:
            raise
        except Exception as exc:
            if not wrap_errors:
                exc.add_note("corevital: raised by generate() while CoreVital was observing it")
                raise
            raise CaptureError(f"generation failed: {type(exc).__name__}: {_first_line(exc)}") from exc
        if timings is not None:
            timings.step_ms.extend(observer.step_ms)
        return split_sequences(loaded, batch, output, observer, first_index, stops)


def _with_kept_cache(
    loaded: LoadedModel, kwargs: dict[str, Any], input_ids: torch.Tensor, max_new_tokens: int
) -> dict[str, Any]:
    """``generate()``'s keywords with the model's kept static cache where it would make a new one
    (:mod:`.static_cache`); the caller holds the model's generation lock."""
    return with_kept_static_cache(
        loaded.static_cache,
        loaded.model,
        kwargs,
        batch_size=int(input_ids.shape[0]),
        prompt_length=int(input_ids.shape[1]),
        max_new_tokens=max_new_tokens,
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def baseline_generate_ms(
    loaded: LoadedModel, texts: list[str], settings: Settings, *, max_new_tokens: int | None = None
) -> float:
    """Wall time of plain ``generate()`` for the same prompts: the model's own attention, nothing observed."""
    gen = generation_record(settings, loaded.model.generation_config)
    if max_new_tokens is not None:
        gen = dataclasses.replace(gen, max_new_tokens=max_new_tokens)
    kwargs = generate_call_kwargs(loaded, gen, settings.cache)
    device = loaded.device
    total = 0.0
    for start in range(0, len(texts), settings.batch_size):
        batch = prepare_batch(
            loaded.tokenizer,
            texts[start : start + settings.batch_size],
            chat_template=settings.chat_template,
            device=device,
            is_encoder_decoder=loaded.capabilities.is_encoder_decoder,
        )
        torch.manual_seed(gen.seed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.no_grad(), generation_lock(loaded.model):
            call = _with_kept_cache(loaded, kwargs, batch.input_ids, gen.max_new_tokens)  # as observed runs
            loaded.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **call)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        total += (time.perf_counter() - t0) * 1000.0
    return total


__all__ = [
    "CaptureTimings",
    "GenerateCall",
    "baseline_generate_ms",
    "capture_batch",
    "capture_prompts",
    "check_prompts",
    "eos_ids",
    "merged_list",
    "model_record",
    "observe_generation",
    "seeded",
    "token_texts",
]
