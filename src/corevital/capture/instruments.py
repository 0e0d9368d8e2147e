"""What observes a model, built the same way for live capture and for beam replay.

:func:`attention_tap` makes the attention tap (and its prompt scorer) that a capture's options and
the model's capabilities call for, with the warnings that say what could not be observed;
:func:`sketch_matrix` the fixed random projection of hidden-state sketches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from corevital.capture.attention_tap import AttentionTap
from corevital.capture.capabilities import ModelCapabilities
from corevital.capture.options import CaptureOptions
from corevital.capture.prompt_scorer import PromptScorer
from corevital.capture.records import SKETCH_SEED, CaptureWarning
from corevital.capture.registry import AttentionSite
from corevital.metrics.hidden import make_sketch_matrix


def model_bytes(model: Any) -> int:
    """The model's weight bytes: memory budgets are shares of it (:class:`~.options.Tuning`)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def attention_tap(
    caps: ModelCapabilities,
    sites: list[AttentionSite],
    options: CaptureOptions,
    *,
    prompt_chunk_bytes: int | None,
    prompt_length: int | None = None,
    context_span: tuple[int, int] | None = None,
) -> tuple[AttentionTap | None, list[CaptureWarning]]:
    """The tap for ``options`` (None in summary capture, or when attention cannot be observed).

    ``prompt_chunk_bytes``: the prompt scorer's block budget (None: each layer whole);
    ``prompt_length``: the prompt's tokens when the pass reads more (a teacher-forced pass).
    """
    if not options.observe_attention:
        return None, []
    if not caps.attention_available:
        detail = f"attention not observable: {caps.attention_detail}"
        return None, [CaptureWarning("ATTENTION_NOT_AVAILABLE", detail)]
    warnings = []
    if options.fast_attention and not caps.fast_attention_supported:
        detail = f"{caps.model_type}: attention statistics use the eager path (no fast path)"
        warnings.append(CaptureWarning("ATTENTION_EAGER_FALLBACK", detail))
    prompt = None
    if options.observe_prompt:
        prompt = PromptScorer(
            caps.num_encoder_layers or caps.num_layers,
            threshold=options.sparse_threshold,
            cap=options.sparse_max_per_head,
            chunk_bytes=prompt_chunk_bytes,
            prompt_length=prompt_length,
            context_span=context_span,
        )
    tap = AttentionTap(
        sites,
        num_layers=caps.num_layers,
        num_encoder_layers=caps.num_encoder_layers or 0,
        fast=options.fast_attention and caps.fast_attention_supported,
        recomputable=caps.fast_attention_supported,
        tuning=options.tuning,
        prompt=prompt,
    )
    return tap, warnings


def sketch_matrix(caps: ModelCapabilities, options: CaptureOptions, device: torch.device) -> Tensor | None:
    """The projection of hidden-state sketches (None: ``sketch_dim`` 0, or no hidden size known)."""
    if options.sketch_dim <= 0 or caps.hidden_size <= 0:
        return None
    return make_sketch_matrix(caps.hidden_size, options.sketch_dim, seed=SKETCH_SEED, device=device)
