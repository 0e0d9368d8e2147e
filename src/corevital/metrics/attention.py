"""Attention statistics of one decoding step (spec/metrics.md §3).

The input is one attention row per (layer, row, head): the weights of the query at the position
being decoded over its K keys, ``[L, N, H, K]``, and a key mask ``[L, N, K]`` (True = visible)
that says which keys the query could see. Keys the mask hides are ignored whatever their weights
hold (padding, the parts of a static cache not yet written, keys outside a sliding window), so the
number of visible keys can differ per layer and row. Everything is vectorised over L, N and H, in
float32 on the input's device, with no host synchronisation.

Renormalisation: every head's visible weights are divided by their sum S, so the statistics are
always those of a probability row (for a well-formed row this changes nothing beyond rounding).
A head whose sum misses 1 by more than ``renorm_tolerance`` plus what the input dtype's rounding
can explain (half its machine epsilon: 3.9e-3 for bfloat16, 4.9e-4 for float16, 6e-8 for float32)
flags its (layer, row) ``renormalized``. Without that allowance a bfloat16 model, whose eager
attention rounds float32 probabilities to bfloat16, would be flagged on a large share of its steps.
The entropy of the renormalised row comes from the raw one, ``E(w/S) = ln S + (-Σ w ln w) / S``,
so no renormalised copy is built.

Non-finite weights make that head's statistics NaN and set ``has_nan``/``has_inf``. A head whose
visible weights are all zero (or a row with no visible key) has NaN statistics.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from corevital.metrics.types import AttentionStats

DEFAULT_COLLAPSE_THRESHOLD = 0.03
DEFAULT_FOCUS_THRESHOLD = 0.9
DEFAULT_MIN_KEYS_FOR_COLLAPSE = 4
DEFAULT_RENORM_TOLERANCE = 1e-3


@torch.no_grad()
def summarize_attention(
    weights: Tensor,
    key_mask: Tensor,
    *,
    causal: bool = True,
    collapse_threshold: float = DEFAULT_COLLAPSE_THRESHOLD,
    focus_threshold: float = DEFAULT_FOCUS_THRESHOLD,
    min_keys_for_collapse: int = DEFAULT_MIN_KEYS_FOR_COLLAPSE,
    renorm_tolerance: float = DEFAULT_RENORM_TOLERANCE,
) -> AttentionStats:
    """Per-head entropy, concentration, sink and previous-token mass, reduced over heads.

    ``key_mask`` may be any shape that broadcasts to [L, N, K] (e.g. an expanded [1, N, K] view
    shared by all layers). With ``causal=True`` the query's own key is the last visible key and the
    previous-token mass is the weight on the visible key just before it (NaN when K < 2); with
    ``causal=False`` (cross-attention, encoder) the previous-token fields are NaN.
    """
    if weights.dim() != 4:
        raise ValueError(f"weights must be [L, N, H, K], got shape {tuple(weights.shape)}")
    n_layers, n_rows, n_heads, n_keys_max = weights.shape
    mask = key_mask.to(device=weights.device, dtype=torch.bool)
    mask = torch.broadcast_to(mask, (n_layers, n_rows, n_keys_max))
    visible = mask.unsqueeze(2)  # [L, N, 1, K]

    # The one full-size float32 buffer: weights with hidden keys zeroed, overwritten in place below.
    # For other dtypes the cast already copies, so mask that copy in place rather than build a second.
    if weights.dtype == torch.float32:
        w = torch.where(visible, weights, 0.0)
    else:
        w = weights.float().masked_fill_(~visible, 0.0)

    # nansum skips NaN, so it is ±inf or NaN (inf - inf) exactly when the head holds an infinite
    # weight; this avoids a full-size isinf pass (whose |w| temporary is as large as w).
    nansum = w.nansum(dim=-1)  # [L, N, H]
    peak = w.amax(dim=-1)  # [L, N, H]; NaN iff the head holds NaN
    head_has_nan = torch.isnan(peak)
    head_has_inf = ~torch.isfinite(nansum)

    num_keys = mask.sum(dim=-1)  # [L, N] int64
    positions = torch.arange(n_keys_max, device=w.device)
    first = torch.where(mask, positions, n_keys_max).amin(dim=-1)  # [L, N]; K_max when no key
    last = torch.where(mask, positions, -1).amax(dim=-1)
    prev = torch.where(mask & (positions < last.unsqueeze(-1)), positions, -1).amax(dim=-1)
    # w[l, n, h, first[l, n]] and w[l, n, h, prev[l, n]] in one gather; a missing key reads key 0
    # and is replaced by NaN below.
    index = torch.stack([first, prev], dim=-1).clamp_(0, max(n_keys_max - 1, 0))
    picked = w.gather(-1, index.unsqueeze(2).expand(-1, -1, n_heads, -1))  # [L, N, H, 2]
    sink_raw, prev_raw = picked[..., 0], picked[..., 1]

    finite = ~(head_has_nan | head_has_inf)
    tolerance = renorm_tolerance + _rounding_bound(weights.dtype)
    renormalized = (finite & ((nansum - 1.0).abs() > tolerance)).any(dim=-1)
    # Dividing by NaN makes every statistic of a non-finite head NaN, not just those it touches.
    scale = torch.where(finite, nansum, math.nan)  # [L, N, H]: the sum S of the visible weights

    entr_sum = torch.special.entr(w, out=w).sum(dim=-1)  # -Σ w ln w; w is no longer the weights
    del w
    entropy = (torch.log(scale) + entr_sum / scale).clamp(min=0.0)  # [L, N, H] nats
    keys_f = num_keys.float().unsqueeze(-1)  # [L, N, 1]
    # K == 1: defined as 0 (E * 0 keeps a NaN head NaN). K == 0 gives ln K = -inf and E is NaN.
    normalized = torch.where(keys_f == 1.0, entropy * 0.0, entropy / torch.log(keys_f)).clamp(0.0, 1.0)

    max_weight = peak / scale
    sink = torch.where(keys_f >= 1.0, sink_raw / scale, math.nan)

    collapsed = (normalized < collapse_threshold).sum(dim=-1).float()
    collapse_defined = num_keys >= min_keys_for_collapse
    collapsed_head_count = torch.where(collapse_defined, collapsed, math.nan)
    collapsed_head_rate = collapsed_head_count / n_heads

    if causal:
        prev_mass = torch.where(keys_f >= 2.0, prev_raw / scale, math.nan)
        prev_token_mass_mean = prev_mass.mean(dim=-1)
        prev_token_mass_max = prev_mass.amax(dim=-1)
    else:
        prev_token_mass_mean = torch.full((n_layers, n_rows), math.nan, device=entropy.device)
        prev_token_mass_max = prev_token_mass_mean.clone()

    return AttentionStats(
        entropy_mean=entropy.mean(dim=-1),
        entropy_min=entropy.amin(dim=-1),
        entropy_max=entropy.amax(dim=-1),
        entropy_mean_normalized=normalized.mean(dim=-1),
        concentration_max=max_weight.amax(dim=-1),
        concentration_min=max_weight.amin(dim=-1),
        collapsed_head_count=collapsed_head_count,
        collapsed_head_rate=collapsed_head_rate,
        focused_head_count=(max_weight > focus_threshold).sum(dim=-1),
        sink_mass_mean=sink.mean(dim=-1),
        prev_token_mass_mean=prev_token_mass_mean,
        prev_token_mass_max=prev_token_mass_max,
        max_weight_per_head=max_weight,
        num_keys=num_keys,
        renormalized=renormalized,
        has_nan=head_has_nan.any(dim=-1),
        has_inf=head_has_inf.any(dim=-1),
    )


def _rounding_bound(dtype: torch.dtype) -> float:
    """Largest |sum - 1| that rounding probabilities to ``dtype`` can cause (unit roundoff)."""
    return torch.finfo(dtype).eps / 2 if dtype.is_floating_point else 0.0
