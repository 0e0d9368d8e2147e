"""`corevital run` start-up: a status line while loading (terminal only, not with --quiet), and
--perf separating the imports of torch and transformers from the model load."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from corevital.cli import main
from corevital.sinks.sqlite import SQLiteStore
from tests.support.cli import run_args


def _run(tmp_path: Path, model: Path, *extra: str) -> list[str]:
    out = tmp_path / "runs"
    assert main([*run_args(model, out), "--prompt", "hello there", "--max_new_tokens", "4", *extra]) == 0
    return [str(p) for p in out.iterdir()]


def test_status_line_on_a_terminal_and_quiet(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_model_dir: Callable[[str], Path],
) -> None:
    model = tiny_model_dir("llama")
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats stderr as a terminal
    _run(tmp_path / "a", model)
    err = capsys.readouterr().err
    assert f"Loading {model}" in err or "Importing torch and the model code" in err
    _run(tmp_path / "b", model, "--quiet")
    err = capsys.readouterr().err
    assert "Loading" not in err and "Importing" not in err
    monkeypatch.delenv("FORCE_COLOR")
    _run(tmp_path / "c", model)  # not a terminal: no status line
    err = capsys.readouterr().err
    assert "Loading" not in err and "Importing" not in err


def test_perf_times_the_imports_apart_from_the_model_load(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Callable[[str], Path]
) -> None:
    _run(tmp_path, tiny_model_dir("llama"), "--perf", "summary", "--quiet")
    out = capsys.readouterr().out
    assert "imports" in out and "model_load" in out
    store = SQLiteStore(tmp_path / "runs" / "corevital.db", read_only=True)
    try:
        (row,) = store.list()
        report = store.get(row.trace_id)
    finally:
        store.close()
    assert report is not None and report.extensions.performance is not None
    names = [op.name for op in report.extensions.performance.parent_operations]
    assert names.index("imports") < names.index("model_load") < names.index("model_inference")


_SCIPY_CHECK = """
import sys
import numpy as np
from corevital.cli import main
code = main(sys.argv[1:])
assert code == 0, code
assert "scipy.optimize" not in sys.modules, "a run imported scipy.optimize"
from transformers.loss import loss_for_object_detection as losses
cost = np.random.default_rng(0).random((7, 5))
rows, cols = losses.linear_sum_assignment(cost)
from scipy.optimize import linear_sum_assignment
expected_rows, expected_cols = linear_sum_assignment(cost)
assert rows.tolist() == expected_rows.tolist() and cols.tolist() == expected_cols.tolist()
assert losses.is_scipy_available()
print("ok")
"""


@pytest.mark.slow
def test_a_run_leaves_scipy_unimported_and_the_losses_still_reach_it(
    tmp_path: Path, tiny_model_dir: Callable[[str], Path]
) -> None:
    """transformers' object-detection losses are imported without SciPy (0.3 s of start-up); their
    ``linear_sum_assignment`` imports it on the first call and answers as SciPy's own does."""
    argv = [*run_args(tiny_model_dir("llama"), tmp_path / "runs"), "--prompt", "hi", "--max_new_tokens", "2"]
    done = subprocess.run(
        [sys.executable, "-c", _SCIPY_CHECK, *argv, "--quiet"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


@pytest.mark.slow  # a real `python -m corevital` process
def test_the_command_ends_without_the_interpreters_teardown_and_loses_nothing(
    tmp_path: Path, tiny_model_dir: Callable[[str], Path]
) -> None:
    """``python -m corevital run`` ends with os._exit after flushing its streams and running the
    atexit handlers: its exit code, every printed line and the stored report are all there."""
    out = tmp_path / "runs"
    argv = [*run_args(tiny_model_dir("llama"), out), "--prompt", "hi", "--max_new_tokens", "3"]
    done = subprocess.run(
        [sys.executable, "-m", "corevital", *argv, "--sink", "sqlite", "--sink", "local"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (report_file,) = out.glob("trace_*.json")
    trace_id = report_file.stem.removeprefix("trace_")
    assert done.stdout.rstrip().splitlines()[-1].endswith(trace_id)  # the last line was flushed
    store = SQLiteStore(out / "corevital.db", read_only=True)
    try:
        assert [row.trace_id for row in store.list()] == [trace_id]
    finally:
        store.close()
    failed = subprocess.run(
        [sys.executable, "-m", "corevital", *argv[:-2], "--max_new_tokens", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode != 0 and failed.stderr.strip().startswith("corevital: ")
