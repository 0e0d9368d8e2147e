"""The live running risk and the report's risk are one model; explanations match the score.

Greedy runs of tiny random models through :class:`CoreVitalMonitor`'s stream: the last step event's
running risk equals the stored report's risk; with a NaN or a ×10³ scale injected by
``corevital.testing``, a high score names its factors (the NaN floor first) and the narrative derives
no trend from NaN steps. Faulted and looping runs too: a silenced MLP or attention (whole-run layer
evidence, judged live on the steps so far) and a repetition loop (its floor), under a profile whose
intercept is low enough that random tiny models do not saturate the score, so a missing term shows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from corevital import CoreVitalMonitor
from corevital.live import StreamEvent
from corevital.report.schema import Report
from corevital.testing import inject_nan, inject_scale, inject_zero_norm
from tests.support.values import present

PROMPTS = ("The quick brown fox jumps", "Once upon a time there was")


def monitor_for(directory: Path, **settings: Any) -> CoreVitalMonitor:
    chosen: dict[str, Any] = {"max_new_tokens": 12, **settings}
    return CoreVitalMonitor(
        str(directory), device="cpu", chat_template="off", temperature=0.0, ignore_eos=True, **chosen
    )


# Random tiny models have every continuous feature at its cap (together +1.6 in logit units under
# the default weights); at -6 they alone stay below ~0.02, so the layer-update term or a loop floor
# must be present in the running risk for it to match the report's.
UNSATURATED = {"risk.intercept": -6.0}


def stream(monitor: CoreVitalMonitor, prompt: str) -> tuple[list[StreamEvent], Report]:
    events = list(monitor.iter_stream(prompt))
    report = events[-1].report
    assert isinstance(report, Report)
    return [e for e in events if e.kind == "step"], report


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_last_running_risk_equals_the_reports_risk(arch: str, tiny_model_dir: Callable[[str], Path]) -> None:
    monitor = monitor_for(tiny_model_dir(arch))
    for prompt in PROMPTS:
        steps, report = stream(monitor, prompt)
        risk = present(report.extensions.risk)
        assert steps[-1].running_risk == pytest.approx(present(risk.risk_score), abs=0.02)
        if present(risk.risk_score) >= 0.5:
            assert risk.risk_factors


def test_nan_names_its_floor_and_makes_no_trend(tiny_model_dir: Callable[[str], Path]) -> None:
    monitor = monitor_for(tiny_model_dir("llama"))
    loaded = monitor._loaded(monitor.settings_for())
    with inject_nan(loaded.model, 1, from_step=4):
        steps, report = stream(monitor, PROMPTS[0])
    risk = present(report.extensions.risk)
    assert risk.risk_score == 1.0 and risk.risk_factors[0] == "nan_or_inf"
    assert steps[-1].running_risk == 1.0
    summary = present(report.extensions.narrative).summary
    assert "trend falling" not in summary and "trend rising" not in summary
    assert "too few finite steps for a trend" in summary


def test_a_scaled_layer_gives_a_high_score_with_factors(tiny_model_dir: Callable[[str], Path]) -> None:
    monitor = monitor_for(tiny_model_dir("llama"))
    loaded = monitor._loaded(monitor.settings_for())
    with inject_scale(loaded.model, 0, 1e3):
        _, report = stream(monitor, PROMPTS[1])
    risk = present(report.extensions.risk)
    assert present(risk.risk_score) >= 0.5 and risk.risk_factors
    assert [f.name for f in present(risk.factor_contributions)] == risk.risk_factors


@pytest.mark.parametrize("which", ["mlp", "attention"])
def test_a_silenced_sub_layer_is_in_the_running_risk(
    which: Literal["attention", "mlp"], tiny_model_dir: Callable[[str], Path]
) -> None:
    monitor = monitor_for(tiny_model_dir("llama"), thresholds=UNSATURATED)
    loaded = monitor._loaded(monitor.settings_for())
    with inject_zero_norm(loaded.model, 1, which):
        steps, report = stream(monitor, PROMPTS[0])
    risk = present(report.extensions.risk)
    assert present(report.health_flags).layer_update_anomaly_detected
    assert "layer_update_anomaly" in risk.risk_factors
    assert present(risk.risk_score) > 0.1  # the features alone give < 0.02 here: the layer term is in
    assert any(
        f.name == "layer_update_anomaly" and present(f.contribution) > 0.03
        for f in present(risk.factor_contributions)
    )
    assert steps[-1].running_risk == pytest.approx(present(risk.risk_score), abs=0.02)


def test_a_looping_run_has_its_floor_in_the_running_risk(tiny_model_dir: Callable[[str], Path]) -> None:
    monitor = monitor_for(tiny_model_dir("gpt2"), thresholds=UNSATURATED, max_new_tokens=24)
    steps, report = stream(monitor, PROMPTS[0])  # this random gpt2 repeats one token greedily
    risk = present(report.extensions.risk)
    assert present(report.health_flags).repetition_loop_detected and "repetition_loop" in risk.risk_factors
    assert present(risk.risk_score) >= 0.9
    assert steps[-1].running_risk == pytest.approx(present(risk.risk_score), abs=0.02)
    assert present(steps[0].running_risk) < 0.5  # no loop yet at the first step
