"""Where an observed generation's extra time goes on a device host: plain and capture side by side.

A dynamic-cache step at batch 1 on a GPU is bound by the host, and what a capture adds there can
exceed what its host instructions take at that host's pace (docs/performance.md, "The dynamic
cache"). This bench separates the candidates in one process, one call:

1. **Synchronising calls** (CUDA): each runner's run under ``torch.cuda.set_sync_debug_mode``, the
   calls that wait for the device counted by source line. A capture that waits where plain
   ``generate()`` does not loses the overlap of host and device.
2. **The caching allocator** (CUDA): ``torch.cuda.memory_stats()`` over one run of each runner:
   blocks allocated, segments, the device's own allocations and frees, retries after a failed one.
3. **Phases**, ``--rounds`` round-robin rounds in rotated order, each runner's generation
   stamped at each step's end: its median wall and CPU time (this process's) and their paired
   ratios against plain's in the same round; the time before ``generate()`` is called and after it
   returns (the capture's own set-up and assembly); the first step, the median decoding step and
   the decoding steps' ratio (each round's median of a step's time over plain's same step), and the
   end. Paired ratios are medians over rounds with the sign test's 95 % interval (6 rounds or more).

The runners are plain ``generate()``, each capture mode and the controls (``--controls``):
``plain-again``, plain ``generate()`` timed a second time as if it were a mode (an A/A control: what
two identical runners read on that host), and ``plain-hold``, plain ``generate()`` whose logits
processor keeps every step's scores alive until the generation ends, as a capture's window keeps its
steps' logits (its distance from plain is what holding a tensor of the model per step costs the
device's allocator on that host); ``plain-wrapped``, plain ``generate()`` with the sites a summary
capture reads wrapped as its taps wrap them (each layer's norm before attention and before the MLP,
the final norm: 64 on Llama-3-8B's layout), each wrapper keeping a reference to its input and nothing
else; ``plain-copied``, the same with those rows copied side by side by one ``torch.cat`` a decoding
step, every copy kept until the generation ends, as a capture's window keeps them. Between them they
split what summary capture adds to a step: the wrappers, the copy, and the rest (the observer's own
Python, its window's reductions). One model serves every case (``--cases``, ``--batch``).

4. **The observer's own Python** (``--sections observer``): each capture mode's three per-step
   methods (``_pre_forward``, ``_post_forward``, ``_finish_step``) timed where they run, medians over
   every call of ``--rounds`` runs (:func:`observer_cost.timed_calls`): a decoding step's, not the
   prefill's or a step that reduces its window.
5. **Launches** (``--sections launches``): the host's microseconds per call, the device not waited
   for between calls, of one elementwise operator on a decoding step's row, of ``torch.cat`` of 64
   such rows, and of one of the model's norms called bare and through a wrapper that keeps its input.

    python bench/step_probe.py --device cuda --shape llama3-8b --modes summary,full --rounds 8
    python bench/step_probe.py --device cuda --shape llama3-8b --cases 64:50,512:200 --batch 1,8 \
        --sections phases --controls plain-again --rounds 7
    python bench/step_probe.py --device cuda --shape llama3-8b --modes summary --rounds 8 \
        --sections launches,phases --controls plain-again,plain-wrapped,plain-copied
    python bench/step_probe.py --shape tiny --cases 16:4 --rounds 2   # CPU, a smoke run

``--noise-gate PCT`` (with ``--gate-tries N``) checks the host after each case's warm-up as
``bench/overhead.py`` does: plain timed five times, the probe stopped (status 3, the case's
sections not run) when those runs spread by more than ``PCT`` % of their median at the last of
``N`` checks.
"""

from __future__ import annotations

import argparse
import collections
import gc
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(1, str(REPO))

from observer_cost import TIMED, timed_calls  # noqa: E402
from overhead import (  # noqa: E402
    AGAIN,
    GATE_RUNS,
    GATE_WAIT_S,
    HOOKS,
    MODES,
    _stamp_step,
    _StepStamps,
    build_random,
    capture_settings,
    gate_host,
    host_line,
    layer_tap,
    median_interval,
    mode_parts,
    mode_tuning,
    plain_generate_kwargs,
    prompts_for,
    sync,
)
from shapes import SHAPES  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from corevital.capture.loading import LoadedModel  # noqa: E402
from corevital.capture.mlp_inputs import pre_mlp_norms  # noqa: E402
from corevital.capture.model_checks import stream_sites  # noqa: E402
from corevital.capture.module_forward import forwards_replaced  # noqa: E402
from corevital.config import load_settings  # noqa: E402
from corevital.pipeline import Pipeline  # noqa: E402

HOLD = "plain-hold"
WRAPPED, COPIED = "plain-wrapped", "plain-copied"
CONTROLS = (AGAIN, HOLD, WRAPPED, COPIED)
SECTIONS = ("sync", "allocator", "observer", "launches", "phases")
ALLOCATOR_STATS = (
    "allocation.all.allocated",
    "segment.all.allocated",
    "num_device_alloc",
    "num_device_free",
    "num_alloc_retries",
)


class _KeepScores(LogitsProcessor):
    """Keeps every step's scores (a [B, V] tensor of the generation's) alive until it ends."""

    def __init__(self) -> None:
        self.kept: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.kept.append(scores)
        return scores


def read_sites(model: Any) -> list[nn.Module]:
    """The modules a summary capture's taps wrap in a decoding step: each layer's norm before
    attention after the first, the final norm (:mod:`corevital.capture.layer_outputs`) and each
    layer's norm before the MLP (:mod:`corevital.capture.mlp_inputs`)."""
    sites = stream_sites(model)
    layers = model.config.num_hidden_layers
    norms = pre_mlp_norms(model, layers)
    if sites is None or not sites.entries or sites.final is None or norms is None:
        raise SystemExit(
            f"{type(model).__name__}: its norms are not verified sites (plain-wrapped, plain-copied)"
        )
    return [*sites.entries, sites.final, *norms]


def keeping(forward: Any, kept: list[Any], slot: int) -> Any:
    """``forward`` (of a module called with one argument) keeping a reference to its input in
    ``kept[slot]``, as a tap's wrapper does."""

    def kept_one(state: Any) -> Any:
        kept[slot] = state
        return forward(state)

    return kept_one


class _CopyRows(StoppingCriteria):
    """At each decoding step, the rows the wrappers kept copied side by side by one ``torch.cat``,
    every copy kept until the generation ends (the prefill's rows are let go); the step's end noted
    in ``stamps`` after the copy, as plain runs' criterion notes it (one criterion: plain's count
    of operators a step)."""

    def __init__(self, kept: list[Any], stamps: list[float] | None) -> None:
        self.kept = kept
        self.stamps = stamps
        self.copies: list[torch.Tensor] = []
        self.steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        if self.steps:
            self.copies.append(torch.cat(self.kept, dim=1))
        self.steps += 1
        self.kept[:] = [None] * len(self.kept)
        if self.stamps is not None:
            self.stamps.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def timed_generate(model: Any, spans: list[tuple[float, float]]) -> None:
    """``model.generate`` noting when each call starts and returns in ``spans``."""
    generate = model.generate

    def timed(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            spans.append((start, time.perf_counter()))

    model.generate = timed


class Runners:
    """Plain ``generate()``, each capture mode and the controls (``plain-again``, ``plain-hold``), on
    one model and one batch of ``batch`` prompts of ``prompt`` tokens, ``new_tokens`` new ones."""

    def __init__(
        self,
        loaded: LoadedModel,
        case: tuple[int, int],
        batch: int,
        modes: list[str],
        controls: list[str],
        generate_spans: list[tuple[float, float]],
    ) -> None:
        self.loaded = loaded
        self.device = loaded.device
        prompt, self.new_tokens = case
        self.prompts = prompts_for(loaded, prompt, batch, False)
        base = capture_settings(self.device.type, self.new_tokens, batch, "dynamic")
        self.pipelines = {
            mode: Pipeline(load_settings({**base, **MODES[mode_parts(mode).name]}, environ={}))
            for mode in modes
        }
        self.tunings = {mode: mode_tuning(mode, loaded.constants.weight_bytes) for mode in modes}
        for pipeline in self.pipelines.values():
            pipeline.use_model(loaded)
        self.generate_spans = generate_spans  # filled by the model's timed generate()
        self.names = ["plain", *modes, *controls]
        self.sites = read_sites(loaded.model) if {WRAPPED, COPIED} & set(controls) else []

    def run(self, name: str, stamps: list[float] | None = None) -> None:
        if name in ("plain", *CONTROLS):
            self._plain(stamps, name)
        else:
            progress = None if stamps is None else partial(_stamp_step, stamps)
            with layer_tap(HOOKS not in name):
                self.pipelines[name].capture(self.prompts, tuning=self.tunings[name], progress=progress)

    def _plain(self, stamps: list[float] | None, name: str) -> None:
        tok = self.loaded.tokenizer
        batch = tok(self.prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs = plain_generate_kwargs(self.new_tokens, tok.pad_token_id, "dynamic")
        if name == HOLD:
            kwargs["logits_processor"] = LogitsProcessorList([_KeepScores()])
        criteria: list[StoppingCriteria] = []
        kept: list[Any] = [None] * len(self.sites)
        wrappers = []
        if name in (WRAPPED, COPIED):
            wrappers = [(site, keeping(site.forward, kept, slot)) for slot, site in enumerate(self.sites)]
        if name == COPIED:
            criteria.append(_CopyRows(kept, stamps))
        elif stamps is not None:
            criteria.append(_StepStamps(stamps))
        if criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        with torch.no_grad(), forwards_replaced(wrappers):
            output = self.loaded.model.generate(**batch, **kwargs)
        tok.batch_decode(output[:, batch["input_ids"].shape[1] :].tolist(), skip_special_tokens=True)


def _plain_runs(runners: Runners) -> list[float]:
    """Seconds of :data:`GATE_RUNS` plain runs, each timed between device synchronisations."""
    times = []
    for _ in range(GATE_RUNS):
        sync(runners.device)
        start = time.perf_counter()
        runners.run("plain")
        sync(runners.device)
        times.append(time.perf_counter() - start)
    return times


def synchronising_calls(runners: Runners) -> list[str]:
    """Each runner's calls that wait for the device, one run each, by source line (CUDA)."""
    lines = ["| runner | calls that wait | where (most first) |", "|---|---|---|"]
    for name in runners.names:
        sync(runners.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode(1)
            try:
                runners.run(name)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        where = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught)
        top = ", ".join(f"{place} ×{count}" for place, count in where.most_common(6))
        lines.append(f"| {name} | {sum(where.values())} | {top or '—'} |")
    return lines


def allocator_use(runners: Runners) -> list[str]:
    """What the caching allocator did over one run of each runner (CUDA)."""
    lines = [
        "| runner | " + " | ".join(ALLOCATOR_STATS) + " |",
        "|---|" + "---|" * len(ALLOCATOR_STATS),
    ]
    for name in runners.names:
        sync(runners.device)
        before = torch.cuda.memory_stats(runners.device)
        runners.run(name)
        sync(runners.device)
        after = torch.cuda.memory_stats(runners.device)
        cells = " | ".join(str(after.get(key, 0) - before.get(key, 0)) for key in ALLOCATOR_STATS)
        lines.append(f"| {name} | {cells} |")
    return lines


def observer_costs(runners: Runners, rounds: int) -> list[str]:
    """Each capture mode's per-step methods timed in place, median microseconds a call."""
    lines = [
        "| mode | " + " | ".join(f"`{name}` µs" for name in TIMED) + " | a step, µs |",
        "|---|" + "---|" * (len(TIMED) + 1),
    ]
    for mode in runners.pipelines:
        found: dict[str, list[float]] = {name: [] for name in TIMED}
        with timed_calls(found):
            for _ in range(rounds):
                runners.run(mode)
        medians = [statistics.median(found[name]) * 1e6 for name in TIMED]
        lines.append(f"| {mode} | " + " | ".join(f"{m:.1f}" for m in medians) + f" | {sum(medians):.1f} |")
    return lines


def _host_us(call: Any, device: torch.device, calls: int = 400) -> float:
    """The host's microseconds per ``call()``, best of five runs of ``calls`` calls (the device
    waited for before each run, not between calls: fewer calls than a launch queue holds)."""
    best = math.inf
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, time.perf_counter() - start)
    sync(device)
    return best / calls * 1e6


def launch_costs(runners: Runners) -> list[str]:
    """The host's cost of a decoding step's pieces on this device, microseconds per call."""
    model, device = runners.loaded.model, runners.device
    batch = len(runners.prompts)
    hidden, dtype = model.config.hidden_size, next(model.parameters()).dtype
    generator = torch.Generator(device=device).manual_seed(0)
    rows = [torch.randn(batch, 1, hidden, device=device, dtype=dtype, generator=generator) for _ in range(64)]
    row = rows[0]
    norm = pre_mlp_norms(model, model.config.num_hidden_layers)
    kept: list[Any] = [None]
    found = [
        ("`row + row` (one kernel)", _host_us(lambda: row + row, device)),
        ("`torch.cat` of 64 rows, dim 1", _host_us(lambda: torch.cat(rows, dim=1), device)),
    ]
    if norm is not None:
        found.append(("a norm's call, bare", _host_us(lambda: norm[0](row), device)))
        with forwards_replaced([(norm[0], keeping(norm[0].forward, kept, 0))]):
            found.append(
                ("the norm through a wrapper keeping its input", _host_us(lambda: norm[0](row), device))
            )
    return [
        f"| call, [{batch}, 1, {hidden}] {str(dtype).removeprefix('torch.')} | host µs per call |",
        "|---|---|",
        *(f"| {what} | {us:.2f} |" for what, us in found),
    ]


def _interval(values: list[float]) -> str:
    found = median_interval(values)
    return "—" if found is None else f"{found[0]:.3f}–{found[1]:.3f}"


def phases(runners: Runners, rounds: int) -> list[str]:
    """Each runner's time and where it goes, ``rounds`` rounds round-robin in rotated order.

    Paired ratios are taken round by round against plain's run of the same round: the run's wall
    and CPU time, and its decoding steps (the median over the run's decoding steps of each step's
    time over plain's same step), each the median over rounds with the sign test's 95 % interval
    (from 6 rounds). "All decoding steps" and "slowest step" (where a window's reduction waits) are
    medians over rounds too.
    """
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in runners.names}
    names = runners.names
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            stamps: list[float] = []
            runners.generate_spans.clear()
            sync(runners.device)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            runners.run(name, stamps)
            sync(runners.device)
            wall1, cpu1 = time.perf_counter(), time.process_time()
            called, returned = runners.generate_spans[-1]
            found[name].append(
                {
                    "wall": wall1 - wall0,
                    "cpu": cpu1 - cpu0,
                    "before": called - wall0,
                    "after": wall1 - returned,
                    "first": stamps[0] - wall0,
                    "gaps": [b - a for a, b in zip(stamps, stamps[1:], strict=False)],
                    "end": wall1 - stamps[-1],
                }
            )
    plain = found["plain"]
    lines = [
        f"| runner ({rounds} rounds) | wall ms | paired (95 % interval) | CPU ms | paired "
        "| before generate() ms | after it ms | first step ms | median step ms "
        "| steps paired (95 % interval) | all decoding steps ms | slowest step ms | end ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in found.items():

        def median(key: str, of: list[dict[str, Any]] = runs) -> float:
            return float(statistics.median(run[key] for run in of))

        def paired(key: str, of: list[dict[str, Any]] = runs) -> list[float]:
            return [a[key] / b[key] for a, b in zip(of, plain, strict=True)]

        steps = [g for run in runs for g in run["gaps"]]
        by_round = [
            statistics.median(a / b for a, b in zip(ra["gaps"], rb["gaps"], strict=True))
            for ra, rb in zip(runs, plain, strict=True)
        ]
        walls = paired("wall")
        lines.append(
            f"| {name} | {median('wall') * 1e3:.1f} | {statistics.median(walls):.4f} ({_interval(walls)}) "
            f"| {median('cpu') * 1e3:.1f} | {statistics.median(paired('cpu')):.4f} "
            f"| {median('before') * 1e3:.2f} | {median('after') * 1e3:.2f} "
            f"| {median('first') * 1e3:.2f} | {statistics.median(steps) * 1e3:.3f} "
            f"| {statistics.median(by_round):.4f} ({_interval(by_round)}) "
            f"| {statistics.median(sum(run['gaps']) for run in runs) * 1e3:.1f} "
            f"| {statistics.median(max(run['gaps'], default=0.0) for run in runs) * 1e3:.2f} "
            f"| {median('end') * 1e3:.2f} |"
        )
    lines.append("")
    lines.append("Each run's wall time, ms (round order):")
    for name, runs in found.items():
        lines.append(f"- {name}: " + " ".join(f"{run['wall'] * 1e3:.0f}" for run in runs))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    parser.add_argument("--cases", default="64:50", help="prompt:new token pairs, comma-separated")
    parser.add_argument("--batch", default="1", help="batch sizes, comma-separated")
    parser.add_argument(
        "--modes",
        default="summary,full",
        type=lambda text: text.split(","),
        help="capture modes, comma-separated, with bench/overhead.py's suffixes (e.g. full:one-stream)",
    )
    parser.add_argument(
        "--controls",
        default=HOLD,
        type=lambda text: [name for name in text.split(",") if name],
        help=f"plain runners timed beside the modes, comma-separated: {', '.join(CONTROLS)} ('' for none)",
    )
    parser.add_argument(
        "--sections",
        default="sync,allocator,phases",
        type=lambda text: text.split(","),
        help="sync, allocator (CUDA only), observer, launches, phases",
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--noise-gate",
        type=float,
        default=0.0,
        metavar="PCT",
        help=f"after each case's warm-up, time plain {GATE_RUNS} times and stop (status 3) when those "
        "runs spread by more than PCT %% of their median (0: no check)",
    )
    parser.add_argument(
        "--gate-tries",
        type=int,
        default=1,
        metavar="N",
        help=f"with --noise-gate, check the host up to N times, {GATE_WAIT_S:g} s apart",
    )
    args = parser.parse_args()
    if args.gate_tries < 1:
        parser.error(f"--gate-tries must be at least 1, not {args.gate_tries}")
    unknown = set(args.controls) - set(CONTROLS)
    if unknown:
        parser.error(f"unknown controls: {', '.join(sorted(unknown))} ({', '.join(CONTROLS)})")
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))} ({', '.join(SECTIONS)})")
    cases = [tuple(int(part) for part in case.split(":")) for case in args.cases.split(",")]
    if args.device == "cpu":
        torch.set_num_threads(1)
    device = torch.device(args.device)
    loaded = build_random(args.shape, args.device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    gc.freeze()  # as corevital's commands do once a model is loaded
    spans: list[tuple[float, float]] = []
    timed_generate(loaded.model, spans)
    for batch in (int(b) for b in args.batch.split(",")):
        for prompt, new_tokens in cases:
            runners = Runners(loaded, (prompt, new_tokens), batch, args.modes, args.controls, spans)
            for _ in range(args.warmup):
                for name in runners.names:
                    runners.run(name)
            if args.noise_gate > 0:
                case = f"{args.shape} {prompt}:{new_tokens} b{batch}"
                gate_host(
                    case,
                    partial(_plain_runs, runners),
                    args.noise_gate,
                    args.gate_tries,
                    warm=partial(runners.run, "plain"),
                )
            sections: list[tuple[str, Callable[[], list[str]]]] = []
            if device.type == "cuda" and "sync" in args.sections:
                sections.append(("synchronising calls", partial(synchronising_calls, runners)))
            if device.type == "cuda" and "allocator" in args.sections:
                sections.append(("the caching allocator over one run", partial(allocator_use, runners)))
            if "observer" in args.sections:
                sections.append(("the observer's own Python", partial(observer_costs, runners, args.rounds)))
            if "launches" in args.sections:
                sections.append(("launches", partial(launch_costs, runners)))
            if "phases" in args.sections:
                sections.append(("phases", partial(phases, runners, args.rounds)))
            print(f"\n# {args.shape} {prompt}:{new_tokens} b{batch} on {device}, torch {torch.__version__}")
            print(f"# host {host_line()}", flush=True)
            for title, section in sections:
                print(f"\n## {title}\n")
                print("\n".join(section()), flush=True)


if __name__ == "__main__":
    main()
