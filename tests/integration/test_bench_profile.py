"""bench/overhead.py: device time by CoreVital function from a GPU profile, the phase table, the A/A
control, the compile cache, the paired ratios' intervals and the host each case names."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench_module(name: str) -> Any:
    """A module of bench/, imported as its scripts import each other (bench/ on the path)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def overhead() -> Any:
    return _bench_module("overhead")


def _frame(name: str, ts: float, dur: float) -> dict[str, Any]:
    return {"cat": "python_function", "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": 1}


def _kernel(
    correlation: int, launched: float, dur: float, *, name: str = "cudaLaunchKernel"
) -> list[dict[str, Any]]:
    launch = {
        "cat": "cuda_runtime",
        "name": name,
        "ts": launched,
        "dur": 2.0,
        "pid": 1,
        "tid": 1,
        "args": {"correlation": correlation},
    }
    kernel = {
        "cat": "kernel",
        "name": f"k{correlation}",
        "ts": launched + 5,
        "dur": dur * 1000,
        "pid": 0,
        "tid": 7,
        "args": {"correlation": correlation},
    }
    return [launch, kernel]


def test_kernels_are_summed_by_the_innermost_corevital_frame_and_phase(overhead: Any) -> None:
    """A synthetic timeline: the prompt pass (before the first graph replay), two decoding steps and
    the end; kernels launched by the model under CoreVital's wrapper, by CoreVital's own functions,
    by transformers' code a CoreVital frame called, and outside CoreVital altogether."""
    events = [
        _frame("corevital/capture/runner.py(206): generate", 0, 1000),
        _frame("transformers/generation/utils.py(2581): generate", 1, 998),
        _frame("corevital/capture/observer.py(437): observed", 10, 200),  # the prompt pass
        _frame("nn.Module: LlamaModel_0", 11, 100),
        _frame("corevital/metrics/prompt.py(309): prompt_head_parts", 120, 50),
        _frame("corevital/capture/attention_tap.py(72): _sdpa", 180, 20),
        _frame("transformers/integrations/sdpa_attention.py(94): sdpa_attention_forward", 181, 18),
        _frame("corevital/metrics/logits.py(78): _full_entropy_stats", 500, 30),  # a window, decoding
        _frame("corevital/capture/step_window.py(109): flush", 900, 50),  # after the last replay
    ]
    events += _kernel(1, 20, 100.0)  # the model's prefill
    events += _kernel(2, 130, 40.0)  # prompt telemetry
    events += _kernel(3, 185, 7.0)  # the model's attention, in CoreVital's attention function
    events += _kernel(4, 300, 5.0, name="cudaGraphLaunch")  # a replay: its kernels are generate()'s
    events += _kernel(5, 510, 3.0)
    events += _kernel(6, 700, 5.0, name="cudaGraphLaunch")
    events += _kernel(7, 910, 2.0)
    events += _kernel(8, 990, 1.0)  # generate()'s own work after the last step
    table = overhead.device_time_by_function({"traceEvents": events})
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in table.splitlines()[2:]}
    number = {name: [float(x.strip(" |")) for x in values] for name, values in rows.items()}
    assert number["all"] == [147.0, 13.0, 3.0]  # 100 + 40 + 7; 5 + 3 + 5 (both replays); 2 + 1
    assert number["the model (inside CoreVital's wrapper)"] == [100.0, 0.0, 0.0]
    assert number["corevital/metrics/prompt.py(309): prompt_head_parts"] == [40.0, 0.0, 0.0]
    assert number["corevital/capture/attention_tap.py(72): _sdpa > transformers"] == [7.0, 0.0, 0.0]
    assert number["corevital/metrics/logits.py(78): _full_entropy_stats"] == [0.0, 3.0, 0.0]
    assert number["corevital/capture/step_window.py(109): flush"] == [0.0, 0.0, 2.0]
    assert number["corevital/capture/runner.py(206): generate > transformers"] == [0.0, 10.0, 1.0]


def test_prompt_parts_bench_checks_and_times_both_scorings(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/prompt_parts.py on the CPU: both scorings agree (it asserts so) on a prompt long enough
    for the row choice (P >= 4 * cap) and a short one, and every variant gets a time."""
    sys.path.insert(0, str(BENCH))
    try:
        prompt_parts = importlib.import_module("prompt_parts")
    finally:
        sys.path.remove(str(BENCH))
    import torch

    for shape in ("2x2x256", "1x3x40"):
        prompt_parts._one_shape(shape, torch.device("cpu"), 1)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 * 8  # two shapes, eight variants each
    times = [float(line.rsplit("|", 2)[1]) for line in rows]  # the input's restore is subtracted
    assert all(abs(t) < 1e4 for t in times)


def test_window_parts_bench_checks_and_times_both_reductions(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/window_parts.py on the CPU: the compiled and written window statistics agree (it checks
    so before timing; a NaN pattern or count that differs reads as an infinite difference), and every
    variant gets a time; no device memory column on the CPU."""
    sys.path.insert(0, str(BENCH))
    try:
        window_parts = importlib.import_module("window_parts")
    finally:
        sys.path.remove(str(BENCH))

    difference = window_parts.one_shape("4x3x2x40", torch.device("cpu"), 1, torch.float32)
    assert 0 <= difference < 1e-5
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 4
    assert all(float(line.split("|")[3]) >= 0 and line.split("|")[4].strip() == "" for line in rows)
    # the comparison sees a changed statistic
    logits, visible = window_parts.window_inputs(4, 3, 2, 40, torch.device("cpu"), torch.float32)
    want = window_parts._written(logits, visible)
    shifted = dataclasses.replace(want, entropy_max=want.entropy_max + 1e-3)
    assert window_parts.largest_difference(shifted, want) == pytest.approx(1e-3, rel=1e-3)
    flagged = dataclasses.replace(want, renormalized=~want.renormalized)
    assert window_parts.largest_difference(flagged, want) == float("inf")


def test_phase_table_splits_each_run_and_adds_up_to_its_total(overhead: Any, monkeypatch: Any) -> None:
    """On a fake clock: the first step, the second (the first decoding step), the median step, every
    step after the first (a window's reduction in one step included), the end and the whole run;
    plain and the modes round-robin."""
    now = [0.0]
    monkeypatch.setattr(overhead.time, "perf_counter", lambda: now[0])
    order: list[str] = []

    def run(first: float, steps: list[float], end: float, stamps: list[float]) -> None:
        now[0] += first / 1000
        stamps.append(now[0])
        for step in steps:
            now[0] += step / 1000
            stamps.append(now[0])
        now[0] += end / 1000

    def plain(stamps: list[float]) -> None:
        order.append("plain")
        run(10, [2, 2, 2, 2, 2], 1, stamps)

    def capture(mode: str, stamps: list[float]) -> None:
        order.append(mode)
        run(15, [3, 2, 2, 2, 8], 5, stamps)  # a slower first decoding step; the last reduces a window

    table = overhead.phase_table("c", ["full"], plain, capture, torch.device("cpu"), 2)
    assert order == ["plain", "full", "full", "plain"]
    rows = {line.split(" | ")[1]: line for line in table.splitlines() if line.startswith("| c |")}
    assert (
        rows["plain"] == "| c | plain | 10.0 | +0.0 | 2.0 | +0.0 | 2.000 | 1.000 | 10.0 | +0.0 | 1.0 | +0.0 "
        "| 21.0 | 1.000 |"
    )
    assert (
        rows["full"] == "| c | full | 15.0 | +5.0 | 3.0 | +1.0 | 2.000 | 1.000 | 17.0 | +7.0 | 5.0 | +4.0 "
        "| 37.0 | 1.762 |"
    )


def test_plain_again_times_plain_generate_as_a_mode(
    overhead: Any, tiny_loaded: Any, monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The A/A control: plain generate() timed as one more mode, as often as plain, with no report."""
    loaded = tiny_loaded("llama")
    calls = {"generate": 0}
    real = loaded.model.generate

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls["generate"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "generate", counted)
    prompts = ["t1 t2 t3 t4", "t5 t6 t7 t8"]
    rows = overhead.run_case(
        loaded, prompts, 4, [overhead.AGAIN], 3, 1, "c", None, "auto", overhead.time.perf_counter, None, 2
    )
    # warm-up 1, 3 timed runs (peak memory read in them) and 2 phase runs: 6 each for plain and
    # its control
    assert calls["generate"] == 2 * 6
    assert [row.mode for row in rows] == ["plain", overhead.AGAIN]
    again = rows[1]
    assert again.seconds > 0 and again.ratio > 0 and again.paired_ratio > 0
    assert (again.build_ms, again.json_kib) == (None, None)
    assert f"| c | {overhead.AGAIN} |" in capsys.readouterr().out  # in the phase table


def test_mode_suffixes_size_the_budgets_and_set_the_reductions(
    overhead: Any, tiny_loaded: Any, monkeypatch: Any
) -> None:
    """ ":sized" budgets from the model alone, ":written" and ":compiled" reductions as written or
    compiled, ":one-stream" the prompt's scoring on the model's stream, in any order; a bare mode
    gets the capture's own tuning (None)."""
    parts = overhead.ModeParts
    assert overhead.mode_parts("full") == parts("full", False, None)
    assert (
        overhead.mode_parts("full:sized:written")
        == overhead.mode_parts("full:written:sized")
        == parts("full", True, False)
    )
    assert overhead.mode_parts("summary:compiled") == parts("summary", False, True)
    assert overhead.mode_parts("full:one-stream:written") == parts("full", False, False, one_stream=True)
    loaded = tiny_loaded("llama")
    seen: dict[str, Any] = {}
    real = overhead.Pipeline.capture

    def capture(self: Any, prompts: Any, **kwargs: Any) -> Any:
        name = self.settings.capture if self.settings.prompt_telemetry else "no-prompt"
        seen.setdefault(name, []).append(kwargs["tuning"])
        return real(self, prompts, **kwargs)

    monkeypatch.setattr(overhead.Pipeline, "capture", capture)
    modes = ["full", "summary:written", "on_risk:sized:compiled", "full-no-prompt:one-stream"]
    overhead.run_case(
        loaded, ["t1 t2 t3"], 2, modes, 1, 0, "c", None, "auto", overhead.time.perf_counter, None, 0
    )
    assert set(seen["full"]) == {None}
    assert {(t.compiled_reductions, t.deferred_bytes) for t in seen["summary"]} == {(False, None)}
    assert set(seen["no-prompt"]) == {overhead.Tuning(side_stream=False)}
    sized = overhead.Tuning().resolved(loaded.constants.weight_bytes, None)
    assert {t for t in seen["on_risk"]} == {overhead.replace(sized, compiled_reductions=True)}


def test_hooks_suffix_reads_the_layers_through_transformers_hooks(
    overhead: Any, tiny_loaded: Any, monkeypatch: Any
) -> None:
    """ ":hooks": the observer of that mode has no layer wrappers (transformers' hooks return the
    states, as for a model whose layer sites are not verified); the bare mode has them; both
    reports carry every layer's hidden state."""
    assert overhead.mode_parts("summary:hooks") == overhead.ModeParts("summary", False, None)
    assert overhead.mode_parts("full:hooks:sized") == overhead.ModeParts("full", True, None)
    import corevital.capture.observer as observer_module

    tapped: list[bool] = []
    real = observer_module.StepObserver._keep_step

    def keep_step(self: Any, kwargs: Any, output: Any) -> None:
        tapped.append(self.layer_outputs is not None)
        real(self, kwargs, output)

    monkeypatch.setattr(observer_module.StepObserver, "_keep_step", keep_step)
    found: dict[str, list[bool]] = {}
    real_capture = overhead.Pipeline.capture

    def capture(self: Any, prompts: Any, **kwargs: Any) -> Any:
        tapped.clear()
        run = real_capture(self, prompts, **kwargs)
        assert all(seq.hidden is not None for seq in run.sequences)
        found.setdefault(self.settings.capture, []).extend(tapped)
        return run

    monkeypatch.setattr(overhead.Pipeline, "capture", capture)
    loaded = tiny_loaded("llama")
    overhead.run_case(
        loaded,
        ["t1 t2 t3"],
        2,
        ["summary:hooks", "full"],
        1,
        0,
        "c",
        None,
        "auto",
        overhead.time.perf_counter,
        None,
        0,
    )
    assert set(found["summary"]) == {False} and set(found["full"]) == {True}
    assert getattr(observer_module, "LayerOutputTap") is not None  # noqa: B009  # put back after the runs


_COMPILE_AND_CACHE = """
import sys
from pathlib import Path
import torch
from torch._dynamo.utils import counters
sys.path.insert(0, sys.argv[1])
import overhead
folder = Path(sys.argv[2])
overhead.CACHE_PART_BYTES = int(sys.argv[3])
loaded = overhead.load_compile_cache(folder)
@torch.compile(backend="inductor")
def f(x):
    return torch.softmax(x @ x.T, dim=-1).sum(0) * 3
x = torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64) / 4096
print("value", float(f(x).sum()))
if not loaded:
    overhead.save_compile_cache(folder, [])
print("hits", counters["inductor"]["fxgraph_cache_hit"], "misses", counters["inductor"]["fxgraph_cache_miss"])
"""


@pytest.mark.slow
def test_compiled_graphs_written_in_one_process_are_hits_in_another(tmp_path: Path) -> None:
    """``--compile-cache``: the graphs one process compiled, written in parts of 4 KiB, load in a
    process with an empty inductor cache of its own and compile nothing again (the same value)."""
    folder = tmp_path / "cc"

    def process(inductor_dir: str) -> list[str]:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / inductor_dir)}
        done = subprocess.run(
            [sys.executable, "-c", _COMPILE_AND_CACHE, str(BENCH), str(folder), "4096"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=True,
        )
        return [line for line in done.stdout.splitlines() if line.startswith(("value", "hits"))]

    first = process("first")
    assert first[1] == "hits 0 misses 1"
    parts = sorted(part.name for part in folder.iterdir())
    assert len(parts) > 1 and all(name.startswith("inductor-") and name.endswith(".bin") for name in parts)
    second = process("second")  # a machine that never compiled f: only the parts written above
    assert second[1] == "hits 1 misses 0"
    assert second[0] == first[0]


@pytest.mark.parametrize("n", [6, 7, 9, 15, 25, 40])
def test_the_median_interval_is_scipys_quantile_test_interval(overhead: Any, n: int) -> None:
    """The paired ratio's 95 % interval equals scipy's distribution-free confidence interval of the
    median (``quantile_test``), on ratios of several spreads and sizes."""
    from scipy.stats import quantile_test  # type: ignore[import-untyped]

    rng = np.random.default_rng(n)
    values = list(1.0 + 0.05 * rng.standard_normal(n))
    found = overhead.median_interval(values)
    expected = quantile_test(values, q=float(np.median(values))).confidence_interval(0.95)
    assert found == (expected.low, expected.high)


def test_too_few_rounds_have_no_median_interval(overhead: Any) -> None:
    """Below 6 values even the smallest and largest cover the median less than 95 % of the time."""
    assert overhead.median_interval([1.0, 1.1, 0.9, 1.05, 0.95]) is None
    assert overhead.median_interval([0.9, 1.1, 1.0, 1.2, 0.8, 1.05]) == (0.8, 1.2)


def test_each_case_names_the_host_it_ran_on(tmp_path: Path) -> None:
    """The table's text and every JSON row carry the machine: host name, CPU, load average."""
    out = tmp_path / "rows.json"
    command = [sys.executable, str(BENCH / "overhead.py"), "--tiny", "llama", "--cases", "8:3"]
    command += ["--modes", "summary", "--repeats", "1", "--warmup", "0", "--threads", "1", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    rows = json.loads(out.read_text())
    assert [row["mode"] for row in rows] == ["plain", "summary"]
    host = rows[0]["host"]
    assert host.startswith(f"{platform.node()}: ") and f", {os.cpu_count()} CPUs, " in host
    assert " load average " in host and all(row["host"] == host for row in rows)
    assert f"# tiny-llama 8->3 b1 host {host}\n" in done.stdout


def test_the_noise_gate_stops_a_case_on_a_noisy_host(
    overhead: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Plain's runs spread by (slowest - fastest) / median; past the gate nothing is measured."""
    assert overhead.run_spread([1.0, 1.1, 1.05, 0.9, 1.0]) == pytest.approx(20.0)
    assert overhead.check_host("case", [1.0, 1.02, 1.01, 0.99, 1.0], 5.0)  # 3 %: measured
    assert not overhead.check_host("case", [1.0, 1.3, 1.1, 1.0, 1.05], 5.0)  # 28.6 %
    with pytest.raises(SystemExit) as stopped:
        overhead.gate_host("case", lambda: [1.0, 1.3, 1.1, 1.0, 1.05], 5.0)
    assert stopped.value.code == 3
    out = capsys.readouterr().out
    assert "# case host check: plain runs [1.000 1.020 1.010 0.990 1.000] s, spread 3.0 % (gate 5 %)" in out
    assert "# case: host too noisy, plain runs spread 28.6 % > 5 %; nothing measured" in out


def test_the_noise_gate_looks_again_at_a_host_whose_load_comes_and_goes(
    overhead: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """--gate-tries: a failed check waits, warms up once and checks again; the last failure stops."""
    noisy, quiet = [1.0, 1.3, 1.1, 1.0, 1.05], [1.0, 1.02, 1.01, 0.99, 1.0]
    checks = iter([noisy, noisy, quiet])
    waits: list[float] = []
    warmed: list[int] = []
    overhead.gate_host(
        "case", lambda: next(checks), 5.0, 3, warm=lambda: warmed.append(1), wait_s=7.0, sleep=waits.append
    )
    assert waits == [7.0, 7.0] and len(warmed) == 2
    assert next(checks, None) is None  # the third check passed: no fourth
    out = capsys.readouterr().out
    assert "# case host check 1 of 3 failed: again in 7 s" in out
    assert "# case host check 2 of 3 failed: again in 7 s" in out
    assert "spread 3.0 % (gate 5 %)" in out
    waits.clear()
    with pytest.raises(SystemExit) as stopped:
        overhead.gate_host("case", lambda: noisy, 5.0, 2, wait_s=7.0, sleep=waits.append)
    assert stopped.value.code == 3 and waits == [7.0]  # no wait after the last check
    assert (
        "# case: host too noisy, plain runs spread 28.6 % > 5 % at the last of 2 checks; nothing measured"
        in (capsys.readouterr().out)
    )
    overhead.gate_host("case", lambda: quiet, 5.0, sleep=waits.append)  # one try by default
    assert waits == [7.0]


def test_a_case_past_the_noise_gate_writes_no_row(tmp_path: Path) -> None:
    """bench/overhead.py --noise-gate: a gate no host meets stops before the timed runs (status 3,
    no JSON); one every host meets prints its check and measures as usual."""
    out = tmp_path / "rows.json"
    command = [sys.executable, str(BENCH / "overhead.py"), "--tiny", "llama", "--cases", "8:3"]
    command += ["--modes", "summary", "--repeats", "1", "--warmup", "0", "--threads", "1", "--json", str(out)]
    stopped = subprocess.run([*command, "--noise-gate", "1e-9"], capture_output=True, text=True, timeout=600)
    assert stopped.returncode == 3, stopped.stderr[-2000:]
    assert "host too noisy" in stopped.stdout and not out.exists()
    done = subprocess.run([*command, "--noise-gate", "1000"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "# tiny-llama 8->3 b1 host check: plain runs [" in done.stdout
    assert [row["mode"] for row in json.loads(out.read_text())] == ["plain", "summary"]


@pytest.mark.slow  # three runs of the bench, some 20 s
def test_ab_trees_runs_the_bench_on_each_commits_source(tmp_path: Path) -> None:
    """bench/ab_trees.sh: "prepare" writes a commit's src/ beside this tree's bench/ and
    tests/support/ (a bench runs from the tree's folder as it is); "run" runs the bench on this tree,
    then on that one, each importing its own corevital; a host check that fails on this tree stops
    the rest (status 3)."""
    repo = BENCH.parent
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout: bench/ab_trees.sh prepare reads commits")
    script = str(BENCH / "ab_trees.sh")
    trees = tmp_path / ".ab"
    prepared = subprocess.run(["bash", script, "prepare", str(trees), "HEAD"], capture_output=True, text=True)
    assert prepared.returncode == 0, prepared.stderr
    short = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = trees / short  # a tree is named by its commit's hash
    assert (tree / "src" / "corevital" / "capture" / "observer.py").is_file()
    assert (tree / "bench" / "overhead.py").read_bytes() == (BENCH / "overhead.py").read_bytes()
    support = repo / "tests" / "support" / "tiny_models.py"
    assert (tree / "tests" / "support" / "tiny_models.py").read_bytes() == support.read_bytes()
    # a bench run from the tree's folder as it is: its shapes' tiny models found in the tree
    alone = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    probe = ["bench/step_probe.py", "--shape", "tiny", "--cases", "8:2", "--rounds", "1", "--warmup", "0"]
    ran = subprocess.run(
        [sys.executable, *probe], cwd=tree, capture_output=True, text=True, env=alone, timeout=600
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    missing = subprocess.run(
        ["bash", script, "prepare", str(trees), "no-such-commit"], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no commit no-such-commit" in missing.stderr

    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    bench = ["--tiny", "llama", "--cases", "8:2", "--modes", "summary", "--repeats", "1", "--warmup", "0"]
    bench += ["--threads", "1"]
    done = subprocess.run(
        ["bash", script, "run", str(trees), *bench], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "## head, round 1: status 0" in done.stdout and f"## {short}, round 1: status 0" in done.stdout
    assert f"# corevital from {repo / 'src'}\n" in (out / "head-1.txt").read_text()
    assert f"# corevital from {tree / 'src'}\n" in (out / f"{short}-1.txt").read_text()
    rows = json.loads((out / f"{short}-1.json").read_text())
    assert [row["mode"] for row in rows] == ["plain", "summary"]

    stopped = subprocess.run(
        ["bash", script, "run", str(trees), *bench, "--noise-gate", "1e-9"],
        capture_output=True,
        text=True,
        env={**env, "OUT": str(tmp_path / "noisy")},
        timeout=600,
    )
    assert stopped.returncode == 3, stopped.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "noisy").iterdir()) == ["head-1.txt"]


@pytest.fixture(scope="module")
def host_instructions() -> Any:
    return _bench_module("host_instructions")


def _dump(folder: Path, number: int, trigger: str, instructions: int) -> None:
    """A file as callgrind writes it at a client request (the header lines the bench reads)."""
    (folder / f"callgrind.out.42.{number}").write_text(
        f"version: 1\ncreator: callgrind-3.19.0\npid: 42\ncmd: python\npart: {number}\n"
        f"desc: I1 cache: \ndesc: Trigger: Client Request: {trigger}\npositions: line\nevents: Ir\n"
        f"summary: {instructions}\n\nfl=(1) x.c\nfn=(1) f\n0 {instructions}\n\ntotals: {instructions + 7}\n"
    )


def test_host_instructions_reads_each_part_of_a_generation_from_callgrinds_dumps(
    host_instructions: Any, tmp_path: Path
) -> None:
    """The first step, the decoding steps in order (not in the order the files are listed) and the
    end, per mode; the table's extra and ratio columns against plain's."""
    parts = {
        "plain": ([150_000_000, 50_000_000, 50_200_000, 49_800_000], 300_000),
        "summary": ([155_000_000, 50_600_000, 50_500_000, 56_000_000], 6_300_000),
    }
    number = 0
    for mode, (steps, end) in parts.items():
        for step in reversed(range(len(steps))):
            number += 1
            _dump(tmp_path, number, f"{mode} step {step + 1}", steps[step])
        number += 1
        _dump(tmp_path, number, f"{mode} end", end)
    (tmp_path / "callgrind.out.42").write_text("desc: Trigger: Program termination\nsummary: 18126\n")
    counts = host_instructions.read_counts(tmp_path, ["summary"])
    assert list(counts) == ["plain", "summary"]
    assert counts["summary"].first == 155_000_000
    assert counts["summary"].steps == [50_600_000, 50_500_000, 56_000_000]
    assert counts["summary"].end == 6_300_000
    assert counts["plain"].total == 300_300_000
    rows = host_instructions.table(counts).splitlines()
    # median decoding step 50.600 against 50.000: +0.600, 1.012; the end +6.000
    assert rows[3].split(" | ")[1:6] == ["155.000", "+5.000", "50.600", "+0.600", "1.012"]
    assert rows[3].split(" | ")[8:10] == ["6.300", "+6.000"]
    with pytest.raises(SystemExit, match="no complete count of full"):
        host_instructions.read_counts(tmp_path, ["full"])


@pytest.mark.slow  # valgrind runs the tiny model: about a minute and a half
def test_host_instructions_counts_what_the_capture_adds_to_a_step(tmp_path: Path) -> None:
    """The bench end to end under valgrind on the tiny llama: summary capture's first step, decoding
    step and end each execute more host instructions than plain's."""
    if shutil.which("valgrind") is None or shutil.which("cc") is None:
        pytest.skip(
            "bench/host_instructions.py needs valgrind and a C compiler (apt-get install valgrind gcc)"
        )
    command = [sys.executable, str(BENCH / "host_instructions.py"), "--shape", "tiny", "--modes", "summary"]
    command += ["--new-tokens", "4", "--warmup", "0", "--keep", str(tmp_path / "dumps")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in done.stdout.splitlines()[1:]}
    plain, summary = rows["plain"], rows["summary"]
    assert float(plain[1]) > float(plain[3]) > 0  # the prefill costs more than a decoding step
    for column in (2, 4, 9):  # first step, median decoding step, end: what summary adds
        assert float(summary[column]) > 0, (column, done.stdout)
    assert len(list((tmp_path / "dumps").glob("callgrind.out.*"))) >= 2 * (4 + 1)
