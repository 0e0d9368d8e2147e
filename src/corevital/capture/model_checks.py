"""Checks made once per model before its first capture, on one three-token forward pass.

- whether the output head applied to the last hidden states gives the model's logits
  (:mod:`.output_head`: prompt surprisals without every position's logits);
- whether the pass over a prompt can be reduced layer by layer, and from which modules
  (:mod:`.layer_stream`: no layer output kept until the prefill ends).

Both need the hidden states and logits of the same small pass, so it runs once (with the stream's
hooks installed) and the results are kept per model for as long as the model lives.
"""

from __future__ import annotations

import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from corevital.capture.layer_stream import LayerStream, StreamSites, candidate_sites, verified_sites
from corevital.capture.output_head import head_reproduces_logits, output_head


@dataclass(frozen=True)
class ModelChecks:
    head: nn.Module | None  # the output head, when it reproduces the model's logits
    stream: StreamSites | None  # where a prompt pass can be streamed from, when it can


_CHECKS: weakref.WeakKeyDictionary[nn.Module, ModelChecks] = weakref.WeakKeyDictionary()
_NOTHING = ModelChecks(head=None, stream=None)


def logits_head(model: Any) -> nn.Module | None:
    """The output head when it turns the last hidden states into the model's logits; else None."""
    return model_checks(model).head


def stream_sites(model: Any) -> StreamSites | None:
    """The verified sites of ``model``'s hidden states, or None where a pass cannot be streamed."""
    return model_checks(model).stream


def model_checks(model: Any) -> ModelChecks:
    if model not in _CHECKS:
        _CHECKS[model] = _check(model)
    return _CHECKS[model]


@torch.no_grad()
def _check(model: Any) -> ModelChecks:
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return _NOTHING
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    device = next(model.parameters()).device
    ids = torch.arange(1, min(4, vocab), device=device).unsqueeze(0)
    if ids.shape[1] < 2:
        return _NOTHING
    sites = candidate_sites(model)
    stream = None if sites is None else LayerStream(sites, keep_all=True)
    try:
        with nullcontext() if stream is None else stream.installed():
            out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    except (RuntimeError, TypeError, ValueError):
        return _NOTHING
    states, logits = out.get("hidden_states"), out.get("logits")
    if not states or logits is None:
        return _NOTHING
    head = output_head(model)
    if head is not None and not head_reproduces_logits(head, states[-1], logits):
        head = None
    return ModelChecks(head=head, stream=None if stream is None else verified_sites(stream, states))
