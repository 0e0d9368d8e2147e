"""Run-level health flags that follow directly from the captured values (spec/metrics.md §4).

``nan_detected``/``inf_detected`` look at logits, hidden states and attention of every step;
``high_entropy_steps`` counts generated steps above the profile's threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NumericFaults:
    nan_detected: bool
    inf_detected: bool
    first_nan_step: int | None
    first_inf_step: int | None


def _any_per_step(*flags: Any) -> np.ndarray | None:
    present = [np.asarray(f, dtype=bool) for f in flags if f is not None]
    if not present:
        return None
    steps = present[0].shape[0]
    out = np.zeros(steps, dtype=bool)
    for flag in present:
        out |= flag.reshape(steps, -1).any(axis=1)
    return out


def numeric_faults(seq: Any) -> NumericFaults:
    """NaN and Inf anywhere in a sequence's logits, hidden states or attention, with the first step."""
    hidden, attention, cross = seq.hidden, seq.attention, seq.cross_attention
    nan = _any_per_step(
        seq.logits.has_nan,
        None if hidden is None else hidden.has_nan,
        None if attention is None else attention.has_nan,
        None if cross is None else cross.has_nan,
    )
    inf = _any_per_step(
        seq.logits.has_inf,
        None if hidden is None else hidden.has_inf,
        None if attention is None else attention.has_inf,
        None if cross is None else cross.has_inf,
    )

    def first(flags: np.ndarray | None) -> int | None:
        if flags is None or not flags.any():
            return None
        return int(np.flatnonzero(flags)[0])

    return NumericFaults(
        nan_detected=bool(nan is not None and nan.any()),
        inf_detected=bool(inf is not None and inf.any()),
        first_nan_step=first(nan),
        first_inf_step=first(inf),
    )


def high_entropy_steps(entropy: np.ndarray, threshold_bits: float) -> int:
    """Generated steps whose entropy exceeds the threshold (NaN steps are not counted)."""
    values = np.asarray(entropy, dtype=np.float64)
    return int(np.sum(np.isfinite(values) & (values > threshold_bits)))
