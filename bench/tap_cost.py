"""Host cost of CoreVital's attention function on a deferred decoding step, per layer.

On the dynamic cache a GPU decoding step is bound by the host: every layer of every step calls the
attention function, so its Python is part of each step. This times, round-robin on the CPU with one
thread, a decoding step's 32 layers through:

* ``tap``: CoreVital's attention function (:class:`corevital.capture.attention_tap.AttentionTap`) on
  a deferring pass, as a full capture runs it (the pass's decoding-step mask made by the tap's mask
  function, the rows kept for the window, taken after the pass);
* ``plain``: transformers' own SDPA attention function, what the layers call without CoreVital;
* ``sdpa``: ``scaled_dot_product_attention`` alone.

The tensors are tiny (4 query heads, 1 key-value head, head size 8, 16 keys), so the figures are
the functions' Python and dispatch; ``tap - plain`` is what CoreVital adds to a layer. Prints the
median microseconds per layer of each.

    python bench/tap_cost.py                 # 32 layers, 300 rounds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from corevital.capture.attention_tap import AttentionTap  # noqa: E402
from corevital.capture.hf_compat import sdpa_attention_forward  # noqa: E402
from corevital.capture.registry import AttentionSite, SiteKind  # noqa: E402
from tests.support.decode_step import StandInAttention, decode_mask_kwargs  # noqa: E402


def per_layer_us(layers: int, rounds: int) -> dict[str, float]:
    """Median microseconds per layer of each way to run a decoding step's attention."""
    modules = [StandInAttention() for _ in range(layers)]
    sites = [
        AttentionSite(module=m, kind=SiteKind.SELF, layer=i, path=f"layers.{i}")
        for i, m in enumerate(modules)
    ]
    tap = AttentionTap(sites, num_layers=layers, num_encoder_layers=0, fast=True)
    query = torch.randn(1, 4, 1, 8)
    key, value = torch.randn(1, 1, 16, 8), torch.randn(1, 1, 16, 8)
    keys = [key] * layers
    kwargs = {"dropout": 0.0, "scaling": 8**-0.5}
    # what transformers asks the tap's mask function for in a decoding step over 16 keys, unpadded
    mask_kwargs = decode_mask_kwargs(16)

    def tapped() -> None:
        tap.begin_forward()
        tap.defer_decode = True
        mask = tap._model_mask(**mask_kwargs)  # the pass's mask, made once as transformers makes it
        for module in modules:
            tap(module, query, key, value, mask, **kwargs)
        assert tap.take_decode_rows(keys) is not None  # every layer's row waits for the window

    def plain() -> None:
        for module in modules:
            sdpa_attention_forward(module, query, key, value, None, **kwargs)

    def sdpa() -> None:
        for _ in modules:
            torch.nn.functional.scaled_dot_product_attention(
                query, key, value, scale=kwargs["scaling"], enable_gqa=True
            )

    runners = {"tap": tapped, "plain": plain, "sdpa": sdpa}
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.no_grad():
        for _ in range(rounds):
            for name, fn in runners.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    skip = rounds // 6  # warm-up rounds
    return {name: statistics.median(t[skip:]) / layers * 1e6 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    found = per_layer_us(args.layers, args.rounds)
    for name, us in found.items():
        print(f"{name:6} {us:7.2f} us per layer")
    added = found["tap"] - found["plain"]
    print(f"CoreVital adds {added:.2f} us per layer ({args.layers} layers, {args.rounds} rounds)")


if __name__ == "__main__":
    main()
