"""Decoding steps' attention rows, scored together for a window of steps over the cache's keys.

A decoding step's attention row is ``softmax(q·kᵀ·scale + mask)`` over the keys cached so far. In a
cache that only ever appends (transformers' ``DynamicLayer``), the keys a step saw are a prefix of
the keys the cache holds later, unchanged. So a step need not score its row when it runs: it keeps
its query rows (one small tensor per layer, which the model allocated anyway) and the number of keys
it saw, and :func:`reduce_decode_rows` scores the rows of a whole window of steps at once against
the cache's current keys, each step's row masked to the keys it saw (and to the padding mask),
then reduces them to statistics in one pass (compiled into fused kernels where the decoding steps
are compiled, ``Tuning.compiled_reductions``: the window's float32 probabilities then never exist).
The probabilities equal the per-step ones: a step's scores get the step's own additive padding
mask (as eager attention applies it), and keys cached after the step are overwritten with the
dtype's minimum, whose exponential is exactly 0 (overwritten, not added to: a key written later may
hold anything, NaN after a fault, and must not leak back).

Used only where that holds (decoder-only models, a cache of ``DynamicLayer`` only, plain causal
decoding steps without position bias); every other step is scored when it runs
(:mod:`.attention_tap`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from corevital.capture.attention_rows import row_scores
from corevital.capture.hf_compat import append_only_layers, static_full_layers
from corevital.capture.options import Tuning
from corevital.metrics.attention import summarize_attention, summarize_attention_logits
from corevital.metrics.types import AttentionStats


@dataclass(frozen=True)
class DecodeRows:
    """One decoding step's query rows of every layer, left for :func:`reduce_decode_rows`."""

    # every layer's query row [B, L, Hq, D], one copy (a step holds none of the model's tensors)
    queries: Tensor
    key_length: int  # keys the step's query saw (the cache's length at that step)
    padding: Tensor | None  # [B, <= key_length] bool, True for real tokens (keys past its end: real)
    scale: float

    def shape(self) -> tuple[int, int, int]:
        """(layers, batch, query heads) of this step's rows."""
        batch, layers, heads = self.queries.shape[:3]
        return layers, batch, heads

    def float32_bytes(self) -> int:
        """Bytes of this step's rows of probabilities in float32, the reduction's largest buffer."""
        layers, batch, heads = self.shape()
        return 4 * layers * batch * heads * self.key_length


def append_only_keys(cache: Any) -> list[Tensor] | None:
    """The cached keys of every layer [B, Hkv, K, D], if the cache only ever appends; else None."""
    layers = append_only_layers(cache)
    if layers is None or not all(entry.is_initialized for entry in layers):
        return None
    return [entry.keys for entry in layers]


def is_append_only(cache: Any) -> bool:
    return append_only_layers(cache) is not None


def static_keys(cache: Any) -> list[Tensor] | None:
    """The keys [B, Hkv, max_len, D] of every layer of a static cache written in order; else None."""
    layers = static_full_layers(cache)
    if layers is None or not all(getattr(entry, "is_initialized", False) for entry in layers):
        return None
    return [entry.keys for entry in layers]


@torch.no_grad()
def reduce_decode_rows(steps: Sequence[DecodeRows], keys: Sequence[Tensor], tuning: Tuning) -> AttentionStats:
    """Attention statistics of ``steps`` (consecutive or not), every field [N, L, B, ...] (step first).

    ``keys`` are the cache's keys now, one [B, Hkv, K, D] per layer, K at least every step's length;
    the statistics cover the keys up to the longest step's length (``num_keys`` counts each step's).
    """
    n, layers = len(steps), len(keys)
    first = steps[0]
    step_layers, batch, q_heads = first.shape()
    dim = keys[0].shape[3]
    seen = max(step.key_length for step in steps)
    if seen > keys[0].shape[2] or step_layers != layers:
        raise RuntimeError("the cache no longer holds the keys a deferred decoding step saw")
    # Keys no step of the window saw (a static cache's unwritten slots, keys written after the
    # window) would get zero weight: they are left out (views, no copy).
    keys = [k[:, :, :seen] for k in keys]
    kv_heads, kv_len = keys[0].shape[1], seen
    device, dtype = keys[0].device, keys[0].dtype
    # Query rows in layer-major order, [L, B, Hq, N, D] in one copy: the layout of a batched matmul.
    rows = torch.stack([step.queries for step in steps]).permute(2, 1, 3, 0, 4).contiguous()
    if tuning.stacks_keys(device.type == "cpu", layers * keys[0].nbytes):
        stacked = torch.stack(list(keys)).view(layers * batch, kv_heads, kv_len, dim)
        scores = row_scores(rows.view(layers * batch, q_heads, n, dim), stacked)
        del stacked  # the keys' copy is not needed past the matmul
    else:  # one matmul per layer rather than a copy of a long cache
        scores = torch.stack([row_scores(q, k) for q, k in zip(rows.unbind(0), keys, strict=True)])
    scores = scores.view(layers, batch, q_heads, n, kv_len)

    lengths = _device_ints([step.key_length for step in steps], device)
    future = torch.arange(kv_len, device=device) >= lengths.unsqueeze(-1)  # [N, K]: after the step
    padding = steps[-1].padding
    if padding is None:
        logits = scores.mul_(first.scale)  # the matmul's own output
        visible = (~future).expand(batch, n, kv_len)
    else:  # the additive padding mask of eager attention, as the step itself applied it
        # Keys past the padding mask's end are tokens generated after the prompt, real; for a step
        # whose own mask ended earlier they came after it, and ``future`` hides them.
        real = torch.ones((batch, kv_len), dtype=torch.bool, device=device)
        width = min(kv_len, padding.shape[1])
        real[:, :width] = padding[:, :width]
        bias = torch.zeros((batch, 1, 1, kv_len), dtype=dtype, device=device)
        bias.masked_fill_(~real[:, None, None, :], torch.finfo(dtype).min)
        logits = torch.add(bias, scores, alpha=first.scale)
        visible = real[:, None, :] & ~future
    del scores  # ``logits`` holds them (scaled in place) or their masked copy
    # Keys cached after a step get exactly zero weight whatever they hold (even NaN after a fault).
    logits.masked_fill_(future, torch.finfo(dtype).min)  # [N, K] broadcasts over [L, B, Hq]
    # Each (layer, sequence) is one "layer" of the statistics with its steps as rows, [L·B, N, Hq, K]
    # as a view (no copy); the mask follows, [L·B, N, K].
    mask = visible.expand(layers, batch, n, kv_len).flatten(0, 1)
    if tuning.compiled_reductions:  # where the decoding steps are compiled: no float32 probabilities
        stats = summarize_attention_logits(logits.transpose(2, 3).flatten(0, 1), mask, causal=True)
        return _steps_first(stats, layers, batch)
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)  # [L, B, Hq, N, K]
    del logits
    # The probabilities are this function's own buffer: the statistics work in them.
    stats = summarize_attention(probs.transpose(2, 3).flatten(0, 1), mask, causal=True, overwrite=True)
    return _steps_first(stats, layers, batch)


def _device_ints(values: list[int], device: torch.device) -> Tensor:
    """``values`` as an int64 tensor on ``device`` without making the host wait for the device.

    Consecutive values (a window's steps one after another) are an ``arange`` made there; others
    are copied from pinned memory without blocking (``torch.tensor(..., device=...)`` would wait
    for every kernel queued before it).
    """
    start = values[0]
    if values == list(range(start, start + len(values))):
        return torch.arange(start, start + len(values), device=device)
    host = torch.tensor(values, dtype=torch.int64)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def _steps_first(stats: AttentionStats, layers: int, batch: int) -> AttentionStats:
    """Fields [L·B, N, ...] (layer-major) as [N, L, B, ...]."""
    values = {}
    for f in fields(stats):
        value = getattr(stats, f.name)
        values[f.name] = value.unflatten(0, (layers, batch)).movedim(2, 0)
    return AttentionStats(**values)
