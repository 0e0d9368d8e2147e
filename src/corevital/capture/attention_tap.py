"""Attention observed from inside the model's own attention calls.

Transformers dispatches every attention layer through ``ALL_ATTENTION_FUNCTIONS`` keyed by
``config._attn_implementation``. :class:`AttentionTap` registers a function under a name of its
own, points the model's configs at it for the duration of a ``with`` block, and restores them on
exit, also when generation raises (both through :mod:`.hf_compat`). On the eager path the function
computes the layer's output with the model's own eager attention (the baseline) and keeps only the
observed query rows of its weights; on the fast path the model keeps SDPA and each layer
contributes one matmul (the observed rows' raw scores), which are scaled, masked and normalised
for all layers at once when the step's rows are collected (:mod:`.attention_rows`). The full
weight matrices are never returned to the model, so nothing accumulates across layers or steps.
Statistics are computed once per step, vectorised over layers (``corevital.metrics.attention``).

Decoding steps of a decoder-only model whose cache only appends keys go further: each layer just
keeps its query row, and the rows of a whole window of steps are scored later against the cache
(:meth:`AttentionTap.take_decode_rows`, :mod:`.attention_window`).

Encoder self-attention runs once per generation; its rows are reduced layer by layer right here,
because keeping S×S weights for every encoder layer would cost far more than the reduction.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from corevital.capture.attention_rows import (
    PendingRows,
    attention_rows,
    fast_path_supported,
    finish_group,
    scale_for,
    sdpa_aligned,
)
from corevital.capture.attention_window import DecodeRows
from corevital.capture.decode_mask import decode_step_mask
from corevital.capture.hf_compat import (
    attention_implementation,
    eager_attention_function,
    eager_mask,
    registered_attention,
    sdpa_attention_forward,
)
from corevital.capture.registry import AttentionSite, SiteKind
from corevital.metrics.attention import summarize_attention
from corevital.metrics.prompt import PromptAttentionStats, prompt_attention, span_attention_share
from corevital.metrics.types import AttentionStats

_TAP_IDS = itertools.count()
_LAST_ROW = slice(-1, None)


def _eager(module: nn.Module, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
    eager = eager_attention_function(module)
    if eager is None:
        raise RuntimeError(f"{type(module).__name__} has no eager attention function to observe")
    output, weights = eager(module, *args, **kwargs)
    assert weights is not None
    return output, weights


def _sdpa(module: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
    return sdpa_attention_forward(module, *args, **kwargs)[0]


def _recomputed_rows(
    query: Tensor, key: Tensor, mask: Tensor | None, kwargs: dict[str, Any], rows: slice
) -> Tensor:
    """Probabilities [B, H, R, K] of the given query rows, recomputed in one go (fast path)."""
    bias = kwargs.get("position_bias")
    return attention_rows(
        query[:, :, rows],
        key,
        None if mask is None else mask[:, :, rows],
        scaling=kwargs.get("scaling"),
        position_bias=None if bias is None else bias[:, :, rows],
    )


def visible_keys(
    mask: Tensor | None, rows: slice, batch: int, q_len: int, kv_len: int, device: torch.device
) -> Tensor:
    """Boolean [B, R, K] of the keys each observed query row may attend to, from the model's mask."""
    n_rows = len(range(q_len)[rows])
    if mask is None:
        return torch.ones(batch, n_rows, kv_len, dtype=torch.bool, device=device)
    m = mask[:, 0, rows, :kv_len]
    if m.dtype != torch.bool:
        m = m > torch.finfo(m.dtype).min / 2
    return m.expand(batch, n_rows, kv_len)


@dataclass
class _Rows:
    """The observed rows each layer reported in this forward, and the mask each used.

    ``per_layer`` holds finished probabilities [B, R, H, K] (eager path), ``pending`` what the
    fast path needs to compute them for all layers at once; both are stacked once per step rather
    than copied layer by layer into a buffer. Layers of one attention type receive the very same
    mask in a forward pass, so visibility is computed once per distinct mask (usually one; two for
    models mixing full and sliding-window layers), not once per layer.
    """

    per_layer: dict[int, Tensor]
    pending: dict[int, PendingRows]
    layer_mask: dict[int, tuple[int, int]]  # layer -> key into the tap's visibility cache


def _stacked_rows(rows: _Rows) -> Tensor:
    """Every layer's observed probabilities, [L, B, R, H, K] in layer order.

    Pending layers are finished group by group (one group, a few kernels, for a usual decoder);
    layers that see fewer keys (sliding windows) are padded with zero weights.
    """
    finished = dict(rows.per_layer)
    groups: dict[tuple[object, ...], list[int]] = {}
    for index, pending in rows.pending.items():
        groups.setdefault(pending.group, []).append(index)
    for members in groups.values():
        members.sort()
        probs = finish_group([rows.pending[index] for index in members]).transpose(2, 3)  # [n, B, R, H, K]
        if len(groups) == 1 and not finished:
            return probs
        finished.update(zip(members, probs.unbind(0), strict=True))
    ordered = [finished[index] for index in sorted(finished)]
    kv_len = max(t.shape[-1] for t in ordered)
    if any(t.shape[-1] != kv_len for t in ordered):
        ordered = [torch.nn.functional.pad(t, (0, kv_len - t.shape[-1])) for t in ordered]
    return torch.stack(ordered)


class AttentionTap:
    """Collects attention rows of one model for one generation (or one teacher-forced pass)."""

    def __init__(
        self, sites: list[AttentionSite], *, num_layers: int, num_encoder_layers: int, fast: bool = False
    ) -> None:
        self.fast = fast
        self._sites = {id(site.module): site for site in sites}
        self._num = {
            SiteKind.SELF: num_layers,
            SiteKind.CROSS: num_layers,
            SiteKind.ENCODER: num_encoder_layers,
        }
        self.name = f"corevital_tap_{next(_TAP_IDS)}"
        self.observe_decoder = True
        self.observe_encoder = True
        self._rows = _LAST_ROW
        self._buffers: dict[SiteKind, _Rows] = {}
        self._seen: dict[SiteKind, set[int]] = {SiteKind.SELF: set(), SiteKind.CROSS: set()}
        self._visible_cache: dict[tuple[int, int], Tensor] = {}
        self._mask_args: dict[tuple[int, int], tuple[Tensor | None, int, int, int, torch.device]] = {}
        self._aligned_masks: dict[int, Tensor | None] = {}
        self._open_masks: dict[int, Tensor] = {}  # masks of decoding steps that hide no key
        self._mask_refs: list[Tensor | None] = []
        # Decoding steps whose rows wait for a batched reduction (:mod:`.attention_window`): the
        # observer sets ``defer_decode`` before a forward pass whose cache only appends.
        self.defer_decode = False
        self._decode_paddings: dict[int, Tensor | None] = {}  # decode-step mask id -> its padding
        # per layer: (query [B, Hq, 1, D], key [B, Hkv, K, D], mask, scale) of this forward
        self._decode_rows: list[tuple[Tensor, Tensor, Tensor | None, float] | None] = [None] * num_layers
        self._decode_layers = 0
        self._decode_signature: tuple[object, ...] | None = None  # what every layer must share
        self._decode_uniform = True
        self.encoder_stats: list[AttentionStats | None] = [None] * num_encoder_layers
        # Prompt telemetry (sparse attention, basin scores) of the pass that reads the prompt:
        # the prefill of a decoder-only model, the encoder of an encoder-decoder model.
        self.prompt_options: tuple[float, int] | None = None  # (threshold, cap)
        # Largest float32 [B, H, P, P] block of a prompt pass scored at once (None: no limit).
        self.prompt_chunk_bytes: int | None = None
        self.prompt_length: int | None = None  # set when the pass reads more than the prompt (replay)
        self.context_span: tuple[int, int] | None = None  # a RAG context's prompt tokens [start, end)
        prompt_layers = num_encoder_layers if num_encoder_layers else num_layers
        self.prompt_stats: list[PromptAttentionStats | None] = [None] * prompt_layers
        self.prompt_span_share: list[Tensor | None] = [None] * prompt_layers
        # Layers' prompt weights [B, H, P, P] waiting to be scored together (:meth:`finish_prompt`).
        self._prompt_pending_layers: list[int] = []
        self._prompt_pending_blocks: list[Tensor] = []
        self._prompt_pending_mask: Tensor | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def observe_rows(self, rows: slice) -> None:
        """Which query rows of the next forward passes to keep (default: the last one)."""
        self._rows = rows

    def begin_forward(self) -> None:
        for seen in self._seen.values():
            seen.clear()
        self.release()

    def release(self) -> None:
        """Drop this step's rows once they are reduced: nothing is held between steps."""
        self.finish_prompt()
        self._buffers.clear()
        self._visible_cache.clear()
        self._mask_args.clear()
        self._aligned_masks.clear()
        self._open_masks.clear()
        self._mask_refs.clear()
        self._decode_paddings.clear()
        self._clear_decode_rows()

    def _clear_decode_rows(self) -> None:
        if self._decode_layers:
            self._decode_rows = [None] * len(self._decode_rows)
            self._decode_layers = 0
        self._decode_signature = None
        self._decode_uniform = True

    def held_bytes(self) -> int:
        """Device bytes the tap keeps alive: whole storages, as a view holds its base tensor's memory.

        Keys are not counted: they are the cache's own tensors. Prompt weights waiting to be scored
        together are (at most half the prompt chunk budget, until the forward pass ends).
        """
        held = [t for b in self._buffers.values() for t in b.per_layer.values()]
        held += [p.query for b in self._buffers.values() for p in b.pending.values()]
        held += list(self._visible_cache.values())
        held += self._prompt_pending_blocks
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}
        return sum(storages.values())

    def collected(self, kind: SiteKind) -> tuple[Tensor, Tensor | None] | None:
        """(weights [L, B, R, H, K], visible [L or 1, B, R, K]) of the last forward, all layers in.

        ``visible`` is None when no layer had a mask: every key was visible.
        """
        rows = self._buffers.get(kind)
        if rows is None or len(self._seen[kind]) != self._num[kind]:
            return None
        weights = _stacked_rows(rows)
        kv_len = weights.shape[-1]
        keys = set(rows.layer_mask.values())
        if len(keys) == 1:
            (only,) = keys
            if only[0] == id(None) and only[1] == kv_len:
                return weights, None
            return weights, self._visible_key_mask(only).unsqueeze(0)  # the same for every layer
        layers, batch, count = weights.shape[:3]
        visible = torch.zeros(layers, batch, count, kv_len, dtype=torch.bool, device=weights.device)
        for key in keys:  # one pass per distinct mask
            row = self._visible_key_mask(key)
            which = [index for index, used in rows.layer_mask.items() if used == key]
            visible[which, ..., : row.shape[-1]] = row
        return weights, visible

    def layers_seen(self, kind: SiteKind) -> int:
        return len(self._seen[kind])

    # --- the attention function ----------------------------------------------------------------
    def __call__(
        self,
        module: nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        **kwargs: Any,
    ) -> tuple[Tensor, None]:
        site = self._sites.get(id(module))
        q_len, kv_len = query.shape[2], key.shape[2]
        needs = self._needs(site, q_len, kv_len)
        if site is None or needs is None:
            return self._output(module, query, key, value, attention_mask, kwargs), None
        if needs == "rows" and self.defer_decode and self._defers(site, q_len, attention_mask, kwargs):
            with torch.no_grad():
                output = _sdpa(module, query, key, value, self._sdpa_mask(attention_mask), **kwargs)
            self._keep_decode_row(site.layer, query, key, attention_mask, kwargs.get("scaling"))
            return output, None
        rows = slice(0, q_len) if needs == "all" else self._rows
        with torch.no_grad():
            if self.fast and fast_path_supported(kwargs):
                output = _sdpa(module, query, key, value, self._sdpa_mask(attention_mask), **kwargs)
                if needs == "rows" and site.kind is not SiteKind.ENCODER:
                    self._stash_pending(site, query, key, attention_mask, kwargs)  # no kernel
                    return output, None
                if needs == "all" and self._prompt_by_heads(site, query, key, kwargs):
                    self._prompt_pass_by_heads(site, query, key, attention_mask, kwargs)
                    return output, None
                weights = _recomputed_rows(query, key, attention_mask, kwargs, rows)
            else:
                output, full = _eager(module, query, key, value, attention_mask, **kwargs)
                weights = full[:, :, rows]
            self._observe(site, needs, weights, attention_mask, q_len)
        return output, None

    def _observe(
        self, site: AttentionSite, needs: str, weights: Tensor, mask: Tensor | None, q_len: int
    ) -> None:
        """Keep the observed rows of finished weights [B, H, R, K]; reduce the prompt's and encoder's."""
        if site.kind is SiteKind.ENCODER:
            self._reduce_encoder(site.layer, weights, mask)
            self._prompt_attention(site.layer, weights, mask)
            return
        # A copy of the observed rows of a pass over every row: a view would hold the layer's whole
        # [B, H, P, P] probabilities until the forward pass ends (every layer's: a GiB for a long prompt).
        observed = weights[:, :, self._rows].clone() if needs == "all" else weights
        kv_len = weights.shape[-1]
        self._stash(site, observed, self._visible_key(mask, weights, q_len, kv_len))
        if needs == "all":
            self._prompt_attention(site.layer, weights, mask)

    def _needs(self, site: AttentionSite | None, q_len: int, kv_len: int) -> str | None:
        """None (not observed), "rows" (only the observed rows) or "all" (every row: prompt telemetry)."""
        if site is None:
            return None
        if site.kind is SiteKind.ENCODER:
            return "all" if self.observe_encoder else None
        if not self.observe_decoder:
            return None
        prompt_pass = (
            site.kind is SiteKind.SELF
            and self.prompt_options is not None
            and not self._num[SiteKind.ENCODER]
            and q_len > 1
            and q_len == kv_len
            and self.prompt_stats[site.layer] is None
        )
        return "all" if prompt_pass else "rows"

    def _defers(self, site: AttentionSite, q_len: int, mask: Tensor | None, kwargs: dict[str, Any]) -> bool:
        """Whether this layer's decode-step row can wait for the window's batched reduction."""
        return (
            q_len == 1
            and self.fast
            and site.kind is SiteKind.SELF
            and self._rows == _LAST_ROW
            and kwargs.get("position_bias") is None
            and fast_path_supported(kwargs)
            and (mask is None or id(mask) in self._decode_paddings)
        )

    def _keep_decode_row(
        self, layer: int, query: Tensor, key: Tensor, mask: Tensor | None, scaling: float | None
    ) -> None:
        scale = scale_for(query, scaling)
        # Layers spread over several devices (device_map) are not scored together: per step then.
        signature = (scale, id(mask), query.shape, key.shape, key.dtype, key.device)
        if self._decode_signature is None:
            self._decode_signature = signature
        elif signature != self._decode_signature:
            self._decode_uniform = False
        self._decode_rows[layer] = (query, key, mask, scale)
        self._decode_layers += 1
        self._seen[SiteKind.SELF].add(layer)
        if mask is not None:
            self._mask_refs.append(mask)  # its id stays this tensor's until release()

    def take_decode_rows(self) -> DecodeRows | None:
        """This forward's decode-step rows of every layer, to be reduced later; None if not deferred.

        When only some layers (or layers that differ in shape, scale or mask) deferred their rows,
        those rows go to the per-step path, so that :meth:`collected` sees every layer.
        """
        if not self._decode_layers:
            return None
        if self._decode_uniform and self._decode_layers == self._num[SiteKind.SELF]:
            entries = cast(list[tuple[Tensor, Tensor, Tensor | None, float]], self._decode_rows)  # all set
            _, key, mask, scale = entries[0]
            rows = DecodeRows(
                queries=tuple(entry[0] for entry in entries),
                key_length=key.shape[2],
                padding=None if mask is None else self._decode_paddings.get(id(mask)),
                scale=scale,
            )
            self._clear_decode_rows()
            self._seen[SiteKind.SELF].clear()
            return rows
        for index, entry in enumerate(self._decode_rows):
            if entry is not None:
                query, key, mask, scale = entry
                self._stash_rows(SiteKind.SELF, index, query, key, mask, None, scale)
        self._clear_decode_rows()
        return None

    def _output(
        self,
        module: nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None,
        kwargs: dict[str, Any],
    ) -> Tensor:
        if self.fast and fast_path_supported(kwargs):
            return _sdpa(module, query, key, value, self._sdpa_mask(mask), **kwargs)
        return _eager(module, query, key, value, mask, **kwargs)[0]

    def _model_mask(self, *args: Any, **kwargs: Any) -> Tensor | None:
        """transformers' ``eager_mask``; built directly for a plain decoding step (:mod:`.decode_mask`).

        A decoding step's mask that hides nothing is remembered: its statistics skip the mask.
        """
        mask = None if args else decode_step_mask(**kwargs)
        if mask is None:
            return eager_mask(*args, **kwargs)
        padding = kwargs.get("attention_mask")
        if padding is None:
            self._open_masks[id(mask)] = mask  # held: its id stays this tensor's until release()
        else:
            self._mask_refs.append(mask)
        self._decode_paddings[id(mask)] = padding
        return mask

    def _hides_nothing(self, mask: Tensor | None) -> bool:
        return mask is None or id(mask) in self._open_masks

    def _sdpa_mask(self, mask: Tensor | None) -> Tensor | None:
        """The mask as SDPA takes it without a per-layer copy (aligned once per forward, on CUDA).

        A decoding-step mask that hides nothing is not passed at all: that is how SDPA gets it
        without CoreVital, and without a mask it may choose its fastest kernel (flash attention).
        """
        if self._hides_nothing(mask):
            return None
        assert mask is not None
        key = id(mask)
        if key not in self._aligned_masks:
            self._aligned_masks[key] = sdpa_aligned(mask)
            self._mask_refs.append(mask)
        return self._aligned_masks[key]

    def _visible_key(self, mask: Tensor | None, rows: Tensor, q_len: int, kv_len: int) -> tuple[int, int]:
        """The key of this mask's visibility (``rows``: the layer's queries or weights, for batch and device).

        The visibility itself is computed only when asked for (:meth:`_visible_key_mask`).
        """
        source = None if self._hides_nothing(mask) else mask
        key = (id(source), kv_len)
        if key not in self._mask_args:
            # Holding the mask keeps its id from being reused by another tensor this pass.
            self._mask_args[key] = (source, rows.shape[0], q_len, kv_len, rows.device)
        return key

    def _visible_key_mask(self, key: tuple[int, int]) -> Tensor:
        if key not in self._visible_cache:
            mask, batch, q_len, kv_len, device = self._mask_args[key]
            self._visible_cache[key] = visible_keys(mask, self._rows, batch, q_len, kv_len, device)
        return self._visible_cache[key]

    def _stash(self, site: AttentionSite, rows_weights: Tensor, mask_key: tuple[int, int]) -> None:
        rows = self._rows_of(site.kind)
        rows.per_layer[site.layer] = rows_weights.transpose(1, 2)  # [B, R, H, K]
        rows.layer_mask[site.layer] = mask_key
        self._seen[site.kind].add(site.layer)

    def _rows_of(self, kind: SiteKind) -> _Rows:
        rows = self._buffers.get(kind)
        if rows is None:
            rows = self._buffers[kind] = _Rows({}, {}, {})
        return rows

    def _stash_pending(
        self,
        site: AttentionSite,
        query: Tensor,
        key: Tensor,
        mask: Tensor | None,
        kwargs: dict[str, Any],
    ) -> None:
        bias = kwargs.get("position_bias")
        scale = scale_for(query, kwargs.get("scaling"))
        self._stash_rows(site.kind, site.layer, query, key, mask, bias, scale)

    def _stash_rows(
        self,
        kind: SiteKind,
        layer: int,
        query: Tensor,
        key: Tensor,
        mask: Tensor | None,
        bias: Tensor | None,
        scale: float,
    ) -> None:
        batch, q_heads, q_len, _ = query.shape
        kv_len = key.shape[2]
        mask_key = self._visible_key(mask, query, q_len, kv_len)
        if bias is not None:
            self._mask_refs.append(bias)  # alive until release(): its id stays this tensor's
        every_row = q_len == 1 and self._rows == _LAST_ROW  # slicing would change nothing
        mask_rows = None
        if mask is not None and not self._hides_nothing(mask):
            mask_rows = mask if every_row else mask[:, :, self._rows]
        rows = self._rows_of(kind)
        rows.pending[layer] = PendingRows(
            query=query if every_row else query[:, :, self._rows],
            key=key,
            mask=mask_rows,
            position_bias=bias if bias is None or every_row else bias[:, :, self._rows],
            scale=scale,
            group=(id(mask), id(bias), scale, q_heads, *key.shape, key.dtype),
        )
        rows.layer_mask[layer] = mask_key
        self._seen[kind].add(layer)

    def _prompt_attention(self, layer: int, weights: Tensor, mask: Tensor | None) -> None:
        if self.prompt_options is None or self.prompt_stats[layer] is not None:
            return
        if self.prompt_length is not None:
            weights = weights[:, :, : self.prompt_length, : self.prompt_length]
            mask = None if mask is None else mask[:, :, : self.prompt_length, : self.prompt_length]
        if self.prompt_chunk_bytes is None:  # no memory budget: each layer on its own
            self._score_prompt([layer], weights, mask, [weights.shape[1]])
            return
        # Counted as the float32 copy the scoring makes; at most a model's layers wait.
        waiting = sum(4 * block.numel() for block in self._prompt_pending_blocks)
        if self._prompt_pending_layers and (
            mask is not self._prompt_pending_mask
            or waiting + 4 * weights.numel() > self.prompt_chunk_bytes // 2
        ):
            self.finish_prompt()
        self._prompt_pending_layers.append(layer)
        self._prompt_pending_blocks.append(weights)
        self._prompt_pending_mask = mask

    def finish_prompt(self) -> None:
        """Score the prompt weights of the layers waiting, as one [B, ΣH, P, P] block.

        Every prompt statistic is per head and the layers of one forward pass share a mask, so
        the layers' heads are scored together, which costs one layer's kernels instead of one set
        per layer (at batch 1, launches are the prefill's cost). The block (and its float32 copy
        during scoring) stays within the prompt chunk budget.
        """
        if not self._prompt_pending_layers:
            return
        layers, blocks = self._prompt_pending_layers, self._prompt_pending_blocks
        mask = self._prompt_pending_mask
        self._prompt_pending_layers, self._prompt_pending_blocks, self._prompt_pending_mask = [], [], None
        sizes = [block.shape[1] for block in blocks]
        weights = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
        del blocks
        self._score_prompt(layers, weights, mask, sizes)

    def _score_prompt(
        self, layers: list[int], weights: Tensor, mask: Tensor | None, sizes: list[int]
    ) -> None:
        """Prompt statistics of ``weights``, the ``sizes`` heads of each of ``layers`` side by side."""
        found = self._prompt_stats_of(weights, mask)
        if found is None:
            return
        stats, share = found
        split = {f.name: torch.split(getattr(stats, f.name), sizes, dim=1) for f in dataclasses.fields(stats)}
        shares = None if share is None else torch.split(share, sizes, dim=1)
        for slot, target in enumerate(layers):  # once per prompt pass, over the layers scored together
            fields = {name: value[slot] for name, value in split.items()}
            self.prompt_stats[target] = PromptAttentionStats(**fields)
            self.prompt_span_share[target] = None if shares is None else shares[slot]

    def _prompt_stats_of(
        self, weights: Tensor, mask: Tensor | None
    ) -> tuple[PromptAttentionStats, Tensor | None] | None:
        """Sparse attention and basin scores (and the RAG span share) of prompt weights [B, H, P, P]."""
        assert self.prompt_options is not None
        batch, _, q_len, kv_len = weights.shape
        if q_len != kv_len:  # not a pass over the whole prompt (e.g. a continued cache)
            return None
        threshold, cap = self.prompt_options
        visible = visible_keys(mask, slice(0, q_len), batch, q_len, kv_len, weights.device)
        stats = prompt_attention(weights, visible, threshold=threshold, cap=cap)
        share = None
        if self.context_span is not None:
            share = span_attention_share(weights, visible, *self.context_span)
        return stats, share

    def _prompt_by_heads(
        self, site: AttentionSite, query: Tensor, key: Tensor, kwargs: dict[str, Any]
    ) -> bool:
        """Whether the prompt pass of this layer is too large to score every head at once."""
        if (
            self.prompt_chunk_bytes is None
            or site.kind is not SiteKind.SELF
            or self.prompt_length is not None
        ):
            return False
        batch, heads, q_len, _ = query.shape
        too_large = 4 * batch * heads * q_len * key.shape[2] > self.prompt_chunk_bytes
        return too_large and kwargs.get("position_bias") is None and q_len == key.shape[2]

    def _prompt_pass_by_heads(
        self, site: AttentionSite, query: Tensor, key: Tensor, mask: Tensor | None, kwargs: dict[str, Any]
    ) -> None:
        """The prompt pass of one layer scored a few key-value heads at a time (bounded memory).

        Every prompt statistic is per head, so the groups' results are concatenated over heads. A
        loop over head groups, at the prefill only: one [B, H, P, P] float32 block of a long prompt
        is what it avoids (SmolLM2, 512 tokens: 9 MiB, and prompt statistics make a copy of it).
        """
        batch, q_heads, q_len, _ = query.shape
        kv_heads, kv_len = key.shape[1], key.shape[2]
        group = q_heads // kv_heads
        assert self.prompt_chunk_bytes is not None
        per_kv_head = 4 * batch * group * q_len * kv_len
        width = max(1, self.prompt_chunk_bytes // per_kv_head)
        observed: list[Tensor] = []
        found: list[tuple[PromptAttentionStats, Tensor | None]] = []
        for start in range(0, kv_heads, width):  # head groups, not single heads: see the docstring
            stop = min(start + width, kv_heads)
            weights = _recomputed_rows(
                query[:, start * group : stop * group], key[:, start:stop], mask, kwargs, slice(0, q_len)
            )
            observed.append(weights[:, :, self._rows].clone())
            if self.prompt_options is not None:
                part = self._prompt_stats_of(weights, mask)
                assert part is not None
                found.append(part)
            del weights
        rows = torch.cat(observed, dim=1)
        self._stash(site, rows, self._visible_key(mask, rows, q_len, kv_len))
        if found:
            parts = [stats for stats, _ in found]
            self.prompt_stats[site.layer] = PromptAttentionStats(
                *(torch.cat([getattr(p, f.name) for p in parts], dim=1) for f in dataclasses.fields(parts[0]))
            )
            shares = [share for _, share in found]
            if all(share is not None for share in shares):
                self.prompt_span_share[site.layer] = torch.cat(cast(list[Tensor], shares), dim=1)

    def _reduce_encoder(self, layer: int, weights: Tensor, mask: Tensor | None) -> None:
        batch, heads, q_len, kv_len = weights.shape
        visible = visible_keys(mask, slice(0, q_len), batch, q_len, kv_len, weights.device)
        rows = weights.transpose(1, 2).reshape(1, batch * q_len, heads, kv_len)
        self.encoder_stats[layer] = summarize_attention(
            rows.float(), visible.reshape(1, batch * q_len, kv_len), causal=False
        )

    # --- installation --------------------------------------------------------------------------
    @contextmanager
    def installed(self, model: nn.Module) -> Iterator[AttentionTap]:
        """Route the model's attention through this tap; restore everything on exit."""
        try:
            with (
                registered_attention(self.name, self, self._model_mask),
                attention_implementation(model, self.name),
            ):
                yield self
        finally:
            self._buffers.clear()
