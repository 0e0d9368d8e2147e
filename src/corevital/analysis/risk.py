"""The 0–1 risk score (``metrics.md`` §6): a smooth function of continuous evidence, plus hard floors.

``risk = sigmoid(intercept + Σ terms)``. Each continuous feature x gives the term
``weight · clip((x − center) / scale, ±feature_cap)`` (profile ``risk.<feature>``); centers sit at a
typical healthy run, so healthy runs spread around ``sigmoid(intercept)`` instead of piling up on a
floor. Detector outputs add ``weight · severity`` (compound signals, one term each; attention
collapse; an abnormal norm jump outside the middle third, by the blamed layer's severity) or
``weight`` (mid-layer anomaly, repetition loop, NaN/Inf). Then the hard floors: NaN/Inf
forces 1.0; a repetition loop lifts the score to at least ``repetition_floor``, and further towards 1
by half the share of the output the loop covers (a loop over the whole output: floor + (1 − floor)/2).

A factor's contribution is how much the score would drop without it: ``risk − risk_without_term``
(for a flag with a floor, the floor's lift is added to it). ``risk_factors`` lists the factors that
raised the score by more than ``factor_epsilon``, largest first; factors that lowered it are not
listed. Nothing is on by default: a feature at its center contributes 0.

With a labelled risk model (a calibration profile fitted with ``--labels``), the smooth part is that
model's calibrated probability of failure instead (:mod:`corevital.analysis.calibration.risk_model`),
its factors are the features that raised it, and the hard floors apply on top.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from corevital.analysis.blame import LayerBlame
from corevital.analysis.calibration.features import RunFeatures
from corevital.analysis.calibration.risk_model import RiskModelSpec, predict
from corevital.analysis.collapse import CollapseFinding
from corevital.analysis.compound import CompoundFinding
from corevital.analysis.health import HealthFindings
from corevital.analysis.profiles import RiskProfile, RiskTerm
from corevital.analysis.signals import SequenceSignals
from corevital.analysis.stats import clip, finite, fmean, rolling_mean, sigmoid


@dataclass(frozen=True)
class RiskFeatures:
    """The continuous evidence (NaN when the run gives none, e.g. no steps)."""

    mean_entropy: float
    entropy_peak: float  # 90th percentile of entropy
    mean_surprisal: float
    surprisal_peak: float  # largest 3-step mean surprisal
    low_margin: float  # 1 − mean margin
    entropy_trend: float  # mean entropy of the last third minus the first third
    early_warning: float  # early-warning failure_risk


@dataclass(frozen=True)
class FactorContribution:
    name: str
    contribution: float


@dataclass(frozen=True)
class Risk:
    risk_score: float
    risk_factors: tuple[str, ...]
    factor_contributions: tuple[FactorContribution, ...]
    blamed_layers: tuple[LayerBlame, ...] = ()
    blamed_layers_flat: tuple[int, ...] = ()
    attention_collapse_detail: CollapseFinding | None = None
    smooth_score: float = 0.0  # before the hard floors
    features: RiskFeatures | None = None
    model: str = "heuristic"  # "heuristic" | "labelled" (a fitted risk model gave the smooth score)


def risk_features(sig: SequenceSignals, failure_risk: float) -> RiskFeatures:
    entropy = finite(sig.entropy)
    n = sig.num_steps
    third = n // 3
    trend = np.nan
    if third >= 2:
        trend = fmean(sig.entropy[n - third :], np.nan) - fmean(sig.entropy[:third], np.nan)
    surprisal_peak = np.nan
    if finite(sig.surprisal).size:
        smooth = rolling_mean(sig.surprisal, 3)[min(2, n - 1) :]
        surprisal_peak = float(np.nanmax(smooth)) if np.isfinite(smooth).any() else np.nan
    margin = fmean(sig.top_k_margin, np.nan)
    return RiskFeatures(
        mean_entropy=float(entropy.mean()) if entropy.size else np.nan,
        entropy_peak=float(np.percentile(entropy, 90)) if entropy.size else np.nan,
        mean_surprisal=fmean(sig.surprisal, np.nan),
        surprisal_peak=surprisal_peak,
        low_margin=1.0 - margin if np.isfinite(margin) else np.nan,
        entropy_trend=float(trend),
        early_warning=float(failure_risk),
    )


def _term(x: float, term: RiskTerm, cap: float) -> float:
    if not np.isfinite(x):
        return 0.0
    return term.weight * clip((x - term.center) / term.scale, -cap, cap)


_CONTINUOUS = (
    ("elevated_entropy", "mean_entropy"),
    ("entropy_peaks", "entropy_peak"),
    ("high_surprisal", "mean_surprisal"),
    ("surprisal_spikes", "surprisal_peak"),
    ("low_confidence_margin", "low_margin"),
    ("rising_entropy", "entropy_trend"),
    ("early_warning", "early_warning"),
)


def risk_score(
    sig: SequenceSignals,
    profile: RiskProfile,
    *,
    flags: HealthFindings,
    failure_risk: float,
    compound: tuple[CompoundFinding, ...] = (),
    blamed: tuple[LayerBlame, ...] = (),
    collapse: CollapseFinding | None = None,
    repetition_coverage: float = 0.0,
    labelled: tuple[RiskModelSpec, RunFeatures] | None = None,
) -> Risk:
    """Risk score of one sequence with the factors that moved it (``labelled``: model and run features)."""
    features = risk_features(sig, failure_risk)
    model = "heuristic"
    if labelled is not None:
        output = predict(*labelled)
        smooth, contributions, model = output.probability, dict(output.contributions), "labelled"
    else:
        smooth, contributions = _heuristic(features, profile, flags, compound, blamed)
    risk = _with_floors(smooth, contributions, profile, flags, repetition_coverage)
    return dataclasses.replace(
        risk,
        blamed_layers=blamed,
        blamed_layers_flat=tuple(b.layer for b in blamed),
        attention_collapse_detail=collapse,
        features=features,
        model=model,
    )


def _heuristic(
    features: RiskFeatures,
    profile: RiskProfile,
    flags: HealthFindings,
    compound: tuple[CompoundFinding, ...],
    blamed: tuple[LayerBlame, ...],
) -> tuple[float, dict[str, float]]:
    """The profile's smooth score and each term's contribution to it."""
    terms: dict[str, float] = {}
    for name, attr in _CONTINUOUS:
        terms[name] = _term(getattr(features, attr), getattr(profile, attr), profile.feature_cap)
    for signal in compound:
        terms[f"compound:{signal.name}"] = profile.compound_weight * signal.severity
    if flags.attention_collapse_detected:
        terms["attention_collapse"] = profile.collapse_weight * (flags.attention_collapse_severity or 0.0)
    if flags.mid_layer_anomaly_detected:
        terms["mid_layer_anomaly"] = profile.mid_layer_weight
    else:
        jumps = [b.severity for b in blamed if {"l2_norm_jump", "l2_norm_spike"} & set(b.reasons)]
        if jumps:
            terms["layer_norm_jump"] = profile.layer_jump_weight * max(jumps)
    if flags.repetition_loop_detected:
        terms["repetition_loop"] = profile.repetition_weight
    if flags.nan_detected or flags.inf_detected:
        terms["nan_or_inf"] = profile.nan_inf_weight
    logit = profile.intercept + sum(terms.values())
    smooth = sigmoid(logit)
    return smooth, {name: smooth - sigmoid(logit - value) for name, value in terms.items()}


def _with_floors(
    smooth: float,
    contributions: dict[str, float],
    profile: RiskProfile,
    flags: HealthFindings,
    repetition_coverage: float,
) -> Risk:
    """The hard floors on top of the smooth score, and the factors that raised the result."""
    nan_inf = flags.nan_detected or flags.inf_detected
    score = smooth
    if flags.repetition_loop_detected:
        floor = profile.repetition_floor
        score = max(score, floor + (1.0 - floor) * 0.5 * clip(repetition_coverage, 0.0, 1.0))
    if nan_inf:
        score = 1.0
    lift = score - smooth
    if lift > 0:
        owner = "nan_or_inf" if nan_inf else "repetition_loop"
        contributions[owner] = contributions.get(owner, 0.0) + lift
    listed = sorted(
        ((n, c) for n, c in contributions.items() if c > profile.factor_epsilon),
        key=lambda nc: (-nc[1], nc[0]),
    )
    return Risk(
        risk_score=float(clip(score, 0.0, 1.0)),
        risk_factors=tuple(n for n, _ in listed),
        factor_contributions=tuple(FactorContribution(n, round(c, 4)) for n, c in listed),
        smooth_score=smooth,
    )
