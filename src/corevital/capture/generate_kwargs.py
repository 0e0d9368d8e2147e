"""``generate()`` keywords passed through by the library: which are refused, which change the scores.

CoreVital's observer sees the distribution actually sampled from through a logits processor that
:func:`~corevital.capture.hf_compat.last_logits_processor` appends after every processor and warper
``generate()`` builds (``_get_logits_processor`` merges a user's ``logits_processor`` list, the
penalties, bias and suppression processors, the sampling warpers, watermarking and renormalisation
into that one list). A keyword that only configures those processors therefore acts before the
observer: the report describes what was sampled from. What acts after every processor is the
decoding loop itself: assisted (speculative) generation accepts several tokens per forward pass and
a ``custom_generate`` loop may do anything, so those keywords are refused with the reason. The
inputs are CoreVital's (the prompt it tokenizes); a model the user drives with its own inputs is
observed with ``monitor.watch``.

This module imports neither torch nor transformers: the library checks keywords before loading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from corevital.errors import ConfigError

_ASSISTED = (
    "assisted generation accepts several tokens per forward pass, after CoreVital's logits processor "
    "has seen only the first: the report would not describe the returned tokens"
)
REFUSED: dict[str, str] = {
    "assistant_model": _ASSISTED,
    "assistant_tokenizer": _ASSISTED,
    "prompt_lookup_num_tokens": _ASSISTED,
    "assistant_early_exit": _ASSISTED,
    "custom_generate": (
        "a custom decoding loop may change the distribution after CoreVital's logits processor sees it"
    ),
    "input_ids": "CoreVital tokenizes the prompt itself; observe your own inputs with monitor.watch",
    "inputs": "CoreVital tokenizes the prompt itself; observe your own inputs with monitor.watch",
    "attention_mask": "CoreVital tokenizes the prompt itself; observe your own inputs with monitor.watch",
    "inputs_embeds": "CoreVital tokenizes the prompt itself; observe your own inputs with monitor.watch",
}

# Keywords that leave the processed scores equal to the logits (no processor added).
NEUTRAL = frozenset(
    {
        "stop_strings",
        "streamer",
        "num_return_sequences",
        "output_scores",
        "output_logits",
        "output_attentions",
        "output_hidden_states",
        "return_dict_in_generate",
        "use_cache",
        "pad_token_id",
        "bos_token_id",
        "max_time",
        "stopping_criteria",
        "synced_gpus",
        "cache_implementation",
        "past_key_values",
        "tokenizer",
        "max_length",
    }
)


def check_generate_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords to pass to ``generate()``; a ConfigError names one CoreVital cannot observe."""
    for name in kwargs:
        reason = REFUSED.get(name)
        if reason is not None:
            raise ConfigError(f"generate() keyword {name} is not supported by CoreVital: {reason}")
    nrs = kwargs.get("num_return_sequences")
    if nrs is not None and (isinstance(nrs, bool) or not isinstance(nrs, int) or nrs < 1):
        raise ConfigError(f"num_return_sequences must be a positive integer, not {nrs!r}")
    stops = kwargs.get("stop_strings")
    if stops is not None and not (
        isinstance(stops, str) or (isinstance(stops, list | tuple) and all(isinstance(s, str) for s in stops))
    ):
        raise ConfigError("stop_strings must be a string or a list of strings")
    return dict(kwargs)


def changes_scores(kwargs: Mapping[str, Any]) -> bool:
    """Whether a keyword may add a logits processor, so the scores sampled from differ from the logits."""
    return any(name not in NEUTRAL for name in kwargs)


def stop_strings(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    value = kwargs.get("stop_strings")
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def recorded(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords as the report records them: JSON values as they are, any other object by its type."""
    return {name: _json_value(value) for name, value in sorted(kwargs.items())}


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        if all(_is_plain(v) for v in value):
            return [_json_value(v) for v in value]
        return [f"<{type(v).__name__}>" for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_value(v) for k, v in value.items()}
    return f"<{type(value).__name__}>"


def _is_plain(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)
