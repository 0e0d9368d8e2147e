"""What transformers' output-capturing hooks cost a plain generate() that asks for no outputs (CPU time).

    .venv/bin/python bench/output_hooks_cost.py [--shape llama3-8b-narrow] [--rounds 9]

transformers returns hidden states by installing forward hooks on every decoder layer and attention
module the first time a forward asks for them, kept for the model's life. One process, one model,
greedy 64 -> 50 at batch 1, one thread; each round times plain generate() without the hooks, then
with them (installed by one forward that asks for hidden states; removed again by
:func:`corevital.capture.hf_compat.remove_output_capture_hooks` before the next round), and prints
the median CPU time of each, the paired ratio and the difference a decoding step.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from host_cost import NEW_TOKENS, greedy_cpu_seconds, narrow_model  # noqa: E402

from corevital.capture.hf_compat import output_capture_hooks, remove_output_capture_hooks  # noqa: E402


def main() -> None:
    args, model, ids = narrow_model(__doc__)
    times: dict[str, list[float]] = {"without": [], "with": []}
    hooks = 0
    for round_ in range(args.rounds + 1):
        remove_output_capture_hooks(model)
        without = greedy_cpu_seconds(model, ids)
        with torch.no_grad():
            model(ids[:, :3], output_hidden_states=True)
        hooks = output_capture_hooks(model)
        hooked = greedy_cpu_seconds(model, ids)
        if round_:  # the first round warms up
            times["without"].append(without)
            times["with"].append(hooked)
    base = statistics.median(times["without"])
    paired = statistics.median(b / a for a, b in zip(times["without"], times["with"], strict=True))
    for name, spent in times.items():
        median = statistics.median(spent)
        print(f"{name:8s} hooks {median:.3f} s CPU  ratio {median / base:.3f}")
    hooked_median = statistics.median(times["with"])
    print(
        f"{hooks} hooks; paired ratio {paired:.3f}; "
        f"{(hooked_median - base) / NEW_TOKENS * 1e3:+.2f} ms a decoding step"
    )


if __name__ == "__main__":
    main()
