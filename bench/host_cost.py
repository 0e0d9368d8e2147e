"""The set-up the CPU-time benches of a plain decoding path share (bench/mlp_tap_cost.py,
bench/output_hooks_cost.py): a random-weight Llama of a shape from :mod:`shapes`, one thread, a
seeded 64-token prompt, and greedy generate() of 50 new tokens timed in CPU time."""

from __future__ import annotations

import argparse
import time

import torch
from shapes import SHAPES
from transformers import LlamaConfig, LlamaForCausalLM

NEW_TOKENS = 50


def narrow_model(description: str | None) -> tuple[argparse.Namespace, LlamaForCausalLM, torch.Tensor]:
    """The command line (``--shape``, ``--rounds``), the model it names and the prompt's ids [1, 64]."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="llama3-8b-narrow", choices=sorted(SHAPES))
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[args.shape], bos_token_id=1, eos_token_id=None, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()  # type: ignore[no-untyped-call]  # untyped in transformers
    return args, model, torch.randint(2, config.vocab_size, (1, 64))


def greedy_cpu_seconds(model: LlamaForCausalLM, ids: torch.Tensor) -> float:
    """CPU seconds of one greedy generate() of :data:`NEW_TOKENS` new tokens after ``ids``."""
    start = time.process_time()
    with torch.no_grad():
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
    return time.process_time() - start
