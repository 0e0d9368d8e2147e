"""Abnormal hidden-state norms judged against the profile's per-layer reference (``metrics.md`` §4, §6).

Without a profile, :mod:`corevital.analysis.depth` can only compare a layer's norm jump with the
model's other layers. With one, each layer has its own healthy level: the jump
``ln ‖h_ℓ‖ − ln ‖h_{ℓ−1}‖`` of layer ℓ ≥ 1 is z-scored against that layer's healthy jumps, and layer
0 (no predecessor) by its level ``ln ‖h_0‖``. So the first layer and the jumps that are normal for
one layer and abnormal for another are judged too. Only upward deviations count (explosions), as in
:mod:`~corevital.analysis.depth`, and the same two kinds come out:

- **persistent**: the layer's median z over the run's steps is above ``bound``;
- **transient**: z is above ``bound`` at ``min_steps`` steps or more.

The last layer's output is what the model returns after its final norm; a scale applied inside the
last layer is normalised away there and cannot be seen in the norms at all.
"""

from __future__ import annotations

import numpy as np

from corevital.analysis.calibration.profile import CalibrationProfile
from corevital.analysis.depth import NormJump, log_jumps, log_norms


def calibrated_layer_z(hidden_l2: np.ndarray, profile: CalibrationProfile) -> np.ndarray:
    """``[T, L]`` z of each layer's jump (layer 0: level) against the profile."""
    jumps = log_jumps(hidden_l2)
    jumps[:, 0] = log_norms(hidden_l2)[:, 0]
    width = min(jumps.shape[1], len(profile.layers))
    means = np.full(width, np.nan)
    scales = np.full(width, np.nan)
    for layer in range(width):
        ref = profile.layers[layer]
        stats = ref.log_l2 if layer == 0 else ref.log_l2_jump
        if stats is not None:
            means[layer], scales[layer] = stats.mean, stats.scale
    return (jumps[:, :width] - means) / scales


def calibrated_layer_jumps(
    hidden_l2: np.ndarray | None, profile: CalibrationProfile, *, bound: float, min_steps: int
) -> tuple[NormJump, ...]:
    if hidden_l2 is None or np.ndim(hidden_l2) != 2 or np.shape(hidden_l2)[0] == 0:
        return ()
    z = calibrated_layer_z(np.asarray(hidden_l2, dtype=np.float64), profile)
    ratios = log_jumps(hidden_l2)
    found = []
    for layer in range(z.shape[1]):
        column = z[:, layer]
        ok = np.isfinite(column)
        if not ok.any():
            continue
        hits = np.flatnonzero(np.where(ok, column, -np.inf) > bound)
        if float(np.median(column[ok])) > bound:
            kind = "persistent"
        elif hits.size >= min_steps:
            kind = "transient"
        else:
            continue
        peak = int(hits[np.argmax(column[hits])])
        found.append(
            NormJump(
                layer=layer,
                kind=kind,
                z=float(column[peak]),
                log_jump=float(np.nan_to_num(ratios[peak, layer])),
                first_step=int(hits[0]),
                steps=int(hits.size),
            )
        )
    return tuple(found)
