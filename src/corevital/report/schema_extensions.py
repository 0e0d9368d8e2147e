"""Typed models of the report's ``extensions``: the analysis outputs (``docs/metrics.md`` §6).

Every key CoreVital writes is declared here, and, like every report model, these refuse fields they
do not declare (:mod:`corevital.report.schema_base`). Fields marked *new* are 0.5.0 additions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from corevital.report.schema_base import FloatList, OptFloat, ReportModel


class BlamedLayer(ReportModel):
    """A layer the risk analysis holds responsible, with why and how badly."""

    layer: int
    reasons: list[str] = Field(default_factory=list)
    severity: OptFloat = None
    first_step: int | None = Field(
        default=None,
        description="New: first step (0-based generated token) at which the strongest reason was seen.",
    )


class RiskFactorContribution(ReportModel):
    """New: how much one named factor moved the risk score."""

    name: str
    contribution: OptFloat = None


class AttentionCollapseDetail(ReportModel):
    """Detail of the attention-collapse decision (``risk.attention_collapse_detail``)."""

    detected: bool | None = Field(default=None, description="New: whether attention collapse was detected.")
    severity: OptFloat = Field(default=None, description="New: the collapse severity in [0, 1].")
    mean_collapse_rate: OptFloat = None
    trend_detected: bool | None = None
    trend_peak_deviation: OptFloat = None
    trend_peak_step: int | None = Field(
        default=None, description="New: the step of the largest smoothed rise of the collapse rate."
    )
    trend_layers: list[int] | None = None
    catastrophic: bool | None = None
    calibration_anomaly: bool | None = None
    calibration_anomaly_layers: list[int] | None = None
    per_layer_mean_collapse_rate: FloatList | None = None


class RiskExtension(ReportModel):
    """``extensions.risk``: the 0–1 risk score, its factors and the blamed layers."""

    risk_score: OptFloat = Field(default=None, description="In [0, 1]; higher is riskier.")
    risk_factors: list[str] = Field(default_factory=list, description="Names of the factors that moved it.")
    factor_contributions: list[RiskFactorContribution] | None = Field(
        default=None, description="New: each factor's contribution to the score."
    )
    blamed_layers: list[BlamedLayer] = Field(default_factory=list)
    blamed_layers_flat: list[int] = Field(default_factory=list, description="The blamed layer indices.")
    attention_collapse_detail: AttentionCollapseDetail | None = None
    model: str | None = Field(
        default=None,
        description=(
            "New: what gave the score: 'heuristic' (the model profile's weights) or 'labelled' "
            "(a risk model fitted on labelled runs: a calibrated probability of failure)."
        ),
    )


class CompoundSignal(ReportModel):
    """A multi-metric failure pattern (``context_loss``, ``confident_confusion``, ...)."""

    name: str
    description: str = ""
    severity: OptFloat = None
    evidence: list[str] = Field(default_factory=list)
    first_step: int | None = Field(
        default=None, description="New: first step (0-based generated token) at which the pattern held."
    )


class SignalFiring(ReportModel):
    """New: an early-warning signal and the step at which it first fired."""

    signal: str
    step: int = Field(description="0-based generated-token index.")


class EarlyWarning(ReportModel):
    """``extensions.early_warning``: continuous failure risk and the trend signals that fired."""

    failure_risk: OptFloat = None
    warning_signals: list[str] = Field(default_factory=list)
    firings: list[SignalFiring] | None = Field(
        default=None, description="New: each signal of warning_signals with the step at which it first fired."
    )
    peak_step: int | None = Field(
        default=None, description="New: the step at which failure_risk was reached."
    )


class Fingerprint(ReportModel):
    """``extensions.fingerprint``: the run-summary vector (25 slots in version 2) and prompt hash."""

    vector: FloatList = Field(default_factory=list)
    version: int | None = None
    prompt_hash: str | None = Field(default=None, description='sha256 of model_id + "\\n" + prompt text.')


class Narrative(ReportModel):
    """``extensions.narrative``: a few sentences built from the run's values."""

    summary: str = ""


class CalibrationAnomaly(ReportModel):
    """New: one value far from the calibration profile's healthy distribution."""

    metric: str
    z: OptFloat = None
    value: OptFloat = None
    reference_mean: OptFloat = None
    reference_std: OptFloat = None
    step: int | None = None
    layer: int | None = None


class MetricDivergence(ReportModel):
    """New: one metric's mean |z| against the calibration profile."""

    metric: str
    mean_abs_z: OptFloat = None
    values: int | None = None


class RiskModelTraining(ReportModel):
    """New: what a labelled risk model was fitted on and how well it did in grouped cross-validation."""

    dataset: str
    dataset_sha256: str
    split: str | None = None
    num_records: int
    num_groups: int
    failure_rate: OptFloat = None
    cv_folds: int
    cv_auroc: OptFloat = None
    cv_ece: OptFloat = None
    l2_grid: FloatList = Field(default_factory=list)


class CalibrationResult(ReportModel):
    """``extensions.calibration``: divergence from a calibration profile's baseline."""

    divergence_score: OptFloat = Field(
        default=None, description="Mean |z| over the metrics / 6, capped at 1."
    )
    anomalies: list[str] = Field(default_factory=list, description="The anomalies, one sentence each.")
    baseline_model_id: str | None = None
    baseline_num_runs: int | None = None
    anomaly_details: list[CalibrationAnomaly] | None = Field(
        default=None, description="New: the anomalies as values (metric, step or layer, value, z)."
    )
    metric_divergence: list[MetricDivergence] | None = Field(
        default=None, description="New: each metric's mean |z|."
    )
    risk_model: RiskModelTraining | None = Field(
        default=None, description="New: the labelled risk model's training summary, when the profile has one."
    )
    warnings: list[str] | None = Field(
        default=None, description="New: how this run differs from the calibration runs (decoding, length)."
    )


class ConsistencyViolation(ReportModel):
    """One failed metric invariant at one step."""

    check: str
    step_index: int | None = None
    message: str = ""


class MetricConsistency(ReportModel):
    """``extensions.metric_consistency``: the per-step invariants of ``metrics.md`` §6."""

    checked_steps: int | None = None
    violations: list[ConsistencyViolation] = Field(default_factory=list)


class RagContext(ReportModel):
    """``extensions.rag``: retrieval metadata supplied by the caller."""

    context_token_count: int | None = None
    retrieved_doc_ids: list[str] | None = None
    retrieved_doc_titles: list[str] | None = None
    retrieval_metadata: dict[str, Any] | None = None
    context_span: list[int] | None = Field(
        default=None, description="New: prompt token range [start, end) holding the retrieved context."
    )
    context_attention_share: OptFloat = Field(
        default=None, description="New: share of the later prompt's attention that lands on the context span."
    )


class TimedOperation(ReportModel):
    """One timed operation of a run."""

    name: str
    ms: OptFloat = None
    pct: OptFloat = None


class TimeShare(ReportModel):
    """A duration and its share of the total."""

    ms: OptFloat = None
    pct: OptFloat = None


class PerformanceInfo(ReportModel):
    """``extensions.performance``: where the run's time went (``--perf``)."""

    total_wall_time_ms: OptFloat = None
    parent_operations: list[TimedOperation] = Field(default_factory=list)
    unaccounted_time: TimeShare | None = None
    detailed_breakdown: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Free-form timing detail (``--perf detailed``): CoreVital writes the operation tree "
            "(``operations``: name, ms, children) and per-step statistics (``per_step``); traces of "
            "the original CoreVital hold their own layout."
        ),
    )
    detailed_file: str | None = None
    original_model_load_ms: OptFloat = None
    warmup_ms: OptFloat = None
    baseline_ms: OptFloat = None
    instrumented_inference_ms: OptFloat = None
    inference_overhead_ms: OptFloat = None
    inference_overhead_pct: OptFloat = None
    corevital_overhead_ms: OptFloat = None
    corevital_overhead_pct: OptFloat = None


class RepetitionInfo(ReportModel):
    """New: ``extensions.repetition``, the detected repetition loop (``metrics.md`` §4)."""

    detected: bool = False
    period: int | None = Field(
        default=None, description="Tokens per repeat (a word loop: the mean over its repeats, rounded)."
    )
    first_step: int | None = None
    span: int | None = Field(default=None, description="Tokens from first_step to last_step.")
    repeats: OptFloat = Field(default=None, description="span / period: how many times the block repeats.")
    repeated_text: str | None = None
    level: str | None = Field(
        default=None,
        description="New: where the loop was found: 'tokens' (identical token ids) or 'words' (decoded "
        "words, numbers and list markers ignored, some words may differ between repeats).",
    )
    last_step: int | None = Field(default=None, description="New: the loop's last step (0-based).")
    period_words: int | None = Field(default=None, description="New: a word loop's period in words.")
    unit: str | None = Field(
        default=None,
        description="New: what repeats, as normalised words (lower case, numbers as <n>, punctuation and "
        "list markers dropped; cut at 80 characters).",
    )
    requested: bool | None = Field(
        default=None,
        description="New: the prompt asks for repetition ('... 50 times', 'repeat ...'); the loop is "
        "reported but does not raise the risk score.",
    )
    hidden_similarity: OptFloat = Field(
        default=None, description="Last-layer hidden-state similarity of the repeated positions (evidence)."
    )
    confirmed: bool | None = Field(
        default=None,
        description="hidden_similarity reached the profile's confirm_similarity (null without sketches).",
    )
    coverage: OptFloat = Field(default=None, description="span / generated tokens.")


class LayerJump(ReportModel):
    """New: an abnormal jump of a layer's hidden-state L2 norm over the previous layer's."""

    layer: int
    kind: Literal["persistent", "transient"]
    z: OptFloat = Field(default=None, description="Robust z of the jump across depth, at its peak.")
    log_jump: OptFloat = Field(default=None, description="Natural log of the norm ratio at that peak.")
    first_step: int | None = Field(default=None, description="First step at which the jump was an outlier.")
    steps: int | None = Field(default=None, description="Number of steps at which it was.")


class MidLayerDetail(ReportModel):
    """New: ``extensions.mid_layer``, the mid-layer anomaly decision (``docs/metrics.md`` §4)."""

    detected: bool = False
    layers: list[int] = Field(default_factory=list, description="Middle-third layers found abnormal.")
    nonfinite_layers: list[int] = Field(
        default_factory=list, description="Middle-third layers whose hidden states held NaN/Inf."
    )
    jumps: list[LayerJump] = Field(
        default_factory=list,
        description="Every abnormal norm jump, at any depth (layer blame uses them all).",
    )
    judged: bool = Field(default=False, description="False when hidden-state norms were not available.")


class Intervention(ReportModel):
    """New: ``extensions.intervention``, who stopped the generation while it ran, at which step and why."""

    policy: str = Field(description='The stop policy\'s name ("step_callback" for a plain callback).')
    step: int | None = Field(default=None, description="0-based generated-token index of the stop.")
    reason: str | None = None


class SamplingInfo(ReportModel):
    """New: ``extensions.sampling``, the sampling policy that kept this report (runs in production).

    ``weight`` is how many runs this one stands for (1 / the policy's kept fraction), which the
    exporters add to their run counters so that rates stay right under sampling.
    """

    policy: str = Field(description='The policy as a phrase: "every 10", "rate 0.1 (seed 7)", "risk >= 0.7".')
    kept: bool = Field(default=True, description="Whether the policy kept this run (stored reports: true).")
    kept_fraction: float = Field(
        description="The fraction of runs the policy keeps: 1/N, the rate, or for a risk threshold the "
        "fraction kept so far by this process."
    )
    weight: float = Field(
        description="Runs this report stands for (1 / kept fraction; 1 for a risk threshold)."
    )
    runs_seen: int = Field(description="Runs this process had seen under the policy, this one included.")
    runs_kept: int = Field(description="Runs this process had kept, this one included when kept.")


class Extensions(ReportModel):
    """The report's ``extensions``: the analysis outputs, each under its own key."""

    risk: RiskExtension | None = None
    compound_signals: list[CompoundSignal] | None = None
    early_warning: EarlyWarning | None = None
    fingerprint: Fingerprint | None = None
    narrative: Narrative | None = None
    calibration: CalibrationResult | None = None
    metric_consistency: MetricConsistency | None = None
    rag: RagContext | None = None
    performance: PerformanceInfo | None = None
    repetition: RepetitionInfo | None = None
    mid_layer: MidLayerDetail | None = None
    intervention: Intervention | None = None
    sampling: SamplingInfo | None = None
    migrated_from: str | None = Field(
        default=None, description="New: the schema version this report was upgraded from, if any."
    )
