"""A silenced or sharpened sub-layer (``layer_update_anomaly_detected``) is internal-state evidence
of the risk model: it raises the score and is named among the factors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from corevital.analysis.diagnose import diagnose
from corevital.analysis.profiles import load_profile
from corevital.analysis.risk import RiskEvidence, combine
from tests.support.signals import make_signals

PROFILE = load_profile("llama")


def test_a_uniform_attention_layer_raises_the_risk_and_is_named() -> None:
    sig = make_signals(steps=30)
    healthy = diagnose(sig, PROFILE)
    assert not healthy.health_flags.layer_update_anomaly_detected
    entropy = np.array(sig.attn_entropy_norm, copy=True)
    entropy[:, 4] = 1.0  # every head of layer 4 attends uniformly: a zeroed pre-attention norm
    silenced = diagnose(replace(sig, attn_entropy_norm=entropy), PROFILE)
    assert silenced.health_flags.layer_update_anomaly_detected
    assert silenced.risk.risk_factors[0] == "layer_update_anomaly"
    assert silenced.risk.risk_score >= 0.5 > healthy.risk.risk_score
    assert silenced.risk.blamed_layers_flat[0] == 4


def test_the_term_is_the_weight_times_the_severity() -> None:
    features = diagnose(make_signals(steps=30), PROFILE).risk.features
    assert features is not None
    base = combine(RiskEvidence(features=features), PROFILE.risk)
    for severity in (0.5, 0.9):
        found = RiskEvidence(features=features, layer_update=severity)
        risk = combine(found, PROFILE.risk)
        logit = np.log(base.smooth_score / (1 - base.smooth_score))
        expected = 1 / (1 + np.exp(-(logit + PROFILE.risk.layer_update_weight * severity)))
        assert abs(risk.smooth_score - expected) < 1e-9
        assert "layer_update_anomaly" in risk.risk_factors
