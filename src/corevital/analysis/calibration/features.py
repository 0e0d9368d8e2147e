"""Run-level features of one generated sequence: the inputs of the labelled risk model and the baselines.

Every feature is a plain number computed from the sequence's logits timeline (and its health flags),
so it exists for every model and every capture mode. Surprisal and entropy are in bits; the early
window is the first ``EARLY_STEPS`` generated tokens (where a short answer is decided). A feature the
run cannot give (no steps) is NaN; the risk model treats NaN as "typical" (its training mean).

The baselines of ``corevital validate`` are features too (higher = more likely failure):
``mean_surprisal`` (mean token negative log-likelihood), ``sequence_nll`` (−log₂ of the sequence
probability, so ordering by it is ordering by 1 − probability), ``mean_entropy``, ``max_entropy`` and
``length`` (generated tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from corevital.analysis.health import HealthFindings
from corevital.analysis.signals import SequenceSignals
from corevital.analysis.stats import finite

EARLY_STEPS = 6


@dataclass(frozen=True)
class RunFeatures:
    mean_surprisal: float
    max_surprisal: float
    sequence_nll: float
    early_mean_surprisal: float
    early_max_surprisal: float
    mean_entropy: float
    max_entropy: float
    early_mean_entropy: float
    early_max_entropy: float
    mean_margin: float
    min_margin: float
    early_mean_margin: float
    early_min_margin: float
    mean_topk_mass: float
    length: float
    log_length: float
    high_entropy_share: float
    early_warning: float
    repetition_loop: float
    mid_layer_anomaly: float
    attention_collapse: float
    nan_or_inf: float

    def vector(self, names: Sequence[str]) -> np.ndarray:
        return np.asarray([getattr(self, n) for n in names], dtype=np.float64)


FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(RunFeatures))

# The single-pass baselines `validate` compares the risk score with, and how they are labelled.
BASELINES: tuple[tuple[str, str], ...] = (
    ("mean_surprisal", "mean token NLL"),
    ("sequence_nll", "sequence probability (−log₂ p)"),
    ("mean_entropy", "mean entropy"),
    ("max_entropy", "max entropy"),
    ("length", "generated length"),
)


def _stat(values: np.ndarray, how: str) -> float:
    vals = finite(values)
    if not vals.size:
        return math.nan
    if how == "mean":
        return float(vals.mean())
    if how == "max":
        return float(vals.max())
    if how == "min":
        return float(vals.min())
    return float(vals.sum())


def run_features(
    sig: SequenceSignals, flags: HealthFindings, *, failure_risk: float, high_entropy_bits: float
) -> RunFeatures:
    early = slice(0, EARLY_STEPS)
    steps = sig.num_steps
    entropy = np.asarray(sig.entropy, dtype=np.float64)
    high_share = float(np.sum(entropy > high_entropy_bits) / steps) if steps else math.nan
    return RunFeatures(
        mean_surprisal=_stat(sig.surprisal, "mean"),
        max_surprisal=_stat(sig.surprisal, "max"),
        sequence_nll=_stat(sig.surprisal, "sum") if steps else math.nan,
        early_mean_surprisal=_stat(sig.surprisal[early], "mean"),
        early_max_surprisal=_stat(sig.surprisal[early], "max"),
        mean_entropy=_stat(entropy, "mean"),
        max_entropy=_stat(entropy, "max"),
        early_mean_entropy=_stat(entropy[early], "mean"),
        early_max_entropy=_stat(entropy[early], "max"),
        mean_margin=_stat(sig.top_k_margin, "mean"),
        min_margin=_stat(sig.top_k_margin, "min"),
        early_mean_margin=_stat(sig.top_k_margin[early], "mean"),
        early_min_margin=_stat(sig.top_k_margin[early], "min"),
        mean_topk_mass=_stat(sig.topk_mass, "mean"),
        length=float(steps),
        log_length=math.log1p(steps),
        high_entropy_share=high_share,
        early_warning=float(failure_risk),
        repetition_loop=float(flags.repetition_loop_detected),
        mid_layer_anomaly=float(flags.mid_layer_anomaly_detected),
        attention_collapse=float(flags.attention_collapse_detected),
        nan_or_inf=float(flags.nan_detected or flags.inf_detected),
    )
