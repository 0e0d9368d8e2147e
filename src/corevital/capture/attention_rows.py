"""Attention probabilities of selected query rows, recomputed from the layer's own q, k and mask.

The fast path keeps the model's SDPA kernel for the layer's output and obtains only the rows
CoreVital observes (the decode step's single row, or every row of the prompt pass when prompt
telemetry needs them) by ``softmax(q·kᵀ·scale + mask [+ position bias])`` in float32, exactly what
the eager implementations of the supported architectures compute, without repeating the key/value
heads (grouped-query attention is handled by a reshape, not a copy).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# Keyword arguments that change the attention formula in ways this recomputation does not model.
UNSUPPORTED_KWARGS = ("softcap", "s_aux", "sinks", "attention_sinks")


def fast_path_supported(kwargs: dict[str, Any]) -> bool:
    return all(kwargs.get(name) is None for name in UNSUPPORTED_KWARGS)


def attention_rows(
    query: Tensor,
    key: Tensor,
    mask: Tensor | None,
    *,
    scaling: float | None,
    position_bias: Tensor | None = None,
) -> Tensor:
    """Probabilities [B, Hq, R, K] (float32) for query rows [B, Hq, R, D] over keys [B, Hkv, K, D].

    Scores are computed in the model's dtype, as eager attention computes them, and the softmax in
    float32. Few kernels on purpose: this runs once per layer per step, and at decode time the cost
    is kernel launches, not arithmetic.
    """
    batch, q_heads, rows, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    groups = q_heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    # Query head h reads key head h // groups (as transformers' repeat_kv lays them out).
    grouped = query.reshape(batch * kv_heads, groups * rows, dim)
    keys_t = key.reshape(batch * kv_heads, kv_len, dim).transpose(1, 2)
    bias = None
    if mask is not None:
        bias = mask[..., :kv_len]
    if position_bias is not None:
        bias = position_bias if bias is None else bias + position_bias
    if bias is None:
        scores = torch.bmm(grouped, keys_t).mul_(scale)
    elif batch == 1 and bias.shape[1] == 1:
        # One sequence, one mask row set for all heads: fuse matmul, scale and mask in one kernel.
        scores = torch.baddbmm(
            bias.reshape(1, rows, kv_len).to(query.dtype).repeat(1, groups, 1), grouped, keys_t, alpha=scale
        )
    else:
        scores = torch.bmm(grouped, keys_t).mul_(scale).view(batch, q_heads, rows, kv_len).add_(bias)
    return torch.softmax(scores.view(batch, q_heads, rows, kv_len), dim=-1, dtype=torch.float32)
