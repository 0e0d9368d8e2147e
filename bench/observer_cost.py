"""The host time CoreVital's own Python takes in each decoding step of an observed generation.

At batch 1 a GPU decodes a Llama-3-8B-shaped model faster than the host launches its kernels, so
every microsecond of Python a step adds lands on the step (docs/performance.md, "Host work per
generation and per step"). This bench times, with ``time.perf_counter`` around each call, the three
places where the observer runs once a step outside the model: before the forward (``_pre_forward``),
after it (``_post_forward``: what the step keeps) and in its stopping criterion (``_finish_step``:
the chosen token, the window). Medians over every call of ``--runs`` generations of ``NEW_TOKENS``
tokens after two untimed ones; a median is a decoding step's, not the prefill's or a step that
reduces its window. It also times one call of a decoder layer and of a pre-MLP norm through the
wrappers that read their tensors (:mod:`corevital.capture.layer_outputs`,
:mod:`corevital.capture.mlp_inputs`) against the bare call (``timeit``, best of five), on stand-in
modules that return their input, so that only the wrappers' own cost is left: a decoder layer read
for its output, a norm read for its input (where a layer's output is read at the next layer's norm)
and a pre-MLP norm.

A random Llama of a shape from :mod:`shapes` on the CPU, one thread, float32:

    .venv/bin/python bench/observer_cost.py [--runs 6] [--modes summary,full]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(1, str(REPO))

from host_cost import NEW_TOKENS  # noqa: E402
from overhead import MODES, cpu_observed  # noqa: E402
from shapes import SHAPES  # noqa: E402

from corevital.capture.layer_outputs import LayerOutputTap, _block_state  # noqa: E402
from corevital.capture.mlp_inputs import MlpInputTap  # noqa: E402
from corevital.capture.module_forward import forward_replaced  # noqa: E402
from corevital.capture.observer import StepObserver  # noqa: E402
from corevital.config import load_settings  # noqa: E402
from corevital.pipeline import Pipeline  # noqa: E402

TIMED = ("_pre_forward", "_post_forward", "_finish_step")


@contextmanager
def timed_calls(found: dict[str, list[float]]) -> Iterator[None]:
    """StepObserver's per-step methods timed into ``found`` (seconds per call) inside the block."""
    saved = {name: getattr(StepObserver, name) for name in TIMED}

    def timing(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = method(*args, **kwargs)
            found[name].append(time.perf_counter() - start)
            return result

        return call

    for name, method in saved.items():
        setattr(StepObserver, name, timing(name, method))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(StepObserver, name, method)


class _Block(nn.Module):
    """A decoder layer's call signature (transformers' Llama), returning its input."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
        cache_position: torch.Tensor | None = None,
        position_embeddings: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        return hidden_states


def wrapper_costs(number: int = 100_000) -> dict[str, tuple[float, float]]:
    """Microseconds of one call, bare and wrapped: a decoder layer read for its output (where the
    norms are not verified), a norm read for its input (a layer's norm before attention: the
    previous layer's output) and a pre-MLP norm, both through the wrappers that take one argument
    (where the model's check pass called the norms so), at a decoding step (a pass over one position)."""
    state = torch.zeros(1, 1, 64)
    block, entry, norm = _Block(), nn.Identity(), nn.Identity()
    keywords = {
        "attention_mask": None,
        "position_ids": None,
        "past_key_values": None,
        "use_cache": True,
        "cache_position": None,
        "position_embeddings": None,
    }

    def call_block() -> None:
        block(state, **keywords)

    def call_entry() -> None:
        entry(state)

    def call_norm() -> None:
        norm(state)

    def best(fn: Callable[[], None]) -> float:
        return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6

    bare = {
        "decoder layer": best(call_block),
        "entry norm": best(call_entry),
        "pre-MLP norm": best(call_norm),
    }
    tap = LayerOutputTap.__new__(LayerOutputTap)  # the wrappers alone, without a model's sites
    tap.compiled, tap.one, tap.several, tap._latest = None, True, False, [None]
    wrapped = {}
    with forward_replaced(block, tap._output_kept(0, block.forward, _block_state)):
        wrapped["decoder layer"] = best(call_block)
    with forward_replaced(entry, tap._input_kept(0, entry.forward, True)):
        wrapped["entry norm"] = best(call_entry)
    with MlpInputTap((norm,), positional=True).installed() as mlp_tap:
        mlp_tap.begin_pass(1)
        wrapped["pre-MLP norm"] = best(call_norm)
    return {name: (bare[name], wrapped[name]) for name in bare}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="llama3-8b-narrow", choices=sorted(SHAPES))
    parser.add_argument("--modes", default="summary,full")
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    loaded, prompts, base = cpu_observed(args.shape, NEW_TOKENS)
    print(f"# {args.shape}, {NEW_TOKENS} new tokens, {args.runs} runs a mode, torch {torch.__version__}")
    print()
    print("| mode | `_pre_forward` µs | `_post_forward` µs | `_finish_step` µs | a step, µs |")
    print("|---|---|---|---|---|")
    for mode in args.modes.split(","):
        pipeline = Pipeline(load_settings({**base, **MODES[mode]}, environ={}))
        pipeline.use_model(loaded)
        for _ in range(2):
            pipeline.capture(prompts)
        found: dict[str, list[float]] = {name: [] for name in TIMED}
        with timed_calls(found):
            for _ in range(args.runs):
                pipeline.capture(prompts)
        medians = [statistics.median(found[name]) * 1e6 for name in TIMED]
        cells = " | ".join(f"{value:.1f}" for value in medians)
        print(f"| {mode} | {cells} | {sum(medians):.1f} |")
    print()
    print("| call | bare µs | wrapped µs | extra µs |")
    print("|---|---|---|---|")
    for name, (bare, wrapped) in wrapper_costs().items():
        print(f"| {name} | {bare:.3f} | {wrapped:.3f} | {wrapped - bare:+.3f} |")


if __name__ == "__main__":
    main()
