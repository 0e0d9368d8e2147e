"""Ways to reduce one layer's prompt attention to its statistics' parts, timed on one device.

The prompt pass's statistics read every layer's attention over the prompt: each head's largest
probabilities (a top-k) and each query's mass in the middle of its keys (the basin score). The tap
recomputes a layer's logits ``scores·scale + mask`` [B, H, P, P] in the model's dtype. This script
times, on random logits of a given shape with a causal mask (one sequence left-padded), the ways to
get the parts from them, after checking that they give the same numbers: their softmax, then the
function for any probabilities (``corevital.metrics.prompt.prompt_head_parts``, in place); the
function for logits (``logit_head_parts``) as written (the float32 probabilities made once and
reduced in place) and compiled (its row reductions ``fused_prompt_row_parts`` in one fused kernel,
compiled before timing); and the kernels they are made of. It prints milliseconds per layer (host
clock between device synchronisations, median of repeats; a variant that writes its input first
restores it, timed apart and subtracted).

    python bench/prompt_parts.py --device cuda --dtype bfloat16 --shapes 8x32x512,1x32x512,8x32x64,8x1024x64
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from corevital.metrics.prompt import (
    PromptMask,
    fused_prompt_row_parts,
    logit_head_parts,
    prompt_head_parts,
)

CAP = 50


def _inputs(
    batch: int, heads: int, n: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, PromptMask]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    vis = causal.expand(batch, n, n).clone()
    vis[0, :, : n // 8] = False  # the first sequence left-padded by an eighth
    vis[0, : n // 8] = False
    bias = torch.where(vis, 0.0, torch.finfo(dtype).min).unsqueeze(1).to(dtype)
    scores = (torch.randn(batch, heads, n, n, generator=gen) * 3).to(dtype)
    logits = torch.add(bias, scores)  # as the tap makes them: one rounding to the model's dtype
    return logits.to(device), PromptMask.of(vis.to(device), batch, n, device)


def _kept_sorted(flat: Tensor, kept: Tensor) -> Tensor:
    return torch.where(kept, flat, -1).sort(dim=-1).values


def timed(
    fn: Callable[[], object], restore: Callable[[], object] | None, repeats: int, device: torch.device
) -> float:
    """Milliseconds ``fn`` takes (host clock between device synchronisations, median of ``repeats``
    after one warm-up); with ``restore``, which rewrites what ``fn`` writes in place, that time minus
    ``restore``'s own."""

    def once(work: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start_s = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start_s) * 1e3

    def both() -> None:
        if restore is not None:
            restore()
        fn()

    once(both)  # warm-up
    total = statistics.median(once(both) for _ in range(repeats))
    return total if restore is None else total - statistics.median(once(restore) for _ in range(repeats))


def _one_shape(shape: str, device: torch.device, repeats: int, dtype: torch.dtype = torch.float32) -> None:
    batch, heads, n = (int(x) for x in shape.split("x"))
    logits, mask = _inputs(batch, heads, n, device, dtype)
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    buf = probs.clone()

    def restore() -> None:
        buf.copy_(probs)

    want = prompt_head_parts(probs, mask, cap=CAP)
    kept = want.top_weight > 0.01
    counted = mask.counted.unsqueeze(1).expand_as(want.middle_share)
    for compiled in (False, True):  # the compiled row reductions compile here
        got = logit_head_parts(logits, mask, cap=CAP, compiled=compiled)
        torch.testing.assert_close(got.top_weight[kept], want.top_weight[kept], rtol=0, atol=0)
        # the same entries; the top-k orders entries of equal weight as it finds them
        assert torch.equal(_kept_sorted(got.top_flat, kept), _kept_sorted(want.top_flat, kept))
        share, want_share = got.middle_share[counted], want.middle_share[counted]
        torch.testing.assert_close(share, want_share, rtol=1e-5, atol=1e-6)
    assert fused_prompt_row_parts.failure is None, fused_prompt_row_parts.failure
    variants: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {
        "softmax, then any probabilities (prompt_head_parts, in place)": (
            lambda: prompt_head_parts(
                torch.softmax(logits, -1, dtype=torch.float32), mask, cap=CAP, overwrite=True
            ),
            None,
        ),
        "logits, as written (logit_head_parts)": (lambda: logit_head_parts(logits, mask, cap=CAP), None),
        "logits, compiled (logit_head_parts, compiled=True)": (
            lambda: logit_head_parts(logits, mask, cap=CAP, compiled=True),
            None,
        ),
        "  softmax to float32": (lambda: torch.softmax(logits, -1, dtype=torch.float32), None),
        "  row reductions compiled": (lambda: fused_prompt_row_parts(logits, mask.membership), None),
        "  top-k over P*P of the probabilities": (
            lambda: buf.view(batch, heads, n * n).topk(min(CAP, n * n), dim=-1),
            None,
        ),
        "  masked_fill of the probabilities": (
            lambda: buf.masked_fill_(~mask.visible.unsqueeze(1), 0.0),
            restore,
        ),
        "  mul_ by membership": (lambda: buf.mul_(mask.membership.unsqueeze(1)), restore),
    }
    for name, (fn, undo) in variants.items():
        ms = timed(fn, undo, repeats, device)
        print(f"| {shape} | {name} | {ms:.3f} |", flush=True)


def device_arguments(doc: str | None, shapes: str) -> argparse.Namespace:
    """The command line of a kernel bench (``--device``, ``--dtype``, ``--shapes``, ``--repeats``),
    its first line ``doc``'s; the device and dtype resolved (bfloat16 on a GPU, float32 on the CPU
    unless given) and printed."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    parser.add_argument("--shapes", default=shapes)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    args.device = torch.device(args.device)
    args.dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.type == "cuda" else "float32"))
    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "CPU"
    print(f"device {args.device} ({name}), logits {args.dtype}")
    return args


def main() -> None:
    args = device_arguments(__doc__, "8x32x512,1x32x512,8x32x64,8x1024x64")
    device, dtype = args.device, args.dtype
    print("| B x H x P | variant | ms per layer |")
    print("|---|---|---|")
    for shape in args.shapes.split(","):
        _one_shape(shape, device, args.repeats, dtype)


if __name__ == "__main__":
    main()
