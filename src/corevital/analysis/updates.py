"""Silenced or sharpened sub-layers, from each layer's update of the residual stream and its attention.

Three per-layer signals, ``[T, L]``:

- the **update ratio** ``u[t, ℓ] = ‖h_ℓ − h_{ℓ−1}‖ / ‖h_{ℓ−1}‖`` (:mod:`corevital.metrics.hidden`):
  how much layer ℓ changes the residual stream. A zeroed norm before the attention or the MLP
  silences that sub-layer: the layer's update shrinks. Judged on ``ln u``.
- the **MLP update ratio** ``‖h_ℓ − m_ℓ‖ / ‖m_ℓ‖``, ``m_ℓ`` the residual stream between layer ℓ's
  attention and its MLP: the MLP's own update. A zeroed norm before the MLP makes it add exactly
  nothing (0), which no healthy layer comes near, so it is judged on its own, with or without a
  profile: a layer whose typical MLP ratio is below ``mlp_silent_ratio`` is a silenced MLP.
- the **normalised attention entropy** (mean over heads of entropy / ln K): a zeroed norm before
  the attention makes every query and key zero, so every head attends uniformly (1.0); a scaled
  query projection sharpens every head (towards 0).

Without a calibration profile each layer is judged against the run's other layers (depth, as
:mod:`corevital.analysis.depth` does for norms): the run's typical value of a layer (median over
steps) is a robust-z outlier across depth beyond ``z_bound``, or, for attention, every head of the
layer is uniform (median normalised entropy ≥ ``uniform_entropy``, which no healthy layer of the
models tried reaches). With a profile, each layer's typical value is z-scored against that
layer's healthy runs (``LayerReference.log_update_ratio`` and ``attention_entropy``), in both
directions, beyond ``calibrated_z_bound``.

Findings name the layer, the signal (``update_ratio`` or ``attention_entropy``), the direction
(``low``: silenced, ``high``) and the z; blame ranks layers by |z| (the faulted layer deviates
most; the layers after it see a changed stream and deviate less).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from corevital.analysis.signals import SequenceSignals


class LayerReferences(Protocol):
    """What is read of a calibration profile (``CalibrationProfile``: its healthy per-layer levels).

    A protocol, because the calibration package imports the health flags that use this module.
    """

    @property
    def layers(self) -> Any: ...


@dataclass(frozen=True)
class UpdateThresholds:
    z_bound: float = (
        8.0  # depth-judged robust z of a layer's typical ln update ratio (healthy SmolLM2: < 7.2)
    )
    scale_floor: float = 0.1  # floor of the depth MAD scale (ln units)
    uniform_entropy: float = 0.995  # median normalised attention entropy of a silenced attention (healthy
    # SmolLM2 layers: at most 0.89)
    mlp_silent_ratio: float = 1e-3  # typical MLP update ratio of a silenced MLP (0 exactly). Healthy
    # SmolLM2 layers: at least 0.16; the layers after a collapsed early attention: down to 0.008
    calibrated_z_bound: float = 8.0  # z against the profile's healthy runs of that layer (healthy SmolLM2
    # runs against a profile of others: up to 8.7 in 1 of 54)


@dataclass(frozen=True)
class LayerUpdateFinding:
    layer: int
    signal: str  # "update_ratio" | "mlp_update_ratio" | "attention_entropy"
    direction: str  # "low" | "high"
    z: float  # signed; ±inf for a uniform attention or a silenced MLP (absolute, not a z)
    typical: float  # the run's median of the signal at that layer (ratio, not log)
    bound: float = 1.0  # the |z| beyond which it was found


def finding_severity(finding: LayerUpdateFinding) -> float:
    """0.5 at the bound, towards 0.9 as |z| grows (a uniform attention or a silenced MLP: 0.9)."""
    excess = abs(finding.z) / finding.bound if finding.bound > 0 else 1.0
    return 0.5 + 0.4 * (1.0 - 1.0 / max(excess, 1.0))


@dataclass(frozen=True)
class LayerUpdateReport:
    detected: bool = False
    findings: tuple[LayerUpdateFinding, ...] = ()
    judged: bool = False  # False when no signal was captured

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(f.layer for f in self.findings))

    @property
    def severity(self) -> float | None:
        """The most severe finding's severity (the risk model's evidence), None when none was found."""
        return max((finding_severity(f) for f in self.findings), default=None)


@dataclass(frozen=True)
class TypicalLevels:
    """Each layer's typical value (median over the steps seen, finite steps only) of each signal, [L]."""

    update_ratio: np.ndarray | None = None
    mlp_update_ratio: np.ndarray | None = None
    attention_entropy: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return self.update_ratio is None and self.mlp_update_ratio is None and self.attention_entropy is None


def typical_levels(sig: SequenceSignals) -> TypicalLevels:
    """The run's :class:`TypicalLevels` (the live monitor keeps the same medians step by step)."""
    return TypicalLevels(
        _typical(sig.hidden_update_ratio),
        _typical(sig.hidden_mlp_update_ratio),
        _typical(sig.attn_entropy_norm),
    )


def _typical(values: np.ndarray | None) -> np.ndarray | None:
    """Median over steps of each layer ([L]), NaN where a layer has no finite value."""
    if values is None or np.ndim(values) != 2 or np.shape(values)[0] == 0:
        return None
    arr = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(arr)
    out = np.full(arr.shape[1], np.nan)
    for layer in range(arr.shape[1]):
        column = arr[finite[:, layer], layer]
        if column.size:
            out[layer] = float(np.median(column))
    return out


def _log(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), np.nan)


def _robust_z(values: np.ndarray, floor: float) -> np.ndarray:
    """:func:`~corevital.analysis.stats.robust_z_rows` of one row (the same arithmetic, without its
    grouping of rows: the live monitor judges every step)."""
    out = np.full(values.shape, np.nan)
    ok = np.isfinite(values)
    if ok.sum() >= 3:
        row = values[ok]
        med = np.median(row)
        scale = max(float(np.median(np.abs(row - med))) * 1.4826, floor)
        out[ok] = (row - med) / scale
    return out


def _depth_findings(levels: TypicalLevels, th: UpdateThresholds) -> list[LayerUpdateFinding]:
    found: list[LayerUpdateFinding] = []
    ratio = levels.update_ratio
    if ratio is not None and np.isfinite(ratio).sum() >= 5:
        z = _robust_z(_log(ratio), th.scale_floor)
        for layer in np.flatnonzero(np.abs(np.nan_to_num(z)) > th.z_bound):
            found.append(
                LayerUpdateFinding(
                    int(layer),
                    "update_ratio",
                    "low" if z[layer] < 0 else "high",
                    float(z[layer]),
                    ratio[layer],
                )
            )
    return found


def _uniform_findings(levels: TypicalLevels, th: UpdateThresholds) -> list[LayerUpdateFinding]:
    """Layers whose every head attends uniformly (a silenced attention), with or without a profile."""
    entropy = levels.attention_entropy
    if entropy is None:
        return []
    return [
        LayerUpdateFinding(int(layer), "attention_entropy", "high", float("inf"), float(entropy[layer]), 1.0)
        for layer in np.flatnonzero(np.nan_to_num(entropy) >= th.uniform_entropy)
    ]


def _silent_mlp_findings(levels: TypicalLevels, th: UpdateThresholds) -> list[LayerUpdateFinding]:
    """Layers whose MLP adds (almost) nothing to the residual stream, with or without a profile."""
    ratio = levels.mlp_update_ratio
    if ratio is None:
        return []
    with np.errstate(invalid="ignore"):
        silent = np.isfinite(ratio) & (ratio < th.mlp_silent_ratio)
    return [
        LayerUpdateFinding(int(layer), "mlp_update_ratio", "low", float("-inf"), float(ratio[layer]), 1.0)
        for layer in np.flatnonzero(silent)
    ]


def _without_consequences(findings: list[LayerUpdateFinding]) -> list[LayerUpdateFinding]:
    """Drop what follows from an earlier finding: after an exploding update (ratio ``high``), the
    later layers' update ratios follow from the changed stream (a relatively small update of the
    inflated stream, or a larger one after a collapsed attention's output: not counted); and a uniform
    attention's (or a silenced MLP's) own ratio and entropy z are the same fault."""
    highs = [f.layer for f in findings if f.signal == "update_ratio" and f.direction == "high"]
    first_high = min(highs) if highs else None
    uniform = {f.layer for f in findings if not np.isfinite(f.z)}
    kept = []
    for f in findings:
        later = first_high is not None and f.layer > first_high
        if later and f.signal == "update_ratio":
            continue
        if f.layer in uniform and np.isfinite(f.z):
            continue
        kept.append(f)
    return kept


def _profile_column(profile: LayerReferences, name: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    means, scales = np.full(width, np.nan), np.full(width, np.nan)
    for layer in range(min(width, len(profile.layers))):
        stats = getattr(profile.layers[layer], name)
        if stats is not None:
            means[layer], scales[layer] = stats.mean, stats.scale
    return means, scales


def _calibrated_findings(
    levels: TypicalLevels, profile: LayerReferences, th: UpdateThresholds
) -> list[LayerUpdateFinding]:
    found: list[LayerUpdateFinding] = []
    for signal, typical, field, log in (
        ("update_ratio", levels.update_ratio, "log_update_ratio", True),
        ("attention_entropy", levels.attention_entropy, "attention_entropy", False),
    ):
        if typical is None:
            continue
        means, scales = _profile_column(profile, field, typical.shape[0])
        level = _log(typical) if log else typical
        with np.errstate(invalid="ignore"):
            z = (level - means) / scales
        for layer in np.flatnonzero(np.abs(np.nan_to_num(z)) > th.calibrated_z_bound):
            found.append(
                LayerUpdateFinding(
                    int(layer),
                    signal,
                    "low" if z[layer] < 0 else "high",
                    float(z[layer]),
                    float(typical[layer]),
                    th.calibrated_z_bound,
                )
            )
    return found


def _has_reference(profile: LayerReferences | None) -> bool:
    return profile is not None and any(ref.log_update_ratio is not None for ref in profile.layers)


def assess_layer_updates(
    sig: SequenceSignals,
    thresholds: UpdateThresholds | None = None,
    calibration: LayerReferences | None = None,
) -> LayerUpdateReport:
    """Layers whose update of the residual stream or whose attention entropy is abnormal.

    Judged against the calibration profile when it holds update-ratio references (profiles made
    before the update ratio existed do not: they are judged across depth, as without a profile).
    """
    return judge_levels(typical_levels(sig), thresholds, calibration)


def judge_levels(
    levels: TypicalLevels,
    thresholds: UpdateThresholds | None = None,
    calibration: LayerReferences | None = None,
) -> LayerUpdateReport:
    """:func:`assess_layer_updates` of given typical levels (the run's, or the steps' seen so far)."""
    th = thresholds or UpdateThresholds()
    if levels.empty:
        return LayerUpdateReport()
    absolute = _uniform_findings(levels, th) + _silent_mlp_findings(levels, th)
    if calibration is not None and _has_reference(calibration):
        findings = _calibrated_findings(levels, calibration, th) + absolute
    else:
        findings = _depth_findings(levels, th) + absolute
    findings = _without_consequences(findings)
    findings.sort(key=lambda f: (-abs(f.z), f.layer))
    return LayerUpdateReport(detected=bool(findings), findings=tuple(findings), judged=True)
