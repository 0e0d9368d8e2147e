"""The run fingerprint, version 2 (``metrics.md`` §6): 25 numbers that summarise a run.

Slots: 0–4 entropy mean, std, min, max, least-squares slope (bits/step); 5–7 margin mean, std, slope;
8–10 surprisal mean, std, slope; 11–12 top-k mass mean, std; 13 risk score; 14 high-entropy steps /
generated steps; 15–19 NaN, Inf, attention collapse, repetition loop, mid-layer anomaly (0/1);
20 Pearson(entropy, margin); 21 entropy coefficient of variation; 22 mean entropy of the first
quarter; 23 of the last quarter; 24 generated token count.

Every slot is finite: statistics over no finite value are 0.0, as are undefined correlations and
coefficients of variation. A quarter is ``max(1, T // 4)`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corevital.analysis.hashing import prompt_hash
from corevital.analysis.health import HealthFindings
from corevital.analysis.signals import SequenceSignals
from corevital.analysis.stats import fmax, fmean, fmin, fstd, pearson, slope

FINGERPRINT_VERSION = 2
FINGERPRINT_LENGTH = 25


@dataclass(frozen=True)
class FingerprintVector:
    vector: tuple[float, ...]
    version: int
    prompt_hash: str


def fingerprint_vector(sig: SequenceSignals, flags: HealthFindings, risk_score: float) -> tuple[float, ...]:
    e, m, s, k = sig.entropy, sig.top_k_margin, sig.surprisal, sig.topk_mass
    n = sig.num_steps
    quarter = max(1, n // 4)
    e_mean = fmean(e)
    cv = fstd(e) / e_mean if e_mean > 0 else 0.0
    vector = [
        e_mean,
        fstd(e),
        fmin(e),
        fmax(e),
        slope(e),
        fmean(m),
        fstd(m),
        slope(m),
        fmean(s),
        fstd(s),
        slope(s),
        fmean(k),
        fstd(k),
        float(risk_score),
        flags.high_entropy_steps / n if n else 0.0,
        float(flags.nan_detected),
        float(flags.inf_detected),
        float(flags.attention_collapse_detected),
        float(flags.repetition_loop_detected),
        float(flags.mid_layer_anomaly_detected),
        pearson(e, m),
        cv,
        fmean(e[:quarter]),
        fmean(e[n - quarter :]) if n else 0.0,
        float(n),
    ]
    assert len(vector) == FINGERPRINT_LENGTH
    return tuple(float(v) if np.isfinite(v) else 0.0 for v in vector)


def fingerprint(sig: SequenceSignals, flags: HealthFindings, risk_score: float) -> FingerprintVector:
    return FingerprintVector(
        vector=fingerprint_vector(sig, flags, risk_score),
        version=FINGERPRINT_VERSION,
        prompt_hash=prompt_hash(sig.model_id, sig.prompt_text),
    )
