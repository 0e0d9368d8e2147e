"""Per-step cost of the live analysis (OnlineSequenceMonitor.update), microseconds per step.

Feeds ``--steps`` synthetic steps (random entropy, surprisal, margin, token ids and word-like token
texts, seed 0) and prints the mean CPU time of this thread per step (robust to other processes on a
loaded machine) and the median wall time per step, over the first and the last quarter of the run:
the cost must not grow with the run (incremental statistics). ``--layers L`` also hands each step
L layers' update ratio, MLP update ratio and attention entropy (the layer-update evidence).

    .venv/bin/python bench/online_step_cost.py --steps 4000 [--layers 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from corevital.analysis.online import LayerRows, OnlineSequenceMonitor
from corevital.analysis.profiles import load_profile


def measure(steps: int, layers: int = 0) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(0)
    monitor = OnlineSequenceMonitor(load_profile("llama"))
    words = [f" w{i}" for i in range(50)]
    costs, cpu = [], []
    for _ in range(steps):
        token, text = int(rng.integers(0, 5000)), words[int(rng.integers(0, 50))]
        e, s, m = float(rng.uniform(0, 6)), float(rng.uniform(0, 6)), float(rng.uniform(0, 1))
        rows = None
        if layers:
            ratio = rng.uniform(0.05, 0.5, layers)
            rows = LayerRows(ratio, ratio * 0.6, rng.uniform(0.2, 0.8, layers))
        start, start_cpu = time.perf_counter(), time.thread_time()
        monitor.update(
            token_id=token, entropy=e, surprisal=s, margin=m, topk_mass=0.9, token_text=text, layers=rows
        )
        cpu.append(time.thread_time() - start_cpu)
        costs.append(time.perf_counter() - start)
    return costs, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--layers", type=int, default=0, help="per-layer rows handed in each step")
    args = parser.parse_args()
    wall, cpu = (np.asarray(x) * 1e6 for x in measure(args.steps, args.layers))
    quarter = max(1, args.steps // 4)
    for name, part in (("first quarter", slice(0, quarter)), ("last quarter", slice(-quarter, None))):
        print(
            f"{name}: CPU {cpu[part].mean():.1f} us/step (mean), "
            f"wall {np.median(wall[part]):.1f} us/step (median)"
        )


if __name__ == "__main__":
    main()
