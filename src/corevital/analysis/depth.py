"""Hidden-state norms across depth: which layer's norm jumps abnormally over its predecessor.

Used by the mid-layer anomaly flag (``metrics.md`` §4) and by layer blame (§6). No calibration
profile is needed, and a fault present from the first step is still found:

- ``r[t, ℓ] = ln ‖h_ℓ‖ − ln ‖h_{ℓ−1}‖`` is the jump of layer ℓ at step t (ℓ = 1 .. L−2; layer 0 has no
  predecessor, and the last layer is what the model returns after its final norm, whose jump is a
  property of the architecture, not of the run);
- across depth, a jump is compared with the model's other jumps: robust z = (r − median) / max(1.4826·MAD,
  ``scale_floor``), the median and MAD taken over layers;
- **persistent**: the run's typical jump of each layer (median over steps) is a depth outlier. This is
  what a fault present from step 0 looks like; it lifts the layer's own median too, so only the
  shape across depth can show it. In the first third of the layers the bound is ``early_z_bound``:
  some models (GPT-2) carry massive activations from a fixed early layer on at every token, a
  persistent jump of up to ~×100 that is part of the model, not a fault;
- **transient**: at some step the jump is a depth outlier *and* is far above that layer's own typical
  jump (robust z over steps, same floor) for at least ``transient_min_steps`` steps. Transient jumps
  are not judged in the first third of the layers: that is where the massive activations that many
  models produce at the first and delimiter tokens (newlines, periods) appear, as bursts at single
  steps; they are not anomalies. A fault present from the start is persistent and found at any depth.

Only upward jumps count (explosions); the carriers after a jump have ordinary jumps again, so the
jump blames the layer where it happens, not the ones that carry it forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corevital.analysis.profiles import MidLayerProfile
from corevital.analysis.stats import robust_z_rows


@dataclass(frozen=True)
class NormJump:
    layer: int
    kind: str  # "persistent" | "transient"
    z: float  # robust z of the jump across depth (peak over the anomalous steps)
    log_jump: float  # natural-log norm ratio over the previous layer at that peak
    first_step: int  # first step at which the jump was a depth outlier
    steps: int  # number of steps at which it was


def middle_third(num_layers: int) -> range:
    """Layers ``L//3 .. 2L//3 − 1``: the middle third of the decoder stack (empty for L < 2)."""
    return range(num_layers // 3, (2 * num_layers) // 3)


def log_norms(hidden_l2: np.ndarray) -> np.ndarray:
    """``ln ‖h‖`` with non-positive and non-finite norms as NaN."""
    l2 = np.asarray(hidden_l2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(l2) & (l2 > 0), np.log(np.where(l2 > 0, l2, 1.0)), np.nan)


def log_jumps(hidden_l2: np.ndarray) -> np.ndarray:
    """``r[t, ℓ] = ln ‖h_ℓ‖ − ln ‖h_{ℓ−1}‖``; layer 0 (no predecessor) is NaN."""
    logs = log_norms(hidden_l2)
    ratios = np.full(logs.shape, np.nan)
    ratios[:, 1:] = logs[:, 1:] - logs[:, :-1]
    return ratios


def _log_ratios(hidden_l2: np.ndarray) -> np.ndarray:
    """The jumps judged across depth: the last layer's (the final norm's) is left out too."""
    ratios = log_jumps(hidden_l2)
    ratios[:, -1] = np.nan
    return ratios


def layer_jumps(hidden_l2: np.ndarray | None, profile: MidLayerProfile) -> tuple[NormJump, ...]:
    """Layers whose norm jump over the previous layer is abnormal, in depth order."""
    if hidden_l2 is None:
        return ()
    l2 = np.asarray(hidden_l2, dtype=np.float64)
    if l2.ndim != 2 or l2.shape[0] == 0 or l2.shape[1] < 5:
        return ()  # fewer than 3 judged jumps: no shape across depth to compare with
    ratios = _log_ratios(l2)
    depth_z = robust_z_rows(ratios, profile.scale_floor)
    steps, layers = ratios.shape
    found: list[NormJump] = []
    typical = np.full(layers, np.nan)
    for layer in range(1, layers - 1):
        column = ratios[:, layer]
        if np.isfinite(column).any():
            typical[layer] = float(np.median(column[np.isfinite(column)]))
    persistent_z = robust_z_rows(typical[None, :], profile.scale_floor)[0]
    over = np.nan_to_num(depth_z, nan=-np.inf) > profile.z_bound
    early_zone = layers // 3  # where massive activations live: only persistent jumps count there
    for layer in range(1, layers - 1):
        hit_steps = np.flatnonzero(over[:, layer])
        bound = profile.early_z_bound if layer < early_zone else profile.z_bound
        if persistent_z[layer] > bound and hit_steps.size:
            found.append(_jump(layer, "persistent", depth_z, ratios, hit_steps))
            continue
        if layer < early_zone or hit_steps.size < profile.transient_min_steps:
            continue
        temporal = robust_z_rows(ratios[None, :, layer], profile.scale_floor, min_finite=1)[0, hit_steps]
        confirmed = hit_steps[temporal > profile.z_bound]
        if confirmed.size >= profile.transient_min_steps:
            found.append(_jump(layer, "transient", depth_z, ratios, confirmed))
    return tuple(found)


def _jump(layer: int, kind: str, depth_z: np.ndarray, ratios: np.ndarray, steps: np.ndarray) -> NormJump:
    peak = int(steps[np.argmax(depth_z[steps, layer])])
    return NormJump(
        layer=layer,
        kind=kind,
        z=float(depth_z[peak, layer]),
        log_jump=float(ratios[peak, layer]),
        first_step=int(steps[0]),
        steps=int(steps.size),
    )
