"""Attention statistics of one decoding step (docs/metrics.md §3).

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
from dataclasses import dataclass

import torch
from torch import Tensor

from corevital.metrics.compiled import CompiledReduction
from corevital.metrics.types import AttentionStats

DEFAULT_COLLAPSE_THRESHOLD = 0.03
DEFAULT_FOCUS_THRESHOLD = 0.9
DEFAULT_MIN_KEYS_FOR_COLLAPSE = 4
DEFAULT_RENORM_TOLERANCE = 1e-3


@torch.no_grad()
def summarize_attention(
    weights: Tensor,
    key_mask: Tensor | None,
    *,
    causal: bool = True,
    collapse_threshold: float = DEFAULT_COLLAPSE_THRESHOLD,
    focus_threshold: float = DEFAULT_FOCUS_THRESHOLD,
    min_keys_for_collapse: int = DEFAULT_MIN_KEYS_FOR_COLLAPSE,
    renorm_tolerance: float = DEFAULT_RENORM_TOLERANCE,
    overwrite: bool = False,
) -> AttentionStats:
    """Per-head entropy, concentration, sink and previous-token mass, reduced over heads.

    ``key_mask`` may be any shape that broadcasts to [L, N, K] (e.g. an expanded [1, N, K] view
    shared by all layers; what depends only on the mask is then computed once, not per layer), or
    None when every key is visible (a decoding step without padding), which skips the mask work.
    With ``causal=True`` the query's own key is the last visible key and the previous-token mass is
    the weight on the visible key just before it (NaN when K < 2); with ``causal=False``
    (cross-attention, encoder) the previous-token fields are NaN.

    Written for few kernels (this runs every decoding step): the per-head quantities are laid out
    as one [5, L, N, H] tensor so that three reductions over heads give every mean, max and min.
    ``overwrite``: ``weights`` is the caller's own float32 buffer, which nothing reads afterwards;
    it is masked and turned into ``-w ln w`` in place instead of in a copy of its size.
    """
    if weights.dim() != 4:
        raise ValueError(f"weights must be [L, N, H, K], got shape {tuple(weights.shape)}")
    keys = _Keys.of(key_mask, weights, causal, min_keys_for_collapse)

    # The one full-size float32 buffer: weights with hidden keys zeroed, overwritten in place below.
    # For other dtypes the cast already copies, so mask that copy in place rather than build a second
    # (with ``overwrite``, the caller's buffer itself).
    w = weights.float()
    owned = w is not weights or overwrite
    if keys.hidden is not None:
        w = w.masked_fill_(keys.hidden, 0.0) if owned else w.masked_fill(keys.hidden, 0.0)
    # nansum skips NaN, so it is ±inf or NaN (inf - inf) exactly when the head holds an infinite
    # weight; this avoids a full-size isinf pass (whose |w| temporary is as large as w).
    nansum = w.nansum(dim=-1)  # [L, N, H]
    peak = w.amax(dim=-1)  # [L, N, H]; NaN iff the head holds NaN
    picked = keys.pick(w)  # weights on the first (and previous) visible key, [L, N, H] each
    # -Σ w ln w; in place when w is a copy that nothing else reads (picked may be views of it).
    in_place = owned and keys.hidden is not None
    entr_sum = torch.special.entr(w, out=w if in_place else None).sum(dim=-1)
    del w
    rows = _RowParts(nansum=nansum, peak=peak, entr_sum=entr_sum, picked=picked)
    thresholds = (collapse_threshold, focus_threshold, renorm_tolerance + _rounding_bound(weights.dtype))
    return _statistics(rows, keys, causal, *thresholds)


def attention_row_parts(
    logits: Tensor, hidden: Tensor, index: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """What :func:`summarize_attention` reduces each row of ``softmax(logits)`` [L, N, H, K] to:
    the sum of its visible probabilities (NaN skipped), its largest, ``-Σ p ln p`` and the
    probabilities at ``index`` ([L or 1, N, c] key positions), [L, N, H] each and [L, N, H, c];
    ``hidden`` ([L or 1, N, 1, K], True where a key is hidden) counts those keys as 0.

    Written for :data:`fused_attention_row_parts`: each reduction recomputes ``exp(logits - max)``
    from the logits instead of sharing one tensor of it, so that compiled, one kernel reads the
    logits and writes only these results (a shared one would be kept in memory, as large as a float32
    copy of the logits). ``-p ln p = p (ln z - x)`` with ``x = logits - max`` and ``z`` the softmax's
    normaliser.
    """
    n_layers, n_rows, n_heads, _ = logits.shape
    top = logits.amax(dim=-1, keepdim=True).float()  # the softmax's shift; NaN for a row holding NaN
    total = torch.exp(logits.float() - top).sum(dim=-1, keepdim=True)  # its normaliser z
    # A softmax row is NaN throughout or nowhere, so NaN skipped in its sum is a NaN sum made 0 (on
    # the reduced values: a NaN test on every probability would keep them in memory).
    visible_sum = (torch.exp(logits.float() - top).masked_fill(hidden, 0.0) / total).sum(dim=-1)
    visible_top = logits.float().masked_fill(hidden, -math.inf).amax(dim=-1, keepdim=True)
    peak = (torch.exp(visible_top - top) / total).squeeze(-1)  # 0 for a row without a visible key
    x = (logits.float() - top).clamp(min=-1e30)  # a key at -inf: p = 0 and p (ln z - x) = 0, not 0 * inf
    terms = torch.exp(x).masked_fill(hidden, 0.0) * (torch.log(total) - x)  # z·(-p ln p)
    entr_sum = terms.sum(dim=-1) / total.squeeze(-1)
    at = index.unsqueeze(2).expand(n_layers, n_rows, n_heads, index.shape[-1])
    picked = torch.exp(logits.gather(-1, at).float() - top) / total
    hidden_at = hidden.expand(n_layers, n_rows, n_heads, hidden.shape[-1]).gather(-1, at)
    return visible_sum.nan_to_num(nan=0.0), peak, entr_sum, picked.masked_fill(hidden_at, 0.0)


# attention_row_parts compiled into fused kernels (corevital.metrics.compiled).
fused_attention_row_parts = CompiledReduction(attention_row_parts)


@torch.no_grad()
def summarize_attention_logits(logits: Tensor, key_mask: Tensor, *, causal: bool = True) -> AttentionStats:
    """:func:`summarize_attention` of the float32 probabilities ``softmax(logits)``, the logits given
    [L, N, H, K], without the probabilities in memory: the rows are reduced by
    :data:`fused_attention_row_parts`, compiled; the thresholds are the defaults.

    The statistics equal those of the probabilities within float32 rounding (fused sums run in
    another order). ``key_mask`` as in :func:`summarize_attention`, required here. Once compiling
    has failed, :func:`summarize_attention` of the probabilities.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be [L, N, H, K], got shape {tuple(logits.shape)}")
    if fused_attention_row_parts.failure is not None:
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        return summarize_attention(probs, key_mask, causal=causal, overwrite=True)
    keys = _Keys.of(key_mask, logits, causal, DEFAULT_MIN_KEYS_FOR_COLLAPSE)
    assert keys.hidden is not None and isinstance(keys.index, Tensor)
    nansum, peak, entr_sum, picked = fused_attention_row_parts(logits, keys.hidden, keys.index)
    rows = _RowParts(nansum=nansum, peak=peak, entr_sum=entr_sum, picked=list(picked.unbind(-1)))
    tolerance = DEFAULT_RENORM_TOLERANCE + _rounding_bound(torch.float32)
    return _statistics(rows, keys, causal, DEFAULT_COLLAPSE_THRESHOLD, DEFAULT_FOCUS_THRESHOLD, tolerance)


@dataclass(frozen=True)
class _RowParts:
    """Each (layer, row, head)'s reductions over its keys, [L, N, H] each."""

    nansum: Tensor  # the sum of the visible weights, NaN skipped
    peak: Tensor  # the largest visible weight; NaN iff the head holds NaN
    entr_sum: Tensor  # -Σ w ln w over the visible weights
    picked: list[Tensor]  # the weights on the first (and, causal, the previous) visible key


def _statistics(
    rows: _RowParts,
    keys: _Keys,
    causal: bool,
    collapse_threshold: float,
    focus_threshold: float,
    tolerance: float,
) -> AttentionStats:
    """The statistics of :func:`summarize_attention` from each row's reductions."""
    nansum, peak, entr_sum, picked = rows.nansum, rows.peak, rows.entr_sum, rows.picked
    n_layers, n_rows, n_heads = peak.shape
    head_has_nan = torch.isnan(peak)
    head_has_inf = torch.isnan(nansum - nansum)  # x - x is NaN iff x is ±inf or NaN (2 kernels, not 5)
    # S, the sum of the visible weights; NaN for a non-finite head, so that dividing by it makes
    # every statistic of that head NaN, not just those it touches.
    scale = nansum.masked_fill(head_has_nan | head_has_inf, math.nan)
    renormalized = ((scale - 1.0).abs() > tolerance).any(dim=-1)  # NaN compares False

    # Rows: entropy (nats), normalised entropy, largest weight, sink mass, previous-token mass.
    per_head = peak.new_empty((5, n_layers, n_rows, n_heads), dtype=torch.float32)
    entropy = torch.addcdiv(torch.log(scale), entr_sum, scale, out=per_head[0]).clamp_(min=0.0)
    torch.mul(entropy, keys.inv_log_keys, out=per_head[1]).clamp_(0.0, 1.0)
    ratios = per_head[2:] if causal else per_head[2:4]
    torch.div(torch.stack([peak, *picked]), scale, out=ratios)
    _fill_nan_where(per_head[4], keys.prev_missing if causal else True)
    means, maxes, mins = per_head.mean(dim=-1), per_head.amax(dim=-1), per_head[:3].amin(dim=-1)

    collapsed = (per_head[1] < collapse_threshold).sum(dim=-1, dtype=torch.float32)
    collapsed_head_count = _fill_nan_where(collapsed, keys.collapse_undefined)
    return AttentionStats(
        entropy_mean=means[0],
        entropy_min=mins[0],
        entropy_max=maxes[0],
        entropy_mean_normalized=means[1],
        concentration_max=maxes[2],
        concentration_min=mins[2],
        collapsed_head_count=collapsed_head_count,
        collapsed_head_rate=collapsed_head_count / n_heads,
        focused_head_count=(per_head[2] > focus_threshold).sum(dim=-1),
        sink_mass_mean=means[3],
        prev_token_mass_mean=means[4],
        prev_token_mass_max=maxes[4],
        max_weight_per_head=per_head[2],
        num_keys=keys.num_keys,
        renormalized=renormalized,
        has_nan=head_has_nan.any(dim=-1),
        has_inf=head_has_inf.any(dim=-1),
    )


def _fill_nan_where(t: Tensor, where: Tensor | bool) -> Tensor:
    """``t`` with NaN where ``where`` holds (in place; a plain bool applies to all of ``t``)."""
    if isinstance(where, Tensor):
        return t.masked_fill_(where, math.nan)
    return t.fill_(math.nan) if where else t


@dataclass(frozen=True)
class _Keys:
    """What the key mask says about each (layer, row): all the statistics need from it.

    Tensors [1 or L, N, ...] for a mask, plain numbers when every key is visible.
    """

    hidden: Tensor | None  # [., N, 1, K] True where a key is hidden; None: none is
    num_keys: Tensor  # [L, N] int64, the visible keys K
    index: Tensor | tuple[int, ...]  # first (and previous) visible key: [., N, 1 or 2], or positions
    inv_log_keys: Tensor | float  # 1 / ln K, 0 for K == 1 (E * 0 keeps a NaN head NaN): [., N, 1]
    prev_missing: Tensor | bool  # K < 2: [., N, 1]
    collapse_undefined: Tensor | bool  # K < min_keys_for_collapse: [., N]

    @staticmethod
    def of(key_mask: Tensor | None, weights: Tensor, causal: bool, min_keys: int) -> _Keys:
        n_layers, n_rows, _, n_keys = weights.shape
        if key_mask is None:
            return _Keys(
                hidden=None,
                num_keys=torch.full((n_layers, n_rows), n_keys, dtype=torch.int64, device=weights.device),
                index=(0, max(n_keys - 2, 0)) if causal else (0,),
                inv_log_keys=0.0 if n_keys == 1 else 1.0 / math.log(n_keys),
                prev_missing=n_keys < 2,
                collapse_undefined=n_keys < min_keys,
            )
        mask = key_mask.to(device=weights.device, dtype=torch.bool)
        mask = torch.broadcast_to(mask, (mask.shape[0] if mask.dim() == 3 else 1, n_rows, n_keys))
        num_keys, index = _key_positions(mask, causal)
        return _Keys(
            hidden=(~mask).unsqueeze(2),
            num_keys=num_keys.expand(n_layers, n_rows),
            index=index,
            # K == 0 gives ln K = -inf and 1 / ln K = -0; E is NaN then anyway (S == 0).
            inv_log_keys=torch.log(num_keys).reciprocal_().nan_to_num_(nan=0.0, posinf=0.0).unsqueeze(-1),
            prev_missing=(num_keys < 2).unsqueeze(-1),
            collapse_undefined=num_keys < min_keys,
        )

    def pick(self, w: Tensor) -> list[Tensor]:
        """The weights on the first (and previous) visible key, [L, N, H] each.

        One gather for a mask; views of ``w`` when every key is visible. A missing key reads a
        hidden (zeroed) key or any key, and is made NaN by S == 0 or by ``prev_missing``.
        """
        if isinstance(self.index, tuple):
            return [w[..., position] for position in self.index]
        n_layers, n_rows, n_heads, _ = w.shape
        index = self.index.unsqueeze(2).expand(n_layers, n_rows, n_heads, self.index.shape[-1])
        return list(w.gather(-1, index).unbind(-1))


def _key_positions(mask: Tensor, causal: bool) -> tuple[Tensor, Tensor]:
    """Visible keys per row, and the positions of the first (and, causal, the previous) visible key.

    From one running count of the visible keys: the first visible key is at the number of
    positions before any visible key, the previous one at the number of positions before the
    (K-1)-th. Counting over the first K_max - 1 positions keeps both inside the row.
    """
    counts = mask.cumsum(dim=-1)  # [., N, K] int64
    num_keys = counts[..., -1]
    before = counts[..., :-1]
    first = (before == 0).sum(dim=-1)
    if not causal:
        return num_keys, first.unsqueeze(-1)
    prev = (before < (num_keys - 1).unsqueeze(-1)).sum(dim=-1)
    return num_keys, torch.stack([first, prev], dim=-1)


def _rounding_bound(dtype: torch.dtype) -> float:
    """Largest |sum - 1| that rounding probabilities to ``dtype`` can cause (unit roundoff)."""
    return torch.finfo(dtype).eps / 2 if dtype.is_floating_point else 0.0
