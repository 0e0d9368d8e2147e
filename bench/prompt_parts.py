"""Ways to reduce one layer's recomputed prompt probabilities, timed on one device.

The prompt pass's statistics read every layer's [B, H, P, P] float32 probabilities: each head's
largest weights (a top-k) and each query's mass in the middle of its keys (the basin score). This
script times, on random softmax weights of a given shape with a causal mask (one sequence
left-padded), the function for any weights (``corevital.metrics.prompt.prompt_head_parts``), the one
for the tap's own recomputed probabilities (``recomputed_head_parts``: hidden entries exactly 0 but
in rows that see no key, rows that sum to 1, a row holding NaN NaN throughout) and the kernels they
are made of, after checking that both give the same numbers, and prints milliseconds per layer
(host clock between device synchronisations, median of repeats; each repeat first restores the
input, timed apart and subtracted).

    python bench/prompt_parts.py --device cuda --shapes 8x32x512,1x32x512,8x32x64,1x32x64
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from corevital.metrics.prompt import PromptMask, prompt_head_parts, recomputed_head_parts

CAP = 50


def _inputs(batch: int, heads: int, n: int, device: torch.device) -> tuple[Tensor, PromptMask]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    vis = causal.expand(batch, n, n).clone()
    vis[0, :, : n // 8] = False  # the first sequence left-padded by an eighth
    vis[0, : n // 8] = False
    bias = torch.where(vis, 0.0, torch.finfo(torch.float32).min).unsqueeze(1)
    scores = torch.randn(batch, heads, n, n, generator=gen) * 3
    probs = torch.softmax(scores + bias, dim=-1).to(device)
    return probs, PromptMask.of(vis.to(device), batch, n, device)


def _timed(
    fn: Callable[[], object], restore: Callable[[], object], repeats: int, device: torch.device
) -> float:
    def once(work: Callable[[], object]) -> float:
        if device.type != "cuda":
            start_s = time.perf_counter()
            work()
            return (time.perf_counter() - start_s) * 1e3
        torch.cuda.synchronize()
        start_s = time.perf_counter()
        work()
        torch.cuda.synchronize()
        return (time.perf_counter() - start_s) * 1e3

    def both() -> None:
        restore()
        fn()

    once(both)  # warm-up
    total = statistics.median(once(both) for _ in range(repeats))
    copy = statistics.median(once(restore) for _ in range(repeats))
    return total - copy


def _one_shape(shape: str, device: torch.device, repeats: int) -> None:
    batch, heads, n = (int(x) for x in shape.split("x"))
    pristine, mask = _inputs(batch, heads, n, device)
    buf = pristine.clone()
    want = prompt_head_parts(pristine, mask, cap=CAP)

    def restore() -> None:
        buf.copy_(pristine)

    kept = want.top_weight > 0.01
    counted = mask.counted.unsqueeze(1).expand_as(want.middle_share)
    restore()
    got = recomputed_head_parts(buf, mask, cap=CAP)
    torch.testing.assert_close(got.top_weight[kept], want.top_weight[kept], rtol=0, atol=0)
    assert torch.equal(got.top_flat[kept], want.top_flat[kept])
    share, want_share = got.middle_share[counted], want.middle_share[counted]
    torch.testing.assert_close(share, want_share, rtol=1e-5, atol=1e-6)
    variants: dict[str, Callable[[], object]] = {
        "any weights (prompt_head_parts, in place)": lambda: prompt_head_parts(
            buf, mask, cap=CAP, overwrite=True
        ),
        "recomputed (recomputed_head_parts)": lambda: recomputed_head_parts(buf, mask, cap=CAP),
        "  top-k over P*P": lambda: buf.view(batch, heads, n * n).topk(min(CAP, n * n), dim=-1),
        "  top-k per row": lambda: buf.topk(min(CAP, n), dim=-1, sorted=False),
        "  largest weight per row": lambda: buf.amax(dim=-1),
        "  masked_fill": lambda: buf.masked_fill_(~mask.visible.unsqueeze(1), 0.0),
        "  nan_to_num_": lambda: buf.nan_to_num_(nan=-1.0),
        "  sum over keys": lambda: buf.sum(dim=-1),
        "  mul_ by membership": lambda: buf.mul_(mask.membership.unsqueeze(1)),
    }
    for name, fn in variants.items():
        ms = _timed(fn, restore, repeats, device)
        print(f"| {shape} | {name} | {ms:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", default="8x32x512,1x32x512,8x32x64,1x32x64")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'})")
    print("| B x H x P | variant | ms per layer |")
    print("|---|---|---|")
    for shape in args.shapes.split(","):
        _one_shape(shape, device, args.repeats)


if __name__ == "__main__":
    main()
