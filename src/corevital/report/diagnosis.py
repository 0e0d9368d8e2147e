"""Turning the analysis' typed results into the report's ``health_flags`` and ``extensions``.

The analysis dataclasses use the report's field names, so the conversion is mechanical; the report
models refuse fields they do not declare, so an analysis field the schema lacks fails here, loudly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from corevital.analysis.diagnose import Diagnosis
from corevital.capture.records import SequenceCapture
from corevital.report.schema import (
    CalibrationAnomaly,
    CalibrationResult,
    CompoundSignal,
    EarlyWarning,
    Extensions,
    Fingerprint,
    HealthFlags,
    Intervention,
    MetricConsistency,
    MetricDivergence,
    MidLayerDetail,
    Narrative,
    RepetitionInfo,
    RiskExtension,
    RiskModelTraining,
)


def _plain(value: Any) -> Any:
    return (
        dataclasses.asdict(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type)
        else value
    )


def health_flags(diagnosis: Diagnosis, *, attention_observed: bool) -> HealthFlags:
    flags = HealthFlags.model_validate(_plain(diagnosis.health_flags))
    if not attention_observed:  # collapse was not judged: say nothing rather than "no collapse, severity 0"
        flags.attention_collapse_severity = None
    return flags


def intervention_of(seq: SequenceCapture) -> Intervention | None:
    """Who stopped the generation, at which step and why (live intervention), if anyone did."""
    if seq.finish_reason != "stopped_by_callback":
        return None
    return Intervention(
        policy=seq.stop_policy or "step_callback", step=seq.stopped_at_step, reason=seq.stop_reason
    )


def extensions(diagnosis: Diagnosis, *, attention_observed: bool, seq: SequenceCapture) -> Extensions:
    risk = _plain(diagnosis.risk)
    risk.pop("features", None)
    risk.pop("smooth_score", None)
    if not attention_observed:
        risk["attention_collapse_detail"] = None
    elif diagnosis.calibration is not None and risk.get("attention_collapse_detail") is not None:
        low = list(diagnosis.calibration.low_attention_entropy_layers)
        risk["attention_collapse_detail"]["calibration_anomaly"] = bool(low)
        risk["attention_collapse_detail"]["calibration_anomaly_layers"] = low
    fields: dict[str, Any] = {
        "risk": RiskExtension.model_validate(risk),
        "compound_signals": [CompoundSignal.model_validate(_plain(s)) for s in diagnosis.compound_signals],
        "early_warning": EarlyWarning.model_validate(
            {
                "failure_risk": diagnosis.early_warning.failure_risk,
                "warning_signals": list(diagnosis.early_warning.warning_signals),
                "firings": [_plain(f) for f in diagnosis.early_warning.firings],
                "peak_step": diagnosis.early_warning.peak_step,
            }
        ),
        "fingerprint": Fingerprint.model_validate(_plain(diagnosis.fingerprint)),
        "narrative": Narrative(summary=diagnosis.narrative.summary),
        "repetition": RepetitionInfo.model_validate(_plain(diagnosis.repetition)),
    }
    if diagnosis.metric_consistency is not None:
        fields["metric_consistency"] = MetricConsistency.model_validate(_plain(diagnosis.metric_consistency))
    fields["mid_layer"] = MidLayerDetail.model_validate(_plain(diagnosis.mid_layer))
    if diagnosis.calibration is not None:
        fields["calibration"] = calibration_result(diagnosis)
    intervention = intervention_of(seq)
    if intervention is not None:
        fields["intervention"] = intervention
    return Extensions.model_validate(fields)


def calibration_result(diagnosis: Diagnosis) -> CalibrationResult:
    div = diagnosis.calibration
    assert div is not None
    return CalibrationResult(
        divergence_score=div.divergence_score,
        anomalies=[a.describe() for a in div.anomalies],
        baseline_model_id=div.baseline_model_id,
        baseline_num_runs=div.baseline_num_runs,
        anomaly_details=[CalibrationAnomaly.model_validate(_plain(a)) for a in div.anomalies],
        metric_divergence=[MetricDivergence.model_validate(_plain(m)) for m in div.metrics],
        risk_model=None
        if div.risk_model_training is None
        else RiskModelTraining.model_validate(div.risk_model_training.model_dump()),
    )
