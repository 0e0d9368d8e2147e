"""Reading an answer out of text: normalisation, lead-ins, the answer span, numbers.

The rules are documented with :func:`corevital.validation.answers.check_answer`, which applies
them; labelled records (:mod:`.labels`) use them to reject answers that could never match.
"""

from __future__ import annotations

import math
import re
import unicodedata

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
        fresh = [value for _, value in numbers if not any(same_number(value, e) for e in echoed)]
        if fresh:
            return fresh[0]
    return find_numbers(candidates[0])[0][1]


def same_number(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=NUMERIC_TOLERANCE, abs_tol=NUMERIC_TOLERANCE)
