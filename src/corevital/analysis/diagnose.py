"""One entry point: everything the analysis says about one generated sequence.

``diagnose(signals, profile)`` runs the detectors in dependency order (health flags → layer blame →
compound signals → early warning → risk → fingerprint → narrative, plus the optional metric
consistency check; with a calibration profile, the divergence from it) and bundles their typed
results in a :class:`Diagnosis`, which the report builder converts field by field into the report's
``health_flags`` and ``extensions``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from corevital.analysis.blame import LayerBlame, blame_layers
from corevital.analysis.calibration.divergence import CalibrationDivergence, score_divergence
from corevital.analysis.calibration.features import RunFeatures, run_features
from corevital.analysis.calibration.layers import calibrated_layer_jumps
from corevital.analysis.calibration.profile import CalibrationProfile
from corevital.analysis.collapse import CollapseFinding
from corevital.analysis.compound import CompoundFinding, detect_compound_signals
from corevital.analysis.consistency import ConsistencyCheck, check_consistency
from corevital.analysis.early_warning import EarlyWarningResult, StepWarning, early_warning
from corevital.analysis.fingerprint import FingerprintVector, fingerprint
from corevital.analysis.health import (
    HealthFindings,
    HealthReport,
    MidLayerFinding,
    NumericFaults,
    assess_health,
)
from corevital.analysis.narrative import NarrativeText, build_narrative
from corevital.analysis.profiles import ModelProfile
from corevital.analysis.repetition import RepetitionFinding
from corevital.analysis.risk import Risk, risk_score
from corevital.analysis.signals import SequenceSignals


@dataclass(frozen=True)
class Diagnosis:
    health_flags: HealthFindings
    numeric: NumericFaults
    repetition: RepetitionFinding
    attention_collapse: CollapseFinding
    mid_layer: MidLayerFinding
    risk: Risk
    blamed_layers: tuple[LayerBlame, ...]
    compound_signals: tuple[CompoundFinding, ...]
    early_warning: EarlyWarningResult
    early_warning_steps: tuple[StepWarning, ...]
    fingerprint: FingerprintVector
    narrative: NarrativeText
    metric_consistency: ConsistencyCheck | None
    profile_family: str
    run_features: RunFeatures
    calibration: CalibrationDivergence | None = None
    context_share: float | None = None  # the RAG context's attention share the analysis used


def diagnose(
    signals: SequenceSignals,
    profile: ModelProfile,
    *,
    basin_scores: Sequence[Sequence[float]] | np.ndarray | None = None,
    context_share: float | None = None,
    check_consistency: bool = False,
    calibration: CalibrationProfile | None = None,
) -> Diagnosis:
    """The full diagnosis of one sequence. ``basin_scores``: prompt basin scores per layer and head.

    ``calibration``: a profile of this model's healthy runs (checked against the model by the caller):
    layer norms are judged against its per-layer levels, the run's divergence from it is scored, and
    its labelled risk model, if it has one, gives the risk score.
    """
    jumps = None
    if calibration is not None and signals.hidden_l2 is not None:
        jumps = calibrated_layer_jumps(
            signals.hidden_l2,
            calibration,
            bound=profile.mid_layer.calibrated_z_bound,
            min_steps=profile.mid_layer.transient_min_steps,
        )
    health: HealthReport = assess_health(signals, profile, jumps, calibration)
    blamed = blame_layers(
        signals, health.mid_layer.jumps, health.collapse, profile.mid_layer, health.layer_updates
    )
    compound = detect_compound_signals(
        signals, profile.compound, basin_scores=basin_scores, context_share=context_share
    )
    warning, steps = early_warning(
        signals.entropy, signals.top_k_margin, signals.surprisal, profile.early_warning
    )
    features = run_features(
        signals,
        health.flags,
        failure_risk=warning.failure_risk,
        high_entropy_bits=profile.high_entropy_threshold_bits,
    )
    labelled = None
    if calibration is not None and calibration.risk_model is not None:
        labelled = (calibration.risk_model, features)
    risk = risk_score(
        signals,
        profile.risk,
        flags=health.flags,
        failure_risk=warning.failure_risk,
        compound=compound,
        blamed=blamed,
        collapse=health.collapse if signals.attn_collapse_rate is not None else None,
        repetition_coverage=health.repetition.coverage,
        repetition_requested=health.repetition.requested,
        labelled=labelled,
        layer_updates=health.layer_updates,
    )
    consistency = None
    if check_consistency:
        consistency = _consistency(signals)
    return Diagnosis(
        health_flags=health.flags,
        numeric=health.numeric,
        repetition=health.repetition,
        attention_collapse=health.collapse,
        mid_layer=health.mid_layer,
        risk=risk,
        blamed_layers=blamed,
        compound_signals=compound,
        early_warning=warning,
        early_warning_steps=steps,
        fingerprint=fingerprint(signals, health.flags, risk.risk_score),
        narrative=build_narrative(signals, health, risk, compound, blamed),
        metric_consistency=consistency,
        profile_family=profile.family,
        run_features=features,
        calibration=score_divergence(signals, calibration) if calibration is not None else None,
        context_share=context_share,
    )


def _consistency(signals: SequenceSignals) -> ConsistencyCheck:
    return check_consistency(
        signals.entropy, signals.perplexity, signals.top_k_margin, signals.topk_mass, signals.surprisal
    )
