"""Risk score: hard floors, nothing always on, factors that really moved it, smooth in the evidence."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from corevital.analysis.diagnose import diagnose
from corevital.analysis.health import HealthFindings
from corevital.analysis.profiles import load_profile
from corevital.analysis.risk import entropy_trend, evidence, logit_terms, repeat_share, risk_score
from corevital.analysis.signals import SequenceSignals
from corevital.analysis.stats import sigmoid
from tests.support.signals import copy_of, looping, make_signals

PROFILE = load_profile("llama")


def score(sig: SequenceSignals, **flags: Any) -> float:
    return risk_score(sig, PROFILE.risk, flags=HealthFindings(**flags), failure_risk=0.0).risk_score


def test_nan_forces_one_and_names_it() -> None:
    sig = make_signals(steps=20)
    nan = copy_of(sig.hidden_nan)
    nan[5, 3:] = True
    d = diagnose(replace(sig, hidden_nan=nan), PROFILE)
    assert d.risk.risk_score == 1.0
    assert d.risk.risk_factors[0] == "nan_or_inf"
    logits_inf = sig.logits_inf.copy()
    logits_inf[2] = True
    assert diagnose(replace(sig, logits_inf=logits_inf), PROFILE).risk.risk_score == 1.0


def test_a_repetition_loop_forces_at_least_the_floor() -> None:
    d = diagnose(looping(make_signals(steps=60), period=2, start=20), PROFILE)
    assert d.health_flags.repetition_loop_detected
    assert d.risk.risk_score >= 0.9
    assert "repetition_loop" in d.risk.risk_factors


def test_nothing_is_always_on() -> None:
    """A run whose every feature sits at its center scores sigmoid(intercept) and lists no factor."""
    r = PROFILE.risk
    n = 30
    sig = make_signals(steps=n)
    sig = replace(
        sig,
        entropy=np.full(n, r.mean_entropy.center),
        surprisal=np.full(n, r.mean_surprisal.center),
        top_k_margin=np.full(n, 1.0 - r.low_margin.center),
    )
    result = risk_score(sig, r, flags=HealthFindings(), failure_risk=r.early_warning.center)
    expected_logit = (
        r.intercept
        + r.entropy_peak.weight
        * max(-r.feature_cap, (r.mean_entropy.center - r.entropy_peak.center) / r.entropy_peak.scale)
        + r.surprisal_peak.weight
        * max(-r.feature_cap, (r.mean_surprisal.center - r.surprisal_peak.center) / r.surprisal_peak.scale)
        + r.repeat_share.weight  # the random token ids repeat no 4-gram: repeat_share 0, below its center
        * max(
            -r.feature_cap,
            (repeat_share(sig.token_ids.tolist()) - r.repeat_share.center) / r.repeat_share.scale,
        )
    )
    assert result.risk_score == pytest.approx(sigmoid(expected_logit))
    assert result.risk_factors == ()


def test_every_listed_factor_moved_the_score() -> None:
    for seed in range(30):
        sig = make_signals(steps=50, seed=seed)
        e = sig.entropy * (1 + seed / 10)
        d = diagnose(replace(sig, entropy=e, perplexity=np.exp2(e)), PROFILE)
        names = [f.name for f in d.risk.factor_contributions]
        assert names == list(d.risk.risk_factors)
        assert all(f.contribution > PROFILE.risk.factor_epsilon for f in d.risk.factor_contributions)


def test_the_score_rises_smoothly_with_entropy() -> None:
    sig = make_signals(steps=40)
    scores = [score(replace(sig, entropy=sig.entropy + shift)) for shift in np.linspace(-1.5, 4, 23)]
    assert all(b >= a for a, b in zip(scores, scores[1:], strict=False))
    assert max(np.diff(scores)) < 0.15  # no cliff
    assert scores[0] < 0.3 and scores[-1] > scores[0] + 0.1


def test_healthy_runs_spread_and_stay_low() -> None:
    scores = [diagnose(make_signals(steps=50, seed=seed), PROFILE).risk.risk_score for seed in range(40)]
    assert max(scores) < 0.7
    assert Counter(round(s, 3) for s in scores).most_common(1)[0][1] <= 0.2 * len(scores)


def test_mid_layer_and_collapse_raise_the_score() -> None:
    sig = make_signals(steps=30)
    base = score(sig)
    assert score(sig, mid_layer_anomaly_detected=True) > base + 0.1
    assert score(sig, attention_collapse_detected=True, attention_collapse_severity=0.8) > base + 0.1


def test_empty_run_scores_the_baseline() -> None:
    result = risk_score(make_signals(steps=0), PROFILE.risk, flags=HealthFindings(), failure_risk=0.0)
    assert 0.0 < result.risk_score < 0.5
    assert all(np.isfinite(v) or np.isnan(v) for v in vars(result.features).values())


def test_a_high_score_always_names_its_factors() -> None:
    """Saturated scores (every term alone too small to move it) still list what drove them."""
    for seed in range(20):
        sig = make_signals(steps=40, seed=seed)
        e = sig.entropy + 3.0 + seed / 4
        for flags in ({}, {"mid_layer_anomaly_detected": True}, {"nan_detected": True}):
            result = risk_score(
                replace(sig, entropy=e, surprisal=sig.surprisal + 3.0),
                PROFILE.risk,
                flags=HealthFindings(**flags),
                failure_risk=0.9,
            )
            assert result.risk_score < 0.5 or result.risk_factors
            assert result.risk_score >= 0.5 or not flags  # a flag lifts the score past 0.5
            total = sum(f.contribution for f in result.factor_contributions)
            assert total <= result.risk_score - sigmoid(PROFILE.risk.intercept - 100) + 1e-3


def test_every_hard_floor_is_named() -> None:
    sig = make_signals(steps=40)
    both = risk_score(
        sig,
        PROFILE.risk,
        flags=HealthFindings(nan_detected=True, repetition_loop_detected=True),
        failure_risk=0.0,
        repetition_coverage=0.5,
    )
    assert both.risk_score == 1.0 and {"nan_or_inf", "repetition_loop"} <= set(both.risk_factors)
    assert both.risk_factors[0] == "nan_or_inf"


def test_a_requested_loop_adds_neither_term_nor_floor() -> None:
    sig = make_signals(steps=40)
    flags = HealthFindings(repetition_loop_detected=True)
    asked = risk_score(
        sig, PROFILE.risk, flags=flags, failure_risk=0.0, repetition_coverage=1.0, repetition_requested=True
    )
    plain = risk_score(sig, PROFILE.risk, flags=HealthFindings(), failure_risk=0.0, repetition_requested=True)
    assert asked.risk_score == pytest.approx(plain.risk_score)
    assert "repetition_loop" not in asked.risk_factors


def test_contributions_split_the_rise_in_proportion_to_the_terms() -> None:
    sig = make_signals(steps=40)
    r = PROFILE.risk
    result = risk_score(sig, r, flags=HealthFindings(mid_layer_anomaly_detected=True), failure_risk=0.0)
    terms = logit_terms(evidence(result.features, HealthFindings(mid_layer_anomaly_detected=True)), r)  # type: ignore[arg-type]
    raised = {n: v for n, v in terms.items() if v > 0}
    lowered = sum(v for v in terms.values() if v < 0)
    rise = result.smooth_score - sigmoid(r.intercept + lowered)
    for f in result.factor_contributions:
        assert f.contribution == pytest.approx(rise * raised[f.name] / sum(raised.values()), abs=1e-4)


def test_the_entropy_trend_uses_finite_steps_only() -> None:
    e = np.array([1.0, 1.0, np.nan, 2.0, 2.0, np.nan, 3.0, 3.0, np.nan, np.nan, np.nan])
    assert entropy_trend(e) == pytest.approx(2.0)  # finite: 1 1 2 2 3 3 → thirds (1, 1) and (3, 3)
    assert np.isnan(entropy_trend(np.array([5.0, np.nan, np.nan, np.nan, np.nan, np.nan, 1.0])))
