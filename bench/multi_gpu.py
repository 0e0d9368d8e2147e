"""A random-weight model sharded over several devices: plain generate() against full and summary capture.

Two layouts (docs/multi-gpu.md):

- ``--layout device-map``: accelerate's pipeline split (``device_map="auto"``) over every visible GPU
  (on a machine without one, the CPU: the same code path, for a tiny check). The weights are drawn
  straight onto the device each layer is placed on (no copy of the whole model in host memory).
- ``--layout tp``: tensor parallelism, run under ``torchrun --nproc-per-node N``: transformers'
  ``tp_plan="auto"`` (NCCL on GPUs, gloo on CPUs). The model is loaded from a directory holding its
  config and one small tensor, so transformers initialises every other (sharded) weight itself;
  each rank times the same runs, rank 0 prints and writes the JSON.

For each case (prompt:new tokens) and batch size, plain generation, full and summary capture run
round-robin (warm-up, then ``--repeats``) in the same process; the table gives median seconds, ratio
to plain, paired ratio (median over rounds of the run's time over plain's in the same round) and the
peak memory of every GPU during one run of each (``--json`` writes the rows).

    python bench/multi_gpu.py --shape tiny --layout device-map --cases 16:4 --batch 1,2 --repeats 1
    torchrun --nproc-per-node 2 bench/multi_gpu.py --shape tiny --layout tp --cases 16:4 --repeats 1
    bash bench/multi_gpu.sh OUTDIR   # the 70B-shaped acceptance runs on a machine with several GPUs
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(1, str(Path(__file__).resolve().parent))
sys.path.insert(2, str(REPO))  # tests.support.tiny_models, for the tiny shape

from overhead import MODES, capture_settings, plain_generate_kwargs, prompts_for, word_tokenizer  # noqa: E402
from shapes import SHAPES  # noqa: E402

from corevital.capture.loading import LoadedModel, loaded_from_existing  # noqa: E402
from corevital.config import load_settings  # noqa: E402
from corevital.pipeline import Pipeline  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class Row:
    layout: str
    case: str
    batch: int
    mode: str
    seconds: float
    ratio: float
    paired_ratio: float
    peak_gib: list[float]  # per GPU, during one run of this mode (empty on CPUs)


def _config(shape: str) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPES[shape], bos_token_id=1, eos_token_id=None, pad_token_id=0)


def build_device_map(shape: str, dtype: torch.dtype) -> LoadedModel:
    """The model on the meta device, placed by accelerate over the GPUs, each weight drawn where it lands."""
    from accelerate import dispatch_model, infer_auto_device_map, init_empty_weights  # type: ignore[import-untyped]
    from accelerate.utils import set_module_tensor_to_device  # type: ignore[import-untyped]
    from transformers import LlamaForCausalLM

    config = _config(shape)
    with init_empty_weights():
        model = LlamaForCausalLM(config).to(dtype)  # type: ignore[arg-type]  # transformers' wrapped .to
    gpus = torch.cuda.device_count()
    if gpus:
        free = {i: int(torch.cuda.mem_get_info(i)[0] * 0.85) for i in range(gpus)}
        device_map = infer_auto_device_map(
            model, max_memory=free, no_split_module_classes=["LlamaDecoderLayer"], dtype=dtype
        )
    else:
        device_map = {"": "cpu"}
    generator = torch.Generator().manual_seed(0)
    for name, param in list(model.named_parameters()):
        where = _placement(device_map, name)
        value = torch.empty(param.shape, dtype=dtype, device=where)
        if where == "cpu":
            value.normal_(0.0, 0.02, generator=generator)
        else:
            value.normal_(0.0, 0.02)
        set_module_tensor_to_device(model, name, where, value=value)
    for name, buffer in list(model.named_buffers()):  # rotary frequencies: recomputed on the device
        set_module_tensor_to_device(model, name, _placement(device_map, name), value=buffer.to("cpu"))
    if gpus:
        model = dispatch_model(model, device_map=device_map)
    model.eval()
    model.generation_config.eos_token_id = None
    return loaded_from_existing(model, word_tokenizer(config.vocab_size), name=f"random-{shape}")


def _placement(device_map: dict[str, Any], name: str) -> Any:
    """Where accelerate's map puts parameter ``name`` (the longest module prefix that it names)."""
    best, where = -1, "cpu"
    for module, device in device_map.items():
        covers = module == "" or name == module or name.startswith(module + ".")
        if covers and len(module) > best:
            best, where = len(module), device
    return f"cuda:{where}" if isinstance(where, int) else where


def build_tensor_parallel(shape: str, dtype: torch.dtype, scratch: Path) -> LoadedModel:
    """The model sharded over the torchrun processes by transformers' tp_plan="auto".

    The directory holds the config and the final norm's weight only: transformers initialises every
    other weight, each rank its own shard.
    """
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, DistributedConfig

    config = _config(shape)
    config.torch_dtype = dtype
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        config.save_pretrained(scratch)
        save_file(
            {"model.norm.weight": torch.ones(config.hidden_size, dtype=dtype)}, scratch / "model.safetensors"
        )
    _barrier_on_file(scratch / "model.safetensors")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        scratch, distributed_config=DistributedConfig(tp_plan="auto"), dtype=dtype
    )
    model.eval()  # type: ignore[no-untyped-call]
    model.generation_config.eos_token_id = None
    return loaded_from_existing(model, word_tokenizer(config.vocab_size), name=f"random-{shape}-tp")


def _barrier_on_file(path: Path, timeout_s: float = 300.0) -> None:
    """Wait for rank 0's file (the process group does not exist before from_pretrained makes it)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.2)
    time.sleep(0.5)  # let rank 0 finish writing


def gpus() -> list[int]:
    """The GPUs this process uses: its own under torchrun (tensor parallelism), else every visible one."""
    if not torch.cuda.is_available():
        return []
    if "LOCAL_RANK" in os.environ:
        return [torch.cuda.current_device()]
    return list(range(torch.cuda.device_count()))


def sync() -> None:
    for i in gpus():
        torch.cuda.synchronize(i)


def peaks_gib() -> list[float]:
    """Peak memory of every GPU in use; under torchrun each rank's own GPU, gathered in rank order."""
    own = [torch.cuda.max_memory_allocated(i) / 2**30 for i in gpus()]
    import torch.distributed as dist

    if not dist.is_initialized():
        return own
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, own)
    return [p for rank in every for p in rank]


def reset_peaks() -> None:
    gc.collect()
    for i in gpus():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(i)


def run_case(
    loaded: LoadedModel, layout: str, tokens: int, new_tokens: int, batch: int, args: argparse.Namespace
) -> list[Row]:
    """Plain, full and summary round-robin; medians, ratios and per-GPU peaks."""
    tok = loaded.tokenizer
    prompts = prompts_for(loaded, tokens, batch, real=False)
    device = next(loaded.model.parameters()).device
    inputs = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    base = capture_settings("cuda" if torch.cuda.is_available() else "cpu", new_tokens, batch)
    base["out"] = str(Path(tempfile.gettempdir()) / "corevital-bench-multi-gpu")
    modes = args.modes.split(",")
    pipelines = {}
    for mode in modes:
        pipeline = Pipeline(load_settings({**base, **MODES[mode]}, environ={}))
        pipeline.use_model(loaded)
        pipelines[mode] = pipeline

    def plain() -> None:
        with torch.no_grad():
            loaded.model.generate(**inputs, **plain_generate_kwargs(new_tokens, tok.pad_token_id))

    def capture(mode: str) -> Callable[[], None]:
        def run() -> None:
            captured = pipelines[mode].capture(prompts)
            assert all(seq.num_steps == new_tokens for seq in captured.sequences), "a run stopped early"

        return run

    runners: dict[str, Callable[[], None]] = {"plain": plain, **{mode: capture(mode) for mode in modes}}
    for _ in range(args.warmup):
        for fn in runners.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync()
            t0 = time.perf_counter()
            runners[name]()
            sync()
            times[name].append(time.perf_counter() - t0)
    peaks = {}
    for name, fn in runners.items():
        reset_peaks()
        fn()
        peaks[name] = peaks_gib()
    plain_s = statistics.median(times["plain"])
    case = f"{tokens}->{new_tokens}"
    rows = [Row(layout, case, batch, "plain", plain_s, 1.0, 1.0, peaks["plain"])]
    for mode in modes:
        seconds = statistics.median(times[mode])
        paired = statistics.median(m / p for m, p in zip(times[mode], times["plain"], strict=True))
        rows.append(Row(layout, case, batch, mode, seconds, seconds / plain_s, paired, peaks[mode]))
    return rows


def _paths(value: Any, prefix: str = "") -> set[str]:
    """Every key path of a report's JSON, list positions left out: its structure, not its sizes."""
    if isinstance(value, dict):
        return {prefix} | {p for k, v in value.items() for p in _paths(v, f"{prefix}.{k}")}
    if isinstance(value, list):
        return {prefix} | {p for v in value for p in _paths(v, f"{prefix}[]")}
    return {prefix}


def structure_differences(loaded: LoadedModel) -> list[str]:
    """Key paths in which a full-capture report of ``loaded`` and one of a tiny model on one device differ."""
    reference = build_device_map("tiny", torch.float32)
    found = []
    for model in (loaded, reference):
        pipeline = Pipeline(
            load_settings(
                {
                    "capture": "full",
                    "max_new_tokens": 4,
                    "temperature": 0.0,
                    "ignore_eos": True,
                    "chat_template": "off",
                },
                environ={},
            )
        )
        pipeline.use_model(model)
        prompts = prompts_for(model, 16, 1, real=False)
        found.append(_paths(pipeline.build(pipeline.capture(prompts))[0].model_dump(mode="json")))
    return sorted(found[0] ^ found[1])


def table(rows: list[Row]) -> str:
    lines = [
        "| layout | case | batch | mode | median s | ratio | paired ratio | peak GiB per GPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        peaks = " / ".join(f"{p:.1f}" for p in r.peak_gib) or "-"
        lines.append(
            f"| {r.layout} | {r.case} | {r.batch} | {r.mode} | {r.seconds:.3f} | {r.ratio:.3f} | "
            f"{r.paired_ratio:.3f} | {peaks} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--layout", choices=["device-map", "tp"], default="device-map")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--cases", default="64:50,512:200", help="prompt:new token pairs")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--modes", default="full,summary")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this file (rank 0)")
    args = parser.parse_args()
    dtype = DTYPES[args.dtype]
    rank = int(os.environ.get("RANK", "0"))
    if args.layout == "tp":
        if int(os.environ.get("WORLD_SIZE", "1")) < 2:
            parser.error("--layout tp runs under torchrun --nproc-per-node N (N >= 2)")
        scratch = (
            Path(tempfile.gettempdir()) / f"corevital-tp-{args.shape}-{os.environ.get('MASTER_PORT', '0')}"
        )
        scratch.mkdir(exist_ok=True)
        loaded = build_tensor_parallel(args.shape, dtype, scratch)
    else:
        loaded = build_device_map(args.shape, dtype)
    if rank == 0:
        placed = sorted({str(p.device) for p in loaded.model.parameters()})
        print(f"# {args.shape} {args.dtype} {args.layout}: parameters on {', '.join(placed)}", flush=True)
    rows: list[Row] = []
    for case in args.cases.split(","):
        tokens, new_tokens = (int(x) for x in case.split(":"))
        for batch in (int(b) for b in args.batch.split(",")):
            found = run_case(loaded, args.layout, tokens, new_tokens, batch, args)
            rows.extend(found)
            if rank == 0:
                print(table(found).split("\n", 2)[2], flush=True)
    differences = structure_differences(loaded)  # every rank: the sharded capture is collective
    if rank == 0:
        print(table(rows))
        print(f"# report structure against a tiny model on one device: {differences or 'identical'}")
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
