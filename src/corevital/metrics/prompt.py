"""Prompt telemetry from the prefill forward pass (docs/metrics.md §5).

Run once per generation, on the tensors the prefill pass produces anyway, on the model's device,
vectorised over sequences, layers, heads and positions, with no host synchronisation. Left (or any)
padding is described by boolean masks: True = a real prompt token (``visible``) or a (query, key)
pair the query could attend to.

* :func:`prompt_surprisals`: ``-log2 p(token_{i+1} | tokens <= i)`` in bits, ``[B, P-1]``.
* :func:`layer_transformations`: ``1 - mean_i cos(h_{l-1,i}, h_{l,i})`` per consecutive layer pair.
* :func:`prompt_attention`: one layer's sparse attention per head (the largest entries above a
  threshold, at most ``cap``) and each head's basin score; in two steps, per head group
  (:func:`prompt_head_parts`, or from the logits the attention tap recomputes:
  :func:`logit_head_parts`) and per layer (:func:`prompt_attention_from_parts`).
* :func:`prompt_visibility`: the ``[B, P, P]`` (query, key) mask of a causal prompt from its
  ``[B, P]`` attention mask.

Basin score, exactly. For a query that sees ``n`` keys, rank those keys ``0..n-1`` by position and
give key of rank ``r`` the interval ``[r, r+1)`` of the line ``[0, n)``. Its membership ``m_r`` in the
middle third is the length of the overlap of that interval with ``[n/3, 2n/3)``, in [0, 1]. When 3
divides ``n`` the middle third is exactly the ranks ``n/3 .. 2n/3 - 1``; otherwise the two boundary
keys count fractionally (n = 4: m = 0, 2/3, 2/3, 0; n = 5: 0, 1/3, 1, 1/3, 0). The first and last
visible keys never belong to the middle (n >= 3). With the query's visible weights ``w`` normalised
by their sum ``S``, the query's middle mass is ``mid_q = Σ m_r w_r / S`` and its edge mass is
``1 - mid_q``. A head's score is the ratio of the query-averaged masses::

    basin = mean_q(mid_q) / mean_q(1 - mid_q)

over the queries that see at least 3 keys. Uniform attention gives ``mid_q = 1/3`` for every ``n``,
so exactly 0.5; attention that ignores the middle gives 0. The average is taken before the ratio
(as the original CoreVital did, which keeps its scale) rather than averaging per-query ratios,
which are unbounded (a query whose mass sits almost entirely in the middle would have a ratio in
the thousands and dominate the mean). A sequence with no query seeing 3 keys (a prompt shorter
than 3 tokens) gets NaN; a head whose every counted query has all its mass in the middle gets
+inf; a head with a NaN/Inf weight, or a counted query whose visible weights sum to 0, gets NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from corevital.metrics.compiled import CompiledReduction

DEFAULT_SPARSE_THRESHOLD = 0.01
DEFAULT_SPARSE_CAP = 50
# Largest float32 block of hidden states (all layers, some positions) a prompt reduction makes.
DEFAULT_CHUNK_BYTES = 32 * 2**20

_LN2 = math.log(2.0)
# Norms below this make the cosine 0 (as torch.nn.functional.cosine_similarity's eps does).
_COS_EPS = 1e-8


@dataclass(frozen=True)
class PromptAttentionStats:
    """One layer's prompt attention per sequence and head; shapes use ``C`` for the cap.

    Entry ``j < count[b, h]`` of head (b, h) is the ``j``-th largest visible weight above the
    threshold; entries from ``count`` on are padding (indices -1, weight 0). Indices count from the
    sequence's first visible (non-padding) position, so they index the unpadded prompt.
    """

    query_index: Tensor  # [B, H, C] int64
    key_index: Tensor  # [B, H, C] int64
    weight: Tensor  # [B, H, C] float32, descending within each head
    count: Tensor  # [B, H] int64: valid entries, min(entries above threshold, cap)
    basin_scores: Tensor  # [B, H] float32; NaN when no query sees 3 keys


@torch.no_grad()
def prompt_surprisals(
    logits: Tensor,
    input_ids: Tensor,
    visible: Tensor,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """``-log2 p(input_ids[:, i+1] | <= i)`` in bits from the prefill logits, ``[B, P-1]`` float32.

    ``logits`` [B, P, V] are the raw logits at every prompt position (the prefill must keep all of
    them, not only the last); ``visible`` [B, P] is True for real tokens. Entry ``i`` is NaN when
    position ``i`` or ``i+1`` is padding. Positions are processed ``chunk_size`` at a time (by
    default as many as fit :data:`DEFAULT_CHUNK_BYTES` in float32), so at most one float32
    [B, chunk_size, V] block (and logsumexp's temporary of that size) exists besides the input.
    A NaN or +inf logit in a row makes that entry NaN; a target whose logit is -inf has surprisal
    +inf.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, P, V], got shape {tuple(logits.shape)}")
    n_seq, n_pos, vocab = logits.shape
    return _surprisals(
        lambda start, stop: logits[:, start:stop],
        (n_seq, n_pos, vocab),
        logits.device,
        input_ids,
        visible,
        chunk_size,
    )


@torch.no_grad()
def prompt_surprisals_from_states(
    states: Tensor,
    head: Callable[[Tensor], Tensor],
    input_ids: Tensor,
    visible: Tensor,
    *,
    vocab_size: int,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Tensor:
    """:func:`prompt_surprisals` from the last hidden states [B, P, d] and the output ``head``.

    For a model whose logits are ``head(states)``: the logits of a few positions at a time (as many
    as fit ``chunk_bytes`` in float32) exist at once, never the [B, P, V] of the whole prompt.
    """
    if states.dim() != 3:
        raise ValueError(f"states must be [B, P, d], got shape {tuple(states.shape)}")
    n_seq, n_pos, _ = states.shape
    chunk = max(1, chunk_bytes // (4 * n_seq * max(vocab_size, 1)))
    return _surprisals(
        lambda start, stop: head(states[:, start:stop]),
        (n_seq, n_pos, vocab_size),
        states.device,
        input_ids,
        visible,
        chunk,
    )


def _surprisals(
    logits_of: Callable[[int, int], Tensor],
    shape: tuple[int, int, int],
    device: torch.device,
    input_ids: Tensor,
    visible: Tensor,
    chunk_size: int | None,
) -> Tensor:
    """The surprisals of positions ``0..P-2``, from ``logits_of(start, stop)`` [B, stop - start, V]."""
    n_seq, n_pos, vocab = shape
    if input_ids.shape != (n_seq, n_pos) or visible.shape != (n_seq, n_pos):
        raise ValueError(
            f"input_ids and visible must be [{n_seq}, {n_pos}], got {tuple(input_ids.shape)} "
            f"and {tuple(visible.shape)}"
        )
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_CHUNK_BYTES // (4 * n_seq * max(vocab, 1)))
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    out = torch.empty((n_seq, max(n_pos - 1, 0)), dtype=torch.float32, device=device)
    if n_pos < 2:
        return out
    vis = visible.to(device=device, dtype=torch.bool)
    valid = vis[:, :-1] & vis[:, 1:]  # [B, P-1]
    # Padding may hold any id (even one outside the vocabulary): read token 0 there instead.
    targets = torch.where(valid, input_ids[:, 1:].to(device=device, dtype=torch.long), 0)
    for start in range(0, n_pos - 1, chunk_size):
        stop = min(start + chunk_size, n_pos - 1)
        x = logits_of(start, stop).float()  # [B, c, V]; a copy only when the logits are not float32
        chosen = x.gather(-1, targets[:, start:stop].unsqueeze(-1)).squeeze(-1)
        out[:, start:stop] = (torch.logsumexp(x, dim=-1) - chosen) / _LN2
        del x
    return out.masked_fill_(~valid, math.nan)


@torch.no_grad()
def layer_transformations(
    hidden: Tensor | Sequence[Tensor],
    visible: Tensor,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Tensor:
    """``1 - mean_i cos(h[l-1, b, i], h[l, b, i])`` over visible positions, ``[L-1, B]`` float32.

    ``hidden`` is the stack of layer outputs to compare, [L, B, P, d], or the L layer outputs
    [B, P, d] themselves (HF's ``hidden_states`` tuple, which starts with the embeddings: L = layers
    + 1 gives one value per decoder layer); entry ``l-1`` compares layer ``l-1`` with layer ``l``.
    ``visible`` [B, P] is True for real tokens. Identical representations give 0, orthogonal ones 1,
    opposite ones 2. A zero vector has cosine 0 with anything (norms are clamped at 1e-8, as
    ``torch.nn.functional.cosine_similarity``). A NaN/Inf hidden value at a visible position makes
    the pairs it belongs to NaN; a sequence with no visible position gets NaN. Float32 math, over
    as many positions at a time as fit ``chunk_bytes`` in float32 for every layer (a long prompt of
    a large model never gets a float32 copy of all its states at once); the dot products go through
    a batched matmul without a [L, B, P, d] product temporary.
    """
    layers = list(hidden.unbind(0)) if isinstance(hidden, Tensor) else list(hidden)
    if isinstance(hidden, Tensor) and hidden.dim() != 4:
        raise ValueError(f"hidden must be [L, B, P, d], got shape {tuple(hidden.shape)}")
    if not layers or any(state.dim() != 3 or state.shape != layers[0].shape for state in layers):
        raise ValueError("hidden must hold L >= 1 layer outputs of one shape [B, P, d]")
    n_seq, n_pos, width = layers[0].shape
    if visible.shape != (n_seq, n_pos):
        raise ValueError(f"visible must be [{n_seq}, {n_pos}], got {tuple(visible.shape)}")
    device = layers[0].device
    if len(layers) < 2:
        return torch.empty((0, n_seq), dtype=torch.float32, device=device)
    vis = visible.to(device=device, dtype=torch.bool)
    cos_sum = torch.zeros((len(layers) - 1, n_seq), dtype=torch.float32, device=device)
    step = max(1, chunk_bytes // (4 * len(layers) * n_seq * max(width, 1)))
    for start in range(0, n_pos, step):
        stop = min(start + step, n_pos)
        h = torch.stack([state[:, start:stop] for state in layers]).float()  # [L, B, c, d]
        norms = torch.linalg.vector_norm(h, dim=-1).clamp_(min=_COS_EPS)  # [L, B, c]
        dots = torch.einsum("lbpd,lbpd->lbp", h[:-1], h[1:])  # [L-1, B, c]
        del h
        cos = dots / (norms[:-1] * norms[1:])
        cos_sum += torch.where(vis[:, start:stop], cos, 0.0).sum(dim=-1)  # padding never leaks NaN
    return 1.0 - cos_sum / vis.sum(dim=-1).to(torch.float32)


def prompt_visibility(attention_mask: Tensor, *, window: int | None = None) -> Tensor:
    """The causal (query, key) visibility of a padded prompt, ``[B, P, P]`` bool.

    ``attention_mask`` [B, P] is 1/True for real tokens (HF's attention mask). Query ``q`` sees key
    ``k`` when both are real and ``k <= q`` (and ``q - k < window`` for sliding-window attention).
    Padding queries see nothing.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be [B, P], got shape {tuple(attention_mask.shape)}")
    real = attention_mask.to(torch.bool)
    n_pos = real.shape[1]
    pos = torch.arange(n_pos, device=real.device)
    allowed = pos.unsqueeze(0) <= pos.unsqueeze(1)  # [q, k]: k <= q
    if window is not None:
        allowed &= (pos.unsqueeze(1) - pos.unsqueeze(0)) < window
    return allowed.unsqueeze(0) & real.unsqueeze(2) & real.unsqueeze(1)


@dataclass(frozen=True)
class PromptMask:
    """What prompt attention statistics derive from a prompt's (query, key) mask, for all its heads.

    Every head and layer scored under one mask shares these, so a layer scored a few heads at a time
    (or several layers under one mask) makes them once.
    """

    visible: Tensor  # [B, P, P] bool: the keys each query may attend to
    membership: Tensor  # [B, P, P] float32: each visible key's membership in its query's middle third
    counted: Tensor  # [B, P] bool: queries that see at least 3 keys
    offset: Tensor  # [B] int64: each sequence's first visible position (P when none)
    sees: Tensor  # [B, P] bool: queries that see at least one key

    @classmethod
    @torch.no_grad()
    def of(cls, visible: Tensor, batch: int, positions: int, device: torch.device) -> PromptMask:
        """From a (query, key) bool mask broadcastable to [B, P, P]."""
        vis = torch.broadcast_to(visible.to(device=device, dtype=torch.bool), (batch, positions, positions))
        membership, counted = _middle_membership(vis)
        sees = vis.any(dim=-1)
        return cls(visible=vis, membership=membership, counted=counted, offset=_first_visible(vis), sees=sees)

    def nbytes(self) -> int:
        return self.membership.nbytes + self.visible.numel() + self.sees.numel()


@dataclass(frozen=True)
class PromptHeadParts:
    """Per head, what the statistics keep of a layer's prompt weights, before any threshold.

    Heads are independent, so the parts of a layer's heads scored in groups, concatenated over heads
    (:meth:`cat`), equal the parts of the layer scored at once.
    """

    top_weight: Tensor  # [B, H, k] float32, descending; hidden entries 0, NaN weights -1
    top_flat: Tensor  # [B, H, k] int64: query * P + key of each
    middle_share: Tensor  # [B, H, P] float32: each query's middle mass over its visible mass

    @staticmethod
    def cat(parts: Sequence[PromptHeadParts]) -> PromptHeadParts:
        if len(parts) == 1:
            return parts[0]
        return PromptHeadParts(
            top_weight=torch.cat([p.top_weight for p in parts], dim=1),
            top_flat=torch.cat([p.top_flat for p in parts], dim=1),
            middle_share=torch.cat([p.middle_share for p in parts], dim=1),
        )


@torch.no_grad()
def prompt_attention(
    weights: Tensor,
    visible: Tensor,
    *,
    threshold: float = DEFAULT_SPARSE_THRESHOLD,
    cap: int = DEFAULT_SPARSE_CAP,
) -> PromptAttentionStats:
    """Sparse attention entries and basin scores of one layer's prompt attention.

    ``weights`` [B, H, P, P] are the layer's attention probabilities (query, key); ``visible`` is a
    (query, key) bool mask broadcastable to [B, P, P] (see :func:`prompt_visibility`). Weights the
    mask hides are ignored whatever they hold.

    Sparse: per head, the visible entries strictly above ``threshold`` (which must be >= 0), at
    most ``cap``, the largest kept, in descending order (one top-k over the flattened P x P). NaN
    weights are never kept. Basin scores: see the module docstring for the exact definition.

    Memory: one float32 copy of ``weights`` (the single full-size temporary, reused for the top-k
    and the basin sums) plus [B, P, P]-sized helpers shared by all heads: measured on CUDA with
    B = 2, H = 9, P = 4096, the peak beyond the input was 1.14 times a float32 copy of it.

    The same in two steps, for heads scored in groups under one mask: :meth:`PromptMask.of` once,
    :func:`prompt_head_parts` per group, :func:`prompt_attention_from_parts` on the groups' parts.
    """
    _check_arguments(weights, threshold=threshold, cap=cap)  # before any work
    n_seq, _, n_pos, _ = weights.shape
    # The [B, P, P] helpers first, so that their temporaries are gone before the full-size buffer.
    mask = PromptMask.of(visible, n_seq, n_pos, weights.device)
    parts = prompt_head_parts(weights, mask, cap=cap)
    return prompt_attention_from_parts(parts, mask, threshold=threshold, cap=cap)


@torch.no_grad()
def prompt_head_parts(
    weights: Tensor, mask: PromptMask, *, cap: int = DEFAULT_SPARSE_CAP, overwrite: bool = False
) -> PromptHeadParts:
    """Each head's largest ``cap`` visible weights and its queries' middle shares (before thresholds).

    ``overwrite``: the caller no longer needs ``weights``; a contiguous float32 tensor is then used
    as the working buffer instead of a copy (its values are destroyed).
    """
    _check_arguments(weights, cap=cap)
    n_seq, n_heads, n_pos, _ = weights.shape
    reuse = overwrite and weights.dtype == torch.float32 and weights.is_contiguous()
    buf = weights if reuse else weights.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    buf.masked_fill_(~mask.visible.unsqueeze(1), 0.0)
    row_sum = buf.sum(dim=-1)  # [B, H, P]: S per query; NaN/Inf when the row holds one

    # Sparse entries. Hidden entries are 0 and NaN becomes -1, so neither passes a threshold >= 0;
    # only then can the kept entries be a prefix of the top-k.
    buf.nan_to_num_(nan=-1.0, posinf=math.inf, neginf=-math.inf)
    k = min(cap, n_pos * n_pos)
    top_w, top_flat = buf.view(n_seq, n_heads, n_pos * n_pos).topk(k, dim=-1, sorted=True)

    # Basin: reuse the buffer for w * membership (in place), then reduce over keys.
    mid = buf.mul_(mask.membership.unsqueeze(1)).sum(dim=-1)  # [B, H, P]
    del buf
    mid_frac = mid / row_sum  # NaN for rows with NaN/Inf weights or no mass
    return PromptHeadParts(top_weight=top_w, top_flat=top_flat, middle_share=mid_frac)


def prompt_row_parts(logits: Tensor, membership: Tensor) -> tuple[Tensor, Tensor]:
    """Per query row of ``softmax(logits)`` [B, H, P, K] in float32: its largest probability and its
    middle mass ``Σ_k p·membership`` (``membership`` [B, P, K], :class:`PromptMask`), [B, H, P] each.

    Written for :data:`fused_prompt_row_parts`: the largest probability is ``1 / z`` (``z`` the
    softmax's normaliser) and each reduction recomputes ``exp(logits - max)`` from the logits, so
    that compiled, one kernel reads the logits and the membership and writes only the two results
    (the probabilities never exist in memory).
    """
    top = logits.amax(dim=-1, keepdim=True).float()  # the softmax's shift; NaN for a row holding NaN
    total = torch.exp(logits.float() - top).sum(dim=-1)
    middle = (torch.exp(logits.float() - top) * membership.unsqueeze(1)).sum(dim=-1)
    return 1.0 / total, middle / total


# prompt_row_parts compiled into fused kernels (corevital.metrics.compiled).
fused_prompt_row_parts = CompiledReduction(prompt_row_parts)


@torch.no_grad()
def logit_head_parts(
    logits: Tensor, mask: PromptMask, *, cap: int = DEFAULT_SPARSE_CAP, compiled: bool = False
) -> PromptHeadParts:
    """:func:`prompt_head_parts` of the probabilities ``softmax(logits)``, from the logits [B, H, P, P].

    ``logits`` are a layer's scaled scores plus its additive mask (hidden keys at the dtype's
    minimum), as the tap recomputes them. As written, their float32 probabilities are made once
    and reduced in place (:func:`recomputed_head_parts`). ``compiled``, on a prompt of ``4 * cap``
    tokens or more (where :func:`recomputed_head_parts` chooses rows): the probabilities never exist
    for the whole layer. :data:`fused_prompt_row_parts` gives each row's largest probability and
    middle mass in one kernel, the ``cap`` rows with the largest maxima (which hold the head's ``cap``
    largest probabilities) get their probabilities made from their logits, and one top-k runs over
    them. The kept entries are those of the written form, the middle shares within float32
    rounding (fused sums run in another order; a row whose largest probability ties another's within
    that rounding may be chosen in its place at the cap's edge). Once compiling has failed, the
    written form.
    """
    _check_arguments(logits, cap=cap)
    n_seq, n_heads, n_pos, _ = logits.shape
    if not compiled or cap < 1 or n_pos < 4 * cap or fused_prompt_row_parts.failure is not None:
        return recomputed_head_parts(torch.softmax(logits, dim=-1, dtype=torch.float32), mask, cap=cap)
    row_max, mid = fused_prompt_row_parts(logits, mask.membership)
    # a row that sees no key is no attention (0); a NaN row is never kept (-1)
    row_max = torch.where(mask.sees.unsqueeze(1), row_max, 0.0).nan_to_num_(nan=-1.0)
    chosen_max, rows = row_max.topk(cap, dim=-1)  # [B, H, cap] the rows with the largest maxima
    chosen = logits.gather(2, rows.unsqueeze(-1).expand(n_seq, n_heads, cap, n_pos))
    probs = torch.softmax(chosen, dim=-1, dtype=torch.float32)  # [B, H, cap, P]
    fixed = chosen_max.unsqueeze(-1)
    picked = torch.where(fixed > 0, probs, fixed)  # a row that sees no key, or NaN: its value
    top_w, at = picked.view(n_seq, n_heads, cap * n_pos).topk(cap, dim=-1, sorted=True)
    top_flat = rows.gather(-1, torch.div(at, n_pos, rounding_mode="floor")) * n_pos + at % n_pos
    return PromptHeadParts(top_weight=top_w, top_flat=top_flat, middle_share=mid)


@torch.no_grad()
def recomputed_head_parts(
    weights: Tensor, mask: PromptMask, *, cap: int = DEFAULT_SPARSE_CAP
) -> PromptHeadParts:
    """:func:`prompt_head_parts` of probabilities recomputed as ``softmax(scores + additive mask)``.

    Such probabilities are 0 on every key the mask hides except in a query row that sees no key
    (where the softmax spreads evenly), sum to 1 over a row, and a row holding NaN holds nothing
    else. So no pass masks the weights, and on a prompt of ``4 * cap`` tokens or more the top-k
    reads ``cap / P`` of them: each row's largest weight (one reduction; a row that sees no key
    counts 0, a NaN row -1) picks the ``cap`` rows with the largest, which hold the head's ``cap``
    largest weights (any other row's weights are at most the smallest of those rows' maxima), and
    one top-k runs over those rows alone (on a shorter prompt, over all rows). A query's
    middle mass needs no division by its row's sum. ``weights`` (float32, contiguous) is the working
    buffer: its values are destroyed. The kept entries are those of :func:`prompt_head_parts`, the
    middle shares within float32 rounding of a row's sum.
    """
    _check_arguments(weights, cap=cap)
    if weights.dtype != torch.float32 or not weights.is_contiguous():
        raise ValueError("recomputed weights must be contiguous float32")
    n_seq, n_heads, n_pos, _ = weights.shape
    # a row that sees no key is no attention (0); a NaN row is never kept (-1)
    row_max = weights.amax(dim=-1)  # [B, H, P]
    row_max = torch.where(mask.sees.unsqueeze(1), row_max, 0.0).nan_to_num_(nan=-1.0)
    k = min(cap, n_pos * n_pos)
    if n_pos < 4 * cap:  # a short prompt: every row a candidate (choosing rows would save little)
        fixed = row_max.unsqueeze(-1)
        picked = torch.where(fixed > 0, weights, fixed)  # a row that sees no key, or NaN: its value
        top_w, top_flat = picked.view(n_seq, n_heads, n_pos * n_pos).topk(k, dim=-1, sorted=True)
    else:
        chosen_max, rows = row_max.topk(cap, dim=-1)  # [B, H, cap] the rows with the largest maxima
        picked = weights.gather(2, rows.unsqueeze(-1).expand(n_seq, n_heads, cap, n_pos))  # [B, H, cap, P]
        fixed = chosen_max.unsqueeze(-1)
        picked = torch.where(fixed > 0, picked, fixed)
        top_w, at = picked.view(n_seq, n_heads, cap * n_pos).topk(k, dim=-1, sorted=True)
        top_flat = rows.gather(-1, torch.div(at, n_pos, rounding_mode="floor")) * n_pos + at % n_pos
    mid = weights.mul_(mask.membership.unsqueeze(1)).sum(dim=-1)  # [B, H, P]; a NaN row's is NaN
    return PromptHeadParts(top_weight=top_w, top_flat=top_flat, middle_share=mid)


@torch.no_grad()
def prompt_attention_from_parts(
    parts: PromptHeadParts,
    mask: PromptMask,
    *,
    threshold: float = DEFAULT_SPARSE_THRESHOLD,
    cap: int = DEFAULT_SPARSE_CAP,
) -> PromptAttentionStats:
    """The statistics of :func:`prompt_attention` from every head's parts under ``mask``."""
    _check_arguments(threshold=threshold)
    n_seq, n_pos = mask.counted.shape
    top_w, top_flat = parts.top_weight, parts.top_flat
    k = top_w.shape[-1]
    kept = top_w > threshold  # [B, H, k], a prefix of each head
    rel = mask.offset.view(n_seq, 1, 1)
    query_index = torch.where(kept, torch.div(top_flat, n_pos, rounding_mode="floor") - rel, -1)
    key_index = torch.where(kept, top_flat % n_pos - rel, -1)
    weight = torch.where(kept, top_w, 0.0)
    if k < cap:
        pad = (0, cap - k)
        query_index = torch.nn.functional.pad(query_index, pad, value=-1)
        key_index = torch.nn.functional.pad(key_index, pad, value=-1)
        weight = torch.nn.functional.pad(weight, pad, value=0.0)

    mid_frac = parts.middle_share
    use = mask.counted.unsqueeze(1)  # [B, 1, P]
    mid_total = torch.where(use, mid_frac, 0.0).sum(dim=-1)  # [B, H]
    edge_total = torch.where(use, 1.0 - mid_frac, 0.0).sum(dim=-1)
    has_query = mask.counted.any(dim=-1, keepdim=True)  # [B, 1]
    basin = torch.where(has_query, mid_total / edge_total, math.nan)

    return PromptAttentionStats(
        query_index=query_index,
        key_index=key_index,
        weight=weight,
        count=kept.sum(dim=-1),
        basin_scores=basin,
    )


def _check_arguments(weights: Tensor | None = None, *, threshold: float = 0.0, cap: int = 0) -> None:
    """The prompt attention functions' checks of what they are given (a one-line ValueError)."""
    if weights is not None and (weights.dim() != 4 or weights.shape[-1] != weights.shape[-2]):
        raise ValueError(f"weights must be [B, H, P, P], got shape {tuple(weights.shape)}")
    if not threshold >= 0.0:
        raise ValueError("threshold must be >= 0")
    if cap < 0:
        raise ValueError("cap must be >= 0")


def _first_visible(vis: Tensor) -> Tensor:
    """[B] the first position any query can see as a key (P when none): where the prompt starts."""
    n_pos = vis.shape[-1]
    key_seen = vis.any(dim=1)  # [B, P]
    pos = torch.arange(n_pos, device=vis.device)
    return torch.where(key_seen, pos, n_pos).amin(dim=-1)


def _middle_membership(vis: Tensor) -> tuple[Tensor, Tensor]:
    """Each visible key's fractional membership in its query's middle third, and the counted queries.

    Returns ``[B, P, P]`` float32 (0 on hidden keys and on queries seeing fewer than 3 keys) and
    ``[B, P]`` bool (queries seeing at least 3 keys). Exact for P < 2**24. At most three [B, P, P]
    float32 buffers are alive at once (the caller builds this before its full-size buffer).
    """
    visf = vis.to(torch.float32)
    upper = visf.cumsum(dim=-1)  # rank + 1 of each visible key among the query's visible keys
    n = upper[..., -1:].clone()  # [B, P, 1] visible keys per query
    counted = n >= 3.0
    lo, hi = n / 3.0, (2.0 * n) / 3.0  # exact integers when 3 divides n
    membership = torch.clamp(upper, max=hi)  # min(rank + 1, 2n/3)
    membership.sub_(upper.sub_(1.0).clamp_(min=lo)).clamp_(0.0, 1.0)  # minus max(rank, n/3)
    del upper
    return membership.mul_(visf).mul_(counted), counted.squeeze(-1)


def span_attention_share(weights: Tensor, visible: Tensor, start: int, end: int) -> Tensor:
    """Per sequence and head, the share of attention from queries after ``[start, end)`` into it.

    ``weights`` [B, H, P, P] and ``visible`` (broadcastable to [B, P, P]) as in
    :func:`prompt_attention`; positions count from each sequence's first visible token, so left
    padding does not shift the span. NaN where no query follows the span.
    """
    vis = visible.expand(weights.shape[0], weights.shape[2], weights.shape[3])
    first = _first_visible(vis)  # [B]
    positions = torch.arange(weights.shape[-1], device=weights.device)
    relative = positions.unsqueeze(0) - first.unsqueeze(-1)  # [B, P]
    later_rows = (relative >= end).to(torch.float32)  # [B, P] queries after the span
    in_span = ((relative >= start) & (relative < end)).to(torch.float32)  # [B, P] keys in the span
    w = torch.where(vis.unsqueeze(1), weights.float(), 0.0)
    into_span = torch.einsum("bhqk,bk->bhq", w, in_span)
    total = w.sum(dim=-1)
    num = torch.einsum("bhq,bq->bh", into_span, later_rows)
    den = torch.einsum("bhq,bq->bh", total, later_rows)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.nan)
