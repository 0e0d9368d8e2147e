"""Answer checking: normalisation, number extraction, lead-ins, match modes and user checkers."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from corevital.errors import InputError
from corevital.validation.answer_text import (
    answer_span,
    extract_number,
    find_numbers,
    first_sentence,
    normalize_answer,
    parse_number,
    strip_lead_ins,
)
from corevital.validation.answers import check_answer, load_checker
from corevital.validation.labels import LabelledRecord


def record(**fields: Any) -> LabelledRecord:
    return LabelledRecord.model_validate({"id": "r1", "prompt": "Q?", **fields})


# --- normalisation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Capital of France is Paris.", "capital of france is paris"),
        ("  A  cat,   an owl and THE dog! ", "cat owl and dog"),
        ("Brasília", "brasilia"),
        ("Port-au-Prince", "port au prince"),
        ("Jane Austen's novel", "jane austen novel"),
        ("don't", "dont"),
        ("\uff30\uff41\uff52\uff49\uff53", "paris"),  # full-width letters (NFKC)
        ("Washington, D.C.", "washington d c"),
        ("...", ""),
        ("theatre", "theatre"),  # articles only as whole words
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


# --- numbers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", [42.0]),
        ("-7 and +3", [-7.0, 3.0]),
        ("It is \u22125", [-5.0]),
        ("1,234,567 grains", [1234567.0]),
        ("3.25 kg", [3.25]),
        ("8.", [8.0]),
        ("H2O has 3 atoms", [3.0]),
        ("12 - 45", [12.0, 45.0]),
        ("5-3", [5.0, 3.0]),
        ("minus 4", [-4.0]),
        ("6 minus 2", [6.0, 2.0]),
        ("eight legs", [8.0]),
        ("twenty-one", [21.0]),
        ("Zero", [0.0]),
        ("the one with 3", [3.0]),  # words only when there is no digit
        ("no numbers here", []),
    ],
)
def test_find_numbers(text: str, expected: list[float]) -> None:
    assert [value for _, value in find_numbers(text)] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,234", 1234.0), (" -3.5 ", -3.5), ("eight", 8.0), ("8 apples", None), ("", None), ("1 2", None)],
)
def test_parse_number(text: str, expected: float | None) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("output", "prompt", "expected"),
    [
        ("85", "What is 47 + 38?", 85.0),
        ("47 + 38 = 85", "What is 47 + 38?", 85.0),
        ("47 + 38 = 80 + 5 = 85", "What is 47 + 38?", 85.0),
        ("The sum of 47 and 38 is 85.", "What is 47 + 38?", 85.0),
        ("The answer is 8. A spider has 8 legs.", "How many legs does a spider have?", 8.0),
        ("We add 8 and 7.\n\nThe answer is 15", "What is 8 + 7?", 15.0),
        ("We add 8 and 7.", "What is 8 + 7?", 8.0),  # only echoes: the first number
        ("3 times 1 is 3", "What is 3 * 1?", 3.0),
        ("12 - 45 = -33", "What is 12 - 45?", -33.0),
        ("0 - 3 is -3", "What is 0 - 3?", -3.0),
        ("A spider has eight legs.", "How many legs does a spider have?", 8.0),
        ("Sure!\n1,200", "What is 700 + 500?", 1200.0),
        ("I do not know.", "What is 2 + 2?", None),
    ],
)
def test_extract_number(output: str, prompt: str, expected: float | None) -> None:
    assert extract_number(output, prompt) == expected


# --- lead-ins and spans -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is Paris", "Paris"),
        ("Answer: Paris", "Paris"),
        ("  Final answer: 42", "42"),
        ("Sure! The correct answer is: Paris.", "Paris."),
        ("A: Paris", "Paris"),
        ("It's Paris", "Paris"),
        ("Here's the answer: Paris", "Paris"),
        ("Paris is the answer", "Paris is the answer"),
        ("Answering questions is fun", "Answering questions is fun"),
    ],
)
def test_strip_lead_ins(text: str, expected: str) -> None:
    assert strip_lead_ins(text) == expected


def test_first_sentence_keeps_initials_and_abbreviations() -> None:
    assert first_sentence("J. R. R. Tolkien wrote it. Then more.") == "J. R. R. Tolkien wrote it."
    assert first_sentence("Washington, D.C. is the capital. Yes.") == "Washington, D.C. is the capital."
    assert first_sentence("Dr. Seuss did! Next.") == "Dr. Seuss did!"
    assert first_sentence("No end") == "No end"
    assert first_sentence("3.14 is pi. Next") == "3.14 is pi."


def test_answer_span() -> None:
    assert answer_span("The answer is Paris. It is in France.") == "Paris."
    assert answer_span("\n\nAnswer: Paris\nMore text") == "Paris"
    assert answer_span("Sure! Paris.") == "Paris."


# --- match modes --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("output", "correct"),
    [
        ("Paris", True),
        ("paris.", True),
        ("The answer is Paris.", True),
        ("Answer: Paris\nIt is the capital of France.", True),
        ("Paris. Or maybe Lyon.", True),  # only the first sentence counts
        ("The capital of France is Paris.", False),  # exact: a sentence is not the answer
        ("Lyon", False),
        ("", False),
    ],
)
def test_exact(output: str, correct: bool) -> None:
    assert check_answer(output, record(answer="Paris")) is correct


def test_exact_accepted_variants() -> None:
    rec = record(answer="Kyiv", accepted=["Kiev"])
    assert check_answer("Kiev.", rec)
    assert check_answer("KYIV", rec)
    assert not check_answer("Lviv", rec)


@pytest.mark.parametrize(
    ("output", "correct"),
    [
        ("The capital of France is Paris.", True),
        ("Paris", True),
        ("It's PARIS!", True),
        ("The Parisian capital is Lyon.", False),  # whole words: Paris does not match Parisian
        ("Lyon.\nParis is also nice.", False),  # only the first non-empty line counts
        ("\n\nParis", True),
        ("Lyon or Paris", True),  # lenient: a mention counts
    ],
)
def test_contains(output: str, correct: bool) -> None:
    assert check_answer(output, record(answer="Paris", match="contains")) is correct


def test_contains_multiword_and_possessive() -> None:
    rec = record(answer="Jane Austen", accepted=["Austen"], match="contains")
    assert check_answer('The novel "Pride and Prejudice" is by Jane Austen.', rec)
    assert check_answer("It is Austen's best-known work.", rec)
    assert not check_answer("It was written by Charlotte Bronte.", rec)
    symbol = record(answer="W", match="contains")
    assert check_answer("The chemical symbol of tungsten is W.", symbol)
    assert not check_answer("The chemical symbol of tungsten is Tungsten.", symbol)


@pytest.mark.parametrize(
    ("output", "correct"),
    [
        ("85", True),
        ("47 + 38 = 85", True),
        ("47 + 38 = 85.0", True),
        ("The answer is 85.", True),
        ("47 + 38 = 114", False),
        ("To solve this, we need to combine the 47 and 38. We can do", False),
        ("eighty-five", True),
        ("", False),
    ],
)
def test_numeric_from_json_number(output: str, correct: bool) -> None:
    rec = LabelledRecord(id="a", prompt="What is 47 + 38? Answer with only the number.", answer=85)
    assert rec.mode == "numeric"
    assert check_answer(output, rec) is correct


def test_numeric_tolerance_and_string_answers() -> None:
    rec = record(answer="1,234", match="numeric")
    assert check_answer("1234", rec)
    assert check_answer("1,234.0000001", rec)
    assert not check_answer("1235", rec)
    half = record(answer=0.5, accepted=["0.50"])
    assert check_answer("0.5", half)
    assert not check_answer("0.51", half)
    negative = record(answer=-33)
    assert check_answer("12 - 45 = -33", negative)
    assert not check_answer("12 - 45 = 33", negative)


def test_failed_label_is_used_directly() -> None:
    assert check_answer("anything", record(failed=False)) is True
    assert check_answer("Paris", record(failed=True)) is False


# --- user checkers ------------------------------------------------------------------------------
def _always(output: str, rec: LabelledRecord) -> bool:
    return True


def test_load_checker(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("cv_test_checkers")
    module.always = _always  # type: ignore[attr-defined]
    module.holder = types.SimpleNamespace(check=_always)  # type: ignore[attr-defined]
    module.not_callable = 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cv_test_checkers", module)

    checker = load_checker("cv_test_checkers:always")
    assert checker is _always
    assert checker("x", record(answer="y"))
    assert load_checker("cv_test_checkers:holder.check") is _always
    assert load_checker("corevital.validation.answers:check_answer") is check_answer

    for spec, fragment in [
        ("cv_test_checkers:not_callable", "is not callable"),
        ("cv_test_checkers:missing", "has no attribute"),
        ("cv_no_such_module_xyz:f", "cannot import"),
        ("cv_test_checkers", "expected 'package.module:function'"),
        (":f", "expected 'package.module:function'"),
    ]:
        with pytest.raises(InputError, match=fragment) as info:
            load_checker(spec)
        assert "\n" not in str(info.value)
