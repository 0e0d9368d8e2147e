"""Repetition loops: period detection on token ids and on decoded words, with hidden-state evidence."""

from __future__ import annotations

import re

import numpy as np
import pytest

from corevital.analysis.profiles import load_profile
from corevital.analysis.repetition import (
    UNIT_CHARS,
    RepetitionFinding,
    WordLoopDetector,
    WordSplitter,
    detect_repetition,
    find_loop,
    requested_repetition,
    word_loop,
)
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


# --- loops on the decoded words ------------------------------------------------------------------


def pieces(text: str) -> list[str]:
    """Token-like pieces of a text: each word with its leading space, so the pieces join back to it."""
    return re.findall(r"\s*\S+|\s+", text)


def finding(text: str, prompt: str = "") -> RepetitionFinding:
    texts = pieces(text)
    # Distinct token ids: only the words can show the loop.
    return detect_repetition(np.arange(len(texts)), texts, PROFILE, prompt_text=prompt)


def test_a_numbered_list_repeating_one_item_is_a_word_loop() -> None:
    text = "Here are birds: 1. Sparrow 2. Sparrow 3. Sparrow 4. Sparrow 5. Sparrow 6. Sparrow"
    info = finding(text)
    assert info.detected and info.level == "words"
    assert info.period_words == 2 and info.unit == "<n> sparrow"
    texts = pieces(text)
    assert texts[info.first_step or 0] == " 1." and info.last_step == len(texts) - 1
    assert info.span == len(texts) - 3 and info.coverage == pytest.approx(info.span / len(texts))
    assert info.requested is False


def test_counters_and_bullets_are_word_loops() -> None:
    counter = finding("We proceed: step 1, step 2, step 3, step 4, step 5, step 6, step 7.")
    assert counter.detected and counter.unit == "step <n>" and counter.period_words == 2
    bullets = finding("- apple\n- apple\n- apple\n- apple\n- apple\n- apple\n- apple\n- apple")
    assert bullets.detected and bullets.unit == "apple" and bullets.period_words == 1


def test_the_same_sentence_with_one_word_changed_is_a_loop_after_four_repeats() -> None:
    animals = ["cat", "dog", "bird", "cow", "fox"]
    four = " ".join(f"The {a} sat on the mat." for a in animals[:4])
    info = finding(four)
    assert info.detected and info.period_words == 6 and info.unit == "the cat sat on the mat"
    three = " ".join(f"The {a} sat on the mat." for a in animals[:3])
    assert not finding(three).detected  # a changed word needs tolerant_min_repeats (4) repeats


def test_a_long_sentence_loop_is_found_up_to_the_word_period_limit() -> None:
    words = [f"word{chr(97 + i % 26)}{i}" for i in range(40)]  # 40 distinct words, period 40
    text = " ".join(words * 3)
    info = finding(text)
    assert info.detected and info.period_words == 40 and info.repeats == pytest.approx(3.0)
    longer = [f"w{chr(97 + i % 26)}x{i}" for i in range(PROFILE.max_word_period + 1)]
    assert not finding(" ".join(longer * 3)).detected


@pytest.mark.parametrize(
    "text",
    [
        "Birds: 1. Sparrow 2. Robin 3. Eagle 4. Hawk 5. Owl 6. Crow 7. Finch 8. Wren 9. Heron 10. Swift",
        "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16",
        "1. The sparrow is a bird. 2. The robin is a bird. 3. The eagle is a bird.",
        "The sky is blue because molecules in the air scatter blue light from the sun more than they "
        "scatter red light, a process called Rayleigh scattering, and our eyes are more sensitive to blue.",
        "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n"
        "    return a * b\n",
        "for i in range(10):\n    x = compute(i)\n    if x > 3:\n        print(x)\n    else:\n"
        "        total += x\nreturn total",
    ],
    ids=["distinct-list", "counting", "three-templated-items", "prose", "code-functions", "code-loop"],
)
def test_ordinary_text_lists_and_code_are_not_word_loops(text: str) -> None:
    assert not finding(text).detected


def test_requested_repetition_is_reported_as_requested() -> None:
    text = " ".join(["hello"] * 20)
    assert finding(text, prompt='Write "hello" 20 times.').requested is True
    assert finding(text, prompt="Repeat after me: hello").requested is True
    assert finding(text, prompt="Say something nice.").requested is False
    assert requested_repetition("Write the word 50 times") and not requested_repetition("Name ten birds")


def test_the_unit_is_cut_and_the_text_escaped() -> None:
    long_words = " ".join(f"supercalifragilistic{chr(97 + i)}" for i in range(8))
    info = finding(" ".join([long_words] * 3))
    assert info.unit is not None and len(info.unit) == UNIT_CHARS and info.unit.endswith("…")
    lines = finding("ok\x1b[2J\n" * 12)
    assert lines.detected and lines.repeated_text is not None and "\x1b" not in lines.repeated_text


def test_live_word_detection_matches_the_final_and_keeps_bounded_memory() -> None:
    rng = np.random.default_rng(3)
    vocab = ["alpha", "beta", "gamma", "delta", "7", "the", "a", "loop"]
    text = " ".join(rng.choice(vocab, 3000)) + " " + " ".join(["1. Sparrow"] * 30)
    texts = pieces(text)
    splitter, detector = WordSplitter(), WordLoopDetector(PROFILE)
    for step, piece in enumerate(texts):
        for word in splitter.feed(piece, step):
            detector.update(word)
    for word in splitter.flush():
        detector.update(word)
    assert detector.loop == word_loop(texts, PROFILE)
    assert detector.loop is not None and detector.loop.unit == ("<n>", "sparrow")
    assert len(detector._recent) <= PROFILE.max_word_period + 1
    assert all(len(m) <= PROFILE.max_word_period for m in detector._mismatches)
