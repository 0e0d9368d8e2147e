"""Transient memory of scoring one window of decoding steps' attention rows, measured on the CPU.

Builds the keys and query rows of one window (by default a batch-8 window of 32 steps over a
712-position cache with Llama-3-8B's heads: 32 layers, 32 query and 8 key-value heads of 128),
scores it once with :func:`corevital.capture.attention_window.reduce_decode_rows` (keys stacked as
on a GPU) and prints how far the process's resident set rose above what the inputs hold (the
kernel's RSS high-water mark, reset just before: ``/proc/self/clear_refs``). Run it with
``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns every large buffer to the system when it is
freed (otherwise freed heap memory may be counted again).

    MALLOC_MMAP_THRESHOLD_=65536 python bench/window_peak.py --dtype float32
    MALLOC_MMAP_THRESHOLD_=65536 python bench/window_peak.py --dtype float32 --compiled

``--compiled``: the reductions compiled (``Tuning.compiled_reductions``, as where the decoding steps
are compiled), the compilation done on a small window first and left out of the measurement.
bfloat16 inputs measure the CPU's softmax, which first copies its input to float32 (a GPU's does
not): float32 shows the function's own buffers.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from corevital.capture.attention_window import DecodeRows, reduce_decode_rows  # noqa: E402
from corevital.capture.options import Tuning  # noqa: E402


def _status_mib(key: str) -> float:
    """A figure of /proc/self/status (kB) in MiB."""
    found = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"/proc/self/status has no {key} (Linux only)")
    return int(found.group(1)) / 1024


def reset_high_water() -> float:
    """Reset the process's RSS high-water mark to its current RSS; that RSS, MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def high_water_mib() -> float:
    return _status_mib("VmHWM")


def window(layers: int, batch: int, steps: int, keys: int, dtype: torch.dtype) -> tuple[list[Any], list[Any]]:
    """The cache's keys of every layer and the window's steps (Llama-3-8B's heads), seeded."""
    q_heads, kv_heads, dim = 32, 8, 128
    gen = torch.Generator().manual_seed(0)
    shape = (batch, kv_heads, keys, dim)
    cache = [torch.randn(shape, generator=gen).to(dtype) for _ in range(layers)]
    rows = [
        DecodeRows(
            queries=torch.randn(batch, layers, q_heads, dim, generator=gen).to(dtype),
            key_length=keys - steps + i + 1,
            padding=None,
            scale=dim**-0.5,
        )
        for i in range(steps)
    ]
    return cache, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--keys", type=int, default=712)
    parser.add_argument("--compiled", action="store_true", help="the reductions compiled")
    args = parser.parse_args()
    torch.set_num_threads(2)
    dtype = getattr(torch, args.dtype)
    tuning = Tuning(stack_keys_on_cpu=True, stacked_keys_bytes=2**40, compiled_reductions=args.compiled)
    if args.compiled:  # compile on a small window of other sizes (symbolic shapes: no recompilation)
        small_keys, small_steps = window(3, 2, 5, 77, dtype)
        reduce_decode_rows(small_steps, small_keys, tuning)
    keys, steps = window(args.layers, args.batch, args.steps, args.keys, dtype)
    before = reset_high_water()
    reduce_decode_rows(steps, keys, tuning)
    probabilities = 4 * args.layers * args.batch * 32 * args.steps * args.keys / 2**20
    print(
        f"transient peak {high_water_mib() - before:,.0f} MiB "
        f"(float32 probabilities {probabilities:,.0f} MiB; {args.dtype} inputs"
        f"{', reductions compiled' if args.compiled else ''})"
    )


if __name__ == "__main__":
    main()
