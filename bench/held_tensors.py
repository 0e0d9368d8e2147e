"""What holding the model's own tensors between decoding steps costs the host, against one copy a step.

    python bench/held_tensors.py [--device cuda] [--shape llama3-8b] [--rounds 9] [--cases 64:50]

Plain greedy ``generate()`` on the dynamic cache at batch 1, one process, one random-weight model;
each round runs, in rotating order:

- ``plain`` and ``plain-again``: nothing kept (``plain-again`` is the A/A control: its ratio is what
  two identical runs read on this machine);
- ``kept``: every decoder layer's ``forward`` wrapped (an instance attribute, as CoreVital's layer
  tap) to keep a reference to its output until the generation ends, as a decoding step waiting for
  its window would keep the model's tensors: one allocation per layer and step stays allocated;
- ``wrapped``: the same wrappers keeping nothing (what the wrappers alone cost);
- ``packed``: the same references copied side by side once per step (one ``torch.cat`` after the
  forward), the references themselves let go: one allocation per step stays allocated
  (``corevital.capture.observer._packed``).

It prints, for each, the median decoding step (the gaps between forward calls, prompt pass
excluded), the median generation time and its paired ratio to ``plain`` with the 95 % interval of
that median (``overhead.median_interval``). On a GPU at batch 1 the host's Python and kernel
launches set the step time, and the CUDA caching allocator serves every operator's output
allocation: more blocks held makes each of them slower.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "src"), str(REPO)]

from overhead import build_random, host_line, median_interval, plain_generate_kwargs, prompts_for, sync  # noqa: E402
from shapes import SHAPES  # noqa: E402


def runner(
    model: Any, batch: dict[str, Any], new_tokens: int, pad_token_id: int | None, mode: str
) -> Callable[[], None]:
    """One generation in ``mode`` (see the module's docstring)."""
    layers = list(model.model.layers)
    held: list[torch.Tensor] = []
    step: list[torch.Tensor] = []

    plain_kwargs = plain_generate_kwargs(new_tokens, pad_token_id, "dynamic")

    def generate() -> None:
        with torch.no_grad():
            model.generate(**batch, **plain_kwargs)

    if mode in ("plain", "plain-again"):
        return generate

    def wrap(forward: Any) -> Any:
        def kept(*args: Any, **kwargs: Any) -> Any:
            output = forward(*args, **kwargs)
            if mode != "wrapped":
                state = output[0] if isinstance(output, tuple) else output
                (step if mode == "packed" else held).append(state)
            return output

        return kept

    def forward_then_pack(forward: Any) -> Any:
        def packed(*args: Any, **kwargs: Any) -> Any:
            output = forward(*args, **kwargs)
            if step:
                held.append(torch.cat([state[:, -1:] for state in step], dim=1))
                step.clear()
            return output

        return packed

    def run() -> None:
        for layer in layers:
            layer.__dict__["forward"] = wrap(type(layer).forward.__get__(layer))
        if mode == "packed":
            model.__dict__["forward"] = forward_then_pack(type(model).forward.__get__(model))
        try:
            generate()
        finally:
            for layer in layers:
                layer.__dict__.pop("forward", None)
            model.__dict__.pop("forward", None)
            held.clear()
            step.clear()

    return run


MODES = ("plain", "plain-again", "wrapped", "kept", "packed")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cases", default="64:50", help="prompt:new pairs, comma-separated")
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = args.shape or ("llama3-8b" if device.type == "cuda" else "llama3-8b-narrow")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    loaded = build_random(shape, args.device, dtype)
    model, tok = loaded.model, loaded.tokenizer
    stamps: list[float] = []
    model.register_forward_pre_hook(lambda *_: stamps.append(time.perf_counter()))
    print(f"# {host_line()}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# {shape} on {name}, torch {torch.__version__}, batch 1, {args.rounds} rounds")
    for case in args.cases.split(","):
        prompt, new_tokens = (int(part) for part in case.split(":"))
        texts = prompts_for(loaded, prompt, 1, False)
        batch = dict(tok(texts, return_tensors="pt", add_special_tokens=False).to(device))
        runners = {mode: runner(model, batch, new_tokens, tok.pad_token_id, mode) for mode in MODES}
        for run in runners.values():
            run()
        sync(device)
        gc.collect()
        totals: dict[str, list[float]] = {mode: [] for mode in MODES}
        steps: dict[str, list[float]] = {mode: [] for mode in MODES}
        for round_ in range(args.rounds):
            order = MODES[round_ % len(MODES) :] + MODES[: round_ % len(MODES)]
            for mode in order:
                stamps.clear()
                sync(device)
                start = time.perf_counter()
                runners[mode]()
                sync(device)
                totals[mode].append(time.perf_counter() - start)
                gaps = [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]
                steps[mode].append(statistics.median(gaps))
        print(f"## {prompt} -> {new_tokens}")
        for mode in MODES:
            ratios = [a / b for a, b in zip(totals[mode], totals["plain"], strict=True)]
            interval = median_interval(ratios)
            shown = "" if interval is None else f" ({interval[0]:.3f}-{interval[1]:.3f})"
            print(
                f"{mode:12s} step {statistics.median(steps[mode]) * 1e3:7.3f} ms  "
                f"generation {statistics.median(totals[mode]) * 1e3:8.1f} ms  "
                f"paired ratio {statistics.median(ratios):.3f}{shown}"
            )


if __name__ == "__main__":
    main()
