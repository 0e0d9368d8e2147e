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

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from corevital.metrics.attention import (
    DEFAULT_MIN_KEYS_FOR_COLLAPSE,
    _Keys,
    fused_attention_row_parts,
    summarize_attention,
    summarize_attention_logits,
)
from corevital.metrics.types import AttentionStats

# the statistics compared; the counts and flags follow from these and the thresholds
COMPARED = (
    "entropy_mean",
    "entropy_min",
    "entropy_max",
    "entropy_mean_normalized",
    "concentration_max",
    "concentration_min",
    "sink_mass_mean",
    "prev_token_mass_mean",
    "prev_token_mass_max",
    "max_weight_per_head",
)


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
    """The largest absolute difference over the compared statistics (NaN where both are NaN: 0)."""
    worst = 0.0
    for name in COMPARED:
        a, b = getattr(got, name).float(), getattr(want, name).float()
        if not torch.equal(a.isnan(), b.isnan()):
            return float("inf")
        worst = max(worst, float(torch.nan_to_num((a - b).abs(), nan=0.0).max()))
    for name in ("num_keys", "renormalized", "has_nan", "has_inf", "focused_head_count"):
        if not torch.equal(getattr(got, name), getattr(want, name)):
            return float("inf")
    return worst


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    def once() -> float:
        _sync(device)
        start_s = time.perf_counter()
        fn()
        _sync(device)
        return (time.perf_counter() - start_s) * 1e3

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


def _peak_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    _sync(device)
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
            ms = _timed(fn, repeats, device)
            peak = _peak_mib(fn, device)
            memory = "" if peak is None else f"{peak:,.0f}"
            print(f"| {shape} | {name} | {ms:.3f} | {memory} |", flush=True)
    return difference


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    parser.add_argument("--shapes", default="256x32x32x712,32x32x32x712,256x32x32x114")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), logits {dtype}")
    print("| L*B x N x H x K | variant | ms per window | peak MiB above inputs |")
    print("|---|---|---|---|")
    worst = max(one_shape(shape, device, args.repeats, dtype) for shape in args.shapes.split(","))
    print(f"largest |compiled - written| over the statistics: {worst:.2e}")


if __name__ == "__main__":
    main()
