"""Device operations that capture adds to each decoding step, counted on the CPU.

On a GPU, batch-1 decoding of a large model is bound by kernel launches: every aten operation
costs a launch of some microseconds whatever its size. This script counts, under a
``TorchDispatchMode``, the aten operations that run in each decoding step of plain
``model.generate()`` and of each capture mode, on a random-weight Llama-shaped model small enough
for the CPU (by default the Llama-3-8B layout, 32 layers, 32 query / 8 key-value heads, vocabulary
128256, with hidden size 256 and intermediate size 512, in bfloat16 so that dtype casts count as on
the GPU).

A step runs from the start of one forward pass to the start of the next: the forward itself, the
capture's hooks, logits processors, stopping criteria and generate()'s bookkeeping. The prefill
(step 0) and the last step (which also holds the end of generation and the batched host transfer)
are reported apart; "per step" is the median of the steps in between.

Columns: ``kernels`` counts operations that launch work (views, ``empty*`` allocations and
metadata-only operations are left out, and a float32 softmax of half-precision input counts once,
as on CUDA), ``views`` those that do not (they still cost the host a dispatch), ``elements`` the
output elements the kernels write (it shows work that grows with the sequence), ``syncs`` the host
synchronisations (``_local_scalar_dense``: ``.item()``, ``bool(tensor)``), ``tail`` the extra
kernels of the last step (batched host transfer, end of generation), which ``tail/step`` spreads
over the generated steps. Deferred reductions run once per window of steps (see
``corevital.capture.steps``), so a typical step may add almost nothing: ``mean kernels/step`` is
the mean over every decoding step, the windows' reductions included (use ``--new-tokens 50`` or
more for a representative mean). ``Δ`` rows are the mode minus plain.

Counts are of what a GPU runs: the attention rows of all layers are scored in one matmul over
their stacked keys, which CoreVital does on accelerators only (on the CPU the copy costs more than
it saves). CUDA-only details (SDPA padding an unaligned mask, several kernels inside one topk or
logsumexp) are not visible here.

Examples:

    python bench/op_count.py                       # prompts 64 and 512, 6 new tokens, full + summary
    python bench/op_count.py --prompts 64 --modes full,summary,full-no-prompt --ops full
    python bench/op_count.py --prompts 64 --batch 4 --ragged     # a padded batch
    python bench/op_count.py --prompts 64 --where '*'            # every added kernel and its source line
    python bench/op_count.py --layers 4 --hidden 64 --vocab 1000   # a quick run

``--ops MODE`` also prints the per-step operation histogram of that mode next to plain's;
``--where OP`` (e.g. ``_to_copy``) the source lines that dispatch that aten operation in a decoding
step and in the prefill (``'*'``: every kernel). ``--time R`` also times each decoding step without
the counter, as the CPU runs it (median over the middle steps of R round-robin runs each, one torch
thread); with a small model (``--hidden 64 --intermediate 128 --vocab 32000 --dtype float32
--time 5``) that is mostly per-operation overhead, as on a GPU at batch 1, but the CPU's arithmetic
still shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from overhead import MODES, plain_generate_kwargs, prompts_for, word_tokenizer  # noqa: E402

from corevital.capture.loading import LoadedModel, loaded_from_existing  # noqa: E402
from corevital.capture.options import Tuning  # noqa: E402
from corevital.capture.runner import capture_prompts  # noqa: E402
from corevital.config import load_settings  # noqa: E402

aten = torch.ops.aten
# Operations that allocate or change metadata only: no kernel launch on a GPU.
NO_KERNEL = {
    aten.empty.memory_format,
    aten.empty_strided.default,
    aten.empty_like.default,
    aten.new_empty.default,
    aten.new_empty_strided.default,
    aten._unsafe_view.default,
    aten.lift_fresh.default,
    aten.detach.default,
    aten.alias.default,
    aten.set_.source_Storage_storage_offset,
    aten.resize_.default,
    aten._local_scalar_dense.default,
    aten.sym_size.int,
    aten.sym_stride.int,
    aten.sym_numel.default,
    aten.is_same_size.default,
}
SYNC = aten._local_scalar_dense.default
# softmax(x, dtype=float32) of a half-precision x is one kernel on CUDA (half_to_float); the CPU
# dispatches a cast and then the softmax, which is counted as one.
FUSED_UPCAST = {aten._softmax.default, aten._log_softmax.default}


@dataclass
class StepCount:
    kernels: Counter[str] = field(default_factory=Counter)
    views: int = 0
    elements: int = 0
    syncs: int = 0
    callers: Counter[str] = field(default_factory=Counter)  # where --where's op was called from

    @property
    def n_kernels(self) -> int:
        return sum(self.kernels.values())


class OpCounter(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's __init_subclass__
    """Counts aten operations into the current step; :meth:`new_step` starts the next one."""

    def __init__(self, where: str | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.steps: list[StepCount] = []
        self.where = where
        self._last_cast: Any = None  # output of the latest _to_copy

    def new_step(self, *_: Any, **__: Any) -> None:
        self.steps.append(StepCount())

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if self.steps:
            step = self.steps[-1]
            if func in FUSED_UPCAST and args and args[0] is self._last_cast:
                step.kernels["_to_copy"] -= 1  # one kernel on CUDA: the CPU decomposes the upcast
            self._last_cast = out if func is aten._to_copy.default else None
            if func is SYNC:
                step.syncs += 1
            elif func.is_view or func in NO_KERNEL:
                step.views += 1
            else:
                name = str(func.overloadpacket.__name__)
                step.kernels[name] += 1
                step.elements += _numel(out)
                if self.where in (name, "*"):
                    step.callers[f"{name:>14} {_caller()}" if self.where == "*" else _caller()] += 1
        return out


def _caller() -> str:
    """The innermost Python frame outside torch: file:line of the call that dispatched the op."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and f"{os.sep}torch{os.sep}" in frame.f_code.co_filename:
        frame = frame.f_back
    if frame is None:
        return "?"
    path = Path(frame.f_code.co_filename)
    return f"{path.parent.name}/{path.name}:{frame.f_lineno}"


def _numel(out: Any) -> int:
    if isinstance(out, torch.Tensor):
        return out.numel()
    if isinstance(out, (tuple, list)):
        return sum(_numel(o) for o in out)
    return 0


def build_model(args: argparse.Namespace) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.head_dim,
        vocab_size=args.vocab,
        max_position_embeddings=8192,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=1,
        eos_token_id=None,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(getattr(torch, args.dtype)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.generation_config.eos_token_id = None
    tokenizer = word_tokenizer(args.vocab)
    tokenizer.padding_side = "left"  # as CoreVital pads decoder-only batches
    return loaded_from_existing(model, tokenizer, name="random-llama")


def runners(
    loaded: LoadedModel, prompts: list[str], steps: int, modes: list[str], tuning: Tuning
) -> dict[str, Callable[[], object]]:
    tok = loaded.tokenizer
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    base = {
        "device": "cpu",
        "temperature": 0.0,
        "max_new_tokens": steps,
        "chat_template": "off",
        "batch_size": len(prompts),
        "ignore_eos": True,
        "sink": "local",
        "out": "/tmp/corevital-bench",
    }

    def plain() -> None:
        with torch.no_grad():
            loaded.model.generate(**batch, **plain_generate_kwargs(steps, 0))

    found: dict[str, Callable[[], object]] = {"plain": plain}
    for mode in modes:
        settings = load_settings({**base, **MODES[mode]}, environ={})
        found[mode] = partial(capture_prompts, loaded, prompts, settings, tuning=tuning)
    return found


@dataclass
class Summary:
    step: StepCount  # the median decode step
    prefill: StepCount
    tail: int  # kernels of the last step beyond a median step
    steps: int
    mean: float  # kernels per decoding step over every step but the prefill (windowed reductions included)


def count(loaded: LoadedModel, fn: Callable[[], object], steps: int, where: str | None = None) -> Summary:
    counter = OpCounter(where)
    handle = loaded.model.register_forward_pre_hook(counter.new_step, prepend=True)
    try:
        fn()  # warm-up: lazy initialisation (HF's output-recording hooks) is not per step
        counter.steps.clear()
        with counter:
            fn()
    finally:
        handle.remove()
    found = counter.steps
    if len(found) != steps:
        raise RuntimeError(f"expected {steps} forward passes, saw {len(found)}")
    middle = found[1:-1]
    median = statistics.median_low(s.n_kernels for s in middle)
    typical = next(s for s in middle if s.n_kernels == median)
    mean = statistics.fmean(s.n_kernels for s in found[1:])
    return Summary(typical, found[0], found[-1].n_kernels - median, steps, mean)


def step_times(loaded: LoadedModel, fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall milliseconds of a middle decoding step of each runner (round-robin repeats)."""
    stamps: list[float] = []
    handle = loaded.model.register_forward_pre_hook(lambda *_: stamps.append(time.perf_counter()))
    found: dict[str, list[float]] = {name: [] for name in fns}
    try:
        for _ in range(repeats):
            for name, fn in fns.items():
                stamps.clear()
                fn()
                gaps = [b - a for a, b in zip(stamps[1:-1], stamps[2:], strict=False)]
                found[name].append(statistics.median(gaps) * 1000.0)
    finally:
        handle.remove()
    return {name: statistics.median(values) for name, values in found.items()}


def _cells(s: Summary) -> list[float]:
    step = s.step
    per_step_tail = s.tail / s.steps
    return [
        step.n_kernels,
        s.mean,
        step.views,
        step.elements,
        step.syncs,
        s.tail,
        per_step_tail,
        s.prefill.n_kernels,
    ]


def row(label: str, s: Summary, plain: Summary | None = None) -> str:
    cells = _cells(s)
    if plain is not None:
        cells = [a - b for a, b in zip(cells, _cells(plain), strict=True)]
    text = [f"{c:.1f}" if isinstance(c, float) else str(c) for c in cells]
    return f"| {label} | " + " | ".join(text) + " |"


def histogram(plain: StepCount, mode: StepCount, name: str) -> str:
    names = sorted(
        set(plain.kernels) | set(mode.kernels), key=lambda op: -(mode.kernels[op] - plain.kernels[op])
    )
    lines = [f"| op | plain | {name} | Δ |", "|---|---|---|---|"]
    for op in names:
        a, b = plain.kernels[op], mode.kernels[op]
        if a or b:
            lines.append(f"| {op} | {a} | {b} | {b - a:+d} |")
    return "\n".join(lines)


HEADER = (
    "| run | kernels/step | mean kernels/step | views/step | elements/step | syncs/step | tail | tail/step "
    "| prefill kernels |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", default="64,512", help="prompt lengths, comma-separated")
    parser.add_argument("--new-tokens", type=int, default=6, help="generated tokens per run (>= 3)")
    parser.add_argument("--modes", default="full,summary", help=f"capture modes: {','.join(MODES)}")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--intermediate", type=int, default=512)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--window-model-gib",
        type=float,
        default=15.0,
        help="size of the model whose window and prompt-chunk budgets to use (default: Llama-3-8B in bf16)",
    )
    parser.add_argument(
        "--free-gib",
        type=float,
        help="free memory of the accelerator to size the budgets for (corevital reads it on CUDA; "
        "default: none, the budgets of a device whose free memory is not known)",
    )
    parser.add_argument("--ragged", action="store_true", help="prompts of different lengths (padding)")
    parser.add_argument(
        "--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"], help="as on the GPU"
    )
    parser.add_argument("--time", type=int, default=0, metavar="R", help="also time steps over R runs each")
    parser.add_argument("--ops", help="also print the per-step op histogram of this mode against plain")
    parser.add_argument(
        "--where", metavar="OP", help="also print where each run's decoding step and prefill call this op"
    )
    args = parser.parse_args()
    if args.new_tokens < 3:
        parser.error("--new-tokens must be at least 3 (prefill, a middle step, the last step)")
    return args


def report_case(
    loaded: LoadedModel, args: argparse.Namespace, prompt: int, modes: list[str], tuning: Tuning
) -> None:
    prompts = prompts_for(loaded, prompt, args.batch, real=False)
    if args.ragged:  # sequence b is 3·b tokens shorter: left padding, a real attention mask
        prompts = [" ".join(text.split()[: prompt - 3 * b]) for b, text in enumerate(prompts)]
    # Count what a GPU runs (one matmul for all layers' rows); time what the CPU runs.
    gpu_work = dataclasses.replace(tuning, stack_keys_on_cpu=True)
    counted = runners(loaded, prompts, args.new_tokens, modes, gpu_work)
    counts = {name: count(loaded, fn, args.new_tokens, args.where) for name, fn in counted.items()}
    fns = runners(loaded, prompts, args.new_tokens, modes, tuning)
    print(f"\n## prompt {prompt}\n\n{HEADER}")
    print("\n".join(row(name, counts[name]) for name in counts))
    print("\n".join(row(f"Δ {mode}", counts[mode], counts["plain"]) for mode in modes))
    if args.time:
        times = step_times(loaded, fns, args.time)
        print("\n| run | ms/step | Δ ms/step | ratio |\n|---|---|---|---|")
        for name, ms in times.items():
            print(f"| {name} | {ms:.2f} | {ms - times['plain']:+.2f} | {ms / times['plain']:.3f} |")
    if args.ops in counts:
        print("\n" + histogram(counts["plain"].step, counts[args.ops].step, args.ops))
    if args.where:
        for name, summary in counts.items():
            for label, found in (("decoding step", summary.step), ("prefill", summary.prefill)):
                print(f"\n{args.where} in a {name} {label}:")
                for caller, n in found.callers.most_common():
                    print(f"  {n:4d}  {caller}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    # The window of deferred steps, the prompt reductions' chunks and the stacked keys follow the
    # model's size and the accelerator's free memory: count what the full-size model gets.
    model_bytes = int(args.window_model_gib * 2**30)
    free_bytes = None if args.free_gib is None else int(args.free_gib * 2**30)
    tuning = Tuning().resolved(model_bytes, free_bytes)
    loaded = build_model(args)
    print(
        f"# random Llama: {args.layers} layers, hidden {args.hidden}, heads {args.heads}/{args.kv_heads}, "
        f"vocab {args.vocab}, {args.dtype}, batch {args.batch}{' ragged' if args.ragged else ''}, "
        f"{args.new_tokens} new tokens; torch {torch.__version__}"
    )
    for prompt in (int(p) for p in args.prompts.split(",")):
        report_case(loaded, args, prompt, [m for m in args.modes.split(",") if m], tuning)


if __name__ == "__main__":
    main()
