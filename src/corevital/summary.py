"""The short, readable summary of a run that the CLI prints (and ``--json`` emits)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from corevital.report.schema import Report
from corevital.views.terminal import factor_words, latency_text, one_line


@dataclass(frozen=True)
class RunSummary:
    trace_id: str
    model: str
    prompt_tokens: int
    generated_tokens: int
    finish_reason: str | None
    elapsed_ms: float
    entropy_min: float | None
    entropy_mean: float | None
    entropy_max: float | None
    peak_entropy_step: int | None
    peak_entropy_token: str | None
    flags: list[str] = field(default_factory=list)
    risk_score: float | None = None
    risk_factors: list[str] = field(default_factory=list)
    narrative: str = ""
    output_text: str = ""
    location: str = ""
    ttft_ms: float | None = None
    tokens_per_second: float | None = None
    inter_token_ms: dict[str, float | None] | None = None
    calibration_divergence: float | None = None
    calibration_warnings: list[str] = field(default_factory=list)
    calibration_anomalies: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _raised_flags(report: Report) -> list[str]:
    flags = report.health_flags
    if flags is None:
        return []
    raised = [name for name, value in flags.model_dump().items() if value is True]
    if flags.high_entropy_steps:
        raised.append(f"high_entropy_steps={flags.high_entropy_steps}")
    return raised


def summarize_report(report: Report, location: str, elapsed_ms: float) -> RunSummary:
    entropies = [
        (step.logits_summary.entropy, step)
        for step in report.timeline
        if step.logits_summary.entropy is not None and math.isfinite(step.logits_summary.entropy)
    ]
    values = [e for e, _ in entropies]
    peak = max(entropies, key=lambda pair: pair[0]) if entropies else None
    risk = report.extensions.risk.risk_score if report.extensions.risk is not None else None
    factors = list(report.extensions.risk.risk_factors) if report.extensions.risk is not None else []
    narrative = report.extensions.narrative.summary if report.extensions.narrative is not None else ""
    calibration = report.extensions.calibration
    itl = report.summary.inter_token_ms
    return RunSummary(
        trace_id=report.trace_id,
        model=report.model.hf_id,
        prompt_tokens=report.prompt.num_tokens,
        generated_tokens=report.generated.num_tokens,
        finish_reason=report.generated.finish_reason,
        elapsed_ms=round(elapsed_ms, 1),
        entropy_min=round(min(values), 3) if values else None,
        entropy_mean=round(sum(values) / len(values), 3) if values else None,
        entropy_max=round(max(values), 3) if values else None,
        # The generated-token index, as the narrative counts (``step_index`` counts the prompt too).
        peak_entropy_step=peak[1].step_index - report.prompt.num_tokens if peak else None,
        peak_entropy_token=peak[1].token.token_text if peak else None,
        flags=_raised_flags(report),
        risk_score=risk,
        risk_factors=factors,
        narrative=narrative,
        output_text=report.generated.output_text,
        location=location,
        ttft_ms=report.summary.ttft_ms,
        tokens_per_second=report.summary.tokens_per_second,
        inter_token_ms=itl.model_dump() if itl is not None else None,
        calibration_divergence=calibration.divergence_score if calibration is not None else None,
        calibration_warnings=list(calibration.warnings or []) if calibration is not None else [],
        calibration_anomalies=list(calibration.anomalies) if calibration is not None else [],
    )


def format_summary(s: RunSummary, *, multiple: bool = False) -> str:
    lines = []
    if multiple:
        lines.append(f"--- trace {s.trace_id}")
    lines.append(
        f"Tokens: {s.prompt_tokens} prompt, {s.generated_tokens} generated ({s.finish_reason}) "
        f"in {s.elapsed_ms / 1000:.2f} s"
    )
    latency = latency_text(s.ttft_ms, s.tokens_per_second, s.inter_token_ms)
    if latency:
        lines.append(f"Latency: {latency}")
    if s.entropy_mean is not None:
        lines.append(
            f"Entropy (bits): min {s.entropy_min:.2f}, mean {s.entropy_mean:.2f}, max {s.entropy_max:.2f} "
            f"(peak at step {s.peak_entropy_step}, token {s.peak_entropy_token!r})"
        )
    if s.risk_score is not None:
        words = "; ".join(factor_words(one_line(name)) for name in s.risk_factors)
        lines.append(f"Risk score: {s.risk_score:.2f}" + (f": {words}" if words else ""))
    if s.calibration_divergence is not None:
        lines.append(
            f"Calibration divergence: {s.calibration_divergence:.2f} (0 typical, 1 far from the profile)"
        )
        for anomaly in s.calibration_anomalies[:3]:
            lines.append(f"  {one_line(anomaly, 200)}")
        if len(s.calibration_anomalies) > 3:
            lines.append(f"  ... {len(s.calibration_anomalies) - 3} more anomalies (corevital show)")
    for warning in s.calibration_warnings:
        lines.append(f"Calibration warning: {one_line(warning, 300)}")
    lines.append("Flags: " + (", ".join(s.flags) if s.flags else "none"))
    if s.narrative:
        lines.append(f"Diagnosis: {one_line(s.narrative)}")
    # model output and prompts can hold terminal escape sequences: shown escaped, never sent raw
    lines.append(f"Output: {one_line(s.output_text.strip().replace(chr(10), ' '), 241)}")
    lines.append(f"Report: {one_line(s.location) if s.location else '(not stored)'}")
    return "\n".join(lines)


def format_performance(performance: Any) -> str:
    """The --perf lines: each parent operation's time and share, and strict mode's overheads."""
    lines = [f"Performance: {performance.total_wall_time_ms / 1000:.2f} s in all"]
    for op in performance.parent_operations:
        lines.append(f"  {op.name:<16} {op.ms:>10.1f} ms  {op.pct:5.1f}%")
    if performance.baseline_ms is not None:
        lines.append(
            f"  baseline (uninstrumented) {performance.baseline_ms:.1f} ms; instrumented inference "
            f"{performance.instrumented_inference_ms:.1f} ms: overhead "
            f"{performance.inference_overhead_pct:+.1f}% "
            f"(with report and storage {performance.corevital_overhead_pct:+.1f}%)"
        )
    return "\n".join(lines)
