"""What keeping the pre-MLP residual costs a plain generate(): a forward pre-hook on each norm
against the wrapper :class:`corevital.capture.mlp_inputs.MlpInputTap` installs (CPU time).

    .venv/bin/python bench/mlp_tap_cost.py [--shape llama3-8b-narrow] [--rounds 9]

One process, one model, greedy 64 -> 50 at batch 1, one thread; the three variants (nothing,
pre-hook, wrapper) alternate each round and the median CPU time of each is printed with its
ratio to nothing. The pre-hook is the earlier tap's: it keeps the same tensors.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from host_cost import NEW_TOKENS, greedy_cpu_seconds, narrow_model  # noqa: E402

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
    args, model, ids = narrow_model(__doc__)
    norms = pre_mlp_norms(model, model.config.num_hidden_layers)
    assert norms is not None

    variants: dict[str, Callable[[], AbstractContextManager[Any]]] = {
        "nothing": nullcontext,
        "pre-hook": lambda: pre_hooks(norms),
        "wrapper": lambda: MlpInputTap(norms).installed(),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.rounds + 1):
        for name, installed in variants.items():
            with installed():
                spent = greedy_cpu_seconds(model, ids)
            if round_:  # the first round warms up
                times[name].append(spent)
    base = statistics.median(times["nothing"])
    for name, spent_times in times.items():
        median = statistics.median(spent_times)
        per_step = (median - base) / NEW_TOKENS * 1e3
        print(f"{name:9s} {median:.3f} s CPU  ratio {median / base:.3f}  ({per_step:+.2f} ms a step)")


if __name__ == "__main__":
    main()
