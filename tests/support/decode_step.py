"""A decoding step's attention call as transformers makes it, for driving the attention tap directly
(tests and ``bench/tap_cost.py``): a stand-in attention module and the keywords of its mask."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from corevital.capture.hf_compat import causal_mask_function


class StandInAttention(nn.Module):
    """What transformers' SDPA function reads of an attention module (4 query heads a key head)."""

    def __init__(self) -> None:
        super().__init__()
        self.is_causal = True
        self.num_key_value_groups = 4


def decode_mask_kwargs(kv_length: int = 16) -> dict[str, Any]:
    """What transformers asks an attention implementation's mask function for in a decoding step of
    one unpadded sequence over ``kv_length`` keys."""
    return {
        "batch_size": 1,
        "q_length": 1,
        "kv_length": kv_length,
        "q_offset": kv_length - 1,
        "kv_offset": 0,
        "mask_function": causal_mask_function,
        "attention_mask": None,
        "dtype": torch.float32,
        "device": "cpu",
    }
