"""What `corevital run` prints: live lines per sequence on a terminal, a table for a batch, latency,
risk factors in words; `--json` keeps its shape (fields only added)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from corevital.analysis.profiles import load_profile
from corevital.capture.loading import LoadedModel
from corevital.cli.run_output import LiveLines, live_lines, prompt_token_counter, run_live_lines
from corevital.pipeline import Pipeline
from corevital.testing import inject_zero_norm
from tests.integration.conftest import tiny_settings
from tests.support.calibration import healthy_profile
from tests.support.cli import run_args, run_cli
from tests.support.values import present

PROMPTS = ["The quick brown fox", "Once \x1b[31mupon a time", "Hi"]
UNSATURATED = {"risk.intercept": -6.0}  # random tiny models do not saturate the risk score


def _run(capsys: pytest.CaptureFixture[str], model: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, *run_args(model, out), "--max-new-tokens", "5", *extra)


def test_a_batch_is_one_table_row_per_sequence(
    capsys: pytest.CaptureFixture[str], tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    args = [arg for prompt in PROMPTS for arg in ("--prompt", prompt)]
    code, out, err = _run(capsys, tiny_model_dir("llama"), tmp_path, *args)
    assert code == 0
    assert "\x1b" not in out + err  # not a terminal: no live lines, no colour, prompts' ESC escaped
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["#", "risk", "flags"])
    rows = lines[header + 1 : header + 1 + len(PROMPTS)]
    assert [row.split()[0] for row in rows] == ["1", "2", "3"]
    for row in rows:
        assert "length" in row or "eos" in row
    assert f"Reports: {len(PROMPTS)} of {len(PROMPTS)} stored" in out
    assert len(lines) < 4 + len(PROMPTS) + 5  # not 8 lines per sequence


def test_one_run_shows_latency_and_risk_in_words(
    capsys: pytest.CaptureFixture[str], tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    code, out, _ = _run(capsys, tiny_model_dir("llama"), tmp_path, "--prompt", PROMPTS[0])
    assert code == 0
    latency = next(line for line in out.splitlines() if line.startswith("Latency: "))
    assert "first token" in latency and "tokens/s" in latency and "p99" in latency
    risk = next(line for line in out.splitlines() if line.startswith("Risk score: "))
    assert "_" not in risk.split(":", 1)[1]  # words, not factor names


def test_json_summary_keeps_its_fields_and_adds_latency(
    capsys: pytest.CaptureFixture[str], tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    code, out, _ = _run(capsys, tiny_model_dir("llama"), tmp_path, "--prompt", PROMPTS[0], "--json")
    assert code == 0
    (summary,) = json.loads(out)
    assert {"trace_id", "risk_score", "risk_factors", "flags", "output_text", "location"} <= summary.keys()
    assert summary["ttft_ms"] > 0 and summary["tokens_per_second"] > 0
    assert set(summary["inter_token_ms"]) == {"p50", "p90", "p99", "mean"}


def _capture_with(lines: LiveLines, loaded: LoadedModel, prompts: list[str]) -> None:
    pipeline = Pipeline(tiny_settings(batch_size=2, max_new_tokens=6, ignore_eos=True))
    pipeline.use_model(loaded)
    pipeline.capture(prompts[:2], progress=lines)
    pipeline.capture(prompts[2:], progress=lines, first_index=2)


def test_live_lines_on_a_terminal(tiny_loaded: Callable[[str], LoadedModel]) -> None:
    loaded = tiny_loaded("llama")
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120)
    lines = live_lines(console, loaded, load_profile(loaded.capabilities.model_type), len(PROMPTS))
    assert isinstance(lines, LiveLines)
    lines._interval = 0.0  # draw at every step
    _capture_with(lines, loaded, PROMPTS)
    drawn = stream.getvalue()
    assert "#1   of 3" in drawn and "#2   of 3" in drawn and "#3   of 3" in drawn
    assert "tokens/s" in drawn and "entropy" in drawn and "risk" in drawn
    final = Console(file=io.StringIO(), width=120)
    final.print(lines.render())
    (row,) = final.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert row.split()[:5] == ["#3", "of", "3", "6", "tokens"]
    assert "entropy —" not in row and "risk —" not in row  # the reduced steps were read
    lines.close()


def test_a_spinner_line_while_each_batch_is_read(tiny_loaded: Callable[[str], LoadedModel]) -> None:
    """Before a batch's first token: what is read, with the prompts' token counts (the tokenizer's
    own count of each prompt); the next batch's line after the last step of the one before."""
    loaded = tiny_loaded("llama")
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120)
    lines = live_lines(
        console,
        loaded,
        load_profile(loaded.capabilities.model_type),
        len(PROMPTS),
        batch_size=2,
        max_new_tokens=6,
        count_tokens=prompt_token_counter(loaded, PROMPTS, "off"),
    )
    assert isinstance(lines, LiveLines)
    counts = [len(loaded.tokenizer(p)["input_ids"]) for p in PROMPTS]
    low, high = min(counts[:2]), max(counts[:2])
    span = f"{low} tokens" if low == high else f"{low}\u2013{high} tokens"
    first = f"Reading 2 prompts ({span} each), batch 1 of 2"
    assert lines.reading_text(1) == first
    assert lines.reading_text(2) == f"Reading the prompt ({counts[2]} tokens), batch 2 of 2"
    lines.start()
    assert first in stream.getvalue()  # drawn before any step
    _capture_with(lines, loaded, PROMPTS)
    lines.close()
    drawn = stream.getvalue()
    assert drawn.index(first) < drawn.index("#1   of 3")
    second = drawn.index("Reading the prompt (")
    assert drawn.index("#2   of 3") < second < drawn.index("#3   of 3")
    assert lines._batches_read == 2  # each batch ended once (its last step, then the call after it)


def test_no_live_lines_off_a_terminal(tiny_loaded: Callable[[str], LoadedModel]) -> None:
    loaded = tiny_loaded("llama")
    console = Console(file=io.StringIO())
    assert live_lines(console, loaded, load_profile(loaded.capabilities.model_type), 1) is None


def test_live_lines_follow_the_terminal_and_quiet(
    capsys: pytest.CaptureFixture[str],
    tiny_model_dir: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats stderr as a terminal
    code, out, err = _run(capsys, tiny_model_dir("llama"), tmp_path, "--prompt", PROMPTS[0])
    assert code == 0 and "tokens/s  entropy" in err
    code, out, err = _run(capsys, tiny_model_dir("llama"), tmp_path, "--prompt", PROMPTS[0], "--quiet")
    assert code == 0 and "Tokens:" in out
    assert "tokens/s  entropy" not in err


@pytest.mark.parametrize("decoding", [["--generation-config", "model"], ["--temperature", "0"]])
def test_resume_recognises_greedy_and_model_default_runs(
    capsys: pytest.CaptureFixture[str],
    tiny_model_dir: Callable[[str], Path],
    tmp_path: Path,
    decoding: list[str],
) -> None:
    model = tiny_model_dir("llama")  # its generation_config.json decodes greedily
    code, _, _ = _run(capsys, model, tmp_path, "--prompt", PROMPTS[0], *decoding)
    assert code == 0
    code, out, _ = _run(
        capsys, model, tmp_path, "--prompt", PROMPTS[0], "--prompt", "Hi", "--resume", *decoding
    )
    assert code == 0 and "Resuming: 1 of 2 prompts already stored, 1 to run" in out


def test_the_live_running_risk_is_the_calibrated_reports_risk(
    tiny_loaded: Callable[[str], LoadedModel], tmp_path: Path
) -> None:
    """`run --calibration`'s live lines (run_live_lines, as `corevital run` builds them) analyse the
    steps as the report does: the run's calibration profile, thresholds, prompts and tokens' texts.
    A greedy batch of 32 steps (one window: the last live update has every step) with layer 1's MLP
    silenced, which repeats words, so the decoded texts count; intercept -6 keeps the score from
    saturating, so a missing term shows."""
    loaded = tiny_loaded("llama")
    decoding: dict[str, Any] = {"max_new_tokens": 32, "ignore_eos": True, "thresholds": UNSATURATED}
    healthy = Pipeline(tiny_settings(**decoding))
    healthy.use_model(loaded)
    profile = healthy_profile(healthy, 4, tmp_path / "profile.json")
    pipeline = Pipeline(
        tiny_settings(**decoding, batch_size=2, calibration=str(profile), out=str(tmp_path / "runs"))
    )
    pipeline.use_model(loaded)
    prompts = ["The quick brown fox jumps", "Once upon a time there was"]
    lines = run_live_lines(Console(file=io.StringIO(), force_terminal=True, width=120), pipeline, prompts)
    assert isinstance(lines, LiveLines)
    try:
        with inject_zero_norm(loaded.model, 1, "mlp"):
            outcome = pipeline.run(prompts, progress=lines)
    finally:
        lines.close()
    rows = lines._rows
    for index, report in enumerate(outcome.reports):
        assert present(report.extensions.calibration).baseline_num_runs == 4
        assert rows[index].tokens == 32
        risk = present(present(report.extensions.risk).risk_score)
        assert rows[index].risk == pytest.approx(risk, abs=0.02)
