"""Answer checking: did the model's output answer a labelled prompt correctly?

:func:`check_answer` returns ``True`` when the output is **correct** and ``False`` when it failed.
The rules, in order:

1. A record with a pre-judged ``failed`` label is not checked: the result is ``not failed``.
2. The *mode* is ``numeric`` when the record says ``match: "numeric"`` or when its ``answer`` is a
   JSON number; otherwise it is the record's ``match`` (``exact`` by default, or ``contains``). The
   expected variants are ``answer`` followed by every entry of ``accepted``.
3. Before any mode, the output is *cleaned*: leading whitespace is dropped and common lead-ins are
   removed from its start, repeatedly (case-insensitive): ``Answer:``, ``A:``, ``Final answer:``,
   ``The answer is``, ``The correct answer is``, ``My answer is``, ``The result is``,
   ``Here is the answer:`` / ``Here's the answer:``, ``It is`` / ``It's``, and the interjections
   ``Sure``, ``Certainly``, ``Of course``, ``OK`` / ``Okay``, ``Yes`` when followed by ``,`` ``.`` ``!``
   or ``:``.

:func:`normalize_answer` (applied to both sides in ``exact`` and ``contains``), SQuAD style with
three deliberate differences (marked *; SQuAD deletes all punctuation and keeps accents):
    Unicode NFKC; *accents removed (``Brasília`` → ``brasilia``)*; lower case; *a possessive
    ``'s`` is removed and other apostrophes are deleted (``Austen's`` → ``austen``,
    ``don't`` → ``dont``)*; *every other punctuation character (Unicode category P*) becomes a
    space (``Port-au-Prince`` → ``port au prince``)*; the articles ``a``, ``an``, ``the`` are
    dropped as whole words; runs of whitespace collapse to one space, trimmed.

``exact``
    The cleaned output is cut to its *answer span*: its first non-empty line, then the first
    sentence of that line (a sentence ends at ``.``, ``!`` or ``?`` followed by whitespace, unless
    the word before a ``.`` is a single letter, contains another ``.`` — ``J.R.R.``, ``D.C.`` — or
    is one of ``Mr Mrs Ms Dr St Jr Sr vs etc``); lead-ins are removed again. Correct when the
    normalised span equals some normalised variant.

``contains``
    Correct when some normalised variant occurs as a whole-word phrase in the normalised *first
    non-empty line* of the cleaned output (a model that states the answer and then rambles on in
    later lines is judged by its first line). Whole words: ``Paris`` does **not** match
    ``Parisian``, ``Jane Austen`` does match ``The novel by Jane Austen's ...``. A variant that is
    mentioned next to a wrong one (``Sydney or Canberra``) counts as correct: ``contains`` is
    lenient by design; use ``exact`` where that matters.

``numeric``
    Every variant must be a number (a JSON number or a string that reads as one). A number in the
    output is written with digits — an optional sign ``+ - −`` not glued to a preceding letter or
    digit, optional thousands separators (``1,234,567``), an optional decimal part (``3.25``), or
    the word ``minus`` / ``negative`` before it — or, only when the output has no digit-written
    number at all, as English words from ``zero`` to ``ninety-nine`` (``eight`` → 8,
    ``twenty-one`` → 21, ``minus five`` → -5; after a number, ``minus`` is the operation:
    ``6 minus 2`` reads as 6 and 2). The *number lines* are the lines of the cleaned
    output that contain such a number. The output's number is taken from the first number line
    where one of these applies, in this order:

    a. the line contains ``=`` followed by a number: the first number after the last such ``=``
       (``47 + 38 = 85`` → 85; ``47 + 38 = 80 + 5 = 85`` → 85);
    b. the line has a number that does not occur in the prompt (models echo the operands): the
       first such number (``The sum of 47 and 38 is 85`` → 85; ``We add 8 and 7.\n\nIt is 15`` → 15).

    When no line qualifies (every number echoes the prompt), it is the first number of the first
    number line (``3 times 1 is 3`` → 3; ``We add 8 and 7.`` → 8). Correct when that number equals
    some variant within an absolute or relative tolerance of 1e-6; an output without a number fails.

A user-supplied rule can replace all of this: any callable ``(output, record) -> bool`` (the
:class:`AnswerChecker` protocol), loaded by :func:`load_checker` from ``"package.module:function"``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Protocol, cast, runtime_checkable

from corevital.errors import InputError
from corevital.validation.answer_text import (
    answer_span,
    extract_number,
    first_line,
    normalize_answer,
    parse_number,
    same_number,
    strip_lead_ins,
)
from corevital.validation.labels import LabelledRecord


# --- checking -----------------------------------------------------------------------------------
@runtime_checkable
class AnswerChecker(Protocol):
    """Decides whether ``output`` answers ``record`` correctly (True: correct, False: failed)."""

    def __call__(self, output: str, record: LabelledRecord) -> bool: ...


def _variants(record: LabelledRecord) -> list[str | int | float]:
    expected: list[str | int | float] = [] if record.answer is None else [record.answer]
    return expected + list(record.accepted or [])


def _as_number(value: str | int | float) -> float | None:
    return float(value) if isinstance(value, int | float) else parse_number(value)


def _contains_phrase(haystack: str, needle: str) -> bool:
    return bool(needle) and f" {needle} " in f" {haystack} "


def _matches_any(candidate: str, variants: Iterable[str], *, contains: bool) -> bool:
    for variant in variants:
        normalized = normalize_answer(variant)
        if normalized and (_contains_phrase(candidate, normalized) if contains else candidate == normalized):
            return True
    return False


def check_answer(output: str, record: LabelledRecord) -> bool:
    """True when ``output`` answers ``record`` correctly under the rules of the module docstring."""
    if record.failed is not None:
        return not record.failed
    variants = _variants(record)
    if record.mode == "numeric":
        got = extract_number(output, record.prompt_text)
        if got is None:
            return False
        expected = [v for v in (_as_number(x) for x in variants) if v is not None]
        return any(same_number(got, e) for e in expected)
    texts = [str(v) for v in variants]
    if record.mode == "contains":
        return _matches_any(normalize_answer(first_line(strip_lead_ins(output))), texts, contains=True)
    return _matches_any(normalize_answer(answer_span(output)), texts, contains=False)


def load_checker(spec: str) -> AnswerChecker:
    """Import a user checker given as ``"package.module:function"`` (dotted attributes allowed)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name.strip() or not attribute.strip():
        raise InputError(f"answer checker {spec!r}: expected 'package.module:function'")
    try:
        target: object = importlib.import_module(module_name.strip())
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's input error
        raise InputError(f"answer checker {spec!r}: cannot import {module_name!r} ({exc})") from exc
    for part in attribute.strip().split("."):
        if not hasattr(target, part):
            raise InputError(f"answer checker {spec!r}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise InputError(f"answer checker {spec!r}: {attribute!r} is not callable")
    return cast(AnswerChecker, target)
