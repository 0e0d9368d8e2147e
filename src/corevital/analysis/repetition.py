"""Repetition loops: period detection over the whole generated token sequence (``metrics.md`` §4).

A loop is a block of ``p`` tokens (1 ≤ p ≤ ``max_period``) repeated at least ``min_repeats`` times in
a row, the repeats covering at least ``min_span`` tokens. For every period the maximal runs of
``token[i] == token[i + p]`` are found in one vectorised pass; the longest periodic stretch wins
(ties: the smaller period, then the earlier start). When the last layer's sketch is available, the
mean cosine similarity of positions one period apart inside the loop is reported as evidence.

All step numbers are 0-based generated-token indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corevital.analysis.profiles import RepetitionProfile


@dataclass(frozen=True)
class RepetitionFinding:
    detected: bool = False
    period: int | None = None
    first_step: int | None = None
    span: int | None = None
    repeats: float | None = None  # span / period
    repeated_text: str | None = None
    hidden_similarity: float | None = None  # mean last-layer sketch cosine similarity, one period apart
    confirmed: bool | None = None  # hidden_similarity ≥ confirm_similarity (None without sketches)
    coverage: float = 0.0  # span / generated tokens


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
    """The longest qualifying periodic stretch, or None."""
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


def detect_repetition(
    token_ids: np.ndarray,
    token_texts: list[str],
    profile: RepetitionProfile,
    sketch: np.ndarray | None = None,
) -> RepetitionFinding:
    """Repetition loop of a generated sequence, with its hidden-state evidence."""
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    run = find_loop(ids, profile)
    if run is None:
        return RepetitionFinding()
    similarity = sketch_similarity(sketch, run.start, run.span, run.period)
    text = "".join(token_texts[run.start : run.start + run.period]) if token_texts else None
    return RepetitionFinding(
        detected=True,
        period=run.period,
        first_step=run.start,
        span=run.span,
        repeats=run.span / run.period,
        repeated_text=text,
        hidden_similarity=similarity,
        confirmed=None if similarity is None else similarity >= profile.confirm_similarity,
        coverage=run.span / ids.size,
    )
