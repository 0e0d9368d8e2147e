"""The report contract: pydantic models of schema 0.5.0 (``docs/report.md``).

One generation of one sequence is one :class:`Report`. Field names are those of the original
CoreVital schema 0.4.0; 0.5.0 only adds fields. The per-step models live in
:mod:`corevital.report.schema_timeline`, the analysis outputs in
:mod:`corevital.report.schema_extensions`; this module re-exports them so that
``from corevital.report.schema import ...`` reaches every model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from corevital.modes import CaptureMode, EntropyMode, ModelSource
from corevital.report.schema_base import (
    SCHEMA_VERSION,
    FloatList,
    OptFloat,
    ReportModel,
)
from corevital.report.schema_extensions import (
    AttentionCollapseDetail,
    BlamedLayer,
    CalibrationAnomaly,
    CalibrationResult,
    CompoundSignal,
    ConsistencyViolation,
    EarlyWarning,
    Extensions,
    Fingerprint,
    Intervention,
    LayerJump,
    MetricConsistency,
    MetricDivergence,
    MidLayerDetail,
    Narrative,
    PerformanceInfo,
    RagContext,
    RepetitionInfo,
    RiskExtension,
    RiskFactorContribution,
    RiskModelTraining,
    SamplingInfo,
    SignalFiring,
    TimedOperation,
    TimeShare,
)
from corevital.report.schema_timeline import (
    Anomalies,
    AttentionSummary,
    HiddenSummary,
    LayerSummary,
    LogitsSummary,
    TimelineStep,
    TokenInfo,
    TopKProb,
)
from corevital.report.timestamps import parse_utc

__all__ = [
    "SCHEMA_VERSION",
    "Anomalies",
    "AttentionCollapseDetail",
    "AttentionSummary",
    "AttentionSummaryConfig",
    "BlamedLayer",
    "CaptureInfo",
    "CalibrationAnomaly",
    "CalibrationResult",
    "MetricDivergence",
    "CompoundSignal",
    "ConsistencyViolation",
    "EarlyWarning",
    "Extensions",
    "Fingerprint",
    "FinishReason",
    "GeneratedInfo",
    "GenerationConfig",
    "HealthFlags",
    "HiddenSummary",
    "HiddenSummaryConfig",
    "Intervention",
    "SamplingInfo",
    "LatencyPercentiles",
    "LayerJump",
    "LayerSummary",
    "LogitsSummary",
    "LogitsSummaryConfig",
    "MetricConsistency",
    "MidLayerDetail",
    "ModelInfo",
    "Narrative",
    "PerformanceInfo",
    "PromptAnalysis",
    "PromptAttentionLayer",
    "PromptInfo",
    "QuantizationInfo",
    "RagContext",
    "RepetitionInfo",
    "Report",
    "ReportWarning",
    "RiskExtension",
    "RiskFactorContribution",
    "RiskModelTraining",
    "RunConfig",
    "SignalFiring",
    "SinkConfig",
    "SketchConfig",
    "SparseAttentionHead",
    "Summary",
    "SummariesConfig",
    "TimeShare",
    "TimedOperation",
    "TimelineStep",
    "TokenInfo",
    "TopKProb",
]

FinishReason = Literal["eos", "length", "stopped_by_callback", "stop_string"]


class QuantizationInfo(ReportModel):
    """Whether and how the weights were quantized (``method``: ``"4-bit"``, ``"8-bit"`` or null)."""

    enabled: bool = False
    method: str | None = None


class ModelInfo(ReportModel):
    """The model that generated."""

    hf_id: str
    revision: str | None = None
    architecture: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    tokenizer_hf_id: str
    dtype: str | None = Field(default=None, description='May be "quantized_unknown".')
    device: str
    quantization: QuantizationInfo = Field(default_factory=QuantizationInfo)
    num_key_value_heads: int | None = Field(default=None, description="New.")
    is_encoder_decoder: bool | None = Field(default=None, description="New.")
    source: ModelSource | None = Field(default=None, description="New: hub, local or gguf.")


class GenerationConfig(ReportModel):
    """Decoding settings (``temperature`` 0 means greedy: ``do_sample`` false)."""

    do_sample: bool
    temperature: OptFloat = None
    top_k: int | None = None
    top_p: OptFloat = None
    num_beams: int | None = None
    early_stopping: bool | None = None


class SketchConfig(ReportModel):
    """Hidden-state sketch settings."""

    method: str
    dim: int
    seed: int


class HiddenSummaryConfig(ReportModel):
    """Hidden-state summary settings."""

    enabled: bool = True
    stats: list[str] = Field(default_factory=list)
    sketch: SketchConfig | None = None


class AttentionSummaryConfig(ReportModel):
    """Attention summary settings."""

    enabled: bool = True
    stats: list[str] = Field(default_factory=list)


class LogitsSummaryConfig(ReportModel):
    """Logits summary settings: ``topk`` tokens listed, ``mass_k`` summed into ``topk_mass``."""

    enabled: bool = True
    stats: list[str] = Field(default_factory=list)
    topk: int = 5
    mass_k: int | None = Field(default=None, description="New.")


class SummariesConfig(ReportModel):
    """Which summaries were computed, with their settings."""

    hidden: HiddenSummaryConfig = Field(default_factory=HiddenSummaryConfig)
    attention: AttentionSummaryConfig = Field(default_factory=AttentionSummaryConfig)
    logits: LogitsSummaryConfig = Field(default_factory=LogitsSummaryConfig)


class SinkConfig(ReportModel):
    """Where the report was sent."""

    type: str
    target: str


class RunConfig(ReportModel):
    """The settings of the run."""

    seed: int
    device_requested: str
    max_new_tokens: int
    generation: GenerationConfig
    summaries: SummariesConfig = Field(default_factory=SummariesConfig)
    sink: SinkConfig
    entropy_mode: EntropyMode | None = None
    capture_mode: CaptureMode | None = None
    batch_index: int | None = Field(default=None, description="New: position of this sequence in its batch.")
    batch_size: int | None = Field(default=None, description="New: number of sequences in the batch.")
    generate_kwargs: dict[str, Any] | None = Field(
        default=None,
        description="New: further generate() keywords the library passed through (repetition_penalty, "
        "stop_strings, num_return_sequences, ...); a value that is not JSON is written as <TypeName>.",
    )
    generation_defaults: Literal["corevital", "model"] | None = Field(
        default=None,
        description="New: model when the model's own generation defaults chose the decoding "
        "(--generation-config model); absent: CoreVital's settings.",
    )


class PromptInfo(ReportModel):
    """The prompt as given and as tokenized."""

    text: str
    token_ids: list[int]
    num_tokens: int
    chat_template_applied: bool | None = Field(
        default=None, description="New: whether the model read the prompt wrapped in its chat template."
    )


class GeneratedInfo(ReportModel):
    """The generated continuation."""

    output_text: str
    token_ids: list[int]
    num_tokens: int
    finish_reason: FinishReason | None = Field(default=None, description="New: why generation stopped.")


class LatencyPercentiles(ReportModel):
    """The time between one generated token and the next, in milliseconds: percentiles and mean."""

    p50: OptFloat = None
    p90: OptFloat = None
    p99: OptFloat = None
    mean: OptFloat = Field(
        default=None, description="The mean: time per output token after the first (OpenTelemetry's)."
    )


class Summary(ReportModel):
    """Run totals; ``total_steps`` is prompt + generated tokens, as in the original.

    ``elapsed_ms`` is the wall time of the whole run (every batch of its prompts);
    ``started_at_utc`` and ``generation_ms`` time this sequence's own batch, so that the
    generation is placed in time (``started_at_utc`` + ``generation_ms``) even in a run of many.
    """

    prompt_tokens: int
    generated_tokens: int
    total_steps: int
    elapsed_ms: int
    started_at_utc: str | None = Field(
        default=None,
        description="New: when the generation of this sequence's batch started (tokenizing, then "
        "generate()), ISO 8601 UTC with Z, millisecond precision.",
    )
    generation_ms: OptFloat = Field(
        default=None,
        description="New: wall time in ms of this sequence's batch, from started_at_utc to the end of "
        "generate() (elapsed_ms is the whole run's).",
    )
    ttft_ms: OptFloat = Field(
        default=None,
        description="New: time to first token in ms, from started_at_utc (tokenizing, then the pass "
        "over the prompt) to the end of the first decoding step.",
    )
    inter_token_ms: LatencyPercentiles | None = Field(
        default=None,
        description="New: percentiles of the time in ms between consecutive tokens of this sequence "
        "(absent with fewer than two tokens, and for beam search).",
    )
    tokens_per_second: OptFloat = Field(
        default=None,
        description="New: generated tokens per second, from started_at_utc to this sequence's last token.",
    )

    @field_validator("started_at_utc")
    @classmethod
    def _iso_time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_utc(value)
        return value


class ReportWarning(ReportModel):
    """A problem of the run that did not stop it (``ATTENTION_NOT_AVAILABLE``, ...)."""

    code: str
    message: str


class SparseAttentionHead(ReportModel):
    """One head's prompt attention entries above the threshold, as three parallel arrays."""

    query_indices: list[int] = Field(default_factory=list)
    key_indices: list[int] = Field(default_factory=list)
    weights: FloatList = Field(default_factory=list)


class PromptAttentionLayer(ReportModel):
    """One layer of prompt telemetry: sparse attention per head and the heads' basin scores."""

    heads: list[SparseAttentionHead] = Field(default_factory=list)
    basin_scores: FloatList | None = Field(default_factory=list)


class PromptAnalysis(ReportModel):
    """Prompt telemetry (``metrics.md`` §5)."""

    layers: list[PromptAttentionLayer] = Field(default_factory=list)
    layer_transformations: FloatList = Field(default_factory=list)
    prompt_surprisals: FloatList = Field(default_factory=list)


class HealthFlags(ReportModel):
    """Run-level health flags (``metrics.md`` §4)."""

    nan_detected: bool = False
    inf_detected: bool = False
    attention_collapse_detected: bool = False
    attention_collapse_severity: OptFloat = None
    high_entropy_steps: int = 0
    repetition_loop_detected: bool = False
    mid_layer_anomaly_detected: bool = False
    layer_update_anomaly_detected: bool = False  # a silenced or sharpened sub-layer (analysis/updates.py)


class CaptureInfo(ReportModel):
    """New: how the generation was observed, when not by CoreVital running the model itself.

    ``source`` logprobs: the per-token log-probabilities and top alternatives an OpenAI-compatible
    engine returned (``corevital proxy``, ``CoreVitalMonitor.observe_openai``). Only the logit tier is
    observed: attention and hidden states are not, and the model's layers, heads and sizes are unknown
    (written as 0). Each step's ``entropy_lower`` is a lower bound (the remaining mass counted as one
    token), ``entropy_upper`` the upper bound (the remaining mass spread uniformly over the rest of the
    vocabulary, when its size is known), and ``entropy`` the estimate the analysis reads: their
    midpoint (``capture.entropy`` midpoint, within half the bounds' width of the exact entropy), or
    the lower bound when the vocabulary size is unknown (``lower_bound``).
    """

    source: Literal["generate", "logprobs", "llama-cpp"] = Field(
        description="New: generate (CoreVital ran the model), logprobs (an OpenAI-compatible response) "
        "or llama-cpp (a GGUF file run in process by llama.cpp: exact logit tier from full-vocabulary "
        "logits, attention and hidden states not observed)."
    )
    observed: list[str] = Field(
        default_factory=list, description="New: the tiers observed: logits, attention, hidden_states."
    )
    not_observed: list[str] = Field(default_factory=list, description="New: the tiers not observed.")
    endpoint: str | None = Field(default=None, description="New: chat.completions or completions.")
    top_logprobs: int | None = Field(
        default=None, description="New: the most alternatives the engine listed at a step (top_logprobs)."
    )
    vocab_size: int | None = Field(
        default=None, description="New: the vocabulary size the entropy upper bound used (null: unknown)."
    )
    entropy: Literal["exact", "midpoint", "lower_bound"] | None = Field(
        default=None,
        description="New: what each step's entropy is: exact, midpoint (of entropy_lower and "
        "entropy_upper, the vocabulary size known) or lower_bound (equal to entropy_lower, the "
        "vocabulary size unknown).",
    )
    token_ids: Literal["vocabulary", "per_report"] | None = Field(
        default=None,
        description="New: vocabulary (the engine's token ids) or per_report (one id per distinct token "
        "text of this response, in order of first appearance: the API names tokens by text).",
    )
    prompt_tokens: int | None = Field(
        default=None, description="New: prompt tokens as the engine counted them (usage.prompt_tokens)."
    )
    upstream_finish_reason: str | None = Field(
        default=None, description="New: the engine's finish_reason (stop, length, tool_calls, ...)."
    )


class Report(ReportModel):
    """One generation of one sequence."""

    schema_version: Literal["0.5.0"] = SCHEMA_VERSION
    trace_id: str
    created_at_utc: str = Field(description="ISO 8601 UTC with Z; written with millisecond precision.")
    model: ModelInfo
    run_config: RunConfig
    prompt: PromptInfo
    generated: GeneratedInfo
    timeline: list[TimelineStep] = Field(default_factory=list)
    summary: Summary
    warnings: list[ReportWarning] = Field(default_factory=list)
    encoder_layers: list[LayerSummary] | None = Field(
        default=None, description="Encoder-decoder models only: one summary per encoder layer."
    )
    prompt_analysis: PromptAnalysis | None = None
    health_flags: HealthFlags | None = None
    capture: CaptureInfo | None = Field(
        default=None,
        description="New: how the generation was observed; absent for a model CoreVital ran itself "
        "(source generate).",
    )
    extensions: Extensions = Field(default_factory=Extensions)

    @field_validator("created_at_utc")
    @classmethod
    def _iso_time(cls, value: str) -> str:
        parse_utc(value)
        return value
