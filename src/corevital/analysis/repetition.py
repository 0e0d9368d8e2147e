"""Repetition loops (``metrics.md`` §4): on the generated token ids and on the decoded words.

**Tokens.** A loop is a block of ``p`` tokens (1 ≤ p ≤ ``max_period``) repeated at least
``min_repeats`` times in a row, the repeats covering at least ``min_span`` tokens. For every period
the maximal runs of ``token[i] == token[i + p]`` are found in one vectorised pass; the longest
periodic stretch wins (ties: the smaller period, then the earlier start).

**Words.** Loops whose tokens differ between repeats (numbered or bulleted lists repeating one item,
counters, the same sentence with one word changed, tokenisation that differs between repeats) are
found on the decoded words. The output is split into words (runs of letters and digits); each word is
lower-cased, a word of digits (with an ordinal suffix: ``3rd``) becomes the placeholder ``<n>``, and
punctuation and list markers are dropped. A word loop of period ``p`` words (1 ≤ p ≤
``max_word_period``) is a run of positions where ``word[i] == word[i − p]`` that tolerates
mismatches: at most ``⌊p · word_tolerance⌋`` of any ``p`` consecutive comparisons may differ (none
for ``p < 4``). It must cover at least ``min_word_span`` words and ``min_repeats`` repeats
(``tolerant_min_repeats`` when any word differed), and its unit must hold a real word (a sequence of
bare numbers, "1 2 3 4 …", is not a loop). :class:`WordLoopDetector` does this incrementally, one
word at a time in O(``max_word_period``) work and constant memory, so the live stream
(:mod:`corevital.analysis.online`, ``StopOnRepetition``) and the report use the same code.

The reported loop is the one covering more tokens (ties: the token loop). When the last layer's
sketch is available, the mean cosine similarity of positions one period apart inside a token loop is
reported as evidence. When the prompt asks for repetition ("… 50 times", "repeat …"), the loop is
still reported, with ``requested`` set; the risk score does not count it.

All step numbers are 0-based generated-token indices.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from corevital.analysis.profiles import RepetitionProfile

NUMBER = "<n>"
UNIT_CHARS = 80  # the reported unit and repeated text are cut to this many characters

_NUMBER_WORD = re.compile(r"\d+(st|nd|rd|th)?")
_REQUESTED = re.compile(
    r"\b(\d+|two|three|four|five|six|seven|eight|nine|ten|twenty|fifty|hundred|many|several)\s+times\b"
    r"|\brepeat(s|ed|ing)?\b|\bover and over\b|\bagain and again\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RepetitionFinding:
    detected: bool = False
    period: int | None = None  # tokens (word loops: mean tokens per repeat, rounded)
    first_step: int | None = None
    span: int | None = None  # tokens from first_step to last_step
    repeats: float | None = None  # span / period (word loops: words spanned / period_words)
    repeated_text: str | None = None
    hidden_similarity: float | None = None  # mean last-layer sketch cosine similarity, one period apart
    confirmed: bool | None = None  # hidden_similarity ≥ confirm_similarity (None without sketches)
    coverage: float = 0.0  # span / generated tokens
    level: str | None = None  # "tokens" or "words": where the loop was found
    last_step: int | None = None
    period_words: int | None = None  # word loops: the period in words
    unit: str | None = None  # the repeated unit, normalised words ("<n>" for numbers)
    requested: bool = False  # the prompt asks for repetition: reported, not counted as a failure


@dataclass(frozen=True)
class LoopRun:
    period: int
    start: int
    span: int


def _longest_periodic_run(ids: np.ndarray, period: int) -> LoopRun | None:
    if ids.size <= period:
        return None
    eq = ids[period:] == ids[:-period]
    if not eq.any():
        return None
    padded = np.concatenate([[False], eq, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    lengths = ends - starts
    best = int(np.argmax(lengths))  # first of the longest
    return LoopRun(period=period, start=int(starts[best]), span=int(lengths[best]) + period)


def find_loop(token_ids: np.ndarray, profile: RepetitionProfile) -> LoopRun | None:
    """The longest qualifying periodic stretch of token ids, or None."""
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    best: LoopRun | None = None
    for period in range(1, profile.max_period + 1):
        run = _longest_periodic_run(ids, period)
        if run is None:
            continue
        if run.span < profile.min_span or run.span < profile.min_repeats * period:
            continue
        if best is None or run.span > best.span:
            best = run
    return best


def sketch_similarity(sketch: np.ndarray | None, start: int, span: int, period: int) -> float | None:
    """Mean cosine similarity of sketch rows ``t`` and ``t + period`` inside the loop."""
    if sketch is None or sketch.ndim != 2 or sketch.shape[1] == 0 or sketch.shape[0] < start + span:
        return None
    a = sketch[start : start + span - period]
    b = sketch[start + period : start + span]
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = np.isfinite(na) & np.isfinite(nb) & (na > 0) & (nb > 0)
    if not ok.any():
        return None
    cos = (a[ok] * b[ok]).sum(axis=1) / (na[ok] * nb[ok])
    return float(np.clip(cos.mean(), -1.0, 1.0))


# --- words ------------------------------------------------------------------------------------------


def normalise_word(word: str) -> str:
    """Lower case; a number (``12``, ``3rd``) becomes ``<n>``."""
    low = word.lower()
    return NUMBER if _NUMBER_WORD.fullmatch(low) else low


def requested_repetition(prompt: str) -> bool:
    """Does the prompt ask for repeated output ("write X 50 times", "repeat after me")?"""
    return bool(_REQUESTED.search(prompt or ""))


def _cut(text: str) -> str:
    return text if len(text) <= UNIT_CHARS else text[: UNIT_CHARS - 1] + "…"


def _escaped(text: str) -> str:
    """Control characters as escapes (``\\n``), so the text stays on one line."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


@dataclass(frozen=True)
class Word:
    key: str  # normalised
    first_step: int
    last_step: int


class WordSplitter:
    """Decoded token texts in, complete words out (a word ends at the first non-alphanumeric char)."""

    def __init__(self) -> None:
        self._chars: list[str] = []
        self._first = -1
        self._last = -1

    def feed(self, text: str, step: int) -> list[Word]:
        out: list[Word] = []
        for ch in text:
            if ch.isalnum():
                if not self._chars:
                    self._first = step
                self._chars.append(ch)
                self._last = step
            elif self._chars:
                out.append(self._take())
        return out

    def flush(self) -> list[Word]:
        """The word still open at the end of the output."""
        return [self._take()] if self._chars else []

    def _take(self) -> Word:
        word = Word(normalise_word("".join(self._chars)), self._first, self._last)
        self._chars = []
        return word


@dataclass(frozen=True)
class WordLoop:
    period_words: int
    first_step: int
    last_step: int
    span_words: int
    unit: tuple[str, ...]  # the first repeat's normalised words
    exact: bool  # no word differed between repeats

    @property
    def span(self) -> int:
        return self.last_step - self.first_step + 1

    @property
    def repeats(self) -> float:
        return self.span_words / self.period_words


class WordLoopDetector:
    """Incremental word-loop detection (see the module text): O(max_word_period) work per word.

    Memory is bounded: the last ``max_word_period`` words and, per period, the current run's start,
    last match and the positions of its mismatches within the last period.
    """

    def __init__(self, profile: RepetitionProfile) -> None:
        self._p = profile
        size = profile.max_word_period + 1
        self._recent: deque[Word] = deque(maxlen=size)
        self._index = -1
        self._start = [-1] * size  # word index of the run's first matching comparison
        self._last_match = [-1] * size
        self._mismatches: list[deque[int]] = [deque() for _ in range(size)]
        self._differed = [False] * size
        self._unit: list[tuple[str, ...]] = [()] * size
        self._real = [False] * size
        self._first_step = [0] * size
        self._min_repeats = (profile.min_repeats, profile.tolerant_min_repeats)  # exact, tolerant
        self.loop: WordLoop | None = None

    def update(self, word: Word) -> WordLoop | None:
        """Take the next word; the longest loop so far (None until one qualifies)."""
        self._index += 1
        i, recent, p_ = self._index, self._recent, self._p
        recent.append(word)
        n = len(recent)
        keys = [w.key for w in recent]  # oldest first; keys[n - 1] is this word
        key, start, last_match = word.key, self._start, self._last_match
        for p in range(1, min(p_.max_word_period, n - 1) + 1):
            match = keys[n - 1 - p] == key
            if start[p] < 0:
                if not match:
                    continue
                unit = tuple(keys[n - 1 - p : n - 1])
                start[p], last_match[p] = i, i
                self._mismatches[p].clear()
                self._differed[p] = False
                self._unit[p] = unit
                self._real[p] = any(k != NUMBER for k in unit)
                self._first_step[p] = recent[n - 1 - p].first_step
            elif match:
                last_match[p] = i
            else:
                window = self._mismatches[p]
                while window and window[0] <= i - p:
                    window.popleft()
                window.append(i)
                self._differed[p] = True
                allowed = int(p * p_.word_tolerance) if p >= 4 else 0
                if len(window) > allowed:
                    start[p] = -1
                continue
            self._consider(p, word)
        return self.loop

    def _consider(self, p: int, word: Word) -> None:
        if not self._real[p]:
            return
        span_words = self._last_match[p] - self._start[p] + p + 1
        exact = not self._differed[p]
        need = self._min_repeats[0 if exact else 1]
        if span_words < self._p.min_word_span or span_words < need * p:
            return
        if self.loop is not None and span_words <= self.loop.span_words:
            return
        self.loop = WordLoop(
            period_words=p,
            first_step=self._first_step[p],
            last_step=word.last_step,
            span_words=span_words,
            unit=self._unit[p],
            exact=exact,
        )


def word_loop(token_texts: Iterable[str], profile: RepetitionProfile) -> WordLoop | None:
    """The longest word loop of a whole output (the live detector run over it, then the last word)."""
    splitter, detector = WordSplitter(), WordLoopDetector(profile)
    for step, text in enumerate(token_texts):
        for word in splitter.feed(text, step):
            detector.update(word)
    for word in splitter.flush():
        detector.update(word)
    return detector.loop


def unit_text(unit: Iterable[str]) -> str:
    return _cut(" ".join(unit))


def _unit_of_text(text: str) -> str:
    splitter = WordSplitter()
    words = [w.key for w in splitter.feed(text, 0) + splitter.flush()]
    return unit_text(words) if words else _cut(_escaped(text))


def detect_repetition(
    token_ids: np.ndarray,
    token_texts: list[str],
    profile: RepetitionProfile,
    sketch: np.ndarray | None = None,
    *,
    prompt_text: str = "",
) -> RepetitionFinding:
    """Repetition loop of a generated sequence (tokens or words), with its hidden-state evidence."""
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    run = find_loop(ids, profile)
    words = word_loop(token_texts, profile) if token_texts else None
    requested = requested_repetition(prompt_text)
    total = max(ids.size, len(token_texts), 1)
    if words is not None and (run is None or words.span > run.span):
        period = max(1, round(words.span / words.repeats))
        return RepetitionFinding(
            detected=True,
            period=period,
            first_step=words.first_step,
            span=words.span,
            repeats=round(words.repeats, 4),
            repeated_text=_cut(_escaped("".join(token_texts[words.first_step : words.first_step + period]))),
            coverage=min(1.0, words.span / total),
            level="words",
            last_step=words.last_step,
            period_words=words.period_words,
            unit=unit_text(words.unit),
            requested=requested,
        )
    if run is None:
        return RepetitionFinding()
    similarity = sketch_similarity(sketch, run.start, run.span, run.period)
    text = _escaped("".join(token_texts[run.start : run.start + run.period])) if token_texts else None
    return RepetitionFinding(
        detected=True,
        period=run.period,
        first_step=run.start,
        span=run.span,
        repeats=run.span / run.period,
        repeated_text=text,
        hidden_similarity=similarity,
        confirmed=None if similarity is None else similarity >= profile.confirm_similarity,
        coverage=run.span / total,
        level="tokens",
        last_step=run.start + run.span - 1,
        unit=_unit_of_text(text) if text is not None else None,
        requested=requested,
    )
