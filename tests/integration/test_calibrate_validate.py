"""`corevital calibrate`, `run --calibration` and `corevital validate` end to end on a tiny model."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from corevital.analysis.calibration.profile import load_calibration_profile
from corevital.report.encoding import load_report
from tests.support.cli import run_cli
from tests.support.values import present


def common(model: Path) -> list[str]:
    return [
        "--model",
        str(model),
        "--device",
        "cpu",
        "--chat-template",
        "off",
        "--temperature",
        "0",
        "--max_new_tokens",
        "6",
        "--batch-size",
        "4",
    ]


def labelled_file(path: Path, n: int = 40) -> Path:
    """Pre-judged records (``failed``) so the tiny random model's gibberish needs no checker."""
    lines = []
    for i in range(n):
        record = {
            "id": f"r{i}",
            "prompt": f"item {i} " + "word " * (i % 7),
            "failed": i % 3 == 0,
            "split": "dev" if i < n // 2 else "test",
            "group": f"g{i // 2}",
            "task": "synthetic",
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Callable[[str], Path]) -> Path:
    return tiny_model_dir("llama")


def test_calibrate_then_run_with_the_profile(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny: Path
) -> None:
    prompts = tmp_path / "healthy.txt"
    prompts.write_text("\n".join(f"healthy prompt number {i}" for i in range(6)) + "\n")
    profile_path = tmp_path / "profile.json"
    code, out, err = run_cli(
        capsys, "calibrate", *common(tiny), "--prompts", str(prompts), "--out", str(profile_path)
    )
    assert code == 0, err
    assert "6 healthy runs" in out
    assert "healthy runs: 0/6" in err and "healthy runs: 6/6 100%" in err  # progress lines (not a TTY)
    profile = load_calibration_profile(profile_path)
    assert profile.num_runs == 6 and profile.num_steps == 36 and profile.risk_model is None
    assert profile.generation.do_sample is False and profile.generation.max_new_tokens == 6

    out_dir = tmp_path / "runs"
    code, out, err = run_cli(
        capsys,
        "run",
        *common(tiny),
        "--prompt",
        "healthy prompt number 2",
        "--calibration",
        str(profile_path),
        "--out",
        str(out_dir),
        "--write-json",
    )
    assert code == 0, err
    report = load_report(next(out_dir.glob("trace_*.json")))
    calibration = report.extensions.calibration
    assert calibration is not None and calibration.baseline_num_runs == 6
    assert calibration.divergence_score is not None and 0.0 <= calibration.divergence_score <= 1.0
    assert {m.metric for m in calibration.metric_divergence or []} >= {"entropy", "surprisal", "log_l2_norm"}
    assert report.extensions.risk is not None and report.extensions.risk.model == "heuristic"


def test_a_profile_for_another_model_is_refused_before_generation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny: Path, tiny_model_dir: Callable[[str], Path]
) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("a prompt\nanother prompt\n")
    profile_path = tmp_path / "gpt2.json"
    gpt2 = tiny_model_dir("gpt2")
    assert (
        run_cli(capsys, "calibrate", *common(gpt2), "--prompts", str(prompts), "--out", str(profile_path))[0]
        == 0
    )
    code, _, err = run_cli(
        capsys,
        "run",
        *common(tiny),
        "--prompt",
        "hi",
        "--calibration",
        str(profile_path),
        "--out",
        str(tmp_path),
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "calibration profile was made for" in lines[0]
    code, _, err = run_cli(
        capsys, "run", *common(tiny), "--prompt", "hi", "--calibration", str(tmp_path / "nope.json")
    )
    assert code == 2 and "cannot read calibration profile" in err


def test_without_scikit_learn_the_labelled_commands_stop_before_loading_a_model(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    labels = labelled_file(tmp_path / "labels.jsonl")
    model = ["--model", str(tmp_path / "no-such-model")]
    for argv in (
        ["calibrate", *model, "--labels", str(labels), "--out", str(tmp_path / "p.json")],
        ["validate", *model, "--labels", str(labels)],
    ):
        code, out, err = run_cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 8 and out == "" and len(lines) == 1, err
        assert "needs scikit-learn" in lines[0] and 'pip install "corevital[validate]"' in lines[0]


@pytest.mark.slow  # 40 labelled runs, a cross-validated fit and a validation
def test_labelled_calibration_and_validation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny: Path
) -> None:
    labels = labelled_file(tmp_path / "labels.jsonl")
    profile_path = tmp_path / "labelled.json"
    code, out, err = run_cli(
        capsys,
        "calibrate",
        *common(tiny),
        "--labels",
        str(labels),
        "--folds",
        "3",
        "--out",
        str(profile_path),
    )
    assert code == 0, err
    profile = load_calibration_profile(profile_path)
    assert profile.risk_model is not None
    training = profile.risk_model.training
    assert (
        training.split == "dev"
        and training.num_records == 20
        and training.failure_rate == pytest.approx(7 / 20)
    )
    assert profile.num_runs == 13  # the dev records judged correct are the healthy reference
    assert "Risk model: 20 labelled records" in out and "a perfectly calibrated model at this N" in out
    assert "debiased L2 calibration error" in out

    out_dir = tmp_path / "validation"
    code, out, err = run_cli(
        capsys,
        "validate",
        *common(tiny),
        "--labels",
        str(labels),
        "--calibration",
        str(profile_path),
        "--out",
        str(out_dir),
    )
    assert code == 0, err
    assert "### Split `dev`: N = 20" in out and "### Split `test`: N = 20" in out
    assert "risk_score (labelled model)" in out and "mean token NLL" in out and "generated length" in out
    document = json.loads((out_dir / "validation.json").read_text())
    assert [s["split"] for s in document["splits"]] == ["dev", "test"]
    test_split = document["splits"][1]
    assert test_split["n"] == 20 and test_split["failures"] == 7
    names = [s["name"] for s in test_split["scores"]]
    assert names[:2] == ["risk_score", "heuristic_risk_score"]
    assert {"mean_surprisal", "sequence_nll", "mean_entropy", "max_entropy", "length"} <= set(names)
    risk = test_split["scores"][0]
    assert 0.0 <= risk["auroc"]["estimate"] <= 1.0 and risk["ece"] is not None
    # 20 records: a perfectly calibrated score would show an ECE of several hundredths from noise alone
    floor = risk["ece_noise_floor"]
    assert risk["ece_equal_mass"] is not None and 0.03 < floor["mean"] < floor["p95"] < 0.4
    assert "ECE of a perfectly calibrated score at this N" in out
    debiased = risk["calibration_error_debiased"]
    assert debiased is not None and 0.0 <= debiased["estimate"] <= debiased["high"] <= 1.0
    assert "debiased L2 calibration error [95% CI]" in out
    assert all(
        s["calibration_error_debiased"] is None for s in test_split["scores"] if not s["is_probability"]
    )
    assert len((out_dir / "runs.jsonl").read_text().splitlines()) == 40
    for name in ("reliability_dev.png", "roc_dev.png", "reliability_test.png", "roc_test.png"):
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_library_monitor_reads_the_profile_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny: Path, tiny_model_dir: Callable[[str], Path]
) -> None:
    from corevital import CoreVitalMonitor
    from corevital.errors import ConfigError

    prompts = tmp_path / "p.txt"
    prompts.write_text("one healthy prompt\nanother healthy prompt\nand a third\n")
    profile_path = tmp_path / "p.json"
    assert (
        run_cli(capsys, "calibrate", *common(tiny), "--prompts", str(prompts), "--out", str(profile_path))[0]
        == 0
    )
    monitor = CoreVitalMonitor(
        str(tiny), device="cpu", temperature=0.0, chat_template="off", calibration=str(profile_path)
    )
    report = monitor.run(prompt="one healthy prompt")
    assert report.extensions.calibration is not None and report.extensions.calibration.baseline_num_runs == 3
    other = CoreVitalMonitor(
        str(tiny_model_dir("gpt2")),
        device="cpu",
        temperature=0.0,
        chat_template="off",
        calibration=str(profile_path),
    )
    with pytest.raises(ConfigError, match="calibration profile was made for"):
        other.run(prompt="hi")


def test_a_run_decoded_differently_from_the_calibration_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny: Path
) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("one healthy prompt\nanother healthy prompt\n")
    profile_path = tmp_path / "p.json"
    assert (
        run_cli(capsys, "calibrate", *common(tiny), "--prompts", str(prompts), "--out", str(profile_path))[0]
        == 0
    )
    out_dir = tmp_path / "runs"
    args = [*common(tiny), "--calibration", str(profile_path), "--out", str(out_dir), "--write-json"]
    assert run_cli(capsys, "run", *args, "--prompt", "same settings")[0] == 0
    assert run_cli(capsys, "run", *args, "--prompt", "longer", "--max_new_tokens", "9")[0] == 0
    reports = sorted(
        (load_report(p) for p in out_dir.glob("trace_*.json")), key=lambda r: r.generated.num_tokens
    )
    assert present(reports[0].extensions.calibration).warnings is None
    (warning,) = present(present(reports[1].extensions.calibration).warnings)
    assert "max_new_tokens 9" in warning and "greedy, max_new_tokens 6" in warning
