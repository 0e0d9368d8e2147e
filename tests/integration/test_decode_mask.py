"""The tap's decoding-step mask equals transformers' eager mask exactly, and is used only when it applies."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers.masking_utils import causal_mask_function, eager_mask, sliding_window_causal_mask_function

from corevital.capture.attention_rows import aligned_copy, is_sdpa_aligned
from corevital.capture.decode_mask import VisibleMasks, decode_step_mask


def padding(batch: int, length: int) -> torch.Tensor:
    mask = torch.ones(batch, length, dtype=torch.bool)
    for b in range(batch):
        mask[b, : 2 * b] = False  # left padding of different lengths
    return mask


def step_kwargs(**change: object) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        batch_size=2,
        q_length=1,
        kv_length=11,
        q_offset=10,
        kv_offset=0,
        mask_function=causal_mask_function,
        attention_mask=padding(2, 11),
        dtype=torch.float32,
        allow_is_causal_skip=True,
        use_vmap=False,
        device="cpu",
    )
    kwargs.update(change)
    return kwargs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("padded", [True, False])
def test_decode_step_equals_eager_mask(dtype: torch.dtype, batch: int, padded: bool) -> None:
    kwargs = step_kwargs(batch_size=batch, dtype=dtype, attention_mask=padding(batch, 11) if padded else None)
    fast = decode_step_mask(VisibleMasks(), **kwargs)
    expected = eager_mask(**kwargs)
    assert fast is not None and expected is not None
    assert fast.dtype == expected.dtype and fast.shape == expected.shape
    assert torch.equal(fast, expected)
    assert is_sdpa_aligned(fast)  # SDPA's memory-efficient kernel takes it without a copy


@pytest.mark.parametrize(
    "change",
    [
        {"q_length": 3, "q_offset": 8},  # a prefill or a multi-token step
        {"q_offset": 4},  # a cache longer than the query position (static cache)
        {"mask_function": sliding_window_causal_mask_function(4)},
        {"attention_mask": padding(2, 13)},  # a longer padding mask than the keys present
        {"attention_mask": padding(2, 11).long()},
    ],
)
def test_other_cases_are_left_to_eager_mask(change: dict[str, Any]) -> None:
    assert decode_step_mask(VisibleMasks(), **step_kwargs(**change)) is None


def test_aligned_copy_keeps_values_and_aligns_strides() -> None:
    mask = torch.randn(2, 1, 1, 13)
    assert not is_sdpa_aligned(mask)
    copy = aligned_copy(mask)
    assert torch.equal(copy, mask) and is_sdpa_aligned(copy)
    assert is_sdpa_aligned(torch.zeros(2, 1, 1, 16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_steps_without_padding_share_one_zero_tensor(dtype: torch.dtype) -> None:
    """A decoding step without a padding mask gets a view of one zero tensor: equal to the eager
    mask, aligned for SDPA, no tensor of its own; it grows (a new tensor) only past its width."""
    visible = VisibleMasks()
    storages = set()
    for length in range(11, 60):
        kwargs = step_kwargs(
            batch_size=2, dtype=dtype, attention_mask=None, kv_length=length, q_offset=length - 1
        )
        mask = decode_step_mask(visible, **kwargs)
        assert mask is not None
        assert torch.equal(mask, eager_mask(**kwargs)) and mask.dtype == dtype
        assert is_sdpa_aligned(mask)
        storages.add(mask.untyped_storage().data_ptr())
    assert len(storages) == 3  # widths 16, 32, 64: doubled twice over 49 steps
    other = decode_step_mask(visible, **step_kwargs(batch_size=3, attention_mask=None))
    assert other is not None and other.shape == (3, 1, 1, 11) and not other.any()
