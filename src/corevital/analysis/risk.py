"""The 0–1 risk score (``metrics.md`` §6): a smooth function of continuous evidence, plus hard floors.

``risk = sigmoid(intercept + Σ terms)``. Each continuous feature x gives the term
``weight · clip((x − center) / scale, ±feature_cap)`` (profile ``risk.<feature>``); centers sit at a
typical healthy run, so healthy runs spread around ``sigmoid(intercept)`` instead of piling up on a
floor. Detector outputs add ``weight · severity`` (compound signals, one term each; attention
collapse; an abnormal norm jump outside the middle third, by the blamed layer's severity) or
``weight`` (mid-layer anomaly, repetition loop, NaN/Inf). Then the hard floors: NaN/Inf
forces 1.0; a repetition loop lifts the score to at least ``repetition_floor``, and further towards 1
by half the share of the output the loop covers (a loop over the whole output: floor + (1 − floor)/2).

A factor's contribution is its share of the score's rise: the smooth score minus the score the
terms that lowered it leave (``sigmoid(intercept + Σ negative terms)``), split among the terms that
raised it in proportion to their logit terms (so a saturated score still names what drove it); a
floor's lift is added to its flag's factor. ``risk_factors`` lists the factors that raised the score
by more than ``factor_epsilon``, largest first; a factor that lowered it is not listed. A hard floor
that applies (``nan_or_inf``, ``repetition_loop``) is always listed, and a score of 0.5 or more
always lists at least one factor. Nothing is on by default: a feature at its center contributes 0.

A repetition loop that the prompt asked for ("write X 50 times") adds no term and no floor, and
such a prompt's repeated n-grams (``repeat_share``, the continuous phrase-level loop evidence) add
no term either.

The same model gives the live ``running_risk`` (:mod:`corevital.analysis.online`): the score is
:func:`combine` of a :class:`RiskEvidence` (:func:`running_score` is its score without the factors),
which the report builds from the whole run and the live
monitor builds incrementally from the steps seen so far (features of the entropy, surprisal and
margin; early warning; the compound signals that need only those; repetition loops; NaN/Inf).

With a labelled risk model (a calibration profile fitted with ``--labels``), the smooth part is that
model's calibrated probability of failure instead (:mod:`corevital.analysis.calibration.risk_model`),
its factors are the features that raised it, and the hard floors apply on top.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
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
from corevital.analysis.updates import LayerUpdateReport


@dataclass(frozen=True)
class RiskFeatures:
    """The continuous evidence (NaN when the run gives none, e.g. no steps)."""

    mean_entropy: float
    entropy_peak: float  # 90th percentile of entropy
    mean_surprisal: float
    surprisal_peak: float  # largest 3-step mean surprisal
    low_margin: float  # 1 − mean margin
    entropy_trend: float  # mean entropy of the last third minus the first third (finite steps)
    early_warning: float  # early-warning failure_risk
    repeat_share: float = math.nan  # share of the generated token 4-grams that repeat an earlier one


@dataclass(frozen=True)
class RiskEvidence:
    """Everything the risk model reads, from a whole run or from the steps seen so far."""

    features: RiskFeatures
    compound: tuple[tuple[str, float], ...] = ()  # (signal name, severity)
    collapse_severity: float | None = None  # attention collapse detected: its severity
    mid_layer: bool = False
    layer_jump: float | None = None  # severity of an abnormal norm jump outside the middle third
    layer_update: float | None = None  # a silenced or sharpened sub-layer: its finding's severity
    loop: bool = False  # a repetition loop the prompt did not ask for
    loop_coverage: float = 0.0
    non_finite: bool = False
    repetition_requested: bool = False  # the prompt asks for repetition: repeat_share is not counted


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


MIN_TREND_STEPS = 6  # finite steps needed for a trend (two per third)


def entropy_trend(entropy: np.ndarray) -> float:
    """Mean of the last third minus the first third of the finite entries; NaN with fewer than 6."""
    values = finite(entropy)
    third = values.size // 3
    if third < MIN_TREND_STEPS // 3:
        return float("nan")
    return float(values[values.size - third :].mean() - values[:third].mean())


REPEAT_NGRAM = 4


def repeat_share(token_ids: Sequence[int], n: int = REPEAT_NGRAM) -> float:
    """Share of the token n-grams that repeat an earlier n-gram (NaN for fewer than n tokens): the
    phrase-level loop evidence of the score, continuous where ``repetition_loop`` is a detection."""
    grams = [tuple(token_ids[i : i + n]) for i in range(len(token_ids) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else math.nan


def risk_features(sig: SequenceSignals, failure_risk: float) -> RiskFeatures:
    entropy = finite(sig.entropy)
    n = sig.num_steps
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
        entropy_trend=entropy_trend(sig.entropy),
        early_warning=float(failure_risk),
        repeat_share=repeat_share([int(t) for t in sig.token_ids]),
    )


def _term(x: float, term: RiskTerm, cap: float) -> float:
    if not math.isfinite(x):
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
    ("repeated_phrases", "repeat_share"),
)


def evidence(
    features: RiskFeatures,
    flags: HealthFindings,
    *,
    compound: tuple[CompoundFinding, ...] = (),
    blamed: tuple[LayerBlame, ...] = (),
    repetition_coverage: float = 0.0,
    repetition_requested: bool = False,
    layer_updates: LayerUpdateReport | None = None,
) -> RiskEvidence:
    """The evidence of a whole run, from its detectors' findings."""
    jump = None
    if not flags.mid_layer_anomaly_detected:
        jumps = [b.severity for b in blamed if {"l2_norm_jump", "l2_norm_spike"} & set(b.reasons)]
        jump = max(jumps) if jumps else None
    return RiskEvidence(
        layer_update=layer_updates.severity if layer_updates is not None else None,
        features=features,
        compound=tuple((s.name, s.severity) for s in compound),
        collapse_severity=(flags.attention_collapse_severity or 0.0)
        if flags.attention_collapse_detected
        else None,
        mid_layer=flags.mid_layer_anomaly_detected,
        layer_jump=jump,
        loop=flags.repetition_loop_detected and not repetition_requested,
        loop_coverage=repetition_coverage,
        non_finite=flags.nan_detected or flags.inf_detected,
        repetition_requested=repetition_requested,
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
    repetition_requested: bool = False,
    labelled: tuple[RiskModelSpec, RunFeatures] | None = None,
    layer_updates: LayerUpdateReport | None = None,
) -> Risk:
    """Risk score of one sequence with the factors that moved it (``labelled``: model and run features)."""
    features = risk_features(sig, failure_risk)
    found = evidence(
        features,
        flags,
        compound=compound,
        blamed=blamed,
        repetition_coverage=repetition_coverage,
        repetition_requested=repetition_requested,
        layer_updates=layer_updates,
    )
    labelled_output = None
    if labelled is not None:
        output = predict(*labelled)
        labelled_output = (output.probability, dict(output.contributions))
    risk = combine(found, profile, labelled=labelled_output)
    return dataclasses.replace(
        risk,
        blamed_layers=blamed,
        blamed_layers_flat=tuple(b.layer for b in blamed),
        attention_collapse_detail=collapse,
    )


def combine(
    found: RiskEvidence,
    profile: RiskProfile,
    *,
    labelled: tuple[float, dict[str, float]] | None = None,
) -> Risk:
    """The risk model: smooth score (the profile's terms, or a labelled model's probability and
    contributions), then the hard floors and the factors."""
    if labelled is not None:
        smooth, contributions = labelled[0], dict(labelled[1])
        model = "labelled"
    else:
        smooth, contributions = _heuristic(found, profile)
        model = "heuristic"
    risk = _with_floors(smooth, contributions, profile, found)
    return dataclasses.replace(risk, features=found.features, model=model)


def logit_terms(found: RiskEvidence, profile: RiskProfile) -> dict[str, float]:
    """Each term of the profile's logit (0 for a feature at its center)."""
    terms: dict[str, float] = {}
    for name, attr in _CONTINUOUS:
        if attr == "repeat_share" and found.repetition_requested:
            continue
        terms[name] = _term(getattr(found.features, attr), getattr(profile, attr), profile.feature_cap)
    for name, severity in found.compound:
        terms[f"compound:{name}"] = profile.compound_weight * severity
    if found.collapse_severity is not None:
        terms["attention_collapse"] = profile.collapse_weight * found.collapse_severity
    if found.mid_layer:
        terms["mid_layer_anomaly"] = profile.mid_layer_weight
    elif found.layer_jump is not None:
        terms["layer_norm_jump"] = profile.layer_jump_weight * found.layer_jump
    if found.layer_update is not None:
        terms["layer_update_anomaly"] = profile.layer_update_weight * found.layer_update
    if found.loop:
        terms["repetition_loop"] = profile.repetition_weight
    if found.non_finite:
        terms["nan_or_inf"] = profile.nan_inf_weight
    return {name: value if math.isfinite(value) else 0.0 for name, value in terms.items()}


def floored(smooth: float, found: RiskEvidence, profile: RiskProfile) -> float:
    """The hard floors on top of the smooth score."""
    score = smooth if math.isfinite(smooth) else 1.0 if found.non_finite else 0.0
    if found.loop:
        floor = profile.repetition_floor
        score = max(score, floor + (1.0 - floor) * 0.5 * clip(found.loop_coverage, 0.0, 1.0))
    if found.non_finite:
        score = 1.0
    return float(clip(score, 0.0, 1.0))


def running_score(found: RiskEvidence, profile: RiskProfile) -> float:
    """The heuristic score alone (what :func:`combine` returns as ``risk_score``), without the factors:
    the live monitor's per-step path."""
    terms = logit_terms(found, profile)
    return floored(sigmoid(profile.intercept + sum(terms.values())), found, profile)


def _heuristic(found: RiskEvidence, profile: RiskProfile) -> tuple[float, dict[str, float]]:
    """The profile's smooth score and each term's contribution to it (see the module text)."""
    terms = logit_terms(found, profile)
    logit = profile.intercept + sum(terms.values())
    smooth = sigmoid(logit)
    raised = sum(v for v in terms.values() if v > 0)
    rise = smooth - sigmoid(profile.intercept + sum(v for v in terms.values() if v < 0))
    contributions = {
        name: rise * value / raised if value > 0 else smooth - sigmoid(logit - value)
        for name, value in terms.items()
    }
    return smooth, contributions


def _with_floors(
    smooth: float,
    contributions: dict[str, float],
    profile: RiskProfile,
    found: RiskEvidence,
) -> Risk:
    """The hard floors on top of the smooth score, and the factors that raised the result."""
    smooth = smooth if math.isfinite(smooth) else 1.0 if found.non_finite else 0.0
    score = floored(smooth, found, profile)
    floors = [name for name, on in (("repetition_loop", found.loop), ("nan_or_inf", found.non_finite)) if on]
    lift = score - smooth
    if lift > 0:
        owner = floors[-1]
        contributions[owner] = contributions.get(owner, 0.0) + lift
    clean = {n: c if math.isfinite(c) else 0.0 for n, c in contributions.items()}
    listed = [n for n, c in clean.items() if c > profile.factor_epsilon or n in floors]
    if not listed and score >= 0.5:  # a high score always says what drove it
        raised = sorted((n for n, c in clean.items() if c > 0), key=lambda n: -clean[n])
        listed = raised[:3] or ["model_baseline"]
        clean.setdefault("model_baseline", score)
    listed.sort(key=lambda n: (-clean[n], n))
    return Risk(
        risk_score=score,
        risk_factors=tuple(listed),
        factor_contributions=tuple(FactorContribution(n, round(max(clean[n], 0.0), 4)) for n in listed),
        smooth_score=smooth,
    )
