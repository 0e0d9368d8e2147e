"""The model's output head, where applying it to the last hidden states gives the model's logits.

Prompt surprisals need the logits of every prompt position. Asking the model for them
(``logits_to_keep=0``) makes the prefill hold a [B, P, V] tensor, for a small model with a large
vocabulary far more memory than the model's own activations (SmolLM2, 512 prompt tokens: 50 MB
against a plain peak of ~300 MB). When the output head applied to the last hidden state (which
transformers returns after the final norm) reproduces the model's logits, the surprisals are
computed from it a few positions at a time instead. Whether it does is checked once per model on
a three-token forward pass (:mod:`.model_checks`): models that post-process their logits
(soft-capping, a logit scale) fail the check and keep asking for every position's logits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def output_head(model: Any) -> nn.Module | None:
    """The model's output embeddings (its head), if it has them as a module."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head if isinstance(head, nn.Module) else None


@torch.no_grad()
def head_reproduces_logits(head: nn.Module, last_states: Tensor, logits: Tensor) -> bool:
    """Whether ``head(last_states)`` [B, S, V] is the model's ``logits`` of the same pass."""
    if logits.shape[:2] != last_states.shape[:2] or not torch.isfinite(logits).all():
        return False
    ours = head(last_states).float()
    theirs = logits.float()
    if ours.shape != theirs.shape:
        return False
    tolerance = 1e-2 * float(theirs.abs().max()) + 1e-3  # matmuls of other shapes round differently
    return bool((ours - theirs).abs().max() <= tolerance)
