"""The logit tier from a full row of logits on the host (float64 numpy, no torch), and a token chooser.

Used by backends whose logits arrive as numpy rows (llama.cpp in process): the same definitions as
:func:`corevital.metrics.logits.summarize_logits` with ``entropy_mode="full"`` (docs/metrics.md §1),
and the per-sequence arrays shaped like capture's (``[T]``, ``[T, k]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from corevital.capture.records import GenerationRecord

LN2 = math.log(2.0)


@dataclass(frozen=True)
class FullLogitStats:
    """The logit tier of one sequence from full-vocabulary logits (same names as capture's LogitStats)."""

    entropy: np.ndarray  # [T] bits, exact
    top_k_margin: np.ndarray  # [T]
    topk_mass: np.ndarray  # [T]
    topk_ids: np.ndarray  # [T, k]
    topk_probs: np.ndarray  # [T, k]
    log_normalizer: np.ndarray  # [T] nats
    has_nan: np.ndarray  # [T] bool
    has_inf: np.ndarray  # [T] bool


@dataclass(frozen=True)
class FullChosenStats:
    """The chosen token of each step (same names as capture's ChosenTokenStats)."""

    token_ids: np.ndarray  # [T]
    surprisal: np.ndarray  # [T] bits under the raw distribution
    sampling_entropy: np.ndarray | None  # [T] bits of the distribution sampled from (sampling only)
    sampling_prob: np.ndarray | None  # [T]


@dataclass(frozen=True)
class RowStats:
    """The statistics of one row of logits."""

    entropy: float
    margin: float
    mass: float
    top_ids: np.ndarray  # [k]
    top_probs: np.ndarray  # [k]
    log_normalizer: float
    log_probs: np.ndarray  # [V] float64 (NaN throughout for a NaN or +inf row)
    has_nan: bool
    has_inf: bool


def row_stats(logits: np.ndarray, *, topk: int, mass_k: int) -> RowStats:
    """Entropy (bits), margin, top-k mass and most likely tokens of one row of logits [V].

    The same definitions as :func:`corevital.metrics.logits.summarize_logits` with
    ``entropy_mode="full"`` (docs/metrics.md §1), computed in float64: ``-inf`` is a masked token
    (probability 0); a row holding NaN or ``+inf`` has NaN statistics and is flagged.
    """
    x = np.asarray(logits, dtype=np.float64)
    vocab = x.shape[0]
    n_top, n_mass = min(topk, vocab), min(mass_k, vocab)
    n_fetch = max(n_top, n_mass, min(2, vocab))
    has_nan = bool(np.isnan(x).any())
    has_inf = bool((x == math.inf).any())
    peak = float(x.max()) if not has_nan else math.nan
    if has_nan or has_inf or not math.isfinite(peak):
        nan_row = np.full(vocab, math.nan)
        ids = np.arange(n_top, dtype=np.int64)
        return RowStats(
            math.nan, math.nan, math.nan, ids, np.full(n_top, math.nan), math.nan, nan_row, has_nan, has_inf
        )
    shifted = x - peak
    log_normalizer = peak + math.log(float(np.exp(shifted).sum()))
    log_probs = x - log_normalizer
    probs = np.exp(log_probs)
    positive = probs > 0.0
    entropy = float(-(probs[positive] * log_probs[positive]).sum()) / LN2
    fetch = np.argpartition(-x, n_fetch - 1)[:n_fetch] if n_fetch < vocab else np.arange(vocab)
    fetch = fetch[np.lexsort((fetch, -x[fetch]))]  # most likely first; ties: the lower id first
    top_probs = probs[fetch]
    margin = float(top_probs[0] - top_probs[1]) if vocab > 1 else 0.0
    return RowStats(
        entropy=entropy,
        margin=margin,
        mass=float(top_probs[:n_mass].sum()),
        top_ids=fetch[:n_top].astype(np.int64),
        top_probs=top_probs[:n_top],
        log_normalizer=log_normalizer,
        log_probs=log_probs,
        has_nan=False,
        has_inf=False,
    )


class TokenChooser:
    """Greedy (temperature 0) or sampling with temperature, top-k and top-p from a seeded generator."""

    def __init__(self, generation: GenerationRecord) -> None:
        self.generation = generation
        self.rng = np.random.default_rng(generation.seed)

    def __call__(self, logits: np.ndarray) -> tuple[int, float | None, float | None]:
        """The token chosen, and the entropy (bits) and probability of it under the distribution
        sampled from (None when greedy)."""
        gen = self.generation
        if not gen.do_sample:
            return int(np.argmax(logits)), None, None
        scores = np.asarray(logits, dtype=np.float64) / float(gen.temperature or 1.0)
        if gen.top_k is not None and 0 < gen.top_k < scores.shape[0]:
            kth = np.partition(scores, -gen.top_k)[-gen.top_k]
            scores = np.where(scores < kth, -math.inf, scores)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        if gen.top_p is not None and gen.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cumulative = np.cumsum(probs[order])
            keep = cumulative - probs[order] < gen.top_p  # the smallest set reaching top_p, at least one
            mask = np.zeros_like(probs, dtype=bool)
            mask[order[keep]] = True
            probs = np.where(mask, probs, 0.0)
            probs /= probs.sum()
        token = int(self.rng.choice(probs.shape[0], p=probs))
        positive = probs[probs > 0.0]
        return token, float(-(positive * np.log2(positive)).sum()), float(probs[token])
