"""Repetition loops: period detection over the whole output, with hidden-state evidence."""

from __future__ import annotations

import numpy as np
import pytest

from corevital.analysis.profiles import load_profile
from corevital.analysis.repetition import detect_repetition, find_loop
from tests.support.signals import looping, make_signals

PROFILE = load_profile("default").repetition


@pytest.mark.parametrize("period", [1, 2, 3, 5, 7, 16, 32, 64])
def test_a_loop_of_any_period_is_found_with_its_period_and_start(period: int) -> None:
    sig = looping(make_signals(steps=40 + 3 * period), period=period, start=20)
    info = detect_repetition(sig.token_ids, sig.token_texts, PROFILE, sig.last_layer_sketch)
    assert info.detected
    assert info.period == period
    assert info.first_step == 20
    assert info.span == sig.num_steps - 20
    assert info.repeated_text == "".join(sig.token_texts[20 : 20 + period])
    assert info.hidden_similarity is not None and info.hidden_similarity > 0.99
    assert info.confirmed is True


def test_requirements_three_repeats_and_twelve_tokens() -> None:
    ids = np.arange(100, 130)
    ids[10:21] = 7  # period 1, 11 tokens: below the 12-token span
    assert find_loop(ids, PROFILE) is None
    ids[10:22] = 7  # 12 tokens
    assert find_loop(ids, PROFILE) is not None
    block = np.array([1, 2, 3, 4, 5, 6, 7])
    twice = np.concatenate([np.arange(100, 110), block, block, np.arange(200, 210)])  # 2 repeats, 14 tokens
    assert find_loop(twice, PROFILE) is None
    thrice = np.concatenate([np.arange(100, 110), block, block, block, np.arange(200, 210)])
    run = find_loop(thrice, PROFILE)
    assert run is not None and run.period == 7 and run.start == 10 and run.span == 21


def test_the_smallest_period_of_the_longest_loop_is_reported() -> None:
    ids = np.concatenate([np.arange(100, 105), np.tile([5, 6], 20)])
    run = find_loop(ids, PROFILE)
    assert run is not None and run.period == 2 and run.start == 5 and run.span == 40


def test_periods_beyond_the_limit_are_not_looked_for() -> None:
    block = np.arange(1000, 1000 + PROFILE.max_period + 6)  # a period just above the limit
    ids = np.concatenate([block, block, block])
    assert find_loop(ids, PROFILE) is None


def test_no_loop_in_ordinary_text_and_edge_cases() -> None:
    sig = make_signals(steps=60)
    assert not detect_repetition(sig.token_ids, sig.token_texts, PROFILE).detected
    assert not detect_repetition(np.array([], dtype=np.int64), [], PROFILE).detected
    assert not detect_repetition(np.array([5]), ["x"], PROFILE).detected


def test_without_sketches_the_loop_is_still_found_unconfirmed() -> None:
    sig = looping(make_signals(steps=40), period=2, start=10)
    info = detect_repetition(sig.token_ids, sig.token_texts, PROFILE, None)
    assert info.detected and info.hidden_similarity is None and info.confirmed is None
    assert info.coverage == pytest.approx(30 / 40)
