"""How much plain ``generate()`` varies from run to run on this host, and whether the host thread is
off its CPU when it does.

Runs plain greedy generation of a random-weight model (no CoreVital) ``--runs`` times under each
condition named, after two warm-up runs, and prints the fastest, slowest and median wall time and the
launching thread's CPU time (``time.thread_time``) of each condition. On the dynamic cache a GPU run
is bound by the host's kernel launches: a thread whose CPU time equals its wall time was never off
its CPU (no preemption to filter out), so a spread there is the host running slower, which no clock
removes. Conditions: ``default``, ``threads1`` (one torch CPU thread), ``nogc`` (Python's cyclic
GC off); run the script under ``taskset`` to pin it.

    python bench/host_jitter.py --device cuda --dtype bfloat16 default threads1 nogc
    taskset -c 5 python bench/host_jitter.py --device cuda --dtype bfloat16 default
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch
from overhead import build_random, plain_generate_kwargs, prompts_for, sync
from shapes import SHAPES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("conditions", nargs="*", help="default, threads1, nogc (default: 'default' alone)")
    parser.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--case", default="64:50", help="prompt:new tokens")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    conditions = args.conditions or ["default"]
    unknown = sorted(set(conditions) - {"default", "threads1", "nogc"})
    if unknown:
        parser.error(f"unknown conditions: {', '.join(unknown)} (default, threads1, nogc)")
    prompt_tokens, new_tokens = (int(n) for n in args.case.split(":"))
    loaded = build_random(args.shape, args.device, getattr(torch, args.dtype))
    tok, model, device = loaded.tokenizer, loaded.model, loaded.device
    prompts = prompts_for(loaded, prompt_tokens, args.batch, False)
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    kwargs = plain_generate_kwargs(new_tokens, tok.pad_token_id)

    def run() -> tuple[float, float]:
        sync(device)
        wall, cpu = time.perf_counter(), time.thread_time()
        with torch.no_grad():
            model.generate(**batch, **kwargs)
        sync(device)
        return time.perf_counter() - wall, time.thread_time() - cpu

    run(), run()
    for condition in conditions:
        if condition == "threads1":
            torch.set_num_threads(1)
        if condition == "nogc":
            gc.collect()
            gc.disable()
        runs = [run() for _ in range(args.runs)]
        walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
        print(
            f"{condition}: wall {min(walls):.3f}-{max(walls):.3f} s, median {statistics.median(walls):.3f}; "
            f"thread CPU {min(cpus):.3f}-{max(cpus):.3f} s, median {statistics.median(cpus):.3f}",
            flush=True,
        )
        gc.enable()


if __name__ == "__main__":
    main()
