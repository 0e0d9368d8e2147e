"""``generate()``'s output cut into one :class:`SequenceCapture` per returned sequence.

A generation observed live (:mod:`.observer`) is split by :func:`split_sequences`: each row's
tokens up to its end (EOS, a stop string, the step callback's stop) with that row's step statistics.
Beam search is observed afterwards: :func:`replay_beams` replays each returned beam teacher-forced
(:mod:`.replay`).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch

from corevital.capture.assemble import StepSeries, generated_length, reduce_rows, series
from corevital.capture.generate_call import eos_ids
from corevital.capture.loading import LoadedModel
from corevital.capture.observer import StepObserver
from corevital.capture.options import CaptureOptions
from corevital.capture.prompt_telemetry import prompt_telemetry_for
from corevital.capture.prompts import PreparedBatch
from corevital.capture.records import CaptureWarning, SequenceCapture
from corevital.capture.replay import replay_sequence


def output_sequences(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.sequences


def generated_part(loaded: LoadedModel, batch: PreparedBatch, output: torch.Tensor) -> np.ndarray:
    ids = output.detach().to("cpu").numpy()
    if loaded.capabilities.is_encoder_decoder:
        return ids[:, 1:]  # drop the decoder start token
    return ids[:, batch.padded_length :]


def split_sequences(
    loaded: LoadedModel,
    batch: PreparedBatch,
    output: torch.Tensor,
    observer: StepObserver,
    first_index: int,
    stops: tuple[str, ...] = (),
) -> list[SequenceCapture]:
    generated = generated_part(loaded, batch, output)
    steps = observer.host_steps
    windows = observer.window.host_batches
    eos = eos_ids(loaded)
    # each kind of statistic stacked over the steps once for the batch (from the few windows the
    # steps were reduced in, where they hold it); each sequence cuts its row
    logits_steps = StepSeries.of_windows(
        [(w.logits, w.steps) for w in windows], [s.logits for s in steps], axis=0
    )
    chosen_steps = StepSeries.of_windows(
        [(w.chosen, w.steps) for w in windows], [s.chosen for s in steps], axis=0
    )
    hidden_steps = StepSeries.of_windows(
        [(w.hidden, w.steps) for w in windows], [s.hidden for s in steps], axis=1
    )
    attention_steps = StepSeries.of_windows(
        [(w.attention, w.steps) for w in windows], [s.attention for s in steps], axis=1
    )
    cross_steps = StepSeries([s.cross_attention for s in steps], axis=1)
    results = []
    for b, prompt in enumerate(batch.prompts):
        length, ended_on_eos = generated_length(generated[b], eos)
        length = min(length, len(steps))
        stop_step = observer.stop_steps.get(b)
        finish = "eos" if ended_on_eos else "length"
        stop_at = stop_string_end(loaded.tokenizer, generated[b, :length], stops)
        if stop_at is not None:
            length, finish = stop_at, "stop_string"
        if stop_step is not None and stop_step + 1 <= length:
            length, finish = stop_step + 1, "stopped_by_callback"
        token_ids = [int(t) for t in generated[b, :length]]
        capture = SequenceCapture(
            batch_index=first_index + b,
            batch_size=len(batch.prompts),
            prompt=prompt,
            generated_token_ids=token_ids,
            generated_text=loaded.tokenizer.decode(token_ids, skip_special_tokens=True),
            finish_reason=finish,
            logits=logits_steps.row(b, length),
            chosen=chosen_steps.row(b, length),
            hidden=hidden_steps.row(b, length),
            attention=attention_steps.row(b, length),
            cross_attention=cross_steps.row(b, length),
            warnings=list(observer.warnings),
            stopped_at_step=stop_step if finish == "stopped_by_callback" else None,
            stop_reason="step callback" if finish == "stopped_by_callback" else None,
            step_end_ms=[(end - observer.started) * 1000.0 for end in observer.step_ends[:length]],
        )
        attach_encoder(capture, observer, b)
        if observer.prompt.host is not None:
            stats, layers, shares = observer.prompt.host
            capture.prompt_telemetry = prompt_telemetry_for(stats, layers, b, len(prompt.token_ids), shares)
        capture.token_texts = token_texts(loaded.tokenizer, capture)
        results.append(capture)
    return results


def stop_string_end(tokenizer: Any, token_ids: np.ndarray, stops: tuple[str, ...]) -> int | None:
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


def attach_encoder(capture: SequenceCapture, observer: StepObserver, b: int) -> None:
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
    """The text of every token id the report names (the generated tokens, each step's top tokens).

    A token's text depends on the tokenizer only: each tokenizer's decoded ids are kept for the
    next sequences and generations (at most its vocabulary).
    """
    ids = set(capture.generated_token_ids)
    if capture.logits is not None:
        ids.update(np.unique(np.asarray(capture.logits.topk_ids)).tolist())
    known = _decoded_of(tokenizer)
    if known is None:
        return {i: tokenizer.decode([i]) for i in sorted(ids)}
    for i in ids - known.keys():
        known[i] = tokenizer.decode([i])
    return {i: known[i] for i in sorted(ids)}


_DECODED: weakref.WeakKeyDictionary[Any, dict[int, str]] = weakref.WeakKeyDictionary()


def _decoded_of(tokenizer: Any) -> dict[int, str] | None:
    try:
        return _DECODED.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: decoded each time
        return None


def replay_beams(
    loaded: LoadedModel,
    batch: PreparedBatch,
    output: torch.Tensor,
    options: CaptureOptions,
    sites: list[Any],
    first_index: int,
) -> list[SequenceCapture]:
    generated = generated_part(loaded, batch, output)
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
