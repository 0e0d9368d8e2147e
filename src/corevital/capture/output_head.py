"""The model's output head, where applying it to the last hidden states gives the model's logits.

Prompt surprisals need the logits of every prompt position. Asking the model for them
(``logits_to_keep=0``) makes the prefill hold a [B, P, V] tensor, for a small model with a large
vocabulary far more memory than the model's own activations (SmolLM2, 512 prompt tokens: 50 MB
against a plain peak of ~300 MB). When the output head applied to the last hidden state (which
transformers returns after the final norm) reproduces the model's logits, the surprisals are
computed from it a few positions at a time instead. Whether it does is checked once per model on
a three-token forward pass: models that post-process their logits (soft-capping, a logit scale)
fail the check and keep asking for every position's logits.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

_VERIFIED: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def logits_head(model: Any) -> Callable[[Tensor], Tensor] | None:
    """The output head when it turns the last hidden states into the model's logits; else None."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, nn.Module):
        return None
    if model not in _VERIFIED:
        _VERIFIED[model] = _reproduces_logits(model, head)
    return head if _VERIFIED[model] else None


@torch.no_grad()
def _reproduces_logits(model: Any, head: nn.Module) -> bool:
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    device = next(model.parameters()).device
    ids = torch.arange(1, min(4, vocab), device=device).unsqueeze(0)
    if ids.shape[1] < 2:
        return False
    try:
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    except (RuntimeError, TypeError, ValueError):
        return False
    states, logits = out.get("hidden_states"), out.get("logits")
    if not states or logits is None or logits.shape[:2] != ids.shape:
        return False
    ours = head(states[-1]).float()
    theirs = logits.float()
    if ours.shape != theirs.shape or not torch.isfinite(theirs).all():
        return False
    tolerance = 1e-2 * float(theirs.abs().max()) + 1e-3  # matmuls of other shapes round differently
    return bool((ours - theirs).abs().max() <= tolerance)
