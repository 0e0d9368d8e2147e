"""The padding of a pass over the prompt, read from whatever form of attention mask the model got.

``generate()`` hands the model a 2-D padding mask [B, P] with a dynamic cache. With a static or
hybrid cache it builds the model's masks in advance (so that the forward can be compiled) and hands
over a 4-D mask [B, 1, P, K] whose key dimension is the whole cache (K = the cache's length, not
the prompt's), or, for models that mix layer types (Qwen3, Gemma 2/3), a dict of such masks keyed
by layer type (``{"full_attention": ..., "sliding_attention": ...}``). Under flex attention the
mask is a ``BlockMask``, which holds no per-position values to read.

:func:`prompt_padding` gives the [B, P] padding in every tensor form. From a 4-D mask it reads the
diagonal: the query at position i always sees its own key (under the causal rule, within any
sliding window and any chunk) unless that key is padding, so ``mask[b, 0, i, offset + i]`` is the
padding of token i (the rule of transformers' padding mask function, which looks only at the key).
Nothing here moves a value to the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

# The layer type whose mask is read first from a dict of masks: the one without a window.
FULL_ATTENTION = "full_attention"


class UnreadableMask(ValueError):
    """The mask has a form whose values cannot be read (a flex attention ``BlockMask``)."""


def mask_tensor(mask: Any) -> Tensor | None:
    """One tensor of a mask given as a tensor, None, or a dict of masks by layer type.

    A dict gives its full-attention mask where it has one, else its first tensor. Anything else
    (a ``BlockMask``) raises :class:`UnreadableMask`.
    """
    if mask is None or isinstance(mask, Tensor):
        return mask
    if isinstance(mask, Mapping):
        ordered = sorted(mask.items(), key=lambda item: item[0] != FULL_ATTENTION)
        found = [mask_tensor(value) for _, value in ordered]
        tensors = [t for t in found if t is not None]
        return tensors[0] if tensors else None
    raise UnreadableMask(f"an attention mask of type {type(mask).__name__} has no readable values")


def readable_mask(mask: Any) -> bool:
    """Whether :func:`prompt_padding` can read ``mask`` (not a flex attention block mask)."""
    try:
        mask_tensor(mask)
    except UnreadableMask:
        return False
    return True


def prompt_padding(mask: Any, batch: int, length: int, offset: int = 0) -> Tensor | None:
    """[B, P] bool, True for the real tokens of a pass over ``length`` positions; None: no padding known.

    ``offset``: the number of positions cached before the pass (0 for a generation's prefill).
    A 4-D additive mask counts a key as visible where its value is above half the dtype's minimum.
    """
    tensor = mask_tensor(mask)
    if tensor is None:
        return None
    if tensor.dim() == 2:
        return tensor[:, -length:].bool() if tensor.shape[1] != length else tensor.bool()
    if tensor.dim() != 4:
        raise UnreadableMask(f"an attention mask of shape {tuple(tensor.shape)} is neither 2-D nor 4-D")
    rows = torch.arange(length, device=tensor.device)
    keys = rows + offset if tensor.shape[-1] >= offset + length else rows + (tensor.shape[-1] - length)
    diagonal = tensor[:, 0, rows, keys]  # [B, P]: each position's mask on its own key
    if diagonal.dtype != torch.bool:
        diagonal = diagonal > torch.finfo(diagonal.dtype).min / 2
    return diagonal.expand(batch, length)
