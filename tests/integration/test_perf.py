"""`--perf summary|detailed|strict` adds `extensions.performance` to the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from corevital.cli import main
from tests.support.cli import newest_report, run_args
from tests.support.values import present


@pytest.mark.parametrize("mode", ["summary", "detailed", "strict"])
def test_perf_modes(
    mode: str, tiny_model_dir: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny_model_dir("llama"))
    args = run_args(model, tmp_path)
    code = main([*args, "--prompt", "hello there", "--max_new_tokens", "7", "--ignore-eos", "--perf", mode])
    out = capsys.readouterr().out
    assert code == 0 and "Performance:" in out
    report = newest_report(tmp_path / "corevital.db")
    perf = present(report.extensions.performance)
    names = [op.name for op in perf.parent_operations]
    assert {"config_load", "model_load", "model_inference", "report_build"} <= set(names)
    assert names.count("model_load") == 1
    assert present(perf.total_wall_time_ms) >= sum(present(op.ms) for op in perf.parent_operations) - 1e-6
    unaccounted = present(present(perf.unaccounted_time).pct)
    assert abs(sum(present(op.pct) for op in perf.parent_operations) + unaccounted - 100) < 0.1
    if mode == "summary":
        assert perf.detailed_breakdown is None and perf.baseline_ms is None
    else:
        assert present(perf.detailed_breakdown)["per_step"]["count"] == 7
    if mode == "strict":
        baseline = present(perf.baseline_ms)
        assert baseline > 0 and present(perf.warmup_ms) > 0
        assert perf.inference_overhead_ms == pytest.approx(
            present(perf.instrumented_inference_ms) - baseline, abs=1e-2
        )
        assert "baseline (uninstrumented)" in out
