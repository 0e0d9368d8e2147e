"""Attention probabilities of selected query rows, recomputed from the layer's own q, k and mask.

The fast path keeps the model's SDPA kernel for the layer's output and obtains only the rows
CoreVital observes (the decode step's single row, or every row of the prompt pass when prompt
telemetry needs them) by ``softmax(q·kᵀ·scale + mask [+ position bias])`` in float32, exactly what
the eager implementations of the supported architectures compute, without repeating the key/value
heads (grouped-query attention is handled by a reshape, not a copy).

At decode time the cost is kernel launches, not arithmetic, so the work is split in two:
:func:`row_scores` is the one kernel a layer needs (a batched matmul in the model's dtype), and
:func:`finish_rows` scales, masks and normalises the scores of many layers at once (two kernels
for a whole step). The scores are rounded to the model's dtype after the matmul and again after
scaling, as eager attention rounds them, so for visible keys the probabilities are the eager ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# Keyword arguments that change the attention formula in ways this recomputation does not model.
UNSUPPORTED_KWARGS = ("softcap", "s_aux", "sinks", "attention_sinks")
# PyTorch's memory-efficient SDPA kernel copies (pads) an additive mask whose strides are not
# multiples of this, in every layer; a mask laid out on this alignment once per step avoids that.
SDPA_MASK_ALIGNMENT = 8


def fast_path_supported(kwargs: dict[str, Any]) -> bool:
    return all(kwargs.get(name) is None for name in UNSUPPORTED_KWARGS)


def scale_for(query: Tensor, scaling: float | None) -> float:
    return query.shape[-1] ** -0.5 if scaling is None else float(scaling)


def row_scores(query: Tensor, key: Tensor) -> Tensor:
    """Raw scores q·kᵀ, [B, Hq, R, K] in the model's dtype, for rows [B, Hq, R, D] over keys [B, Hkv, K, D].

    One batched matmul; query head h reads key head h // (Hq / Hkv), as transformers' repeat_kv
    lays them out.
    """
    batch, q_heads, rows, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    grouped = query.reshape(batch * kv_heads, (q_heads // kv_heads) * rows, dim)
    keys_t = key.reshape(batch * kv_heads, kv_len, dim).transpose(1, 2)
    return torch.bmm(grouped, keys_t).view(batch, q_heads, rows, kv_len)


def finish_rows(scores: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    """``softmax(scores·scale + bias)`` in float32 over the last dimension.

    ``scores`` [..., B, H, R, K] (any number of leading dimensions, e.g. layers) and ``bias``
    broadcastable to it (a mask [B, 1, R, K], possibly plus a position bias). Two kernels.
    """
    logits = scores.mul(scale) if bias is None else torch.add(bias, scores, alpha=scale)
    return torch.softmax(logits, dim=-1, dtype=torch.float32)


def combined_bias(mask: Tensor | None, position_bias: Tensor | None, kv_len: int) -> Tensor | None:
    """The additive bias of the rows: the mask cut to the keys present, plus any position bias."""
    bias = None if mask is None else mask[..., :kv_len]
    if position_bias is not None:
        bias = position_bias if bias is None else bias + position_bias
    return bias


def attention_rows(
    query: Tensor,
    key: Tensor,
    mask: Tensor | None,
    *,
    scaling: float | None,
    position_bias: Tensor | None = None,
) -> Tensor:
    """Probabilities [B, Hq, R, K] (float32) for query rows [B, Hq, R, D] over keys [B, Hkv, K, D]."""
    bias = combined_bias(mask, position_bias, key.shape[2])
    return finish_rows(row_scores(query, key), bias, scale_for(query, scaling))


def sdpa_aligned(mask: Tensor | None) -> Tensor | None:
    """``mask`` laid out so that SDPA's memory-efficient kernel takes it as is (CUDA only).

    A copy into a buffer whose rows are padded to :data:`SDPA_MASK_ALIGNMENT` keys, sliced back to
    the mask's shape: one copy per step instead of one pad per layer. Other masks come back as is.
    """
    if mask is None or not mask.is_cuda or mask.dtype == torch.bool or is_sdpa_aligned(mask):
        return mask
    return aligned_copy(mask)


def is_sdpa_aligned(mask: Tensor) -> bool:
    strides = mask.stride()
    return strides[-1] == 1 and all(s % SDPA_MASK_ALIGNMENT == 0 for s in strides[:-1])


def aligned_copy(mask: Tensor) -> Tensor:
    """A copy of ``mask`` whose strides (but the last) are multiples of :data:`SDPA_MASK_ALIGNMENT`."""
    width = mask.shape[-1]
    padded = -(-width // SDPA_MASK_ALIGNMENT) * SDPA_MASK_ALIGNMENT
    buffer = mask.new_empty(*mask.shape[:-1], padded)[..., :width]
    return buffer.copy_(mask)
