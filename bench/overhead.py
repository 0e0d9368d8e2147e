"""Overhead of CoreVital capture against plain generation, side by side in one process.

For each case (a model and a prompt/output length), plain ``model.generate()`` (the model's default
attention, no capture; text in, text out like a capture run: the prompts tokenized in the timed run
and the new tokens decoded) and each capture mode run with warm-up and repeats; the table gives median
times, ratios to plain, peak device memory beyond the plain run, report-building time and report
size. Everything is greedy with a fixed number of new tokens (``min_new_tokens`` for plain, EOS
disabled for both), so every run does the same work. "ratio" is the median time over plain's median
time; "paired ratio" the median, over repeats, of the run's time over plain's time in the same round
(robust to a machine whose speed drifts between rounds), with a 95 % interval of that median (the sign
test's order statistics: from 6 repeats up; a budget inside it is not resolved by the run); "peak
extra %" is the extra peak memory as a
share of the plain run's peak. The mode ``plain-again`` times plain ``generate()`` once more as if it
were a capture mode: an A/A control, whose ratios are what two identical runners read in that case on
that machine.

Examples (each prints a Markdown table; ``--json FILE`` also writes the raw numbers):

    python bench/overhead.py --model smollm2 --cases 64:50  # CPU, real model
    python bench/overhead.py --tiny gpt2,llama,t5 --cases 64:50  # CPU, the test suite's tiny models
    python bench/overhead.py --shape llama3-8b --device cuda --dtype bfloat16 \\
        --cases 64:50,512:200 --batch 1,8  # GPU, random weights
    python bench/overhead.py --shape llama3-8b --device cuda --dtype bfloat16 \\
        --cases 64:50 --cache static  # GPU, transformers' compiled static-cache decoding step
    python bench/overhead.py --shape llama3-8b --device cuda --dtype bfloat16 \\
        --cases 64:50 --quantize 4bit,8bit  # GPU, bitsandbytes (saved once, loaded quantized)
"""

from __future__ import annotations

import argparse
import gc
import gzip
import heapq
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(1, str(REPO))  # tests.support.tiny_models, for --tiny

from shapes import SHAPES  # noqa: E402
from startup import machine  # noqa: E402

import corevital.capture.observer as observer_module  # noqa: E402
from corevital.capture.loading import LoadedModel, ModelSpec, load_model, loaded_from_existing  # noqa: E402
from corevital.capture.options import Tuning  # noqa: E402
from corevital.capture.static_cache import KeptStaticCache, with_kept_static_cache  # noqa: E402
from corevital.config import load_settings  # noqa: E402
from corevital.pipeline import Pipeline, settle_loaded_model  # noqa: E402
from corevital.report.encoding import report_to_json  # noqa: E402

MODES: dict[str, dict[str, object]] = {
    "full": {"capture": "full"},
    "full-no-prompt": {"capture": "full", "prompt_telemetry": False},
    "summary": {"capture": "summary"},
    "on_risk": {"capture": "on_risk"},
    "full-eager": {"capture": "full", "attention_path": "eager"},
}
# Not a capture mode: plain generate() again, timed as a mode (an A/A control). Its ratio to plain is
# what two identical runners read in this case on this machine: the resolution of the other ratios.
AGAIN = "plain-again"
# A mode with this suffix (e.g. "full:sized") sizes its budgets from the model alone, as on a device
# whose free memory is not known (corevital.capture.options.Tuning.resolved): an A/B of the budgets.
SIZED = ":sized"
# A mode with one of these suffixes runs its reductions as written (":written", e.g. "full:written":
# Tuning.compiled_reductions=False) or compiled (":compiled": True) whatever the decoding steps do;
# without either they follow them (compiled where the decoding steps are: the static cache on a
# GPU). An A/B of the compiled reductions in one process. Suffixes combine ("full:sized:written").
WRITTEN = ":written"
COMPILED = ":compiled"
# A mode with this suffix (e.g. "full:one-stream") computes the prompt telemetry on the model's own
# CUDA stream (Tuning.side_stream=False) instead of a stream of its own where its reductions run as
# written (corevital.capture.side_stream): an A/B of the side stream in one process.
ONE_STREAM = ":one-stream"
# A mode with this suffix (e.g. "summary:hooks") reads each layer's hidden state through the forward
# hooks transformers installs for ``output_hidden_states``, as for a model whose layer sites are not
# verified, instead of CoreVital's layer wrappers (corevital.capture.layer_outputs): an A/B of the two.
HOOKS = ":hooks"


@contextmanager
def layer_tap(tapped: bool) -> Iterator[None]:
    """Capture with CoreVital's layer wrappers (``tapped``) or with transformers' hooks instead."""
    if tapped:
        yield
        return
    tap = getattr(observer_module, "LayerOutputTap")  # noqa: B009
    setattr(observer_module, "LayerOutputTap", lambda sites: None)  # noqa: B010
    try:
        yield
    finally:
        setattr(observer_module, "LayerOutputTap", tap)  # noqa: B010


@dataclass(frozen=True)
class ModeParts:
    """A mode's capture mode and what its suffixes ask: budgets sized by the model alone, the
    reductions compiled or as written (None: as the decoding steps are), the prompt telemetry on the
    model's stream (``one_stream``)."""

    name: str
    sized: bool = False
    compiled: bool | None = None
    one_stream: bool = False


def mode_parts(mode: str) -> ModeParts:
    """A mode's parts; a ":hooks" suffix is dropped here (:func:`run_case` reads it from the mode itself)."""
    sized, compiled, one_stream = False, None, False
    while mode.endswith((SIZED, WRITTEN, COMPILED, HOOKS, ONE_STREAM)):
        if mode.endswith(HOOKS):
            mode = mode.removesuffix(HOOKS)
        elif mode.endswith(SIZED):
            mode, sized = mode.removesuffix(SIZED), True
        elif mode.endswith(WRITTEN):
            mode, compiled = mode.removesuffix(WRITTEN), False
        elif mode.endswith(ONE_STREAM):
            mode, one_stream = mode.removesuffix(ONE_STREAM), True
        else:
            mode, compiled = mode.removesuffix(COMPILED), True
    return ModeParts(mode, sized, compiled, one_stream)


def mode_tuning(mode: str, weight_bytes: int) -> Tuning | None:
    """The tuning a mode's suffixes ask for (None: the default one)."""
    parts = mode_parts(mode)
    tuning = Tuning().resolved(weight_bytes, None) if parts.sized else Tuning()
    tuning = replace(tuning, compiled_reductions=parts.compiled)
    if parts.one_stream:
        tuning = replace(tuning, side_stream=False)
    return tuning if tuning != Tuning() else None


PROSE = (
    "The history of lighthouses begins with fires lit on hilltops to guide ships home, and over the "
    "centuries the towers grew taller, the lamps brighter and the lenses more precise, until keepers "
    "tended clockwork that turned great glass prisms through every night of the year. "
)


@dataclass
class Row:
    case: str
    mode: str
    seconds: float
    ratio: float
    paired_ratio: float  # median over repeats of this run's time over plain's in the same round
    peak_extra_mib: float | None
    peak_extra_pct: float | None  # of the plain run's peak
    build_ms: float | None
    build_pct: float | None
    json_kib: float | None
    zlib_kib: float | None
    runs_s: list[float] = field(default_factory=list)  # each timed run, in the order of the repeats
    # 95 % interval of the paired ratio's median (:func:`median_interval`); None with fewer than 6 rounds
    paired_interval: tuple[float, float] | None = None
    host: str = ""  # the machine the case ran on (:func:`host_line`, at the case's start)


def host_line() -> str:
    """The machine a case runs on: host name, CPU model and count, Python, 1/5/15-minute load average."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.node()}: {machine()}, load average {load}"


def median_interval(values: list[float], coverage: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval of the median of ``values`` (the sign test's).

    The order statistics x(k) and x(n + 1 - k) with the largest k whose coverage, 1 - 2·P(B < k)
    for B ~ Binomial(n, 1/2), is at least ``coverage``: whatever the runs' distribution, the true
    median of a mode's paired ratio lies there with that probability, provided the rounds are
    independent. None when even the smallest and largest values cover less (fewer than 6 values at
    95 %). The interval says what one call resolves: a budget inside it is neither met nor missed.
    """
    ordered = sorted(values)
    n = len(ordered)
    tail = (1.0 - coverage) / 2.0
    below = 0.0  # P(B <= k - 1)
    k = 0
    while k < n and (reached := below + math.comb(n, k) / 2.0**n) <= tail:
        below = reached
        k += 1
    if k == 0:
        return None
    return ordered[k - 1], ordered[n - k]


GATE_RUNS = 5  # plain runs timed by --noise-gate before the measured ones
GATE_WAIT_S = 20.0  # between two host checks of --gate-tries


class HostTooNoisy(SystemExit):
    """The host check of ``--noise-gate`` failed: nothing was measured (exit status 3)."""

    def __init__(self, message: str) -> None:
        super().__init__(3)
        self.message = message


def run_spread(times: list[float]) -> float:
    """How far identical runs spread, in % of their median: (slowest - fastest) / median."""
    return 100.0 * (max(times) - min(times)) / statistics.median(times)


def check_host(case: str, times: list[float], gate: float) -> bool:
    """Print the spread of ``times`` (plain's runs); whether it is within ``gate`` %.

    A host whose identical runs spread by more than a few percent cannot resolve budgets of one to
    ten points, however many rounds follow: better to give the device back at once.
    """
    spread = run_spread(times)
    runs = " ".join(f"{t:.3f}" for t in times)
    print(f"# {case} host check: plain runs [{runs}] s, spread {spread:.1f} % (gate {gate:g} %)", flush=True)
    return spread <= gate


def gate_host(
    case: str,
    runs: Callable[[], list[float]],
    gate: float,
    tries: int = 1,
    *,
    warm: Callable[[], None] = lambda: None,
    wait_s: float = GATE_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """:func:`check_host` on ``runs()``, up to ``tries`` times, ``wait_s`` apart with one ``warm()``
    run after each wait (a host whose load comes and goes gets another look); raise
    :class:`HostTooNoisy` when the last check fails."""
    if tries < 1:
        raise ValueError(f"a host gets at least one check, not {tries}")
    for attempt in range(1, tries + 1):
        times = runs()
        if check_host(case, times, gate):
            return
        if attempt < tries:
            print(f"# {case} host check {attempt} of {tries} failed: again in {wait_s:g} s", flush=True)
            sleep(wait_s)
            warm()
    spread = f"plain runs spread {run_spread(times):.1f} % > {gate:g} %"
    if tries > 1:
        spread += f" at the last of {tries} checks"
    error = HostTooNoisy(f"{case}: host too noisy, {spread}; nothing measured")
    print(f"# {error.message}", flush=True)
    raise error


def word_tokenizer(vocab: int) -> Any:
    """A word-level tokenizer over ids t0..t{vocab-1}, for random-weight models of real shapes."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="t0", pad_token="t0")  # type: ignore[no-untyped-call]


def build_random(shape: str, device: str, dtype: torch.dtype) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], bos_token_id=1, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype).eval()  # type: ignore[arg-type]  # transformers' wrapped .to
    with torch.no_grad():  # keep activations in a realistic range for random weights
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.generation_config.eos_token_id = None
    return loaded_from_existing(model, word_tokenizer(config.vocab_size), name=f"random-{shape}")


def capture_settings(device: str, new_tokens: int, batch: int, cache: str = "auto") -> dict[str, Any]:
    """The settings every capture mode of a bench shares: greedy, ``new_tokens`` tokens whatever the
    model says, ``batch`` prompts a call, reports kept local, on ``cache``."""
    return {
        "device": device,
        "temperature": 0.0,
        "max_new_tokens": new_tokens,
        "chat_template": "off",
        "batch_size": batch,
        "ignore_eos": True,
        "sink": "local",
        "out": "/tmp/corevital-bench",
        "cache": cache,
    }


def plain_generate_kwargs(new_tokens: int, pad_token_id: int | None, cache: str = "auto") -> dict[str, Any]:
    """The keywords of every bench's plain ``generate()``, the counterpart of :func:`capture_settings`:
    greedy, exactly ``new_tokens`` tokens (``min_new_tokens``, as ``ignore_eos`` for a capture), on
    ``cache`` (``auto``: the model's own choice)."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "pad_token_id": pad_token_id,
    }
    if cache != "auto":
        kwargs["cache_implementation"] = cache
    return kwargs


def cpu_observed(shape: str, new_tokens: int) -> tuple[LoadedModel, list[str], dict[str, Any]]:
    """The set-up of the CPU benches of observed generations (bench/layer_tap_cost.py,
    bench/observer_cost.py): one thread, a random float32 model of ``shape``, one seeded 64-token
    prompt, the collector frozen as the corevital commands do once a model is loaded, and the settings
    every mode shares (greedy, ``new_tokens`` tokens whatever the model says, batch 1)."""
    torch.set_num_threads(1)
    loaded = build_random(shape, "cpu", torch.float32)
    prompts = prompts_for(loaded, 64, 1, False)
    gc.freeze()
    return loaded, prompts, capture_settings("cpu", new_tokens, 1)


def prompts_for(loaded: LoadedModel, tokens: int, batch: int, real: bool) -> list[str]:
    if real:
        ids = loaded.tokenizer(PROSE * (1 + tokens // 30), add_special_tokens=False)["input_ids"]
        texts = []
        for b in range(batch):
            window = ids[b * 7 : b * 7 + tokens]
            texts.append(loaded.tokenizer.decode(window))
        return texts
    gen = torch.Generator().manual_seed(tokens)
    vocab = loaded.capabilities.vocab_size
    return [
        " ".join(f"t{i}" for i in torch.randint(2, vocab, (tokens,), generator=gen).tolist())
        for _ in range(batch)
    ]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Before a timed run: collect Python's garbage and restart the peak of allocated memory.

    The allocator keeps the blocks it has reserved, as in a process that serves one generation after
    another: emptying its cache here would make every run take its transient buffers from the driver
    again (a cudaMalloc each, which waits for the device), a cost that only the modes with large
    transient buffers (full capture's prompt telemetry) would pay, and no serving process does.
    """
    if device.type == "cuda":
        gc.collect()
        torch.cuda.reset_peak_memory_stats(device)


def reserved_mib(device: torch.device) -> float:
    """Device memory torch's allocator holds from the driver, MiB (0 off CUDA)."""
    return torch.cuda.memory_reserved(device) / 2**20 if device.type == "cuda" else 0.0


def allocator_calls(device: torch.device) -> tuple[int, int]:
    """How often torch's CUDA allocator has called cudaMalloc and cudaFree so far ((0, 0) off CUDA)."""
    if device.type != "cuda":
        return 0, 0
    stats = torch.cuda.memory_stats(device)
    return int(stats.get("num_device_alloc", 0)), int(stats.get("num_device_free", 0))


# The device machine returns files of at most 16 MiB: the compile cache is written in parts.
CACHE_PART_BYTES = 15 * 2**20


def load_compile_cache(folder: Path) -> bool:
    """Load the compiled graphs :func:`save_compile_cache` wrote to ``folder`` (False: none there).

    torch's portable compile caches (``torch.compiler.load_cache_artifacts``): inductor's graphs,
    their Triton kernels and AOT autograd's entries, so that generate()'s compilations on a fresh
    machine hit a cache instead of compiling (dynamo still traces).
    """
    parts = sorted(folder.glob("inductor-*.bin"), key=lambda part: int(part.stem.split("-")[1]))
    if not parts:
        return False
    try:
        blob = zlib.decompress(b"".join(part.read_bytes() for part in parts))
    except zlib.error as exc:  # parts of two writes, or a write cut short: compile as if none
        print(f"# compile cache in {folder} unreadable ({exc}): not loaded", flush=True)
        return False
    info = torch.compiler.load_cache_artifacts(blob)
    kinds = {} if info is None else {kind: len(keys) for kind, keys in info.artifacts.items()}
    print(f"# compile cache: {len(blob) / 2**20:.1f} MiB loaded from {folder} ({kinds})", flush=True)
    return True


def save_compile_cache(folder: Path, written: list[int]) -> None:
    """Write every graph this process has compiled so far to ``folder``, zlib-compressed, in parts
    of at most :data:`CACHE_PART_BYTES` (nothing when nothing new compiled; ``written`` holds the
    size last written)."""
    saved = torch.compiler.save_cache_artifacts()
    if saved is None or (written and written[-1] == len(saved[0])):
        return
    written.append(len(saved[0]))
    blob = zlib.compress(saved[0], 6)
    folder.mkdir(parents=True, exist_ok=True)
    parts = [folder / f"inductor-{n}.bin" for n in range(-(-len(blob) // CACHE_PART_BYTES))]
    for n, part in enumerate(parts):  # every part written before the old ones go
        part.with_suffix(".tmp").write_bytes(blob[n * CACHE_PART_BYTES : (n + 1) * CACHE_PART_BYTES])
    for old in folder.glob("inductor-*.bin"):
        old.unlink()
    for part in parts:
        part.with_suffix(".tmp").rename(part)
    size, packed = len(saved[0]) / 2**20, len(blob) / 2**20
    print(f"# compile cache: {size:.1f} MiB ({packed:.1f} compressed) written to {folder}", flush=True)


def peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# Plain generation keeps a static cache of its own per model across runs and cases, as CoreVital's
# generations keep theirs (corevital.capture.static_cache, one per loaded model): generate() would
# make a new one every run, whose addresses, moved by the captured runs in between, would record
# plain's CUDA graph again; and both grow alike, so each case's plain and captured runs use caches
# of one length.
_PLAIN_CACHES: dict[int, KeptStaticCache] = {}


def run_case(
    loaded: LoadedModel,
    prompts: list[str],
    new_tokens: int,
    modes: list[str],
    repeats: int,
    warmup: int,
    case: str,
    profile: str | None = None,
    cache: str = "auto",
    clock: Callable[[], float] = time.perf_counter,
    trace_dir: Path | None = None,
    phases: int = 0,
    after_warmup: Callable[[], None] | None = None,
    noise_gate: float = 0.0,
    gate_tries: int = 1,
) -> list[Row]:
    """Time every runner round-robin (plain first, then each mode), so clock drift hits all alike.

    ``after_warmup``: called once the warm-up runs (which compile, on the static cache) are done.

    ``noise_gate``: after the warm-up, time plain :data:`GATE_RUNS` times and stop
    (:class:`HostTooNoisy`) when those runs spread by more than this many % (0: no check);
    ``gate_tries``: how many such checks before stopping (:func:`gate_host`).

    ``phases``: after the timed runs, run plain and each mode this many more times, each step's end
    stamped on the host, and print where each run's time goes (see :func:`phase_table`).

    ``clock``: wall time (default) or the process's CPU time (``time.process_time``: on a CPU shared
    with other work, the time a single-threaded run itself spends, whatever else runs).
    """
    device = loaded.device
    tok = loaded.tokenizer
    base = capture_settings(device.type, new_tokens, len(prompts), cache)
    shape = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)["input_ids"].shape
    pipelines = {}
    for mode in modes:
        if mode == AGAIN:
            continue
        pipeline = Pipeline(load_settings({**base, **MODES[mode_parts(mode).name]}, environ={}))
        pipeline.use_model(loaded)
        pipelines[mode] = pipeline
    last_run: dict[str, Any] = {}

    plain_cache = _PLAIN_CACHES.setdefault(id(loaded.model), KeptStaticCache())

    def plain(stamps: list[float] | None = None) -> None:
        # text in, text out, as a capture run: the prompts tokenized, the new tokens decoded
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        kwargs = with_kept_static_cache(
            plain_cache,
            loaded.model,
            plain_generate_kwargs(new_tokens, tok.pad_token_id, cache),
            batch_size=int(shape[0]),
            prompt_length=int(shape[1]),
            max_new_tokens=new_tokens,
        )
        if stamps is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_StepStamps(stamps)])
        with torch.no_grad():
            output = loaded.model.generate(**batch, **kwargs)
        tok.batch_decode(output[:, int(shape[1]) :].tolist(), skip_special_tokens=True)

    # The budgets of a device whose free memory is not known, set explicitly for ":sized" modes;
    # the reductions as written or compiled for ":written" and ":compiled" ones; the prompt telemetry
    # on the model's stream for ":one-stream" ones.
    tunings = {mode: mode_tuning(mode, loaded.constants.weight_bytes) for mode in pipelines}

    def capture(mode: str, stamps: list[float] | None = None) -> None:
        if mode == AGAIN:
            plain(stamps)
            return
        progress = None if stamps is None else partial(_stamp_step, stamps)
        with layer_tap(HOOKS not in mode):
            run = pipelines[mode].capture(prompts, tuning=tunings[mode], progress=progress)
        assert all(seq.num_steps == new_tokens for seq in run.sequences), "a run stopped early"
        last_run[mode] = run

    runners: dict[str, Callable[[], None]] = {
        "plain": plain,
        **{mode: partial(capture, mode) for mode in modes},
    }

    def timed(fn: Any) -> float:
        sync(device)
        t0 = clock()
        fn()
        sync(device)
        return clock() - t0

    for round_ in range(warmup):
        for name, fn in runners.items():
            started = time.perf_counter()
            fn()
            if round_ == 0:  # under the static cache on a GPU: the first run compiles the decoding step
                print(f"# {case} first {name} run {time.perf_counter() - started:.1f} s", flush=True)
    if after_warmup is not None:
        after_warmup()
    if noise_gate > 0:
        gate_host(case, lambda: [timed(plain) for _ in range(GATE_RUNS)], noise_gate, gate_tries, warm=plain)
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    recordings = {name: 0 for name in runners}
    # each runner's peak memory: the highest of its timed runs (reset before each, read after)
    peaks: dict[str, float | None] = {name: None for name in runners}
    device_calls = {name: [0, 0] for name in runners}  # the allocator's cudaMalloc and cudaFree calls
    reserved = [reserved_mib(device)]  # after the warm-up, then after each round of timed runs
    with counting_graph_recordings() as recorded:
        for r in range(repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                before = recorded[0]
                reset_peak(device)
                calls_before = allocator_calls(device)
                times[name].append(timed(runners[name]))
                found = peak(device)
                if found is not None:
                    peaks[name] = max(found, peaks[name] or 0.0)
                calls_after = allocator_calls(device)
                for k in range(2):
                    device_calls[name][k] += calls_after[k] - calls_before[k]
                recordings[name] += recorded[0] - before
            reserved.append(reserved_mib(device))
    if device.type == "cuda":
        if cache == "static":
            counts = ", ".join(f"{name} {count}" for name, count in recordings.items())
            print(f"# {case} CUDA graphs recorded or warmed up during the timed runs: {counts}", flush=True)
        counts = ", ".join(f"{name} {malloc}/{free}" for name, (malloc, free) in device_calls.items())
        print(f"# {case} cudaMalloc/cudaFree calls during the timed runs: {counts}", flush=True)
        held = " ".join(f"{mib:.0f}" for mib in reserved)
        print(f"# {case} MiB the allocator reserves after the warm-up, then each round: {held}", flush=True)
    spread = ", ".join(f"{name} [{' '.join(f'{t:.3f}' for t in times[name])}]" for name in runners)
    print(f"# {case} each timed run, s (repeat order): {spread}", flush=True)
    for wanted in (profile or "").split(","):
        runner = runners.get(wanted.removeprefix("py:"))
        if runner is not None:
            name = f"{case}-{wanted}".replace(" ", "_").replace("->", "to")
            trace = None if trace_dir is None else trace_dir / f"{name}.json.gz"
            report = (
                python_profile(runner, device)
                if wanted.startswith("py:")
                else profile_table(runner, device, trace)
            )
            print(f"## profile {wanted} ({case})\n{report}", flush=True)
    if phases:
        print(phase_table(case, modes, plain, capture, device, phases), flush=True)
    plain_s = statistics.median(times["plain"])
    measured = peaks["plain"] is not None
    rows = [
        Row(
            case,
            "plain",
            plain_s,
            1.0,
            1.0,
            0.0 if measured else None,
            0.0 if measured else None,
            None,
            None,
            None,
            None,
            times["plain"],
        )
    ]
    for mode in modes:
        seconds = statistics.median(times[mode])
        ratios = [m / p for m, p in zip(times[mode], times["plain"], strict=True)]
        paired, interval = statistics.median(ratios), median_interval(ratios)
        if mode == AGAIN:
            nothing = (None,) * 6  # no memory or report columns: plain's own runs
            rows.append(Row(case, mode, seconds, seconds / plain_s, paired, *nothing, times[mode], interval))
            continue
        builds = []
        for _ in range(max(1, repeats)):
            t1 = time.perf_counter()
            reports = pipelines[mode].build(last_run[mode])
            builds.append(time.perf_counter() - t1)
        text = report_to_json(reports[0]).encode()
        quantization = reports[0].model.quantization
        if quantization.enabled:
            print(f"# {case} {mode}: the report's model.quantization.method is {quantization.method}")
        extra = extra_pct = None
        plain_peak, mode_peak = peaks["plain"], peaks[mode]
        if mode_peak is not None and plain_peak is not None:
            extra = mode_peak - plain_peak
            extra_pct = 100 * extra / plain_peak
        rows.append(
            Row(
                case,
                mode,
                seconds,
                seconds / plain_s,
                paired,
                extra,
                extra_pct,
                statistics.median(builds) * 1000 / len(prompts),
                100 * statistics.median(builds) / seconds,
                len(text) / 1024,
                len(zlib.compress(text)) / 1024,
                times[mode],
                interval,
            )
        )
    return rows


def _stamp_step(stamps: list[float], _offset: int, _batch: int, steps_done: int, _host: Any) -> None:
    """A capture run's progress callback for the phases: the host time of each step's end (not of
    the call after the generation, whose step count repeats the last one's)."""
    if steps_done > len(stamps):
        stamps.append(time.perf_counter())


class _StepStamps(StoppingCriteria):
    """A stopping criterion that only notes the host time of each step's end (plain runs' phases)."""

    def __init__(self, stamps: list[float]) -> None:
        self.stamps = stamps

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        self.stamps.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def phase_table(
    case: str,
    modes: list[str],
    plain: Callable[[list[float]], None],
    capture: Callable[[str, list[float]], None],
    device: torch.device,
    runs: int,
) -> str:
    """Where each run's time goes, from the host time of each decoding step's end (untimed runs).

    "first ms": from the call to the first step's end (the prompt pass and the first token, and for
    CoreVital what comes before generate()); "2nd ms": the first decoding step after it (under the
    static cache the first compiled step of the run: a cost that run pays once, such as a guard that
    fails or a CUDA graph recorded again, shows here); "step ms": the median time between two steps' ends;
    "end ms": from the last step's end to the call's return (for CoreVital the last window's
    reduction, the prompt telemetry's copy and the sequences cut from the batch). Plain runs stamp
    each step with a stopping criterion, capture runs with a progress callback (both called once a
    step, after the step's kernels are queued and before generate() waits for the device: in a
    decoding loop the host runs at most a step ahead, so the stamps keep the device's pace).
    "all steps ms": from the first step's end to the last's, every step after the first (the median
    step leaves out the few that also reduce a window of steps); "total ms": the whole run, to set
    against the timed runs' medians (the phase runs add only the stamps). The runs go round-robin
    over plain and the modes, in the timed runs' rotated order.
    """
    names = ["plain", *modes]
    runs_of: dict[str, list[tuple[float, ...]]] = {name: [] for name in names}
    for r in range(runs):  # round-robin in rotated order, as the timed runs
        for name in names[r % len(names) :] + names[: r % len(names)]:
            stamps: list[float] = []
            sync(device)
            t0 = time.perf_counter()
            if name == "plain":
                plain(stamps)
            else:
                capture(name, stamps)
            sync(device)
            t1 = time.perf_counter()
            gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
            step = statistics.median(gaps) if gaps else 0.0
            second = gaps[0] if gaps else 0.0
            runs_of[name].append(
                (stamps[0] - t0, second, step, stamps[-1] - stamps[0], t1 - stamps[-1], t1 - t0)
            )
    found = {
        name: [statistics.median(run[i] for run in measured) * 1000 for i in range(6)]
        for name, measured in runs_of.items()
    }
    first0, second0, step0, steps0, end0, total0 = found["plain"]
    lines = [
        f"# phases ({case}, median of {runs} untimed runs, round-robin; extra: against plain)",
        "| case | mode | first ms | extra | 2nd ms | extra | step ms | ratio | all steps ms | extra "
        "| end ms | extra | total ms | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (first, second, step, steps, end, total) in found.items():
        ratio = step / step0 if step0 else float("nan")
        lines.append(
            f"| {case} | {name} | {first:.1f} | {first - first0:+.1f} "
            f"| {second:.1f} | {second - second0:+.1f} | {step:.3f} | {ratio:.3f} "
            f"| {steps:.1f} | {steps - steps0:+.1f} | {end:.1f} | {end - end0:+.1f} "
            f"| {total:.1f} | {total / total0:.3f} |"
        )
    return "\n".join(lines)


@contextmanager
def counting_graph_recordings() -> Iterator[list[int]]:
    """Count CUDA-graph recordings and warm-up runs of inductor's CUDA-graph trees while inside.

    Yields a one-element list holding the count so far. A compiled decoding step replays its
    recorded graph; a recording (or a warm-up run before one) during the timed runs is a cost the
    run pays again, e.g. when one process alternates differently compiled steps.
    """
    count = [0]
    try:
        from torch._inductor import cudagraph_trees
    except ImportError:  # pragma: no cover - torch without inductor
        yield count
        return
    manager = cudagraph_trees.CUDAGraphTreeManager
    originals = {name: getattr(manager, name) for name in ("record_function", "run_eager")}

    def counted(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            return original(*args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(manager, name, counted(original))
    try:
        yield count
    finally:
        for name, original in originals.items():
            setattr(manager, name, original)


def python_profile(fn: Any, device: torch.device) -> str:
    """Where one run spends its Python time: the top functions by cumulative and by own time."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    sync(device)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(35)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats("corevital", 40)
    return out.getvalue()


def profile_table(fn: Any, device: torch.device, trace: Path | None = None) -> str:
    """Where one run spends its time: the top operators by self CPU time (and CUDA time on a GPU),
    the device's busy time against the run's wall time, and the CoreVital functions whose operators
    take the most time: device time on a GPU (:func:`device_time_by_function`), CPU time otherwise
    (:func:`by_source_line`).

    ``trace``: also write the run's timeline there (Chrome trace format, gzip-compressed when the
    name ends in ``.gz``), for reading the gaps between the device's work.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities, with_stack=True) as prof:
        fn()
        sync(device)
    wall_ms = (time.perf_counter() - start) * 1000
    timeline = None
    if trace is not None:
        prof.export_chrome_trace(str(trace))
    if device.type == "cuda":  # the timeline read back (written once: to ``trace`` when given)
        with tempfile.TemporaryDirectory() as folder:
            path = trace if trace is not None else Path(folder) / "trace.json"
            if trace is None:
                prof.export_chrome_trace(str(path))
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rt") as f:
                timeline = json.load(f)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    averages = prof.key_averages()
    parts = [
        str(averages.table(sort_by="self_cpu_time_total", row_limit=25)),
        str(averages.table(sort_by=sort, row_limit=15)),
    ]
    if device.type == "cuda":
        busy_ms = sum(event.self_device_time_total for event in averages) / 1000
        parts.append(
            f"device busy {busy_ms:.1f} ms of {wall_ms:.1f} ms wall (profiled run, profiler included)"
        )
    if timeline is not None:
        parts.append(device_time_by_function(timeline))
    else:
        parts.append(by_source_line(prof.events()))
    return "\n".join(parts)


def by_source_line(events: Any, rows: int = 30) -> str:
    """Each operator's own CPU time summed by the CoreVital function that called it (named by its
    file and the line of its ``def``): the innermost Python frame outside torch decides ("not
    CoreVital" for the model's and generate()'s own operators; CoreVital's hooks inside the model
    count as its own). On a GPU, :func:`device_time_by_function` reads the timeline instead."""
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for event in events:
        own = event.self_cpu_time_total
        if not own or not event.name.startswith("aten::"):
            continue
        where = "not CoreVital"
        parent = event.cpu_parent  # the Python frames are events too (with_stack): walk up to one
        while parent is not None:
            path = parent.name.split("(")[0]
            if path.endswith(".py") and "torch/" not in path:
                where = parent.name if "corevital" in path else where
                break
            parent = parent.cpu_parent
        totals[where] = totals.get(where, 0.0) + own
        counts[where] = counts.get(where, 0) + 1
    lines = ["| CoreVital function | own CPU ms | operators |", "|---|---|---|"]
    for where in sorted(totals, key=lambda w: -totals[w])[:rows]:
        lines.append(f"| {where} | {totals[where] / 1000:.1f} | {counts[where]} |")
    return "\n".join(lines)


# Python frames under which a kernel is the model's, whatever CoreVital frame encloses them (the
# observer wraps the model's forward; a compiled step runs in dynamo's and inductor's frames).
_MODEL_FRAMES = ("nn.Module: ", "torch/_dynamo/", "torchinductor", "torch/_inductor/")


def device_time_by_function(trace: dict[str, Any], rows: int = 30) -> str:
    """Device time of every kernel and copy, summed by the CoreVital function that launched it.

    From a Chrome trace of torch.profiler with Python stacks: each kernel's launch (the runtime call
    with its correlation id) falls inside Python frames of the launching thread; the innermost
    CoreVital frame names it, unless a model frame (:data:`_MODEL_FRAMES`) lies below that frame
    ("the model"); "> transformers" marks a kernel of transformers' code that the frame called
    (generate()'s own work under the runner, the model's attention in CoreVital's function). Where
    the run replays CUDA graphs (the static cache's compiled steps), the time is split by launch
    time into the prompt pass (before the first replay), the decoding steps (through the last
    replay) and what follows the last replay.
    """
    events = trace.get("traceEvents", [])
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    launches = {
        e["args"]["correlation"]: e
        for e in events
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})
    }
    frames = [e for e in events if e.get("cat") == "python_function"]
    if not kernels or not frames:
        return "(no device kernels or Python frames in the profile)"
    threads: dict[tuple[Any, Any], int] = {}
    for e in frames:
        threads[(e["pid"], e["tid"])] = threads.get((e["pid"], e["tid"]), 0) + 1
    main = max(threads, key=lambda t: threads[t])
    frames = sorted((e for e in frames if (e["pid"], e["tid"]) == main), key=lambda e: (e["ts"], -e["dur"]))
    replays = sorted(e["ts"] for e in events if e.get("name") == "cudaGraphLaunch")
    queries = []
    for kernel in kernels:
        launch = launches.get(kernel.get("args", {}).get("correlation"))
        if launch is not None:
            queries.append((launch["ts"] + launch["dur"] / 2, launch["ts"], kernel["dur"]))
    queries.sort()
    phases = ("prompt pass", "decoding steps", "after the last step") if replays else ("run",)
    totals: dict[str, list[float]] = {}
    active: list[tuple[float, int]] = []
    index = 0
    for when, launched, duration in queries:
        while index < len(frames) and frames[index]["ts"] <= when:
            frame = frames[index]
            heapq.heappush(active, (frame["ts"] + frame["dur"], index))
            index += 1
        while active and active[0][0] < when:
            heapq.heappop(active)
        stack = sorted((frames[i] for _, i in active), key=lambda e: (e["ts"], -e["dur"]))
        where = "not CoreVital"
        mine = [i for i, e in enumerate(stack) if "corevital/" in e["name"]]
        if mine:
            below = stack[mine[-1] + 1 :]
            model = any(marker in e["name"] for e in below for marker in _MODEL_FRAMES)
            other = any(".py(" in e["name"] and "torch/" not in e["name"] for e in below)
            where = stack[mine[-1]]["name"] + (" > transformers" if other else "")
            where = "the model (inside CoreVital's wrapper)" if model else where
        phase = 0 if not replays or launched < replays[0] else 1 if launched <= replays[-1] else 2
        totals.setdefault(where, [0.0] * len(phases))[phase] += duration
    header = " | ".join(f"{p} ms" for p in phases)
    lines = [f"| function | {header} |", "|---" * (len(phases) + 1) + "|"]
    sums = [sum(v[i] for v in totals.values()) for i in range(len(phases))]
    lines.append("| all | " + " | ".join(f"{x / 1000:.1f}" for x in sums) + " |")
    for where in sorted(totals, key=lambda w: -sum(totals[w]))[:rows]:
        lines.append(f"| {where} | " + " | ".join(f"{x / 1000:.2f}" for x in totals[where]) + " |")
    return "\n".join(lines)


def table(rows: list[Row]) -> str:
    lines = [
        "| case | mode | median s | ratio | paired ratio | 95 % interval | peak extra MiB | peak extra % "
        "| build ms/report | build % | JSON KiB | zlib KiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(x: float | None, fmt: str) -> str:
        return "—" if x is None else format(x, fmt)

    for r in rows:
        interval = "—" if r.paired_interval is None else "{:.3f}–{:.3f}".format(*r.paired_interval)
        lines.append(
            f"| {r.case} | {r.mode} | {r.seconds:.3f} | {r.ratio:.3f} | {r.paired_ratio:.3f} | {interval} | "
            f"{f(r.peak_extra_mib, '.0f')} | {f(r.peak_extra_pct, '.2f')} | "
            f"{f(r.build_ms, '.0f')} | {f(r.build_pct, '.1f')} | {f(r.json_kib, '.0f')} | "
            f"{f(r.zlib_kib, '.0f')} |"
        )
    return "\n".join(lines)


def models(args: argparse.Namespace) -> Iterator[tuple[str, LoadedModel, bool]]:
    """(label, loaded model, has a real tokenizer) for each model the arguments name, loaded in turn."""
    if args.shape and args.quantize:
        # bitsandbytes quantizes while loading: the random model is saved once, then loaded per method
        with tempfile.TemporaryDirectory() as root:
            built = build_random(args.shape, args.device, getattr(torch, args.dtype))
            built.model.save_pretrained(root)
            built.tokenizer.save_pretrained(root)
            del built
            gc.collect()
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            for method in args.quantize.split(","):
                spec = ModelSpec(model=root, device=args.device, dtype=args.dtype, quantize=method)
                loaded = load_model(spec)
                loaded.model.generation_config.eos_token_id = None
                yield f"{args.shape} {method}", loaded, False
                del loaded
                gc.collect()
    elif args.shape:
        yield args.shape, build_random(args.shape, args.device, getattr(torch, args.dtype)), False
    elif args.tiny:
        from tests.support.tiny_models import ARCHITECTURES, save_tiny_model

        archs = ARCHITECTURES if args.tiny == "all" else tuple(args.tiny.split(","))
        with tempfile.TemporaryDirectory() as root:
            for arch in archs:
                path = save_tiny_model(arch, Path(root) / arch, seed=0)
                yield f"tiny-{arch}", load_model(ModelSpec(model=str(path), device=args.device)), True
    else:
        name = "default" if args.model in (None, "smollm2", "default") else args.model
        loaded = load_model(ModelSpec(model=name, device=args.device, dtype=args.dtype))
        yield ("smollm2" if name == "default" else name), loaded, True


def ints(text: str) -> list[int]:  # noqa: D103
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a model CoreVital can load ('smollm2' = the embedded default)")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="a random-weight model of this shape")
    parser.add_argument(
        "--tiny",
        help="the test suite's tiny random-weight models of these architectures, comma-separated "
        "('all': every one), saved and loaded like a local model directory",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--cases", default="64:50", help="prompt:new token pairs, e.g. 64:50,512:200")
    parser.add_argument("--batch", default="1")
    parser.add_argument(
        "--modes",
        default="full,summary,on_risk,full-no-prompt",
        help=f"capture modes ({', '.join(MODES)}); a mode with {SIZED!r} appended sizes its budgets from the "
        f"model alone, as on a device whose free memory is not known; with {WRITTEN!r} or {COMPILED!r}, "
        f"its reductions run as written or compiled; with {ONE_STREAM!r}, the prompt telemetry is computed "
        f"on the model's CUDA stream, not a stream of its own; with {HOOKS!r}, the layers' hidden states "
        f"come through transformers' hooks instead of CoreVital's wrappers; {AGAIN!r}: plain generate() "
        "again, timed as a mode (an A/A control: the ratio two identical runners read)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="time runs by the wall clock or by this process's CPU time (cpu: a CPU run with --threads 1 "
        "on a machine shared with other work)",
    )
    parser.add_argument(
        "--cache", default="auto", choices=["auto", "dynamic", "static"], help="generate()'s key/value cache"
    )
    parser.add_argument(
        "--compile-on-cpu",
        action="store_true",
        help="with --cache static on the CPU: generate() compiles the decoding step as it does on an "
        "accelerator (inductor, no CUDA graphs), to measure the compiled path's host cost without a GPU",
    )
    parser.add_argument(
        "--quantize",
        help="with --shape: the random model saved and loaded quantized by bitsandbytes, once per method "
        "of this comma-separated list (4bit, 8bit; CUDA)",
    )
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave the model's objects to the cyclic GC (corevital's commands freeze them once loaded)",
    )
    parser.add_argument(
        "--profile",
        help="profile one run of each of these modes (or 'plain'), comma-separated: torch.profiler; "
        "'py:MODE' for cProfile",
    )
    parser.add_argument(
        "--trace-dir",
        type=Path,
        help="with --profile: write each torch.profiler run's timeline there (Chrome trace, gzip)",
    )
    parser.add_argument(
        "--phases",
        type=int,
        default=0,
        metavar="N",
        help="after the timed runs, N more runs of each mode stamping each step's end: the median "
        "decoding step and the time outside the steps, against plain",
    )
    parser.add_argument(
        "--noise-gate",
        type=float,
        default=0.0,
        metavar="PCT",
        help=f"after each case's warm-up, time plain {GATE_RUNS} times and stop (exit status 3, nothing "
        "measured) if those runs spread by more than PCT %% of their median: on a busy host the budgets "
        "cannot be resolved (0, the default: no check)",
    )
    parser.add_argument(
        "--gate-tries",
        type=int,
        default=1,
        metavar="N",
        help=f"with --noise-gate, check the host up to N times, {GATE_WAIT_S:g} s apart, before stopping "
        "(a host whose load comes and goes; default 1)",
    )
    parser.add_argument(
        "--compile-cache",
        type=Path,
        metavar="DIR",
        help="torch's compile caches in DIR: loaded before the first run when DIR holds them, else "
        "written there after each case's warm-up (generate()'s compiled graphs, for another machine)",
    )
    args = parser.parse_args()
    if args.gate_tries < 1:
        parser.error(f"--gate-tries must be at least 1, got {args.gate_tries}")
    after_warmup = None
    if args.compile_cache is not None and not load_compile_cache(args.compile_cache):
        after_warmup = partial(save_compile_cache, args.compile_cache, [])
    if args.cache == "static":
        # generate() compiles the decoding step for each shape (batch, cache length) and each way
        # it is observed (plain, full, summary): more graphs than dynamo's default limit of 8.
        torch._dynamo.config.recompile_limit = 64
        torch._dynamo.config.accumulated_recompile_limit = 512
    if args.threads:
        torch.set_num_threads(args.threads)
    # which tree's corevital runs (bench/ab_trees.sh runs this bench on other commits' sources)
    print(f"# corevital from {Path(observer_module.__file__).parents[2]}", flush=True)
    rows: list[Row] = []
    for label, loaded, real in models(args):
        if args.compile_on_cpu:
            from transformers.generation.configuration_utils import CompileConfig

            config = CompileConfig(fullgraph=True, mode=None)  # type: ignore[arg-type]  # inductor default: no CUDA graphs
            config._compile_all_devices = True  # type: ignore[assignment]  # transformers: accelerators only
            loaded.model.generation_config.compile_config = config
        if not args.no_gc_freeze:
            settle_loaded_model()  # as `corevital run` does once its model is loaded
        device_name = torch.cuda.get_device_name(loaded.device) if loaded.device.type == "cuda" else "cpu"
        print(f"# {label} on {device_name}, {args.dtype}, torch {torch.__version__}", flush=True)
        for batch in ints(args.batch):
            for pair in args.cases.split(","):
                p, n = (int(x) for x in pair.split(":"))
                case = f"{label} {p}->{n} b{batch}"
                prompts = prompts_for(loaded, p, batch, real)
                modes = args.modes.split(",")
                host = host_line()
                print(f"# {case} host {host}", flush=True)
                found = run_case(
                    loaded,
                    prompts,
                    n,
                    modes,
                    args.repeats,
                    args.warmup,
                    case,
                    args.profile,
                    args.cache,
                    time.process_time if args.clock == "cpu" else time.perf_counter,
                    args.trace_dir,
                    args.phases,
                    after_warmup,
                    args.noise_gate,
                    args.gate_tries,
                )
                for row in found:
                    row.host = host
                rows.extend(found)
                print(table([r for r in rows if r.case == case]), flush=True)
                if args.json:  # after every case: a run cut short keeps the cases it finished
                    Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
