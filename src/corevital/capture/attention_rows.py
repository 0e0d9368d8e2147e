"""Attention probabilities of selected query rows, recomputed from the layer's own q, k and mask.

The fast path keeps the model's SDPA kernel for the layer's output and obtains only the rows
CoreVital observes (the decode step's single row, or every row of the prompt pass when prompt
telemetry needs them) by ``softmax(q·kᵀ·scale + mask [+ position bias])`` in float32, exactly what
the eager implementations of the supported architectures compute, without repeating the key/value
heads (grouped-query attention is handled by a reshape, not a copy).

At decode time the cost is kernel launches, not arithmetic, so a layer does no work of its own:
it leaves its observed query rows and its keys (:class:`PendingRows`), and once the forward pass
is over :func:`finish_group` computes the rows of all layers that share a mask: one batched
matmul over every layer's keys stacked (:func:`row_scores`; layer by layer on the CPU, or beyond
:attr:`~corevital.capture.options.Tuning.stacked_keys_bytes`), then one scale-and-mask and one softmax
(:func:`finish_rows`). The scores are rounded to the model's dtype after the matmul and again
after scaling, as eager attention rounds them, so for visible keys the probabilities are the
eager ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from corevital.capture.options import Tuning

# Keyword arguments that change the attention formula in ways this recomputation does not model.
UNSUPPORTED_KWARGS = ("softcap", "s_aux", "sinks", "attention_sinks")
# PyTorch's memory-efficient SDPA kernel copies (pads) an additive mask whose strides are not
# multiples of this, in every layer; a mask laid out on this alignment once per step avoids that.
SDPA_MASK_ALIGNMENT = 8


def none_of(kwargs: dict[str, Any], names: Iterable[str]) -> bool:
    """Whether none of ``names`` is given a value in ``kwargs`` (absent or None); no set operation,
    so ``torch.compile`` traces it."""
    return all(kwargs.get(name) is None for name in names)


def fast_path_supported(kwargs: dict[str, Any]) -> bool:
    # Called for every layer: the usual case (none of the names present) is one set operation.
    return kwargs.keys().isdisjoint(UNSUPPORTED_KWARGS) or none_of(kwargs, UNSUPPORTED_KWARGS)


def scale_for(query: Tensor, scaling: float | None) -> float:
    return query.shape[-1] ** -0.5 if scaling is None else float(scaling)


def row_scores(query: Tensor, key: Tensor) -> Tensor:
    """Raw scores q·kᵀ in the model's dtype, [B·Hkv, G·R, K], for rows [B, Hq, R, D] over keys [B, Hkv, K, D].

    One batched matmul (G = Hq / Hkv query heads share a key head, as transformers' repeat_kv lays
    them out); ``.view(B, Hq, R, K)`` of the result (or of a stack of them) gives the head layout.
    """
    batch, q_heads, rows, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    grouped = query.reshape(batch * kv_heads, (q_heads // kv_heads) * rows, dim)
    return torch.bmm(grouped, key.reshape(batch * kv_heads, kv_len, dim).transpose(1, 2))


def row_logits(scores: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    """``scores·scale + bias`` in the scores' dtype: what eager attention takes the softmax of.

    ``scores`` [..., B, H, R, K] (any number of leading dimensions, e.g. layers) and ``bias``
    broadcastable to it (a mask [B, 1, R, K], possibly plus a position bias). One kernel.
    """
    return scores.mul(scale) if bias is None else torch.add(bias, scores, alpha=scale)


def finish_rows(scores: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    """``softmax(scores·scale + bias)`` in float32 over the last dimension (:func:`row_logits`).

    Two kernels.
    """
    return torch.softmax(row_logits(scores, bias, scale), dim=-1, dtype=torch.float32)


def combined_bias(mask: Tensor | None, position_bias: Tensor | None, kv_len: int) -> Tensor | None:
    """The additive bias of the rows: the mask cut to the keys present, plus any position bias."""
    bias = None if mask is None else mask[..., :kv_len]
    if position_bias is not None:
        bias = position_bias if bias is None else bias + position_bias
    return bias


class PendingRows(NamedTuple):
    """One layer's observed query rows and keys, left for :func:`finish_group` (no kernel yet).

    A named tuple: one is made per layer and step, and it is cheaper to build than a dataclass.
    """

    query: Tensor  # [B, Hq, R, D] the observed rows
    key: Tensor  # [B, Hkv, K, D]
    mask: Tensor | None  # the observed rows of the additive mask, [B, 1, R, K']
    position_bias: Tensor | None  # the observed rows of the position bias
    scale: float
    group: tuple[object, ...]  # layers with the same group are finished together


def finish_group(members: list[PendingRows], tuning: Tuning) -> Tensor:
    """Probabilities [n, B, Hq, R, K] (float32) of layers that share mask, position bias, shapes and scale.

    The layers are scored in one matmul over a copy of all their keys where ``tuning`` allows it.
    """
    first = members[0]
    n = len(members)
    batch, q_heads, rows, dim = first.query.shape
    kv_heads, kv_len = first.key.shape[1], first.key.shape[2]
    if tuning.stacks_keys(first.key.device.type == "cpu", n * first.key.nbytes):
        queries = torch.stack([m.query for m in members]).view(n * batch, q_heads, rows, dim)
        keys = torch.stack([m.key for m in members]).view(n * batch, kv_heads, kv_len, dim)
        scores = row_scores(queries, keys)
    else:
        scores = torch.stack([row_scores(m.query, m.key) for m in members])
    bias = combined_bias(first.mask, first.position_bias, kv_len)
    return finish_rows(scores.view(n, batch, q_heads, rows, kv_len), bias, first.scale)


def attention_logits(
    query: Tensor,
    key: Tensor,
    mask: Tensor | None,
    *,
    scaling: float | None,
    position_bias: Tensor | None = None,
) -> Tensor:
    """Logits [B, Hq, R, K] (the model's dtype) for query rows [B, Hq, R, D] over keys [B, Hkv, K, D]:
    the input of the softmax that gives the rows' probabilities (:func:`row_logits`)."""
    bias = combined_bias(mask, position_bias, key.shape[2])
    scores = row_scores(query, key).view(*query.shape[:3], key.shape[2])
    return row_logits(scores, bias, scale_for(query, scaling))


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
    return aligned_empty(mask.shape, mask.dtype, mask.device).copy_(mask)


def aligned_empty(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised tensor of ``shape`` whose rows start on :data:`SDPA_MASK_ALIGNMENT` elements."""
    width = shape[-1]
    padded = -(-width // SDPA_MASK_ALIGNMENT) * SDPA_MASK_ALIGNMENT
    return torch.empty(*shape[:-1], padded, dtype=dtype, device=device)[..., :width]
