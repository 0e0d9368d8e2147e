"""Start-up of ``corevital run`` on the default model: a cold GGUF cache, then warm ones, in fresh processes.

Every run is a new ``python -m corevital run`` process (so torch and transformers are imported
each time, as a user's command does), with ``--perf summary`` and a JSON report whose
``extensions.performance`` gives the phases (imports, model_load, model_inference, ...). The
first run finds an empty cache directory (``COREVITAL_CACHE_DIR``, a temporary directory unless
``--cache-dir`` is given) and converts the GGUF file into it; the ``--warm`` runs after it read the
converted copy. Prints each run (wall time, phases, the process's CPU time) and the medians of the
warm runs, with the commit, the machine, and its 1-minute load average before each run and during
it (sampled every second; on a shared machine the load changes the wall times, and the CPU time
less so). ``imports`` is what ``--perf`` records as ``setup_logging`` and ``imports`` together
(transformers is first imported while logging is configured).

    python bench/startup.py                       # 1 cold + 5 warm runs of 48 tokens
    python bench/startup.py --warm 3 --max-new-tokens 8
    python bench/startup.py --cache-dir ~/.cache/corevital --warm 5   # the user's own cache: warm only
    python bench/startup.py --cache-dir ~/.cache/corevital --against 6e01785 --warm 4

``--against REV`` compares with another commit in the same minutes (on a shared machine the load
changes from one minute to the next): REV's ``src/`` is exported with ``git archive`` into a
temporary directory, and each round runs this checkout, then REV (``PYTHONPATH`` pointing at the
export), warm; the medians of both, and their CPU times, are printed side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROMPT = "Explain why the sky is blue."
PHASES = ("imports", "model_load", "model_inference", "report_build")
_FOLDED = {"setup_logging": "imports"}  # --perf phases counted under another name here


@dataclass(frozen=True)
class Run:
    label: str
    wall_s: float  # the whole process, from start to exit
    phases_ms: dict[str, float]
    cpu_s: float  # user + system CPU time of the process (less sensitive to other work than wall time)
    load_before: float  # 1-minute load average when the run started
    load_during: float  # mean of the 1-minute load average sampled every second while it ran

    def line(self) -> str:
        phases = "  ".join(f"{name} {self.phases_ms.get(name, 0.0) / 1000:6.2f} s" for name in PHASES)
        return (
            f"{self.label:5s} total {self.wall_s:6.2f} s  {phases}  "
            f"(CPU {self.cpu_s:6.2f} s, load {self.load_before:.2f} before, {self.load_during:.2f} during)"
        )


class LoadSampler:
    """The 1-minute load average, sampled every second on a thread while a run lasts."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(1.0):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else os.getloadavg()[0]


def one_run(label: str, cache: Path, out: Path, max_new_tokens: int, *, source: Path | None = None) -> Run:
    """One ``corevital run`` process; ``source``: a ``src/`` directory to import CoreVital from."""
    env = {**os.environ, "COREVITAL_CACHE_DIR": str(cache)}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    command = [
        sys.executable,
        "-m",
        "corevital",
        "run",
        "--prompt",
        PROMPT,
        "--max_new_tokens",
        str(max_new_tokens),
        "--temperature",
        "0",
        "--device",
        "cpu",
        "--perf",
        "summary",
        "--sink",
        "local",
        "--out",
        str(out),
        "--quiet",
    ]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with LoadSampler() as sampler:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"run {label} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    (report_file,) = out.glob("trace_*.json")
    performance = json.loads(report_file.read_text(encoding="utf-8"))["extensions"]["performance"]
    phases: dict[str, float] = {}
    for op in performance["parent_operations"]:
        name = _FOLDED.get(op["name"], op["name"])
        phases[name] = phases.get(name, 0.0) + float(op["ms"])
    return Run(label, wall, phases, cpu, load, sampler.mean)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--warm", type=int, default=5, help="Runs after the cold one (default 5).")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--cache-dir", help="Cache directory to use (default: a new temporary one, cold).")
    parser.add_argument("--against", metavar="REV", help="Also run commit REV, alternating (warm runs).")
    args = parser.parse_args()
    print(f"commit {commit()}; {machine()}; {args.max_new_tokens} tokens, greedy, --device cpu")
    if args.against:
        compare(args.against, args.warm, args.max_new_tokens, args.cache_dir)
        return
    with tempfile.TemporaryDirectory(prefix="corevital-startup-") as tmp:
        cache = Path(args.cache_dir) if args.cache_dir else Path(tmp) / "cache"
        runs: list[Run] = []
        cold = 0 if args.cache_dir else 1  # a given cache directory is taken as warm already
        for index in range(cold + args.warm):
            label = "cold" if index < cold else f"warm{index + 1 - cold}"
            out = Path(tmp) / f"out{index}"
            runs.append(one_run(label, cache, out, args.max_new_tokens))
            print(runs[-1].line(), flush=True)
    warm = [run for run in runs if run.label.startswith("warm")]
    if warm:
        print(f"median of {len(warm)} warm runs: {medians(warm)}")


def medians(runs: list[Run]) -> str:
    """The median wall time, phases and CPU time of ``runs``, with the load range, in one line."""
    phases_ms = {name: statistics.median(run.phases_ms.get(name, 0.0) for run in runs) for name in PHASES}
    total = statistics.median(run.wall_s for run in runs)
    cpu = statistics.median(run.cpu_s for run in runs)
    phases = "  ".join(f"{name} {ms / 1000:.2f} s" for name, ms in phases_ms.items())
    loads = f"load {min(r.load_before for r in runs):.2f}-{max(r.load_during for r in runs):.2f}"
    return f"total {total:.2f} s  {phases}  (CPU {cpu:.2f} s, {loads})"


def compare(rev: str, rounds: int, max_new_tokens: int, cache_dir: str | None) -> None:
    """``rounds`` rounds of this checkout then ``rev``, warm, and both medians."""
    this = commit()
    with tempfile.TemporaryDirectory(prefix="corevital-startup-") as tmp:
        export = Path(tmp) / "against"
        export.mkdir()
        archive = subprocess.run(["git", "archive", rev, "src"], capture_output=True, timeout=120, check=True)
        subprocess.run(["tar", "-x", "-C", str(export)], input=archive.stdout, timeout=120, check=True)
        cache = Path(cache_dir) if cache_dir else Path(tmp) / "cache"
        sources = (("this", None), (rev, export / "src"))
        for label, source in sources:  # each commit's cache entry is made (or found) here, untimed
            one_run("warm-up", cache, Path(tmp) / f"warm-up-{label}", 1, source=source)
        runs: dict[str, list[Run]] = {"this": [], rev: []}
        for index in range(rounds):
            for label, source in sources:
                out = Path(tmp) / f"out-{index}-{len(runs[label])}-{label}"
                runs[label].append(one_run(label[:12], cache, out, max_new_tokens, source=source))
                print(runs[label][-1].line(), flush=True)
    for label, done in runs.items():
        print(f"{label} ({this if label == 'this' else rev}), median of {len(done)}: {medians(done)}")


if __name__ == "__main__":
    main()
