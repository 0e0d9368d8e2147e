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
import math
import re
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from corevital.errors import InputError

if TYPE_CHECKING:
    from corevital.validation.labels import LabelledRecord

NUMERIC_TOLERANCE = 1e-6

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_POSSESSIVE = re.compile(r"['’]s\b")
_APOSTROPHES = re.compile(r"['’`]")

_LEAD_INS = re.compile(
    r"""^(?:
        (?:(?:the|my)\s+)?(?:final\s+|correct\s+)?(?:answer|result)\s*(?:is\s*:?|:|=)
      | a\s*:
      | here(?:\s+is|['’]s)\s+(?:the\s+|my\s+)?(?:answer|result)\s*:?
      | it\s+is\b | it['’]s\b
      | (?:sure|certainly|of\s+course|okay|ok|yes)\s*[,.!:]
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc"})

_DIGIT_NUMBER = re.compile(
    r"""(?:(?P<word>\b(?:minus|negative)\s+)|(?<![\w.]))
        (?P<sign>[-+\u2212])?
        (?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)
        (?P<frac>\.\d+)?""",
    re.IGNORECASE | re.VERBOSE,
)
_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}  # fmt: skip
_ENDS_WITH_NUMBER = re.compile(r"(?:\d|\b(?:" + "|".join([*_UNITS, *_TENS]) + r"))\s*$", re.IGNORECASE)
_WORD_NUMBER = re.compile(
    r"\b(?P<word>(?:minus|negative)\s+)?(?:(?P<tens>"
    + "|".join(_TENS)
    + r")(?:[-\s](?P<unit>"
    + "|".join(k for k, v in _UNITS.items() if 1 <= v <= 9)
    + r"))?|(?P<small>"
    + "|".join(sorted(_UNITS, key=len, reverse=True))
    + r"))\b",
    re.IGNORECASE,
)


# --- normalisation ------------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation (see the module docstring for the exact rules)."""
    text = unicodedata.normalize("NFKC", text)
    decomposed = unicodedata.normalize("NFKD", text)
    text = unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))
    text = text.lower()
    text = _POSSESSIVE.sub("", text)
    text = _APOSTROPHES.sub("", text)
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def strip_lead_ins(text: str) -> str:
    """Remove leading whitespace and common lead-ins (``The answer is``, ``Answer:``, ``Sure!``)."""
    text = text.lstrip()
    while True:
        stripped = _LEAD_INS.sub("", text, count=1).lstrip()
        if stripped == text:
            return text
        text = stripped


def first_line(text: str) -> str:
    """The first line of ``text`` that is not blank (empty when there is none)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def first_sentence(text: str) -> str:
    """``text`` up to the end of its first sentence (abbreviations and initials do not end one)."""
    for match in re.finditer(r"[.!?](?=\s)", text):
        end = match.start()
        if text[end] == ".":
            word = text[:end].split()[-1] if text[:end].split() else ""
            bare = word.strip("\"'([")
            if len(bare) <= 1 or "." in bare or bare.lower() in _ABBREVIATIONS:
                continue
        return text[: end + 1]
    return text


def answer_span(output: str) -> str:
    """The part of an output that ``exact`` matching compares (see the module docstring)."""
    return strip_lead_ins(first_sentence(first_line(strip_lead_ins(output))))


# --- numbers ------------------------------------------------------------------------------------
def _negated(text: str, m: re.Match[str]) -> bool:
    """Whether ``minus`` / ``negative`` before a number is a sign (not the operation ``6 minus 2``)."""
    return bool(m.group("word")) and not _ENDS_WITH_NUMBER.search(text[: m.start()])


def _digit_numbers(text: str) -> list[tuple[int, float]]:
    found = []
    for m in _DIGIT_NUMBER.finditer(text):
        value = float(m.group("int").replace(",", "") + (m.group("frac") or ""))
        if m.group("sign") in ("-", "\u2212") or _negated(text, m):
            value = -value
        start = m.start("sign") if m.group("sign") else m.start("int")
        found.append((start, value))
    return found


def _word_numbers(text: str) -> list[tuple[int, float]]:
    found = []
    for m in _WORD_NUMBER.finditer(text):
        if m.group("small"):
            value = float(_UNITS[m.group("small").lower()])
        else:
            unit = _UNITS[m.group("unit").lower()] if m.group("unit") else 0
            value = float(_TENS[m.group("tens").lower()] + unit)
        found.append((m.start(), -value if _negated(text, m) else value))
    return found


def find_numbers(text: str) -> list[tuple[int, float]]:
    """``(position, value)`` of every number in ``text``: digit-written ones, else number words."""
    return _digit_numbers(text) or _word_numbers(text)


def parse_number(text: str) -> float | None:
    """The value of a string that is exactly one number (``"1,234"``, ``"-3.5"``, ``"eight"``)."""
    stripped = text.strip()
    if _DIGIT_NUMBER.fullmatch(stripped) or _WORD_NUMBER.fullmatch(stripped):
        return find_numbers(stripped)[0][1]
    return None


def extract_number(output: str, prompt: str = "") -> float | None:
    """The number an output gives as its answer (rules a–c of the module docstring), or None."""
    lines = strip_lead_ins(output).splitlines()
    digit_lines = [ln for ln in lines if _digit_numbers(ln)]
    candidates = digit_lines or [ln for ln in lines if _word_numbers(ln)]
    if not candidates:
        return None
    echoed = [value for _, value in _digit_numbers(prompt) + _word_numbers(prompt)]
    for line in candidates:
        numbers = find_numbers(line)
        for position in (i for i in range(len(line) - 1, -1, -1) if line[i] == "="):
            after = [value for start, value in numbers if start > position]
            if after:
                return after[0]
        fresh = [value for _, value in numbers if not any(_same_number(value, e) for e in echoed)]
        if fresh:
            return fresh[0]
    return find_numbers(candidates[0])[0][1]


def _same_number(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=NUMERIC_TOLERANCE, abs_tol=NUMERIC_TOLERANCE)


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
        return any(_same_number(got, e) for e in expected)
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
    return target  # type: ignore[return-value]
