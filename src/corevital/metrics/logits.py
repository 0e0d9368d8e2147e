"""Logit statistics of one decoding step (docs/metrics.md §1).

Everything here is computed from the model's raw logits, batched over rows, in float32 on the
logits' device, with no host synchronisation. Entropies are in bits.

Non-finite input: ``-inf`` marks a masked token and is legitimate (probability 0, contributes 0).
A row holding NaN gets NaN entropy, margin, mass and probabilities and ``has_nan``; a row holding
``+inf`` has no well-defined distribution either, so its statistics are NaN too and it is flagged
``has_inf``. Other rows are never affected. A row whose logits are all ``-inf`` has no
distribution: its statistics are NaN with neither flag set.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from corevital.metrics.types import ChosenTokenStats, LogitStats
from corevital.modes import DEFAULT_TOPK, DEFAULT_TOPK_MASS_K, EntropyMode

_LN2 = math.log(2.0)
# Defaults of the reductions below (a capture passes the settings ``topk`` and ``topk_mass_k``).
TOPK = DEFAULT_TOPK
MASS_K = DEFAULT_TOPK_MASS_K
# Number of leading tokens the ``topk_approx`` entropy keeps exactly (at least ``topk``).
APPROX_HEAD_TOKENS = 50
# Below this tail mass the uniform-tail correction is skipped (docs/metrics.md §1: r > 1e-9).
_TAIL_MASS_EPS = 1e-9


@torch.no_grad()
def summarize_logits(
    logits: Tensor,
    *,
    topk: int = TOPK,
    mass_k: int = MASS_K,
    entropy_mode: EntropyMode = "full",
) -> LogitStats:
    """Entropy, margin, top-k mass and the most likely tokens of each row of ``logits`` [N, V].

    ``topk`` and ``mass_k`` are clipped to V. ``entropy_mode="topk_approx"`` keeps the top
    ``max(topk, 50)`` probabilities exactly and spreads the remaining mass uniformly over the other
    tokens; it needs one top-k and one logsumexp over the vocabulary and never builds a full softmax.
    """
    return summarize_logits_keeping_log_probs(logits, topk=topk, mass_k=mass_k, entropy_mode=entropy_mode)[0]


@torch.no_grad()
def summarize_logits_keeping_log_probs(
    logits: Tensor,
    *,
    topk: int = TOPK,
    mass_k: int = MASS_K,
    entropy_mode: EntropyMode = "full",
) -> tuple[LogitStats, Tensor | None]:
    """:func:`summarize_logits`, plus the rows' log-probabilities [N, V] (float32) when it computed them.

    ``entropy_mode="full"`` computes them anyway; keeping them until the token is chosen gives its
    surprisal in two kernels (:func:`surprisal_from_log_probs`). ``topk_approx`` gives None.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    if topk < 1 or mass_k < 1:
        raise ValueError("topk and mass_k must be >= 1")
    if entropy_mode not in ("full", "topk_approx"):
        raise ValueError(f"unknown entropy_mode {entropy_mode!r}")
    vocab = logits.shape[-1]
    n_top, n_mass = min(topk, vocab), min(mass_k, vocab)
    n_fetch = max(n_top, n_mass, min(2, vocab))
    if entropy_mode == "full":
        return _full_entropy_stats(logits, n_top, n_mass, n_fetch)
    n_head = min(max(topk, APPROX_HEAD_TOKENS), vocab)
    return _approx_entropy_stats(logits, n_top, n_mass, n_head, max(n_fetch, n_head)), None


def _full_entropy_stats(logits: Tensor, n_top: int, n_mass: int, n_fetch: int) -> tuple[LogitStats, Tensor]:
    """Everything from one float32 log-softmax, in few kernels (this runs every decoding step).

    A row holding NaN or +inf (or only -inf) has NaN log-probabilities throughout (its maximum is
    NaN or infinite), so its entropy, margin, mass and probabilities are NaN with no masking.
    """
    log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
    top_lp, top_ids = torch.topk(log_probs, n_fetch, dim=-1)
    top_probs = torch.exp(top_lp)  # [N, n_fetch]
    p = torch.exp(log_probs)
    entropy = torch.special.entr(p, out=p).sum(dim=-1).div_(_LN2)
    # logsumexp = x_i - log p_i for any token i; the most likely one is the best conditioned.
    log_normalizer = logits.gather(-1, top_ids[:, :1]).squeeze(-1) - top_lp[:, 0]
    margin = top_probs[:, 0] - top_probs[:, 1] if logits.shape[-1] > 1 else torch.zeros_like(top_lp[:, 0])
    stats = LogitStats(
        entropy=entropy,
        top_k_margin=margin,
        topk_mass=top_probs[:, :n_mass].sum(dim=-1),
        topk_ids=top_ids[:, :n_top],
        topk_probs=top_probs[:, :n_top],
        log_normalizer=log_normalizer,
        has_nan=torch.isnan(logits).any(dim=-1),
        has_inf=(logits == math.inf).any(dim=-1),
    )
    return stats, log_probs


def _approx_entropy_stats(logits: Tensor, n_top: int, n_mass: int, n_head: int, n_fetch: int) -> LogitStats:
    """The ``topk_approx`` entropy: one top-k and one logsumexp, no full-size float tensor."""
    x = logits.float()
    vocab = x.shape[-1]

    has_nan = torch.isnan(x).any(dim=-1)
    has_inf = (x == math.inf).any(dim=-1)
    log_normalizer = torch.logsumexp(x, dim=-1)  # NaN for NaN rows, +inf for +inf rows

    top_vals, top_ids = torch.topk(x, n_fetch, dim=-1)
    top_probs = torch.exp(top_vals - log_normalizer.unsqueeze(-1))  # [N, n_fetch]

    if vocab == 1:
        margin = torch.zeros_like(log_normalizer)
    else:
        margin = top_probs[:, 0] - top_probs[:, 1]
    mass = top_probs[:, :n_mass].sum(dim=-1)

    head = top_probs[:, :n_head]
    entropy_nats = torch.special.entr(head).sum(dim=-1)
    if n_head < vocab:
        tail = (1.0 - head.sum(dim=-1)).clamp_(min=0.0)
        tail_term = torch.special.entr(tail) + tail * math.log(vocab - n_head)
        entropy_nats = entropy_nats + torch.where(tail > _TAIL_MASS_EPS, tail_term, 0.0)
    entropy = entropy_nats / _LN2

    # NaN rows already propagate NaN through the logsumexp; +inf rows do too (inf - inf), but the
    # contract is explicit, so pin it rather than rely on each kernel's NaN semantics.
    bad = has_nan | has_inf
    entropy, margin, mass = (torch.where(bad, math.nan, v) for v in (entropy, margin, mass))
    return LogitStats(
        entropy=entropy,
        top_k_margin=margin,
        topk_mass=mass,
        topk_ids=top_ids[:, :n_top],
        topk_probs=torch.where(bad.unsqueeze(-1), math.nan, top_probs[:, :n_top]),
        log_normalizer=log_normalizer,
        has_nan=has_nan,
        has_inf=has_inf,
    )


@torch.no_grad()
def surprisal_from_log_probs(log_probs: Tensor, token_ids: Tensor) -> Tensor:
    """``-log2 p(token)`` in bits for each row, from the log-probabilities [N, V] the stats kept."""
    return log_probs.gather(-1, token_ids.long().unsqueeze(-1)).squeeze(-1).mul_(-1.0 / _LN2)


@torch.no_grad()
def token_surprisal(logits: Tensor, log_normalizer: Tensor, token_ids: Tensor) -> Tensor:
    """``-log2 p(token)`` in bits for each row, with ``log_normalizer`` from :func:`summarize_logits`.

    A token whose logit is ``-inf`` has infinite surprisal; NaN rows give NaN.
    """
    chosen = logits.gather(-1, token_ids.long().unsqueeze(-1)).squeeze(-1).float()
    return (log_normalizer.float() - chosen) / _LN2


@torch.no_grad()
def sampling_distribution_stats(scores: Tensor, token_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Entropy (bits) and chosen-token probability of the distribution actually sampled from.

    ``scores`` [N, V] are the processed scores (after temperature, top-k, top-p); the entries that
    the warpers removed are ``-inf`` and contribute nothing.
    """
    x = scores.float()
    p = torch.softmax(x, dim=-1)
    chosen_prob = p.gather(-1, token_ids.long().unsqueeze(-1)).squeeze(-1)
    entropy = torch.special.entr(p, out=p).sum(dim=-1) / _LN2
    return entropy, chosen_prob


@torch.no_grad()
def summarize_chosen(
    logits: Tensor, log_normalizer: Tensor, token_ids: Tensor, *, scores: Tensor | None = None
) -> ChosenTokenStats:
    """The chosen token's surprisal, plus the sampling distribution's statistics when ``scores`` is given.

    Pass ``scores`` only when the logits processors changed the distribution (the caller knows
    that from the generation config without looking at tensor values).
    """
    surprisal = token_surprisal(logits, log_normalizer, token_ids)
    sampling_entropy, sampling_prob = (
        sampling_distribution_stats(scores, token_ids) if scores is not None else (None, None)
    )
    return ChosenTokenStats(
        token_ids=token_ids,
        surprisal=surprisal,
        sampling_entropy=sampling_entropy,
        sampling_prob=sampling_prob,
    )
