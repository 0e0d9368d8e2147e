"""Transient memory of scoring one window of decoding steps' attention rows, measured on the CPU.

Builds the keys and query rows of one window (by default a batch-8 window of 32 steps over a
712-position cache with Llama-3-8B's heads: 32 layers, 32 query and 8 key-value heads of 128),
scores it once with :func:`corevital.capture.attention_window.reduce_decode_rows` (keys stacked as
on a GPU) and prints how far the process's resident set rose above what the inputs hold (the RSS
high-water mark). Run it with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns every large
buffer to the system when it is freed (otherwise freed heap memory may be counted again).

    MALLOC_MMAP_THRESHOLD_=65536 python bench/window_peak.py --dtype float32

bfloat16 inputs measure the CPU's softmax, which first copies its input to float32 (a GPU's does
not): float32 shows the function's own buffers.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from corevital.capture.attention_window import DecodeRows, reduce_decode_rows  # noqa: E402
from corevital.capture.options import Tuning  # noqa: E402


def high_water_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--keys", type=int, default=712)
    args = parser.parse_args()
    torch.set_num_threads(2)
    dtype = getattr(torch, args.dtype)
    q_heads, kv_heads, dim = 32, 8, 128
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, kv_heads, args.keys, dim)
    keys = [torch.randn(shape, generator=gen).to(dtype) for _ in range(args.layers)]
    steps = [
        DecodeRows(
            queries=tuple(
                torch.randn(args.batch, q_heads, 1, dim, generator=gen).to(dtype) for _ in range(args.layers)
            ),
            key_length=args.keys - args.steps + i + 1,
            padding=None,
            scale=dim**-0.5,
        )
        for i in range(args.steps)
    ]
    before = high_water_mib()
    reduce_decode_rows(steps, keys, Tuning(stack_keys_on_cpu=True, stacked_keys_bytes=2**40))
    probabilities = 4 * args.layers * args.batch * q_heads * args.steps * args.keys / 2**20
    print(
        f"transient peak {high_water_mib() - before:,.0f} MiB "
        f"(float32 probabilities {probabilities:,.0f} MiB; {args.dtype} inputs)"
    )


if __name__ == "__main__":
    main()
