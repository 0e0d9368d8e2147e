"""A batched run writes each batch as it finishes: a bad prompt fails before any generation, an
interrupted run keeps its finished batches, and ``--resume`` runs only the rest."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corevital.cli import main
from corevital.errors import StoreError
from corevital.sinks.sqlite import SQLiteStore
from tests.support.cli import run_args
from tests.support.tiny_models import MAX_POSITIONS


def streaming_args(model: str, out: Path, prompts_file: Path, *extra: str) -> list[str]:
    return [*run_args(model, out), "--prompts-file", str(prompts_file), *extra]


def stored_prompts(out: Path) -> list[str]:
    db = out / "corevital.db"
    try:
        with SQLiteStore(db, read_only=True) as store:
            return sorted(report.prompt.text for row in store.list() if (report := store.get(row.trace_id)))
    except StoreError:  # not created yet, or created but not initialised yet by the writer
        return []


def test_a_too_long_prompt_late_in_the_file_fails_before_any_generation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    prompts = tmp_path / "prompts.txt"
    long_prompt = " ".join(["word"] * (MAX_POSITIONS * 2))
    prompts.write_text("\n".join([*(f"prompt {i}" for i in range(6)), long_prompt]) + "\n")
    code = main(streaming_args(tiny_llama, tmp_path, prompts, "--batch-size", "2", "--max-new-tokens", "2"))
    err = capsys.readouterr().err
    assert code == 2 and "prompt 7 of 7" in err and "context window" in err
    assert stored_prompts(tmp_path) == []


def test_resume_runs_only_the_prompts_not_stored_yet(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a\nb\n")
    assert main(streaming_args(tiny_llama, tmp_path, prompts, "--max-new-tokens", "2")) == 0
    prompts.write_text("a\nb\nc\nd\n")
    capsys.readouterr()
    assert main(streaming_args(tiny_llama, tmp_path, prompts, "--max-new-tokens", "2", "--resume")) == 0
    assert "2 of 4 prompts already stored, 2 to run" in capsys.readouterr().out
    assert stored_prompts(tmp_path) == ["a", "b", "c", "d"]
    # other decoding settings are another run: nothing is skipped
    assert main(streaming_args(tiny_llama, tmp_path, prompts, "--max-new-tokens", "3", "--resume")) == 0
    assert "0 of 4 prompts already stored" in capsys.readouterr().out
    assert len(stored_prompts(tmp_path)) == 8


@pytest.mark.slow  # real processes interrupted mid-run
# SIGINT takes the same path as SIGTERM once it reaches CoreVital's handler (KeyboardInterrupt);
# bench/interrupt_trials.py interrupts with all three at random moments, 20 trials.
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_batched_run_keeps_finished_batches_and_resumes(
    tmp_path: Path, tiny_llama: str, signum: int
) -> None:
    prompts = tmp_path / "prompts.txt"
    texts = [f"prompt number {i}" for i in range(12)]
    prompts.write_text("\n".join(texts) + "\n")
    args = streaming_args(
        tiny_llama, tmp_path, prompts, "--batch-size", "2", "--max-new-tokens", "32", "--ignore-eos"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "corevital", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 240
        while len(stored_prompts(tmp_path)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished before it could be interrupted"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    kept = stored_prompts(tmp_path)
    assert 2 <= len(kept) < len(texts) and len(kept) % 2 == 0  # whole batches only
    with sqlite3.connect(tmp_path / "corevital.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    if signum != signal.SIGKILL:
        assert proc.returncode == 130
        assert f"{len(kept)} of {len(texts)} reports stored" in err and "--resume" in err
        assert "Traceback" not in err
    resumed = subprocess.run(
        [sys.executable, "-m", "corevital", *args, "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert stored_prompts(tmp_path) == sorted(texts)  # every prompt once: no duplicates
