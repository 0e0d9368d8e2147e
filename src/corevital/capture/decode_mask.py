"""The additive attention mask of the usual decoding step, built directly instead of by ``eager_mask``.

While the tap is installed the model asks for eager-style masks (0 where a key is visible, the
dtype's minimum where it is not), built by transformers' ``eager_mask``: about a dozen kernels per
forward pass (index ranges, the causal rule, the padding lookup, the conversion). In the usual
decoding step (one query at the end of a dynamic cache, the plain causal rule) the mask is just the
2-D padding mask, so :func:`decode_step_mask` builds it from that in two kernels; without a padding
mask it is all zeros, served by :class:`VisibleMasks` as a view of one zero tensor that grows with
the cache (no kernel, no allocation of the step's own). Every other case is left to ``eager_mask``.
The mask is laid out so that PyTorch's memory-efficient SDPA kernel takes it without a per-layer
copy (see :func:`~corevital.capture.attention_rows.sdpa_aligned`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from corevital.capture.attention_rows import SDPA_MASK_ALIGNMENT, aligned_empty
from corevital.capture.hf_compat import causal_mask_function


class VisibleMasks:
    """All-visible decoding-step masks [B, 1, 1, K]: views of one zero tensor, longer than K.

    The tensor grows (to twice its width, or to K) when a step needs more keys; its rows start on
    the alignment SDPA wants. Nothing writes into a mask: transformers and CoreVital add it to the
    scores out of place, and so does fault injection (:mod:`corevital.testing.collapse`).
    """

    def __init__(self) -> None:
        self._zeros: Tensor | None = None

    def view(self, batch: int, kv_length: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        zeros = self._zeros
        if (
            zeros is None
            or zeros.shape[3] < kv_length
            or zeros.shape[0] != batch
            or zeros.dtype != dtype
            or zeros.device != device
        ):
            width = max(kv_length, 2 * zeros.shape[3] if zeros is not None else 0)
            width = -(-width // SDPA_MASK_ALIGNMENT) * SDPA_MASK_ALIGNMENT
            zeros = self._zeros = torch.zeros((batch, 1, 1, width), dtype=dtype, device=device)
        return zeros[..., :kv_length]


def decode_step_mask(visible: VisibleMasks, **kwargs: Any) -> Tensor | None:
    """The eager mask [B, 1, 1, K] of one query at the last of K cached positions; None if not that case.

    Takes ``eager_mask``'s keyword arguments. The query at position K - 1 may see every key at or
    before it, so under the plain causal rule it sees exactly the keys the padding mask allows
    (every key when there is no padding mask: then a view of ``visible``'s zeros).
    """
    batch, kv_length = kwargs.get("batch_size"), kwargs.get("kv_length")
    q_offset, kv_offset = kwargs.get("q_offset", 0), kwargs.get("kv_offset", 0)
    if not (isinstance(batch, int) and isinstance(kv_length, int)):
        return None
    plain_step = (
        kwargs.get("q_length") == 1
        and kwargs.get("mask_function", causal_mask_function) is causal_mask_function
        and isinstance(q_offset, int)
        and isinstance(kv_offset, int)
        and kv_offset == 0
        and q_offset == kv_length - 1
    )
    padding = kwargs.get("attention_mask")
    if not plain_step or not (padding is None or _is_2d_bool(padding, batch, kv_length)):
        return None
    dtype = kwargs.get("dtype", torch.float32)
    if padding is None:
        return visible.view(batch, kv_length, dtype, torch.device(kwargs.get("device", "cpu")))
    mask = aligned_empty((batch, 1, 1, kv_length), dtype, padding.device)
    return mask.fill_(torch.finfo(dtype).min).masked_fill_(padding[:, None, None, :], 0.0)


def _is_2d_bool(padding: Any, batch: int, kv_length: int) -> bool:
    return (
        isinstance(padding, Tensor)
        and padding.dtype == torch.bool
        and tuple(padding.shape) == (batch, kv_length)
    )
