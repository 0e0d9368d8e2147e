"""Compound signals: the five multi-metric patterns, with evidence citing steps and values."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from corevital.analysis.collapse import step_collapse_rate
from corevital.analysis.compound import detect_compound_signals, ngram_repeats
from corevital.analysis.profiles import load_profile
from corevital.analysis.signals import SequenceSignals
from tests.support.signals import looping, make_signals, summary_only

P = load_profile("llama").compound


def names(sig: SequenceSignals, **kw: Any) -> set[str]:
    return {s.name for s in detect_compound_signals(sig, P, **kw)}


def test_a_calm_run_has_no_compound_signal() -> None:
    for seed in range(20):
        assert names(make_signals(steps=60, seed=seed)) == set(), seed


def test_context_loss_needs_basin_scores_and_fires_with_low_ones() -> None:
    sig = make_signals(steps=30)
    e = sig.entropy.copy()
    e[-P.window :] = P.context_loss_entropy_bits + 1.0
    sig = replace(sig, entropy=e)
    assert "context_loss" not in names(sig)  # no prompt telemetry: not judged
    assert "context_loss" not in names(sig, basin_scores=[[0.5, 0.6], [0.55, 0.5]])
    found = detect_compound_signals(sig, P, basin_scores=[[0.1, 0.2], [0.15, np.nan]])
    (signal,) = [s for s in found if s.name == "context_loss"]
    assert "basin" in signal.evidence[1] and "0.15" in signal.evidence[1]
    assert 0.5 <= signal.severity <= 1.0
    assert "context_loss" not in names(sig, basin_scores=[])


def test_confident_confusion_cites_steps_and_tokens() -> None:
    sig = make_signals(steps=30)
    e, m = sig.entropy.copy(), sig.top_k_margin.copy()
    e[[4, 9, 20]] = P.confusion_entropy_bits + 0.5
    m[[4, 9, 20]] = 0.6
    found = detect_compound_signals(replace(sig, entropy=e, top_k_margin=m), P)
    (signal,) = [s for s in found if s.name == "confident_confusion"]
    assert signal.first_step == 4
    assert "3 of 30 steps" in signal.evidence[0]
    assert "step 4" in signal.evidence[1] and sig.token_texts[4] in signal.evidence[1]


def test_degenerating_generation() -> None:
    sig = make_signals(steps=45)
    ramp = np.linspace(0, 1, 45)
    degrading = replace(
        sig, entropy=1.0 + 4.0 * ramp, top_k_margin=0.8 - 0.6 * ramp, surprisal=0.5 + 4.0 * ramp
    )
    found = {s.name: s for s in detect_compound_signals(degrading, P)}
    assert "degenerating_generation" in found
    assert any("entropy +" in ev for ev in found["degenerating_generation"].evidence)
    short = replace(
        degrading, **{k: getattr(degrading, k)[:10] for k in ("entropy", "top_k_margin", "surprisal")}
    )
    assert "degenerating_generation" not in names(
        replace(
            short,
            token_ids=sig.token_ids[:10],
            token_texts=sig.token_texts[:10],
            topk_mass=sig.topk_mass[:10],
        )
    )


def test_attention_bottleneck_uses_the_true_head_count() -> None:
    sig = make_signals(steps=20, layers=4, heads=8)
    rates = np.zeros((20, 4))
    rates[10:15, :] = 3 / 8  # 3 of 8 heads in every layer: 37.5% of 32 heads
    e = sig.entropy.copy()
    e[10:15] = P.bottleneck_entropy_bits + 1.0
    found = {s.name: s for s in detect_compound_signals(replace(sig, attn_collapse_rate=rates, entropy=e), P)}
    signal = found["attention_bottleneck"]
    assert signal.first_step == 10
    assert "4×8 = 32 heads" in signal.evidence[0]
    assert "~12 heads" in signal.evidence[1]
    assert "attention_bottleneck" not in names(summary_only(replace(sig, entropy=e)))
    per_step = step_collapse_rate(rates)
    assert per_step is not None
    np.testing.assert_allclose(per_step[10], 0.375)


def test_confident_repetition_risk_needs_actual_repetition() -> None:
    sig = make_signals(steps=40)
    confident = replace(sig, entropy=np.full(40, 0.1), topk_mass=np.full(40, 0.995))
    assert "confident_repetition_risk" not in names(confident)  # confident alone is not a risk
    looped = looping(confident, period=3, start=20)
    found = {s.name: s for s in detect_compound_signals(looped, P)}
    assert "confident_repetition_risk" in found
    first_step = found["confident_repetition_risk"].first_step
    assert first_step is not None and first_step >= 20


def test_ngram_repeats() -> None:
    np.testing.assert_array_equal(ngram_repeats(np.array([1, 2, 3, 1, 2, 3, 4]), 2), [0, 0, 0, 0, 1, 1, 0])
    assert ngram_repeats(np.array([], dtype=int), 3).size == 0


def test_edge_cases() -> None:
    assert names(make_signals(steps=0)) == set()
    assert names(make_signals(steps=1)) == set()
    nan = make_signals(steps=20)
    assert names(replace(nan, entropy=np.full(20, np.nan), top_k_margin=np.full(20, np.nan))) == set()
