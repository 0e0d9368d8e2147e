"""Typed results of the per-step reductions.

Every field is a tensor on the model's device until :func:`corevital.metrics.transfer.to_host`
moves a whole step to the host in one copy. Shapes use ``N`` for rows (sequences in the batch, or
query positions in a multi-row pass), ``L`` for layers, ``H`` for heads, ``S`` for the sketch width.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class LogitStats:
    """Statistics of one distribution per row, from raw logits (docs/metrics.md §1)."""

    entropy: Tensor  # [N] bits; NaN where the row held NaN
    top_k_margin: Tensor  # [N] p(1) - p(2); 0 when V == 1
    topk_mass: Tensor  # [N] sum of the mass_k largest probabilities
    topk_ids: Tensor  # [N, topk] token ids of the most likely tokens, most likely first
    topk_probs: Tensor  # [N, topk] their probabilities
    log_normalizer: Tensor  # [N] logsumexp of the row in nats (kept for the chosen token's surprisal)
    has_nan: Tensor  # [N] bool
    has_inf: Tensor  # [N] bool, +inf only (-inf marks masked tokens and is legitimate)


@dataclass(frozen=True)
class HiddenStats:
    """Statistics of one hidden vector per layer and row (docs/metrics.md §2)."""

    mean: Tensor  # [L, N]
    std: Tensor  # [L, N] population standard deviation
    l2_norm: Tensor  # [L, N]
    max_abs: Tensor  # [L, N] after clamping
    clipped: Tensor  # [L, N] bool: some value was beyond the clip value
    clip_fraction: Tensor  # [L, N] fraction of elements clamped
    clip_max_before: Tensor  # [L, N] largest finite magnitude before clamping
    has_nan: Tensor  # [L, N] bool
    has_inf: Tensor  # [L, N] bool
    sketch: Tensor | None  # [L, N, S] random projection, or None when disabled
    # [L, N] ||h_l - h_(l-1)|| / ||h_(l-1)||: how much layer l changes the residual stream; NaN for
    # the first layer of each stack (its input is not kept) and the last (taken after the final norm)
    update_ratio: Tensor | None = None
    # [L, N] ||h_l - m_l|| / ||m_l||, m_l the residual between layer l's attention and its MLP: the
    # MLP's own update (0 when silenced); NaN for the last layer; None when m_l was not observed
    mlp_update_ratio: Tensor | None = None


@dataclass(frozen=True)
class AttentionStats:
    """Statistics of one attention row per head, layer and row (docs/metrics.md §3)."""

    entropy_mean: Tensor  # [L, N] nats, mean over heads
    entropy_min: Tensor  # [L, N]
    entropy_max: Tensor  # [L, N]
    entropy_mean_normalized: Tensor  # [L, N] mean over heads of entropy / ln K, in [0, 1]
    concentration_max: Tensor  # [L, N] max over heads of the head's largest weight
    concentration_min: Tensor  # [L, N] min over heads of the head's largest weight
    collapsed_head_count: Tensor  # [L, N] float; NaN when K < min_keys_for_collapse
    collapsed_head_rate: Tensor  # [L, N] count / H; NaN when K < min_keys_for_collapse
    focused_head_count: Tensor  # [L, N] int64: heads whose largest weight > focus threshold
    sink_mass_mean: Tensor  # [L, N] mean over heads of the weight on the first visible key
    prev_token_mass_mean: Tensor  # [L, N] weight on the key before the query's own; NaN if non-causal
    prev_token_mass_max: Tensor  # [L, N]
    max_weight_per_head: Tensor  # [L, N, H]
    num_keys: Tensor  # [L, N] int64: visible keys K
    renormalized: Tensor  # [L, N] bool: a head missed sum 1 by more than tolerance + dtype rounding
    has_nan: Tensor  # [L, N] bool
    has_inf: Tensor  # [L, N] bool


@dataclass(frozen=True)
class ChosenTokenStats:
    """What happened to the token actually generated at a step, per row."""

    token_ids: Tensor  # [N]
    surprisal: Tensor  # [N] bits, -log2 p(token) under the raw distribution
    sampling_entropy: Tensor | None  # [N] bits of the distribution sampled from, when it differs
    sampling_prob: Tensor | None  # [N] probability of the token under that distribution
