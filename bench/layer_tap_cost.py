"""What reading each layer's hidden state costs an observed dynamic-cache step, two ways.

An observed generation reads every decoder layer's hidden state either through wrappers around the
layers' ``forward`` (:mod:`corevital.capture.layer_outputs`, the default where the model's checks
verified the sites) or by asking transformers for ``output_hidden_states``, which installs forward
hooks on every decoder layer and attention module (the tap disabled, as for a model whose sites
are not verified). Both are timed against plain ``generate()`` on a random Llama of a host-bound
shape (:mod:`shapes`: the narrow Llama-3-8B layout by default), one thread, CPU time, the runners
alternating round by round; "extra ms/step" is the median over rounds of the run's time minus plain's
in the same round, over the new tokens (so it includes the generation's fixed costs spread over them).

    .venv/bin/python bench/layer_tap_cost.py [--rounds 11] [--modes summary,full]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(1, str(REPO))

from host_cost import NEW_TOKENS  # noqa: E402
from overhead import MODES, cpu_observed, layer_tap, plain_generate_kwargs  # noqa: E402
from shapes import SHAPES  # noqa: E402

from corevital.config import load_settings  # noqa: E402
from corevital.pipeline import Pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="llama3-8b-narrow", choices=sorted(SHAPES))
    parser.add_argument("--modes", default="summary,full")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    loaded, prompts, base = cpu_observed(args.shape, NEW_TOKENS)
    tokenizer = loaded.tokenizer

    def plain() -> None:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            loaded.model.generate(**batch, **plain_generate_kwargs(NEW_TOKENS, tokenizer.pad_token_id))

    def observed(mode: str, tapped: bool) -> Callable[[], None]:
        pipeline = Pipeline(load_settings({**base, **MODES[mode]}, environ={}))
        pipeline.use_model(loaded)

        def run() -> None:
            with layer_tap(tapped):  # untapped: transformers' hooks, as for sites not verified
                pipeline.capture(prompts)

        return run

    runners: dict[str, Callable[[], None]] = {"plain": plain}
    for mode in args.modes.split(","):
        runners[f"{mode}, wrappers"] = observed(mode, True)
        runners[f"{mode}, transformers' hooks"] = observed(mode, False)
    for run in runners.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.process_time()
            runners[name]()
            times[name].append(time.process_time() - start)
    print(
        f"# {args.shape}, 64 -> {NEW_TOKENS} tokens, batch 1, {args.rounds} rounds, CPU time,",
        f"torch {torch.__version__}",
    )
    print("| run | median s | extra ms/step | paired ratio |")
    print("|---|---|---|---|")
    reference = times["plain"]
    for name, values in times.items():
        extra = statistics.median((t - p) / NEW_TOKENS * 1e3 for t, p in zip(values, reference, strict=True))
        ratio = statistics.median(t / p for t, p in zip(values, reference, strict=True))
        print(f"| {name} | {statistics.median(values):.4f} | {extra:+.3f} | {ratio:.4f} |")


if __name__ == "__main__":
    main()
