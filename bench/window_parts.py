"""Ways to reduce one window of decoding steps' attention to its statistics, timed on one device.

A window of decoding steps holds, for every layer and sequence of the batch, the attention logits of
each step's query over the cache's keys, [L*B, N, H, K] in the model's dtype (N steps, H heads, K
cache positions; the keys past each step's own masked to the dtype's minimum). This script builds
such a window from random logits (a causal fill of the cache, one sequence left-padded), checks that
the two ways to reduce it give the same statistics, then times them and the kernels they are made
of: the float32 softmax, then the function for any probabilities
(``corevital.metrics.attention.summarize_attention``, in place: the reduction as written), and the
function for logits (``summarize_attention_logits``: the rows reduced by the compiled
``fused_attention_row_parts``, no probabilities in memory; compiled before timing). It prints
milliseconds per window (host clock between device synchronisations, median of repeats) and, on a
GPU, the most device memory each allocated above its inputs (``torch.cuda.max_memory_allocated``).

    python bench/window_parts.py --device cuda --dtype bfloat16 --shapes 256x32x32x712,256x32x32x114
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from prompt_parts import device_arguments, timed
from torch import Tensor

from corevital.metrics.attention import (
    DEFAULT_MIN_KEYS_FOR_COLLAPSE,
    _Keys,
    fused_attention_row_parts,
    summarize_attention,
    summarize_attention_logits,
)
from corevital.metrics.types import AttentionStats


def window_inputs(
    rows: int, steps: int, heads: int, keys: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Masked window logits [rows, steps, heads, keys] and the keys each step sees [rows, steps, keys].

    Step ``i`` sees the cache up to position ``keys - steps + i``; the second row (a left-padded
    sequence) misses the first five positions too. Seeded."""
    if keys < steps + 5 or rows < 2:
        shape = f"{rows}x{steps}x{heads}x{keys}"
        raise ValueError(f"a window needs at least 2 rows and steps + 5 keys, got {shape}")
    gen = torch.Generator(device="cpu").manual_seed(0)
    visible = torch.ones(rows, steps, keys, dtype=torch.bool)
    for i in range(steps):
        visible[:, i, keys - steps + i + 1 :] = False
    visible[1, :, :5] = False
    logits = (torch.randn(rows, steps, heads, keys, generator=gen) * 3).to(dtype)
    logits = logits.masked_fill(~visible.unsqueeze(2), torch.finfo(dtype).min)
    return logits.to(device), visible.to(device)


def _written(logits: Tensor, visible: Tensor) -> AttentionStats:
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    return summarize_attention(probs, visible, causal=True, overwrite=True)


def largest_difference(got: AttentionStats, want: AttentionStats) -> float:
    """The largest absolute difference over every statistic: floating ones within rounding (NaN
    where both are NaN counts 0), counts and flags equal (infinite otherwise)."""
    worst = 0.0
    for field in dataclasses.fields(AttentionStats):
        a, b = getattr(got, field.name), getattr(want, field.name)
        if not a.is_floating_point():
            if not torch.equal(a, b):
                return float("inf")
            continue
        if not torch.equal(a.isnan(), b.isnan()):
            return float("inf")
        worst = max(worst, float(torch.nan_to_num((a.float() - b.float()).abs(), nan=0.0).max()))
    return worst


def _peak_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def one_shape(shape: str, device: torch.device, repeats: int, dtype: torch.dtype) -> float:
    """Check and time one window shape ``RxNxHxK``; the largest difference found."""
    rows, steps, heads, keys = (int(x) for x in shape.split("x"))
    logits, visible = window_inputs(rows, steps, heads, keys, device, dtype)
    with torch.no_grad():
        difference = largest_difference(
            summarize_attention_logits(logits, visible, causal=True), _written(logits, visible)
        )
        if fused_attention_row_parts.failure is not None:
            raise SystemExit(f"the compiled row reductions failed: {fused_attention_row_parts.failure}")
        if not difference <= 1e-4:
            raise SystemExit(f"{shape}: compiled and written statistics differ by {difference}")
        found = _Keys.of(visible, logits, True, DEFAULT_MIN_KEYS_FOR_COLLAPSE)
        assert found.hidden is not None and isinstance(found.index, Tensor)
        variants: dict[str, Callable[[], object]] = {
            "softmax, then any probabilities (summarize_attention, in place)": lambda: _written(
                logits, visible
            ),
            "logits, compiled (summarize_attention_logits)": lambda: summarize_attention_logits(
                logits, visible, causal=True
            ),
            "  softmax to float32": lambda: torch.softmax(logits, -1, dtype=torch.float32),
            "  row reductions compiled": lambda: fused_attention_row_parts(logits, found.hidden, found.index),
        }
        for name, fn in variants.items():
            ms = timed(fn, None, repeats, device)
            peak = _peak_mib(fn, device)
            memory = "" if peak is None else f"{peak:,.0f}"
            print(f"| {shape} | {name} | {ms:.3f} | {memory} |", flush=True)
    return difference


def main() -> None:
    args = device_arguments(__doc__, "256x32x32x712,32x32x32x712,256x32x32x114")
    device, dtype = args.device, args.dtype
    print("| L*B x N x H x K | variant | ms per window | peak MiB above inputs |")
    print("|---|---|---|---|")
    worst = max(one_shape(shape, device, args.repeats, dtype) for shape in args.shapes.split(","))
    print(f"largest |compiled - written| over the statistics: {worst:.2e}")


if __name__ == "__main__":
    main()
