"""How CoreVital calls ``generate()``: the keywords for a run's decoding, the end-of-sequence ids,
the user's logits processors and stopping criteria merged with CoreVital's, and the seeded RNG of a
sampled generation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from corevital.capture.loading import LoadedModel
from corevital.capture.records import GenerationRecord


def eos_ids(loaded: LoadedModel) -> tuple[int, ...]:
    found: set[int] = set()
    for source in (loaded.model.generation_config, loaded.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(int(v) for v in value)
    return tuple(sorted(found))


def generate_call_kwargs(loaded: LoadedModel, gen: GenerationRecord, cache: str = "auto") -> dict[str, Any]:
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


def merged_list(user: Any, ours: Any) -> Any:
    """The user's logits processors or stopping criteria, then CoreVital's (same list type as ours)."""
    if not user:
        return ours
    combined = type(ours)(list(user))
    combined.extend(ours)
    return combined


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
