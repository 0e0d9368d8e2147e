"""Narrative: 2-6 sentences built from the actual values."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from corevital.analysis.diagnose import diagnose
from corevital.analysis.profiles import load_profile
from tests.support.signals import copy_of, looping, make_signals

PROFILE = load_profile("llama")


def count(summary: str, sentences: tuple[str, ...]) -> int:
    assert summary == " ".join(sentences)
    return len(sentences)


def test_cites_peak_entropy_step_and_token() -> None:
    sig = make_signals(steps=30)
    e = sig.entropy.copy()
    e[17] = 7.25
    d = diagnose(replace(sig, entropy=e), PROFILE)
    text = d.narrative.summary
    assert "Peak entropy 7.25 bits at step 17" in text
    assert repr(sig.token_texts[17]) in text
    assert 2 <= count(text, d.narrative.sentences) <= 6
    assert re.search(r"risk \(score 0\.\d\d\)", text)


def test_high_risk_runs_get_findings_and_a_recommendation() -> None:
    d = diagnose(looping(make_signals(steps=60), period=3, start=15), PROFILE)
    text = d.narrative.summary
    assert text.startswith("High risk")
    assert "loops from step 15" in text and "3-token block" in text
    assert "Recommendation:" in text
    assert 2 <= count(text, d.narrative.sentences) <= 6


def test_everything_at_once_stays_within_six_sentences() -> None:
    sig = looping(make_signals(steps=60, layers=12), period=2, start=30)
    nan = copy_of(sig.hidden_nan)
    nan[40:, 5:] = True
    rates = np.zeros((60, 12))
    rates[:, 2] = 1.0
    d = diagnose(replace(sig, hidden_nan=nan, attn_collapse_rate=rates), PROFILE)
    assert 2 <= count(d.narrative.summary, d.narrative.sentences) <= 6
    assert "NaN values appeared at step 40" in d.narrative.summary
    assert "Layer 5 is blamed most" in d.narrative.summary


def test_empty_run() -> None:
    d = diagnose(make_signals(steps=0), PROFILE)
    assert count(d.narrative.summary, d.narrative.sentences) == 2
    assert "No tokens were generated" in d.narrative.summary


def test_no_trend_is_derived_from_nan_steps() -> None:
    sig = make_signals(steps=24)
    e = sig.entropy.copy()
    e[5:] = np.nan  # a NaN from step 5 on: the last third has no finite entropy
    nan = sig.logits_nan.copy()
    nan[5:] = True
    d = diagnose(replace(sig, entropy=e, logits_nan=nan), PROFILE)
    text = d.narrative.summary
    assert "falling" not in text and "rising" not in text
    assert "5 finite of 24 tokens, too few finite steps for a trend" in text
    assert d.risk.risk_score == 1.0 and d.risk.risk_factors[0] == "nan_or_inf"


def test_a_word_loop_is_told_with_its_unit_span_and_period() -> None:
    texts = [" Birds:"] + [f" {i}. Sparrow" for i in range(1, 30)]
    sig = make_signals(steps=len(texts))
    d = diagnose(replace(sig, token_texts=texts), PROFILE)
    text = d.narrative.summary
    assert "loops from step 1 to 29: the words '<n> sparrow' repeat 29.0 times (a 2-word period" in text
    assert "Recommendation: discard the looping tail" in text
    asked = diagnose(replace(sig, token_texts=texts, prompt_text="List a bird 29 times."), PROFILE)
    assert "as the prompt asks" in asked.narrative.summary
    assert "repetition_loop" not in asked.risk.risk_factors
