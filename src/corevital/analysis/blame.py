"""Layer blame (``metrics.md`` §6): which layers look responsible, why, and how badly.

- **NaN/Inf**: it propagates to every later layer and, once a corrupted token is fed back, to earlier
  layers at later steps; so only the first layer (in depth order) showing it at the first step where
  any layer shows it is blamed (``nan_inf_origin``, severity 1.0).
- **L2 norm**: a layer whose norm jumps abnormally over its predecessor (:mod:`.depth`: judged against
  the model's depth profile, not a fixed level). ``l2_norm_jump`` when the jump is there for most of
  the run (severity 0.6–0.9), ``l2_norm_spike`` when it comes and goes (0.5–0.8). The later layers
  that carry the jump forward have ordinary jumps themselves and are not blamed.
- **attention collapse**: the layers the collapse detector names (``attention_collapse``,
  0.3–0.7 by the layer's mean collapse rate).

- **silenced or sharpened sub-layer** (:mod:`.updates`): a layer whose update of the residual stream
  (``update_ratio_low``/``update_ratio_high``) or whose attention entropy
  (``attention_uniform``/``attention_entropy_low``/``attention_entropy_high``) is abnormal,
  0.5–0.9 by how far beyond its bound (the faulted layer deviates most, the layers after it less).

One entry per layer (reasons merged, the highest severity kept), sorted by severity, then depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corevital.analysis.collapse import CollapseFinding
from corevital.analysis.depth import NormJump
from corevital.analysis.profiles import MidLayerProfile
from corevital.analysis.signals import SequenceSignals
from corevital.analysis.stats import clip
from corevital.analysis.updates import LayerUpdateFinding, LayerUpdateReport, finding_severity


@dataclass(frozen=True)
class LayerBlame:
    layer: int
    reasons: tuple[str, ...]
    severity: float
    first_step: int | None = None  # first step at which the strongest reason was seen


def nan_origin(sig: SequenceSignals) -> tuple[int, int] | None:
    """(step, layer): the first layer showing NaN/Inf at the first step where any layer does."""
    per_layer = sig.nonfinite_layers()
    if per_layer is None or not per_layer.any():
        return None
    step = int(np.flatnonzero(per_layer.any(axis=1))[0])
    layer = int(np.flatnonzero(per_layer[step])[0])
    return step, layer


def _jump_severity(jump: NormJump, bound: float) -> float:
    strength = clip((jump.z - bound) / (3.0 * bound), 0.0, 1.0)
    return 0.6 + 0.3 * strength if jump.kind == "persistent" else 0.5 + 0.3 * strength


def _update_reason(finding: LayerUpdateFinding) -> str:
    if finding.signal == "update_ratio":
        return f"update_ratio_{finding.direction}"
    if finding.signal == "mlp_update_ratio":
        return "mlp_silent"
    if finding.direction == "high" and finding.z == float("inf"):
        return "attention_uniform"
    return f"attention_entropy_{finding.direction}"


def blame_layers(
    sig: SequenceSignals,
    jumps: tuple[NormJump, ...],
    collapse: CollapseFinding,
    mid_layer: MidLayerProfile,
    updates: LayerUpdateReport | None = None,
) -> tuple[LayerBlame, ...]:
    """Blamed layers of one sequence, most responsible first."""
    found: dict[int, list[tuple[float, str, int | None]]] = {}

    def add(layer: int, severity: float, reason: str, step: int | None) -> None:
        found.setdefault(layer, []).append((round(severity, 4), reason, step))

    origin = nan_origin(sig)
    if origin is not None:
        add(origin[1], 1.0, "nan_inf_origin", origin[0])
    for jump in jumps:
        reason = "l2_norm_jump" if jump.kind == "persistent" else "l2_norm_spike"
        add(jump.layer, _jump_severity(jump, mid_layer.z_bound), reason, jump.first_step)
    rates = collapse.per_layer_mean_collapse_rate
    for layer in collapse.trend_layers:
        rate = rates[layer] if layer < len(rates) else 0.0
        add(layer, 0.3 + 0.4 * clip(rate, 0.0, 1.0), "attention_collapse", collapse.trend_peak_step)
    for finding in updates.findings if updates is not None else ():
        add(finding.layer, finding_severity(finding), _update_reason(finding), None)
    blamed = []
    for layer, entries in found.items():
        entries.sort(key=lambda e: -e[0])
        reasons = tuple(dict.fromkeys(reason for _, reason, _ in entries))
        blamed.append(
            LayerBlame(layer=layer, reasons=reasons, severity=entries[0][0], first_step=entries[0][2])
        )
    blamed.sort(key=lambda b: (-b.severity, b.layer))
    return tuple(blamed)


def blamed_layers_flat(blamed: tuple[LayerBlame, ...]) -> tuple[int, ...]:
    """The blamed layer indices, most responsible first (``blamed_layers_flat``)."""
    return tuple(b.layer for b in blamed)
