"""The labellers of the validation suite (:mod:`corevital.validation.suite`): one rule per kind.

:func:`label` judges an output by its item's kind:

- ``factual``: failed unless the answer (or an accepted alias) appears as whole words in the
  output's first line (:func:`corevital.validation.answers.check_answer`, ``contains``).
- ``arithmetic`` and ``word_problem``: failed unless the number the output states as its answer
  (:func:`stated_answer`) equals the result; an output cut off before it states one fails.
- ``open_ended``: failed when the output's word-level repetition (:func:`word_repeat_rate`: the
  share of word 3-grams that repeat an earlier one, numbers and list markers normalised away) is at
  least :data:`REPEAT_FAILURE_RATE`.
- ``requested_repetition``: "write X 50 times"; a loop is what was asked for, so the label is "did
  not comply": failed when X makes up less than half of the output's words.
- ``unanswerable``: failed when the output asserts an answer, i.e. contains none of the words of
  :data:`DENIAL_WORDS` (no, not, never, cannot, unknown, fictional, ...), which a correction or a
  refusal needs.
- the injected-fault kinds: always failed (the fault is present; their negatives are the same
  prompts' fault-free runs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from corevital.validation.answer_text import extract_number, find_numbers, same_number
from corevital.validation.answers import check_answer
from corevital.validation.labels import LabelledRecord
from corevital.validation.suite_items import SuiteItem

REPEAT_FAILURE_RATE = 0.25
DENIAL_WORDS = (
    "no",
    "not",
    "never",
    "none",
    "nobody",
    "neither",
    "cannot",
    "can't",
    "don't",
    "doesn't",
    "didn't",
    "isn't",
    "wasn't",
    "aren't",
    "weren't",
    "hasn't",
    "haven't",
    "won't",
    "unknown",
    "unable",
    "impossible",
    "fictional",
    "fictitious",
    "sorry",
    "myth",
    "incorrect",
    "false",
)

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?|\d+(?:[.,]\d+)*")
# "the answer is 42", "Answer: 42", "#### 42", "the result is 42"
_ANSWER_MARKER = re.compile(
    r"(?:answer|result|total)\s*(?:is|:|=|would be|will be)\s*|####\s*", re.IGNORECASE
)


def words(text: str) -> list[str]:
    """Lower-case words of ``text``; every number (list markers included) becomes ``<n>``."""
    return ["<n>" if w[0].isdigit() else w.lower().replace("’", "'") for w in _WORD.findall(text)]


def repeat_rate(units: Sequence[object], n: int) -> float:
    """Share of the n-grams of ``units`` that repeat an earlier n-gram (0 for fewer than n units)."""
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def word_repeat_rate(text: str, n: int = 3) -> float:
    """Word-level repetition of an output: :func:`repeat_rate` of its word 3-grams, numbers as ``<n>``."""
    return repeat_rate(words(text), n)


def stated_answer(output: str, prompt: str, *, last: bool) -> float | None:
    """The number an output states as its answer: the first number after its last answer marker
    ("the answer is", "Answer:", "####", "the total is"); else, with ``last``, the output's last
    number (a worked solution ends with its result); else the number
    :func:`~corevital.validation.answer_text.extract_number` reads (after "=", not echoed from the
    prompt)."""
    markers = list(_ANSWER_MARKER.finditer(output))
    for m in reversed(markers):
        after = find_numbers(output[m.end() : m.end() + 40])
        if after and after[0][0] <= 3:
            return after[0][1]
    if last:
        found = find_numbers(output)
        return found[-1][1] if found else None
    return extract_number(output, prompt)


def label(item: SuiteItem, output: str) -> bool:
    """True when the output is a failure of the item's kind (see the module docstring)."""
    if item.fault is not None:
        return True
    if item.kind == "factual":
        record = LabelledRecord(
            id=item.id, prompt=item.prompt, answer=item.answer, accepted=list(item.accepted), match="contains"
        )
        return not check_answer(output, record)
    if item.kind in ("arithmetic", "word_problem"):
        got = stated_answer(output, item.prompt, last=item.kind == "word_problem")
        return got is None or not same_number(got, float(item.answer or 0))
    if item.kind == "open_ended":
        return word_repeat_rate(output) >= REPEAT_FAILURE_RATE
    if item.kind == "requested_repetition":
        ws = words(output)
        return not ws or sum(w == item.target_word for w in ws) / len(ws) < 0.5
    if item.kind == "unanswerable":
        found = set(re.findall(r"[a-z']+", output.lower().replace("’", "'")))
        return not found & set(DENIAL_WORDS)
    raise ValueError(f"unknown kind {item.kind!r}")
