"""Host instructions per decoding step, counted by valgrind's callgrind: plain ``generate()`` against
observed generations, with a precision no timer has on a shared host.

A dynamic-cache step at batch 1 on a GPU is bound by the host (docs/performance.md, "The dynamic
cache"): what the capture adds to it is host work, a few hundred microseconds of a 20 ms step, which
a device host's noise from run to run often exceeds. Counted instructions do not depend on the
host's load. This bench runs a random Llama of a host-bound shape (:mod:`shapes`: by default
``llama3-8b-thin``, Llama-3-8B's 32 layers and 32/8 heads at hidden size 64, where a step's cost is
dispatch and Python, not arithmetic) on the CPU, one thread, under callgrind, ``PYTHONHASHSEED=0``,
and counts the instructions of each part of one generation per mode after ``--warmup`` uncounted
ones:

- the first step: from the call (tokenizing included) to the end of the prefill's step;
- each decoding step: from the end of one step to the end of the next (generate()'s stopping
  criteria: a criterion of the bench's in plain runs, the capture's progress callback in observed
  ones); the window reductions fall in the steps that launch them;
- the end: from the last step's end to the call's return (the capture's reductions moved to the
  host and assembled; no report is built).

The table gives each part in millions of instructions and what each mode adds to plain's. The
operators' arithmetic runs on the host too (little at this shape), where a GPU only launches them;
CoreVital's Python and the operators' dispatch count the same on both.

    .venv/bin/python bench/host_instructions.py [--modes summary,full] [--new-tokens 50]

It runs itself under ``valgrind --tool=callgrind --instr-atstart=no`` (valgrind and a C compiler
are needed: the client requests that start, dump and stop the count are C macros, built into a
small shared library in a temporary folder). Three modes of 50 new tokens take some ten minutes on
this project's CPU; runs of several trees (bench/ab_trees.sh prepare) may run side by side, since
a count does not depend on what else runs.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(1, str(REPO))

from shapes import SHAPES  # noqa: E402

HELPER = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
"""


def build_helper(folder: Path) -> Path:
    """The client requests as a shared library in ``folder``."""
    source, library = folder / "cg.c", folder / "libcg.so"
    source.write_text(HELPER)
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library


class Counter:
    """One generation counted in parts: from :meth:`begin` to the first step's end (the prefill), from
    each step's end to the next's (the decoding steps), from the last step's end to :meth:`end`."""

    def __init__(self, library: Path) -> None:
        self.lib = ctypes.CDLL(str(library))
        self.lib.cg_dump.argtypes = [ctypes.c_char_p]
        self.label = b""
        self.ends = 0

    def begin(self, label: str) -> None:
        self.label, self.ends = label.encode(), 0
        self.lib.cg_start()
        self.lib.cg_zero()

    def step_end(self) -> None:
        self.ends += 1
        self.lib.cg_dump(self.label + b" step %d" % self.ends)

    def end(self) -> None:
        self.lib.cg_dump(self.label + b" end")
        self.lib.cg_stop()
        self.label, self.ends = b"", 0


@dataclass
class Counts:
    """One counted generation's instructions: its first step (from the call), each later step, and
    its end (from the last step's end to the call's return)."""

    first: int
    steps: list[int]
    end: int

    @property
    def total(self) -> int:
        return self.first + sum(self.steps) + self.end


def read_counts(folder: Path, modes: list[str]) -> dict[str, Counts]:
    """Plain's and each of ``modes``' counts, from the dumps callgrind wrote in ``folder`` (each
    names its part: "MODE step N" or "MODE end")."""
    found: dict[str, dict[str, int]] = {}
    for path in folder.glob("callgrind.out*"):
        trigger, total = "", None
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("desc: Trigger: Client Request: "):
                trigger = line.removeprefix("desc: Trigger: Client Request: ")
            elif line.startswith("summary:") or (line.startswith("totals:") and total is None):
                total = int(line.split()[1])  # the dump's own total ("totals:" only where none)
        if trigger and total is not None:
            mode, _, part = trigger.rpartition(" step " if " step " in trigger else " ")
            found.setdefault(mode, {})[part] = total
    counts = {}
    for mode in ("plain", *modes):
        parts = found.get(mode)
        if not parts or "end" not in parts or "1" not in parts:
            raise SystemExit(f"host_instructions.py: no complete count of {mode} in {folder}")
        steps = sorted(int(part) for part in parts if part != "end")
        counts[mode] = Counts(parts["1"], [parts[str(step)] for step in steps[1:]], parts["end"])
    return counts


def counted(args: argparse.Namespace, library: Path) -> None:
    """Inside valgrind: the model, the warm-up runs, then one counted generation per mode."""
    import torch
    from overhead import MODES, cpu_observed, plain_generate_kwargs
    from transformers import StoppingCriteria, StoppingCriteriaList

    from corevital.config import load_settings
    from corevital.pipeline import Pipeline

    counter = Counter(library)
    loaded, prompts, base = cpu_observed(args.shape, args.new_tokens)
    tok = loaded.tokenizer

    class StepEnds(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
            counter.step_end()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)  # type: ignore[return-value]

    def plain(count: bool) -> None:
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        kwargs = plain_generate_kwargs(args.new_tokens, tok.pad_token_id)
        if count:
            kwargs["stopping_criteria"] = StoppingCriteriaList([StepEnds()])
        with torch.no_grad():
            loaded.model.generate(**batch, **kwargs)

    def on_progress(_offset: int, _batch: int, steps_done: int, _host: Any) -> None:
        if steps_done > counter.ends:  # not the call after the generation, which repeats the last
            counter.step_end()

    def capture(pipeline: Pipeline, count: bool) -> None:
        pipeline.capture(prompts, progress=on_progress if count else None)

    runners: dict[str, Callable[[bool], None]] = {"plain": plain}
    for mode in args.modes.split(","):
        pipeline = Pipeline(load_settings({**base, **MODES[mode]}, environ={}))
        pipeline.use_model(loaded)
        runners[mode] = partial(capture, pipeline)
    for _ in range(args.warmup):
        for run in runners.values():
            run(False)
    for label, run in runners.items():
        gc.collect()
        counter.begin(label)
        run(True)
        counter.end()


def table(counts: dict[str, Counts]) -> str:
    """Millions of instructions per part, and what each mode adds to plain's."""
    plain = counts["plain"]
    plain_median = statistics.median(plain.steps)

    def cell(value: float, base: float) -> str:
        return f"{value / 1e6:.3f} | {(value - base) / 1e6:+.3f}"

    lines = [
        "| mode | first step | extra | median decoding step | extra | ratio | decoding steps | extra "
        "| end | extra | total | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, part in counts.items():
        median = statistics.median(part.steps)
        lines.append(
            f"| {mode} | {cell(part.first, plain.first)} | {cell(median, plain_median)} | "
            f"{median / plain_median:.3f} | "
            f"{cell(sum(part.steps), sum(plain.steps))} | {cell(part.end, plain.end)} | "
            f"{part.total / 1e6:.1f} | {part.total / plain.total:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="llama3-8b-thin", choices=sorted(SHAPES))
    parser.add_argument("--modes", default="summary,full")
    parser.add_argument("--new-tokens", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep callgrind's files in this folder")
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)  # set by the outer process
    args = parser.parse_args()
    if args.inside is not None:
        counted(args, args.inside / "libcg.so")
        return
    from overhead import MODES

    unknown = [mode for mode in args.modes.split(",") if mode not in MODES]
    if unknown:
        sys.exit(f"host_instructions.py: unknown mode {unknown[0]!r} (one of {', '.join(MODES)})")
    if args.keep is not None and any(args.keep.glob("callgrind.out*")):
        sys.exit(f"host_instructions.py: {args.keep} holds callgrind files already")
    for tool in ("valgrind", "cc"):
        if shutil.which(tool) is None:
            sys.exit(f"host_instructions.py: needs {tool} (apt-get install -y valgrind gcc)")
    folder = Path(tempfile.mkdtemp(prefix="corevital-cg-")) if args.keep is None else args.keep
    folder.mkdir(parents=True, exist_ok=True)
    build_helper(folder)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={folder}/callgrind.out.%p",
        sys.executable,
        str(Path(__file__).resolve()),
        *sys.argv[1:],
        "--inside",
        str(folder),
    ]
    done = subprocess.run(
        command,
        stdout=sys.stdout,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if done.returncode != 0:
        sys.exit(f"host_instructions.py: the counted run failed:\n{done.stderr[-3000:]}")
    counts = read_counts(folder, args.modes.split(","))
    print(f"# {args.shape}, {args.new_tokens} new tokens: millions of host instructions (callgrind)")
    print(table(counts))
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
