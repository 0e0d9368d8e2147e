"""What keeping the pre-MLP residual costs a plain generate(): a forward pre-hook on each norm
against the wrapper :class:`corevital.capture.mlp_inputs.MlpInputTap` installs (CPU time).

    .venv/bin/python bench/mlp_tap_cost.py [--shape llama3-8b-narrow] [--rounds 9]

One process, one model, greedy 64 -> 50 at batch 1, one thread; the three variants (nothing,
pre-hook, wrapper) alternate each round and the median CPU time of each is printed with its
ratio to nothing. The pre-hook is the earlier tap's: it keeps the same tensors.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from shapes import SHAPES  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from corevital.capture.mlp_inputs import MlpInputTap, pre_mlp_norms  # noqa: E402


@contextmanager
def pre_hooks(norms: tuple[nn.Module, ...]) -> Iterator[None]:
    """The pre-hook tap: each norm's input at the last position, through register_forward_pre_hook."""
    latest: list[Tensor | None] = [None] * len(norms)

    def hook(layer: int) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def keep(module: nn.Module, args: tuple[Any, ...]) -> None:
            if torch.compiler.is_compiling() or not args or not isinstance(args[0], Tensor):
                return
            state = args[0]
            last = state[:, -1:]
            latest[layer] = last.clone() if state.shape[1] > 1 else last

        return keep

    handles = [norm.register_forward_pre_hook(hook(i)) for i, norm in enumerate(norms)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="llama3-8b-narrow", choices=sorted(SHAPES))
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[args.shape], bos_token_id=1, eos_token_id=None, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()  # type: ignore[no-untyped-call]  # untyped in transformers
    norms = pre_mlp_norms(model, config.num_hidden_layers)
    assert norms is not None
    ids = torch.randint(2, config.vocab_size, (1, 64))

    def generate() -> None:
        with torch.no_grad():
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=50,
                min_new_tokens=50,
                do_sample=False,
            )

    variants: dict[str, Callable[[], AbstractContextManager[Any]]] = {
        "nothing": nullcontext,
        "pre-hook": lambda: pre_hooks(norms),
        "wrapper": lambda: MlpInputTap(norms).installed(),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.rounds + 1):
        for name, installed in variants.items():
            with installed():
                start = time.process_time()
                generate()
                spent = time.process_time() - start
            if round_:  # the first round warms up
                times[name].append(spent)
    base = statistics.median(times["nothing"])
    for name, spent_times in times.items():
        median = statistics.median(spent_times)
        per_step = (median - base) / 50 * 1e3
        print(f"{name:9s} {median:.3f} s CPU  ratio {median / base:.3f}  ({per_step:+.2f} ms a step)")


if __name__ == "__main__":
    main()
