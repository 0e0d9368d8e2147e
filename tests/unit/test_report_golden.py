"""Golden file of a small hand-built report: any change of the written JSON shows up as a diff.

Regenerate after an intended change with
``UPDATE_GOLDEN=1 pytest tests/unit/test_report_golden.py``.
The same file is the sample report of the sink and migration tests.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta

from corevital.analysis.hashing import prompt_hash
from corevital.report.encoding import report_from_json, report_to_json
from corevital.report.schema import (
    Anomalies,
    AttentionSummary,
    BlamedLayer,
    CompoundSignal,
    EarlyWarning,
    Extensions,
    Fingerprint,
    GeneratedInfo,
    GenerationConfig,
    HealthFlags,
    HiddenSummary,
    LayerJump,
    LayerSummary,
    LogitsSummary,
    MidLayerDetail,
    ModelInfo,
    Narrative,
    PromptAnalysis,
    PromptAttentionLayer,
    PromptInfo,
    QuantizationInfo,
    Report,
    ReportWarning,
    RiskExtension,
    RunConfig,
    SignalFiring,
    SinkConfig,
    SparseAttentionHead,
    Summary,
    TimelineStep,
    TokenInfo,
    TopKProb,
)
from corevital.report.timestamps import format_utc
from tests.support.golden import GOLDEN

TRACE_ID = "00000000-0000-4000-8000-000000000001"
CLOCK = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
PROMPT = "Explain why the sky is blue"


def _layer(index: int, l2: float) -> LayerSummary:
    return LayerSummary(
        layer_index=index,
        hidden_summary=HiddenSummary(
            mean=0.001, std=0.98, l2_norm_mean=l2, max_abs=9.5, sketch=[0.25, -0.5], clipped=False
        ),
        attention_summary=AttentionSummary(
            entropy_mean=1.2,
            entropy_mean_normalized=0.42,
            entropy_min=0.02,
            entropy_max=1.9,
            concentration_max=0.99,
            concentration_min=0.21,
            collapsed_head_count=1,
            collapsed_head_rate=0.5,
            focused_head_count=1,
            max_weight_per_head=[0.99, 0.21],
            sink_mass_mean=0.6,
            prev_token_mass_mean=0.2,
            prev_token_mass_max=0.3,
        ),
        anomalies=Anomalies(),
    )


def build_small_report() -> Report:
    """A two-step, two-layer report with fixed id and clock, a NaN and non-ASCII text."""
    return Report(
        trace_id=TRACE_ID,
        created_at_utc=format_utc(CLOCK),
        model=ModelInfo(
            hf_id="tiny/causal-lm",
            revision="abc123",
            architecture="LlamaForCausalLM",
            num_layers=2,
            hidden_size=8,
            num_attention_heads=2,
            num_key_value_heads=1,
            tokenizer_hf_id="tiny/causal-lm",
            dtype="float32",
            device="cpu",
            quantization=QuantizationInfo(enabled=False),
            is_encoder_decoder=False,
            source="local",
        ),
        run_config=RunConfig(
            seed=42,
            device_requested="cpu",
            max_new_tokens=2,
            generation=GenerationConfig(do_sample=False, temperature=0.0, num_beams=1),
            sink=SinkConfig(type="sqlite", target="runs/corevital.db"),
            entropy_mode="full",
            capture_mode="full",
        ),
        prompt=PromptInfo(text=PROMPT, token_ids=[1, 2, 3], num_tokens=3, chat_template_applied=False),
        generated=GeneratedInfo(output_text=" blé…", token_ids=[7, 8], num_tokens=2, finish_reason="length"),
        timeline=[
            TimelineStep(
                step_index=3,
                token=TokenInfo(token_id=7, token_text=" blé", is_prompt_token=False),
                logits_summary=LogitsSummary(
                    entropy=1.5,
                    perplexity=2.0**1.5,
                    surprisal=0.5,
                    top_k_margin=0.3,
                    topk_mass=0.95,
                    topk_probs=[TopKProb(token_id=7, token_text=" blé", prob=0.6)],
                ),
                layers=[_layer(0, 2.5), _layer(1, 3.75)],
            ),
            TimelineStep(
                step_index=4,
                token=TokenInfo(token_id=8, token_text="…"),
                logits_summary=LogitsSummary(entropy=math.nan, surprisal=math.inf, has_nan=True),
            ),
        ],
        summary=Summary(
            prompt_tokens=3,
            generated_tokens=2,
            total_steps=5,
            elapsed_ms=12,
            started_at_utc=format_utc(CLOCK - timedelta(milliseconds=40)),
            generation_ms=11.5,
        ),
        warnings=[ReportWarning(code="ATTENTION_NOT_AVAILABLE", message="no attention weights")],
        prompt_analysis=PromptAnalysis(
            layers=[
                PromptAttentionLayer(
                    heads=[SparseAttentionHead(query_indices=[1, 2], key_indices=[0, 1], weights=[0.9, 0.5])],
                    basin_scores=[0.5],
                )
            ],
            layer_transformations=[0.25],
            prompt_surprisals=[3.5, 1.25],
        ),
        health_flags=HealthFlags(nan_detected=True, high_entropy_steps=1),
        extensions=Extensions.model_validate(
            {
                "risk": RiskExtension(
                    risk_score=1.0,
                    risk_factors=["nan_or_inf"],
                    blamed_layers=[BlamedLayer(layer=1, reasons=["NaN/Inf"], severity=1.0, first_step=1)],
                    blamed_layers_flat=[1],
                ),
                "compound_signals": [
                    CompoundSignal(
                        name="confident_confusion",
                        description="d",
                        severity=0.5,
                        evidence=["e"],
                        first_step=0,
                    )
                ],
                "early_warning": EarlyWarning(
                    failure_risk=0.25,
                    warning_signals=["margin_declining"],
                    firings=[SignalFiring(signal="margin_declining", step=1)],
                    peak_step=1,
                ),
                "fingerprint": Fingerprint(
                    vector=[0.5] * 25, version=2, prompt_hash=prompt_hash("tiny/causal-lm", PROMPT)
                ),
                "narrative": Narrative(summary="High risk (score: 1.00): NaN in the logits at step 4."),
                "mid_layer": MidLayerDetail(
                    jumps=[LayerJump(layer=1, kind="transient", z=12.5, log_jump=2.0, first_step=1, steps=1)],
                    judged=True,
                ),
            }
        ),
    )


def test_small_report_matches_the_golden_file() -> None:
    written = report_to_json(build_small_report(), pretty=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(written, encoding="utf-8")
    assert written == GOLDEN.read_text(encoding="utf-8"), (
        "the report JSON changed; if intended, regenerate with "
        "UPDATE_GOLDEN=1 pytest tests/unit/test_report_golden.py"
    )


def test_golden_file_reads_back_to_the_same_report_except_non_finite_values() -> None:
    report = build_small_report()
    decoded = report_from_json(GOLDEN.read_bytes())
    assert decoded.timeline[1].logits_summary.entropy is None  # NaN was written as null
    assert decoded.timeline[1].logits_summary.surprisal is None  # and Inf too
    report.timeline[1].logits_summary.entropy = None
    report.timeline[1].logits_summary.surprisal = None
    assert decoded == report


def test_compact_form_of_the_golden_report_is_the_pretty_one_without_whitespace() -> None:
    compact = report_to_json(build_small_report())
    assert compact == json.dumps(
        json.loads(GOLDEN.read_text("utf-8")), separators=(",", ":"), ensure_ascii=False
    )
