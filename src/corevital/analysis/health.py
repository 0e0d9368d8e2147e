"""Run-level health flags of one sequence (``metrics.md`` §4), from its :class:`SequenceSignals`.

``nan_detected``/``inf_detected``: logits, hidden states or attention at any step;
``high_entropy_steps``: generated steps above the profile's threshold; the repetition loop, the
mid-layer anomaly and attention collapse come from their own modules and are assembled here;
``layer_update_anomaly_detected``: a layer whose update of the residual stream or whose attention
entropy is abnormal, a silenced or sharpened sub-layer (:mod:`corevital.analysis.updates`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corevital.analysis.collapse import CollapseFinding, detect_attention_collapse
from corevital.analysis.depth import NormJump, layer_jumps, middle_third
from corevital.analysis.profiles import ModelProfile
from corevital.analysis.repetition import RepetitionFinding, detect_repetition
from corevital.analysis.signals import SequenceSignals
from corevital.analysis.stats import first_true
from corevital.analysis.updates import LayerReferences, LayerUpdateReport, assess_layer_updates


@dataclass(frozen=True)
class NumericFaults:
    nan_detected: bool = False
    inf_detected: bool = False
    first_nan_step: int | None = None
    first_inf_step: int | None = None
    sources: tuple[str, ...] = ()  # "logits", "hidden", "attention": where NaN/Inf was seen


@dataclass(frozen=True)
class MidLayerFinding:
    detected: bool = False
    layers: tuple[int, ...] = ()  # middle-third layers found abnormal
    nonfinite_layers: tuple[int, ...] = ()  # middle-third layers with NaN/Inf
    jumps: tuple[NormJump, ...] = ()  # every abnormal norm jump, any depth (blame uses them all)
    judged: bool = False  # False when hidden-state norms were not available


@dataclass(frozen=True)
class HealthFindings:
    nan_detected: bool = False
    inf_detected: bool = False
    attention_collapse_detected: bool = False
    attention_collapse_severity: float | None = None
    high_entropy_steps: int = 0
    repetition_loop_detected: bool = False
    mid_layer_anomaly_detected: bool = False
    layer_update_anomaly_detected: bool = False


@dataclass(frozen=True)
class HealthReport:
    flags: HealthFindings
    numeric: NumericFaults
    repetition: RepetitionFinding
    collapse: CollapseFinding
    mid_layer: MidLayerFinding
    layer_updates: LayerUpdateReport = LayerUpdateReport()


def _or_steps(*arrays: np.ndarray | None) -> tuple[np.ndarray | None, tuple[str, ...]]:
    names = ("logits", "hidden", "attention")
    per_step: np.ndarray | None = None
    sources: list[str] = []
    for name, arr in zip(names, arrays, strict=True):
        if arr is None:
            continue
        flags = np.asarray(arr, dtype=bool)
        if flags.size == 0:
            continue
        step_flags: np.ndarray = np.asarray(flags.reshape(flags.shape[0], -1).any(axis=1))
        if step_flags.any():
            sources.append(name)
        per_step = step_flags if per_step is None else per_step | step_flags
    return per_step, tuple(sources)


def numeric_faults(sig: SequenceSignals) -> NumericFaults:
    """NaN and Inf anywhere in a sequence's logits, hidden states or attention, with the first step."""
    nan, nan_src = _or_steps(sig.logits_nan, sig.hidden_nan, sig.attn_nan)
    inf, inf_src = _or_steps(sig.logits_inf, sig.hidden_inf, sig.attn_inf)
    first_nan, first_inf = first_true(nan), first_true(inf)
    return NumericFaults(
        nan_detected=first_nan is not None,
        inf_detected=first_inf is not None,
        first_nan_step=first_nan,
        first_inf_step=first_inf,
        sources=tuple(dict.fromkeys(nan_src + inf_src)),
    )


def high_entropy_steps(entropy: np.ndarray, threshold_bits: float) -> int:
    """Generated steps whose entropy exceeds the threshold (NaN steps are not counted)."""
    values = np.asarray(entropy, dtype=np.float64)
    return int(np.sum(np.isfinite(values) & (values > threshold_bits)))


def mid_layer_anomaly(
    sig: SequenceSignals, profile: ModelProfile, jumps: tuple[NormJump, ...] | None = None
) -> MidLayerFinding:
    """NaN/Inf in a middle-third layer, or a middle-third layer whose norm jump is abnormal.

    ``jumps``: abnormal jumps judged against a calibration profile; without them, against depth.
    """
    if jumps is None:
        jumps = layer_jumps(sig.hidden_l2, profile.mid_layer)
    nonfinite = sig.nonfinite_layers()
    if sig.hidden_l2 is None and nonfinite is None:
        return MidLayerFinding()
    width = sig.num_layers
    for arr in (sig.hidden_l2, nonfinite):
        if arr is not None and np.ndim(arr) == 2:
            width = max(width, int(np.shape(arr)[1]))
    middle = middle_third(width)
    bad = tuple(
        i for i in middle if nonfinite is not None and i < nonfinite.shape[1] and nonfinite[:, i].any()
    )
    jumped = tuple(j.layer for j in jumps if j.layer in middle)
    layers = tuple(sorted(set(bad) | set(jumped)))
    return MidLayerFinding(
        detected=bool(layers), layers=layers, nonfinite_layers=bad, jumps=jumps, judged=True
    )


def assess_health(
    sig: SequenceSignals,
    profile: ModelProfile,
    jumps: tuple[NormJump, ...] | None = None,
    calibration: LayerReferences | None = None,
) -> HealthReport:
    """Every health flag of one sequence (docs/metrics.md §4), with the detail behind each.

    ``jumps``: see :func:`mid_layer_anomaly`; ``calibration``: layer updates are judged against it
    (:func:`~corevital.analysis.updates.assess_layer_updates`).
    """
    numeric = numeric_faults(sig)
    repetition = detect_repetition(
        sig.token_ids, sig.token_texts, profile.repetition, sig.last_layer_sketch, prompt_text=sig.prompt_text
    )
    collapse = detect_attention_collapse(sig.attn_collapse_rate, profile.collapse)
    mid = mid_layer_anomaly(sig, profile, jumps)
    updates = assess_layer_updates(sig, calibration=calibration)
    flags = HealthFindings(
        nan_detected=numeric.nan_detected,
        inf_detected=numeric.inf_detected,
        attention_collapse_detected=collapse.detected,
        attention_collapse_severity=collapse.severity if collapse.detected else None,
        high_entropy_steps=high_entropy_steps(sig.entropy, profile.high_entropy_threshold_bits),
        repetition_loop_detected=repetition.detected,
        mid_layer_anomaly_detected=mid.detected,
        layer_update_anomaly_detected=updates.detected,
    )
    return HealthReport(
        flags=flags,
        numeric=numeric,
        repetition=repetition,
        collapse=collapse,
        mid_layer=mid,
        layer_updates=updates,
    )
