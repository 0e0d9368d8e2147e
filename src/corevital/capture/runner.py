"""Instrumented generation: prompts in, one :class:`SequenceCapture` per prompt out.

Greedy decoding and sampling are observed live, step by step (:mod:`.observer`). Beam search
reorders its hypotheses at every step, so the statistics of the beam that is finally returned are
obtained by one teacher-forced pass over that sequence (:mod:`.replay`), which computes exactly
the values the returned beam had at each step.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from corevital.capture.assemble import generated_length, reduce_rows, series
from corevital.capture.generate_kwargs import check_generate_kwargs, stop_strings
from corevital.capture.loading import LoadedModel
from corevital.capture.messages import Prompt
from corevital.capture.observer import StepObserver
from corevital.capture.options import CaptureOptions, Tuning
from corevital.capture.prompt_telemetry import prompt_telemetry_for
from corevital.capture.prompts import (
    PreparedBatch,
    check_token_budget,
    format_prompt,
    prepare_batch,
    repeat_batch,
)
from corevital.capture.records import (
    CaptureWarning,
    GenerationRecord,
    ModelRecord,
    ProgressCallback,
    RunCapture,
    SequenceCapture,
    StepCallback,
    generation_record,
    utc_timestamp,
)
from corevital.capture.replay import replay_sequence
from corevital.config import Settings
from corevital.errors import CaptureError, CoreVitalError, InputError

log = logging.getLogger(__name__)


def eos_ids(loaded: LoadedModel) -> tuple[int, ...]:
    found: set[int] = set()
    for source in (loaded.model.generation_config, loaded.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(int(v) for v in value)
    return tuple(sorted(found))


def _generate_kwargs(loaded: LoadedModel, gen: GenerationRecord, cache: str = "auto") -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "max_new_tokens": gen.max_new_tokens,
        "do_sample": gen.do_sample,
        "num_beams": gen.num_beams,
        "pad_token_id": loaded.tokenizer.pad_token_id,
        "eos_token_id": list(eos_ids(loaded)) or None,
    }
    if gen.num_beams > 1:
        kwargs["early_stopping"] = gen.early_stopping
    if gen.ignore_eos:
        kwargs["min_new_tokens"] = gen.max_new_tokens  # masks EOS in the processed scores only
    if gen.do_sample:
        kwargs.update(temperature=gen.temperature, top_k=gen.top_k or None, top_p=gen.top_p)
    else:
        # Greedy must be greedy whatever the model's generation_config says.
        kwargs.update(temperature=None, top_k=None, top_p=None)
    # The user's generate() keywords, except the lists merged with CoreVital's (see capture_batch)
    # and num_return_sequences (sampling: the prompts are repeated; beam search: passed there).
    for name, value in gen.generate_kwargs.items():
        if name not in ("logits_processor", "stopping_criteria", "num_return_sequences"):
            kwargs[name] = value
    if cache != "auto" and "past_key_values" not in kwargs:  # auto: the model's generation config decides
        kwargs.setdefault("cache_implementation", cache)
    if "stop_strings" in gen.generate_kwargs and "tokenizer" not in kwargs:
        kwargs["tokenizer"] = loaded.tokenizer  # generate() needs it to match stop strings
    return kwargs


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


# torch's random number generators are process-wide: sampled generations take turns on them.
_SAMPLING_LOCK = threading.Lock()


@contextmanager
def seeded(gen: GenerationRecord, device: torch.device) -> Iterator[None]:
    """A sampled generation seeded with ``gen.seed`` that leaves the caller's RNG state unchanged.

    The process-wide RNG state is saved, seeded, and restored afterwards (``torch.random.fork_rng``),
    under a lock, so that the host application's random numbers are not disturbed and two
    generations with the same seed give the same tokens even when started from two threads.
    Greedy and beam search draw no random numbers and run without the lock.
    """
    if not gen.do_sample:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with _SAMPLING_LOCK, torch.random.fork_rng(devices=devices):
        torch.manual_seed(gen.seed)
        yield


def check_prompts(loaded: LoadedModel, texts: Sequence[Prompt], settings: Settings) -> None:
    """Tokenize every prompt and check it against the context window, before any generation.

    A prompt that cannot be run is an :class:`~corevital.errors.InputError` naming its position,
    so that a long batch does not fail after generating everything before it.
    """
    caps = loaded.capabilities
    if caps.is_encoder_decoder:
        return
    for number, text in enumerate(texts, start=1):
        try:
            model_text, applied = format_prompt(loaded.tokenizer, text, settings.chat_template)
            tokens = len(loaded.tokenizer(model_text, add_special_tokens=not applied)["input_ids"])
            check_token_budget(tokens, settings.max_new_tokens, caps.context_length)
        except InputError as exc:
            raise InputError(f"prompt {number} of {len(texts)}: {exc}") from None


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
    kwargs = _generate_kwargs(loaded, gen, settings.cache)
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
        return loaded.model.generate(
            input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, **extra, **kwargs
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
) -> list[SequenceCapture]:
    """Run ``generate(processors, criteria)`` observed and cut the result into sequences.

    ``generate`` receives CoreVital's logits processors and stopping criteria to merge with its
    own (or ``None, None`` for beam search, which is observed afterwards by a teacher-forced pass).
    It returns generate()'s output: a tensor of sequences or an output object with ``sequences``.
    ``started``: ``time.perf_counter()`` at the start of the batch (default: now), from which each
    sequence's step times are measured. ``stops``: the ``stop_strings`` given to generate().
    ``wrap_errors``: a failure of ``generate`` becomes a :class:`CaptureError` (CoreVital's own
    generation); False (the user's ``generate``, observed by ``watch``): it propagates unchanged,
    with a note saying CoreVital was observing, so the user's ``except`` clauses still match.
    """
    caps = loaded.capabilities
    sites = loaded.constants.sites
    if beam_search:
        try:
            with torch.no_grad():
                output = _sequences(generate(None, None))
        except (RuntimeError, ValueError) as exc:
            if not wrap_errors:
                exc.add_note("corevital: raised by generate() while CoreVital was observing it (beam search)")
                raise
            raise CaptureError(f"beam search failed: {_first_line(exc)}") from exc
        return _replay_beams(loaded, batch, output, options, sites, first_index)
    observer = StepObserver(
        loaded.model,
        caps,
        sites,
        options,
        callback=callback,
        eos_token_ids=eos_ids(loaded),
        batch_offset=first_index,
        started=started,
        progress=progress,
        constants=loaded.constants,
    )
    try:
        with torch.no_grad(), observer.installed() as (processors, criteria):
            output = _sequences(generate(processors, criteria))
    except CoreVitalError:
        raise
    except Exception as exc:
        if not wrap_errors:
            exc.add_note("corevital: raised by generate() while CoreVital was observing it")
            raise
        raise CaptureError(f"generation failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    observer.finalize()
    if timings is not None:
        timings.step_ms.extend(observer.step_ms)
    return _split(loaded, batch, output, observer, first_index, stops)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _sequences(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.sequences


def _generated_part(loaded: LoadedModel, batch: PreparedBatch, output: torch.Tensor) -> np.ndarray:
    ids = output.detach().to("cpu").numpy()
    if loaded.capabilities.is_encoder_decoder:
        return ids[:, 1:]  # drop the decoder start token
    return ids[:, batch.padded_length :]


def _split(
    loaded: LoadedModel,
    batch: PreparedBatch,
    output: torch.Tensor,
    observer: StepObserver,
    first_index: int,
    stops: tuple[str, ...] = (),
) -> list[SequenceCapture]:
    generated = _generated_part(loaded, batch, output)
    steps = observer.host_steps
    eos = eos_ids(loaded)
    results = []
    for b, prompt in enumerate(batch.prompts):
        length, ended_on_eos = generated_length(generated[b], eos)
        length = min(length, len(steps))
        stop_step = observer.stop_steps.get(b)
        finish = "eos" if ended_on_eos else "length"
        stop_at = _stop_string_end(loaded.tokenizer, generated[b, :length], stops)
        if stop_at is not None:
            length, finish = stop_at, "stop_string"
        if stop_step is not None and stop_step + 1 <= length:
            length, finish = stop_step + 1, "stopped_by_callback"
        mine = steps[:length]
        token_ids = [int(t) for t in generated[b, :length]]
        logits = series([s.logits for s in mine], b, axis=0)
        capture = SequenceCapture(
            batch_index=first_index + b,
            batch_size=len(batch.prompts),
            prompt=prompt,
            generated_token_ids=token_ids,
            generated_text=loaded.tokenizer.decode(token_ids, skip_special_tokens=True),
            finish_reason=finish,
            logits=logits,
            chosen=series([s.chosen for s in mine], b, axis=0),
            hidden=series([s.hidden for s in mine], b, axis=1),
            attention=series([s.attention for s in mine], b, axis=1),
            cross_attention=series([s.cross_attention for s in mine], b, axis=1),
            warnings=list(observer.warnings),
            stopped_at_step=stop_step if finish == "stopped_by_callback" else None,
            stop_reason="step callback" if finish == "stopped_by_callback" else None,
            step_end_ms=[(end - observer.started) * 1000.0 for end in observer.step_ends[:length]],
        )
        _attach_encoder(capture, observer, b)
        if observer.prompt.host is not None:
            stats, layers, shares = observer.prompt.host
            capture.prompt_telemetry = prompt_telemetry_for(stats, layers, b, len(prompt.token_ids), shares)
        capture.token_texts = token_texts(loaded.tokenizer, capture)
        results.append(capture)
    return results


def _stop_string_end(tokenizer: Any, token_ids: np.ndarray, stops: tuple[str, ...]) -> int | None:
    """The number of tokens through the first completed stop string, or None (none in the text).

    generate() ends a sequence as soon as its text ends with a stop string; what follows is padding.
    """
    if not stops or token_ids.size == 0:
        return None
    ids = [int(t) for t in token_ids]
    if not any(stop in tokenizer.decode(ids) for stop in stops):
        return None
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:end])
        if any(stop in text for stop in stops):
            return end
    return None


def merged_list(user: Any, ours: Any) -> Any:
    """The user's logits processors or stopping criteria, then CoreVital's (same list type as ours)."""
    if not user:
        return ours
    combined = type(ours)(list(user))
    combined.extend(ours)
    return combined


def _attach_encoder(capture: SequenceCapture, observer: StepObserver, b: int) -> None:
    encoder = observer.encoder
    if encoder is None or encoder.hidden_host is None or encoder.mask_host is None:
        return
    mask = encoder.mask_host
    batch, length = mask.shape
    rows = np.zeros(batch * length, dtype=bool)
    rows[b * length : (b + 1) * length] = mask[b]
    capture.encoder_hidden = reduce_rows(encoder.hidden_host, rows, axis=1)
    per_layer = encoder.attention_host
    if per_layer and all(s is not None for s in per_layer):
        reduced = [reduce_rows(s, rows, axis=1) for s in per_layer]
        capture.encoder_attention = series(reduced, 0, axis=0)


def token_texts(tokenizer: Any, capture: SequenceCapture) -> dict[int, str]:
    ids = set(capture.generated_token_ids)
    if capture.logits is not None:
        ids.update(int(i) for i in np.asarray(capture.logits.topk_ids).reshape(-1).tolist())
    return {i: tokenizer.decode([i]) for i in sorted(ids)}


def _replay_beams(
    loaded: LoadedModel,
    batch: PreparedBatch,
    output: torch.Tensor,
    options: CaptureOptions,
    sites: list[Any],
    first_index: int,
) -> list[SequenceCapture]:
    generated = _generated_part(loaded, batch, output)
    eos = eos_ids(loaded)
    results = []
    for b, prompt in enumerate(batch.prompts):
        length, ended_on_eos = generated_length(generated[b], eos)
        token_ids = [int(t) for t in generated[b, :length]]
        capture = replay_sequence(loaded, prompt, token_ids, options, sites)
        capture.batch_index = first_index + b
        capture.batch_size = len(batch.prompts)
        capture.generated_text = loaded.tokenizer.decode(token_ids, skip_special_tokens=True)
        capture.finish_reason = "eos" if ended_on_eos else "length"
        capture.warnings.append(
            CaptureWarning(
                "BEAM_SEARCH_REPLAYED",
                "beam search: statistics of the returned beam were computed by one teacher-forced pass",
            )
        )
        capture.token_texts = token_texts(loaded.tokenizer, capture)
        results.append(capture)
    return results


def baseline_generate_ms(
    loaded: LoadedModel, texts: list[str], settings: Settings, *, max_new_tokens: int | None = None
) -> float:
    """Wall time of plain ``generate()`` for the same prompts: the model's own attention, nothing observed."""
    gen = generation_record(settings, loaded.model.generation_config)
    if max_new_tokens is not None:
        gen = dataclasses.replace(gen, max_new_tokens=max_new_tokens)
    kwargs = _generate_kwargs(loaded, gen, settings.cache)
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
        with torch.no_grad():
            loaded.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        total += (time.perf_counter() - t0) * 1000.0
    return total
