"""The validation suite's generator, labellers and tables (src/corevital/validation/suite*.py)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from corevital.validation.suite import kind_table
from corevital.validation.suite_items import FAULTS, TWO_STEP_SUFFIX, SuiteItem, build_suite, split_of
from corevital.validation.suite_labels import label, repeat_rate, stated_answer, word_repeat_rate, words


def _item(kind: str, prompt: str = "p", **extra: object) -> SuiteItem:
    return SuiteItem(id="x", kind=kind, prompt=prompt, group="g", split="dev", max_new_tokens=8, **extra)  # type: ignore[arg-type]


def test_the_suite_is_deterministic_and_groups_never_straddle_splits() -> None:
    items = build_suite()
    assert [i.prompt for i in items] == [i.prompt for i in build_suite()]
    assert len({i.id for i in items}) == len(items)
    groups_of: dict[str, set[str]] = {}  # a prompt in two groups could land in both splits
    for item in items:
        groups_of.setdefault(item.prompt, set()).add(item.group)
    assert all(len(groups) == 1 for groups in groups_of.values())
    kinds = Counter(i.kind for i in items)
    assert set(kinds) >= {"factual", "arithmetic", "word_problem", "open_ended", "unanswerable"}
    assert {k for k in kinds if k.startswith("fault_")} == set(FAULTS)
    splits: dict[str, set[str]] = {}
    for item in items:
        splits.setdefault(item.group, set()).add(item.split)
        assert item.split == split_of(item.group)
    assert all(len(s) == 1 for s in splits.values())
    for kind in kinds:  # every kind has both splits
        assert {i.split for i in items if i.kind == kind} == {"dev", "test"}, kind
    faulted = [i for i in items if i.fault is not None]
    by_id = {i.id: i for i in items}
    assert all(i.clean_of in by_id and by_id[i.clean_of].prompt == i.prompt for i in faulted)
    assert {i.depth for i in faulted} == {"early", "middle", "late"}
    for kind in ("factual", "arithmetic", "word_problem", "unanswerable", "open_ended"):
        for split in ("dev", "test"):  # enough items per kind and split for an AUROC
            assert sum(i.kind == kind and i.split == split for i in items) >= 18, (kind, split)


def test_every_kind_mixes_easy_and_hard_items() -> None:
    items = build_suite()
    sums = [i for i in items if i.kind == "arithmetic"]
    assert min(int(i.answer or 0) for i in sums) < 20 and max(int(i.answer or 0) for i in sums) > 1000
    problems = [i.prompt for i in items if i.kind == "word_problem"]
    assert any(p.startswith("Lisa has") for p in problems) and any(p.startswith("Tom has") for p in problems)
    questions = [i.prompt for i in items if i.kind == "unanswerable"]
    assert (
        sum(p.endswith("If the question has no true answer, say so.") for p in questions)
        == len(questions) // 3
    )
    facts = {i.answer for i in items if i.kind == "factual"}
    assert {"Paris", "Ouagadougou"} <= facts
    # the fault kinds run the well-known facts only, the same prompts as before the hard ones came
    faulted = {i.prompt for i in items if i.fault is not None}
    assert not faulted & {i.prompt for i in items if i.answer == "Ouagadougou"}


def test_word_repetition_ignores_numbers_and_list_markers() -> None:
    assert words("1. Sparrow 2. Sparrow") == ["<n>", "sparrow", "<n>", "sparrow"]
    listed = "\n".join(f"{i}. Sparrow" for i in range(1, 21))
    assert word_repeat_rate(listed) > 0.8
    prose = "The cat sat on the mat while the dog slept near a warm fire in the old house."
    assert word_repeat_rate(prose) == 0.0
    assert repeat_rate([1, 2, 3], 4) == 0.0
    assert repeat_rate([1, 2, 1, 2, 1, 2], 2) == 1 - 2 / 5


def test_labels_follow_the_stated_rules() -> None:
    capital = _item("factual", answer="Paris")
    assert not label(capital, "The capital of France is Paris.")
    assert label(capital, "Lyon.")
    product = _item("arithmetic", "What is 17 times 78?", answer=1326)
    assert not label(product, "17 times 78 is 1326.")  # numbers echoed from the prompt are skipped
    assert label(product, "1200")
    word = _item("word_problem", answer=9)
    assert not label(word, "11 + 9 = 20, and 20 - 11 = 9")
    assert label(word, "So 20 loaves, 9 sold, 11 left.")  # the last number counts
    assert not label(word, "The answer is 9, so 20 loaves were baked.")  # unless an answer is stated
    assert label(word, "First, 4 + 5 = ")  # cut off before the result
    assert not label(_item("arithmetic", "Compute 623 + 214.", answer=837), "To add them: 623 + 214 = 837.")
    assert label(_item("open_ended"), "\n".join(f"{i}. Sparrow" for i in range(30)))
    assert not label(_item("open_ended"), "Once upon a time a cat wanted to fly over the hills.")
    asked = _item("requested_repetition", target_word="apple")
    assert not label(asked, "apple " * 40)
    assert label(asked, "Here is a poem about fruit and trees and apples.")
    moon = _item("unanswerable")
    assert label(moon, "The capital city of the Moon is Luna City.")
    assert not label(moon, "The Moon has no capital city.")
    assert not label(moon, "There isn't one: nobody lives there.")
    assert label(_item("fault_nan", fault="nan"), "anything")


def test_the_stated_answer_is_read_where_it_is() -> None:
    assert stated_answer("12 * 3 = 36, plus 4 is 40.\nThe answer is 40.", "", last=True) == 40
    assert stated_answer("Answer: 7 apples. Check: 3 + 4 = 7", "", last=False) == 7
    assert stated_answer("#### 15\nThat is all, 2 of us agree.", "", last=True) == 15
    assert stated_answer("70 times 61 is 447.", "What is 70 times 61?", last=False) == 447
    assert stated_answer("No numbers here.", "", last=True) is None
    # a marker followed by words, not a number, does not count
    assert stated_answer("The answer is simple: 3 + 4 = 7", "", last=True) == 7


def test_kind_table_orients_scores_and_gives_intervals() -> None:
    rng = np.random.default_rng(0)
    runs = []
    for i in range(40):
        failed = i % 2 == 0
        row: dict[str, object] = {"failed": failed, "group": f"g{i // 2}"}
        for key in (
            "risk_score",
            "labelled_risk",
            "sequence_nll",
            "mean_surprisal",
            "mean_entropy",
            "max_entropy",
            "neg_min_margin",
            "length",
            "token_repeat_rate",
        ):
            row[key] = float(rng.normal()) + (2.0 if failed and key == "length" else 0.0)
        runs.append(row)
    runs[0]["mean_entropy"] = float("nan")
    table = kind_table("k", "dev", runs, n_resamples=200)
    assert table.n == 40 and table.failures == 20
    length = table.row("length").auroc
    assert length.estimate > 0.85 and length.low <= length.estimate <= length.high
    best = table.best_baseline()
    assert best is not None and best.key == "length"


def test_two_step_word_problems_ask_for_the_answer_form_and_are_judged_by_it() -> None:
    items = [i for i in build_suite() if i.kind == "word_problem" and i.prompt.endswith(TWO_STEP_SUFFIX)]
    assert len(items) == 40 and {i.split for i in items} == {"dev", "test"}
    tom = next(i for i in items if i.prompt.startswith("Tom has"))
    a, b, c = (int(w.rstrip(".")) for w in tom.prompt.split() if w.rstrip(".").isdigit())
    assert tom.answer == a + b - c
    # the number after the last "Answer:" is the stated answer, whatever comes before it
    assert not label(tom, f"First {a} + {b} = {a + b}, then {a + b} - {c}.\nAnswer: {a + b - c}")
    assert label(tom, f"Answer: {a}")


def test_the_extra_arithmetic_pairs_never_repeat_a_group() -> None:
    sums = [i for i in build_suite() if i.kind == "arithmetic"]
    assert len(sums) == 84 + 400
    groups = Counter(i.group for i in sums[84:])
    assert set(groups.values()) == {2}  # two phrasings of each new pair, no pair drawn twice
    assert not set(groups) & {i.group for i in sums[:84]}


def test_every_capital_is_asked_once_and_never_named_by_its_question() -> None:
    """A capital asked about twice would put one fact in two groups (maybe both splits); one whose
    name is a word of the question would pass an output that only repeats the country."""
    from corevital.validation.suite_prompts import FACTS, HARD_FACTS, MORE_CAPITALS

    tables = [FACTS["capital"][1], HARD_FACTS["capital"][1], MORE_CAPITALS]
    countries = [country.removeprefix("the ") for table in tables for country in table]
    assert len(countries) == len(set(countries))
    for country, answers in MORE_CAPITALS.items():  # as the labeller matches: whole words
        assert not any(re.search(rf"\b{re.escape(a)}\b", country, re.IGNORECASE) for a in answers), country
    factual = [i for i in build_suite() if i.kind == "factual"]
    london = [i for i in factual if i.answer == "London"]
    assert len(london) == 2
    assert not any(label(i, "The capital of the United Kingdom is London.") for i in london)
    assert all(label(i, "The capital of the United Kingdom is Manchester.") for i in london)
