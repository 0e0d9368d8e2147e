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

Each forward pass leaves its rows, and the masks they used, in a :class:`~.row_buffer.RowBuffer`
made when the pass begins; the prompt pass's weights go to a :class:`~.prompt_scorer.PromptScorer`,
on a CUDA stream of its own where the generation has one (:attr:`AttentionTap.side`).

Encoder self-attention runs once per generation; its rows are reduced layer by layer right here,
because keeping S×S weights for every encoder layer would cost far more than the reduction.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from corevital.capture.attention_rows import (
    UNSUPPORTED_KWARGS,
    attention_logits,
    fast_path_supported,
    none_of,
    scale_for,
)
from corevital.capture.attention_window import DecodeRows
from corevital.capture.decode_mask import VisibleMasks, decode_step_mask
from corevital.capture.hf_compat import (
    attention_implementation,
    attention_registered,
    eager_attention_function,
    eager_mask,
    registered_attention,
    sdpa_attention_forward,
    sdpa_mask,
)
from corevital.capture.options import Tuning
from corevital.capture.prompt_scorer import PromptScorer
from corevital.capture.registry import AttentionSite, SiteKind
from corevital.capture.row_buffer import LAST_ROW, MaskEntry, RowBuffer, visible_keys
from corevital.capture.side_stream import SideStream, beside
from corevital.metrics.attention import summarize_attention
from corevital.metrics.prompt import PromptAttentionStats, PromptHeadParts
from corevital.metrics.types import AttentionStats

_TAP_IDS = itertools.count()


def _eager(module: nn.Module, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
    eager = eager_attention_function(module)
    if eager is None:
        raise RuntimeError(f"{type(module).__name__} has no eager attention function to observe")
    output, weights = eager(module, *args, **kwargs)
    assert weights is not None
    return output, weights


def _sdpa(module: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
    return sdpa_attention_forward(module, *args, **kwargs)[0]


def _additive_of(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean mask (True: visible) as ``eager_mask`` gives it: 0 where visible, the dtype's
    minimum elsewhere."""
    return torch.where(mask, torch.zeros((), device=mask.device, dtype=dtype), torch.finfo(dtype).min)


_GRAD_ALREADY_OFF = nullcontext()


def _without_grad() -> AbstractContextManager[Any]:
    """Gradients off for the tap's own work: ``torch.no_grad()`` only when they are on (``generate()``
    already runs without them, and entering ``no_grad`` costs microseconds on every layer)."""
    return torch.no_grad() if torch.is_grad_enabled() else _GRAD_ALREADY_OFF


def _recomputed_logits(
    query: Tensor, key: Tensor, mask: Tensor | None, kwargs: dict[str, Any], rows: slice
) -> Tensor:
    """Logits [B, H, R, K] of the given query rows, recomputed in one go (fast path): their softmax
    in float32 is the rows' probabilities."""
    bias = kwargs.get("position_bias")
    return attention_logits(
        query[:, :, rows],
        key,
        None if mask is None else mask[:, :, rows],
        scaling=kwargs.get("scaling"),
        position_bias=None if bias is None else bias[:, :, rows],
    )


# A deferring pass's mask as the layers get it, its entry where their rows may wait with it (else
# None), and the mask their SDPA takes (:meth:`AttentionTap._decode_lane`).
_Lane = tuple[Tensor | None, MaskEntry | None, Tensor | None]
# Keyword arguments of an attention call that keep its decoding-step row from waiting for the window:
# a position bias, or what the fast path cannot compute (a soft cap, attention sinks).
_DEFER_BLOCKERS = frozenset((*UNSUPPORTED_KWARGS, "position_bias"))


class AttentionTap:
    """The attention function of one model for one generation (or one teacher-forced pass).

    ``prompt``: the scorer of the prompt pass's attention (None: no prompt telemetry).
    """

    def __init__(
        self,
        sites: list[AttentionSite],
        *,
        num_layers: int,
        num_encoder_layers: int,
        fast: bool = False,
        recomputable: bool | None = None,
        tuning: Tuning | None = None,
        prompt: PromptScorer | None = None,
    ) -> None:
        self.fast = fast
        # Whether the model's eager attention is softmax(q·kᵀ·scale + mask), so that a row scored
        # later from the query equals what the layer computed (default: on the fast path only).
        self.recomputable = fast if recomputable is None else recomputable
        self.tuning = tuning or Tuning()
        self.prompt = prompt
        self._sites: dict[nn.Module, AttentionSite] = {site.module: site for site in sites}
        # the self-attention sites' layers, what a decoding step's layer looks up (:meth:`__call__`)
        self._self_layers = {site.module: site.layer for site in sites if site.kind is SiteKind.SELF}
        self._num = {
            SiteKind.SELF: num_layers,
            SiteKind.CROSS: num_layers,
            SiteKind.ENCODER: num_encoder_layers,
        }
        self.name = f"corevital_tap_{next(_TAP_IDS)}"
        self.observe_decoder = True
        self.observe_encoder = True
        self._rows = LAST_ROW
        # whether the layers' deferred rows were found to agree in shape, dtype and device at a step
        # of this generation (:class:`~.row_buffer.DecodeRowsBuffer`)
        self._layout_checked = False
        self._buffer = RowBuffer(self._rows, num_layers)
        self._visible = VisibleMasks()  # decoding steps' all-visible masks, one tensor for all
        # Decoding steps whose rows wait for a batched reduction (:mod:`.attention_window`): the
        # observer sets ``defer_decode`` before a forward pass over one position per sequence (one
        # query row a layer) whose cache only appends.
        self._defer_decode = False
        # The conditions of a deferred row (:meth:`__call__`) that hold for a whole pass, found when
        # defer_decode is set.
        self._deferring = False
        # Set by the observer for a generation's first pass over an empty cache: that pass reads the
        # prompt even when its keys are a whole preallocated (static) cache, longer than the prompt.
        self.prefill_from_start = False
        self.encoder_stats: list[AttentionStats | None] = [None] * num_encoder_layers
        # Inside a compiled forward (:meth:`_compiled_call`): each layer's query row of this step, in
        # layer order, and the scale they use. The observer opens the list before the pass and takes
        # it after; None: rows are not kept (not observed, or not recomputable by the fast path).
        self.compiled_rows: list[Tensor] | None = None
        self.compiled_scale = 1.0
        # Boolean masks of this pass and their additive form (:meth:`_additive`).
        self._additive_masks: list[tuple[Tensor, Tensor]] = []
        # The mask the layers of this deferring pass last got and what they share (:meth:`_decode_lane`).
        self._lane: _Lane | None = None
        # Where the prompt pass's scoring runs beside the model's layers (:mod:`.side_stream`; None:
        # on the model's stream). Set by the observer per generation, before its prompt pass
        # (``Tuning.side_stream``).
        self.side: SideStream | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def defer_decode(self) -> bool:
        """Whether this pass's decoding-step rows may wait for the window's batched reduction."""
        return self._defer_decode

    @defer_decode.setter
    def defer_decode(self, value: bool) -> None:
        self._defer_decode = value
        self._deferring = value and self.observe_decoder and self.fast and self._rows == LAST_ROW

    def observe_rows(self, rows: slice) -> None:
        """Which query rows of the next forward passes to keep (default: the last one)."""
        self._rows = rows
        self._buffer.rows = rows
        self.defer_decode = self._defer_decode

    def begin_forward(self) -> None:
        self.release()

    def release(self) -> None:
        """Drop this pass's rows once they are reduced: nothing is held between steps."""
        self._additive_masks.clear()
        self._lane = None
        if self.prompt is not None:
            waiting = self.prompt.held_tensors()  # blocks the side stream made: scored there
            with beside(self.side, waiting[0].device) if waiting else nullcontext():
                self.prompt.end_pass()
        if self._buffer.used:
            self._buffer = RowBuffer(
                self._rows, self._num[SiteKind.SELF], check_layout=not self._layout_checked
            )

    def held_bytes(self) -> int:
        """Device bytes the tap keeps alive: whole storages, as a view holds its base tensor's memory.

        Keys are not counted: they are the cache's own tensors. Prompt weights waiting to be scored
        together are (at most half the prompt chunk budget, until the forward pass ends).
        """
        held = self._buffer.held_tensors()
        if self.prompt is not None:
            held += self.prompt.held_tensors()
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}
        return sum(storages.values())

    def collected(self, kind: SiteKind) -> tuple[Tensor, Tensor | None] | None:
        """(weights [L, B, R, H, K], visible [L or 1, B, R, K]) of the last forward, all layers in.

        ``visible`` is None when no layer had a mask: every key was visible.
        """
        if self._buffer.seen(kind) != self._num[kind]:
            return None
        return self._buffer.collected(kind, self.tuning)

    def layers_seen(self, kind: SiteKind) -> int:
        return self._buffer.seen(kind)

    @property
    def prompt_stats(self) -> list[PromptAttentionStats | None]:
        """Each layer's prompt attention, on the device (computed beside the model's stream where the
        tap has a side stream: read after the observer's :meth:`~.side_stream.SideStream.join`)."""
        return [] if self.prompt is None else self.prompt.stats

    @property
    def prompt_span_share(self) -> list[Tensor | None]:
        """Each layer's attention share of a RAG context, on the device (as :attr:`prompt_stats`)."""
        return [] if self.prompt is None else self.prompt.span_share

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
        if torch.compiler.is_compiling():
            return self._compiled_call(module, query, key, value, attention_mask, kwargs), None
        # Every layer of every decoding step of a usual generation, tested first from what it needs
        # and written out (no helper's frame): in a deferring pass (``_deferring``: ``defer_decode``
        # on the fast path, observing the decoder's last row) whose mask allows it
        # (:meth:`_decode_lane`), a self-attention layer's row waits for the window's batched
        # reduction when nothing changes the attention formula (no position bias, nothing the fast
        # path cannot compute); the pass is over one position, so each layer has one query row.
        if self._deferring:
            layer = self._self_layers.get(module)
            if layer is not None:
                lane = self._lane
                if lane is None or lane[0] is not attention_mask:  # the pass's first layer with this mask
                    lane = self._lane = self._decode_lane(attention_mask, query.dtype)
                if lane[1] is not None and (
                    kwargs.keys().isdisjoint(_DEFER_BLOCKERS) or none_of(kwargs, _DEFER_BLOCKERS)
                ):
                    # generate() runs without gradients: no context to enter. Written out rather than
                    # through _without_grad() and _sdpa(), whose frames and context cost 2 us a layer
                    # (bench/tap_cost.py).
                    if torch.is_grad_enabled():
                        with torch.no_grad():
                            output = sdpa_attention_forward(module, query, key, value, lane[2], **kwargs)[0]
                    else:
                        output = sdpa_attention_forward(module, query, key, value, lane[2], **kwargs)[0]
                    scaling = kwargs.get("scaling")
                    scale = query.shape[3] ** -0.5 if scaling is None else float(scaling)
                    self._buffer.decode.keep(layer, query, key, lane[1], scale)
                    return output, None
        site = self._sites.get(module)
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            attention_mask = self._additive(attention_mask, query.dtype)
        mask = self._buffer.mask(attention_mask)
        q_len, kv_len = query.shape[2], key.shape[2]
        needs = self._needs(site, q_len, kv_len)
        if site is None or needs is None:
            return self._output(module, query, key, value, mask, kwargs), None
        rows = slice(0, q_len) if needs == "all" else self._rows
        # The prompt pass over a preallocated cache observes only the prompt's keys: those after
        # them are empty slots the mask hides (their weights are exactly 0).
        seen = key if needs != "all" or kv_len == q_len else key[:, :, :q_len]
        with _without_grad():
            if self.fast and fast_path_supported(kwargs):
                output = _sdpa(module, query, key, value, mask.for_sdpa(), **kwargs)
                if needs == "rows" and site.kind is not SiteKind.ENCODER:  # no kernel: finished per step
                    bias = kwargs.get("position_bias")
                    scale = scale_for(query, kwargs.get("scaling"))
                    self._buffer.add_pending(site.kind, site.layer, query, key, mask, bias, scale)
                    return output, None
                if needs == "all" and site.kind is SiteKind.SELF:
                    self._prompt_pass(site, query, seen, attention_mask, mask, kwargs)
                    return output, None
                logits = _recomputed_logits(query, seen, attention_mask, kwargs, rows)
                weights = torch.softmax(logits, dim=-1, dtype=torch.float32)
                del logits
                owned = True
            else:
                output, full = _eager(module, query, key, value, attention_mask, **kwargs)
                weights = full[:, :, rows, : seen.shape[2]]
                owned = False
            self._observe(site, needs, weights, mask, q_len, owned=owned)
        return output, None

    def _compiled_call(
        self,
        module: nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        kwargs: dict[str, Any],
    ) -> Tensor:
        """A layer of a forward pass that ``torch.compile`` traces (transformers' compiled decoding step).

        Traceable as it stands: no host synchronisation, no Python that depends on tensor values, no
        state but the list of query rows, which the trace records as one more output of the graph.
        The output is the model's own (SDPA with transformers' boolean mask on the fast path, the
        eager function with its additive mask otherwise: :meth:`_model_mask` builds the matching
        mask; on the fast path, a layer whose formula SDPA cannot compute, a soft cap or attention
        sinks, takes the eager function with that boolean mask made additive, as an uncompiled step
        does, rather than an error that would send the whole step back to eager execution); the
        query row waits, like a deferred decoding step's, for the window's scoring
        against the cache (:mod:`.attention_window`), where that recomputation is exact for the
        model (on the eager path too).
        """
        # fast_path_supported without its set operation on the keys, which dynamo cannot trace
        supported = none_of(kwargs, UNSUPPORTED_KWARGS)
        if self.fast and supported:
            output = _sdpa(module, query, key, value, attention_mask, **kwargs)
        else:
            # the eager formula (a soft cap, attention sinks: what SDPA cannot compute) takes an
            # additive mask; on the fast path the step's mask is SDPA's boolean one
            mask = attention_mask
            if mask is not None and mask.dtype == torch.bool:
                mask = _additive_of(mask, query.dtype)
            output = _eager(module, query, key, value, mask, **kwargs)[0]
        exact = self.recomputable and supported and kwargs.get("position_bias") is None
        if self.compiled_rows is not None and exact and query.shape[2] == 1:
            self.compiled_rows.append(query)
            self.compiled_scale = scale_for(query, kwargs.get("scaling"))
        return output

    def _observe(
        self, site: AttentionSite, needs: str, weights: Tensor, mask: MaskEntry, q_len: int, *, owned: bool
    ) -> None:
        """Keep the observed rows of finished weights [B, H, R, K]; reduce the prompt's and encoder's.

        ``owned``: the tap recomputed ``weights`` and nothing else reads them (the model's own eager
        weights are not).
        """
        if site.kind is SiteKind.ENCODER:
            self._reduce_encoder(site.layer, weights, mask.tensor)
            if self.prompt is not None:
                self.prompt.add(site.layer, weights, mask.tensor)
            return
        # A copy of the observed rows of a pass over every row: a view would hold the layer's whole
        # [B, H, P, P] probabilities until the forward pass ends (every layer's: a GiB for a long prompt).
        observed = weights[:, :, self._rows].clone() if needs == "all" else weights
        self._add_finished(site, observed, mask, q_len, weights.shape[-1])
        if needs == "all" and self.prompt is not None:
            self.prompt.add(site.layer, weights, mask.tensor, owned=owned)

    def _add_finished(
        self, site: AttentionSite, weights: Tensor, mask: MaskEntry, q_len: int, kv_len: int
    ) -> None:
        visible = self._buffer.visible_key(mask, weights.shape[0], q_len, kv_len, weights.device)
        self._buffer.add_finished(site.kind, site.layer, weights, visible)

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
            and self.prompt is not None
            and not self._num[SiteKind.ENCODER]
            and q_len > 1
            and (q_len == kv_len or (self.prefill_from_start and kv_len > q_len))
            and self.prompt.wants(site.layer)
        )
        return "all" if prompt_pass else "rows"

    def _decode_lane(self, attention_mask: Tensor | None, dtype: torch.dtype) -> _Lane:
        """What every layer of a deferring pass that gets ``attention_mask`` shares, found at its
        first layer: the mask's entry where a decoding step's row may wait with it (a decode mask or
        none; else None) and the mask its SDPA takes (:meth:`~.row_buffer.MaskEntry.for_sdpa`)."""
        given = attention_mask
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            attention_mask = self._additive(attention_mask, dtype)
        mask = self._buffer.mask(attention_mask)
        if mask.tensor is None or mask.decode:
            return (given, mask, mask.for_sdpa())
        return (given, None, None)

    def take_decode_rows(self, cache_keys: list[Tensor] | None) -> DecodeRows | None:
        """This forward's decode-step rows of every layer, to be reduced later; None if not deferred.

        ``cache_keys``: the cache's keys of every layer after this forward. The rows wait only when
        each layer attended over exactly those tensors: a model that caches something else than its
        attention keys (DeepSeek's latent attention caches compressed latents) is scored per step.
        When only some layers (or layers that differ in shape, scale or mask) deferred their rows,
        those rows go to the per-step path, so that :meth:`collected` sees every layer.
        """
        decode = self._buffer.decode
        if not decode.count:
            return None
        layers = self._num[SiteKind.SELF]
        waits = decode.uniform and decode.count == layers and decode.keys_are(cache_keys)
        if waits and decode.check_layout:
            self._layout_checked = True  # every layer's shapes, dtype and device agree: not checked again
        self._buffer.decode = type(decode)(layers, check_layout=not self._layout_checked)
        if waits:
            return decode.window_rows()
        for index, entry in enumerate(decode.rows):
            if entry is not None:
                query, key, mask, scale = entry
                self._buffer.add_pending(SiteKind.SELF, index, query, key, mask, None, scale)
        return None

    def _output(
        self,
        module: nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: MaskEntry,
        kwargs: dict[str, Any],
    ) -> Tensor:
        if self.fast and fast_path_supported(kwargs):
            return _sdpa(module, query, key, value, mask.for_sdpa(), **kwargs)
        return _eager(module, query, key, value, mask.tensor, **kwargs)[0]

    def _model_mask(self, *args: Any, **kwargs: Any) -> Tensor | None:
        """The mask of a forward pass: transformers' ``eager_mask``, with two exceptions.

        A plain decoding step's mask is built directly (:mod:`.decode_mask`), and one that hides
        nothing is remembered: its statistics skip the mask. Any other decoding step on the fast
        path gets the boolean mask SDPA takes (``sdpa_mask``, never skipped): the decoding steps of
        a static cache, which transformers compiles, then run SDPA on the mask plain generation
        gives it, without an additive copy built on the host each step; where such a step runs
        uncompiled, the tap makes the additive mask once per pass (:meth:`_additive`). On the fast
        path, a mask that plain generation's SDPA would skip (:meth:`_sdpa_skips`) is marked so:
        the layers' SDPA then runs without it, as it does without CoreVital.
        """
        if torch.compiler.is_compiling():  # the mask the compiled step's attention function takes
            return sdpa_mask(*args, **kwargs) if self.fast else eager_mask(*args, **kwargs)
        mask = None if args else decode_step_mask(self._visible, **kwargs)
        if mask is None:
            if self.fast and not args and kwargs.get("q_length") == 1:
                kwargs.pop("allow_is_causal_skip", None)  # as eager_mask: a causal mask is never skipped
                return sdpa_mask(allow_is_causal_skip=False, **kwargs)
            made = eager_mask(*args, **kwargs)
            if made is not None and self._sdpa_skips(args, kwargs):
                self._buffer.add_sdpa_skipped_mask(made)
            return made
        self._buffer.add_decode_mask(mask, kwargs.get("attention_mask"))
        return mask

    def _sdpa_skips(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether plain generation's SDPA takes this pass's mask as ``is_causal``, with no tensor.

        transformers' own rule (``sdpa_mask`` returns None: a pass over several tokens without
        padding and without a window that hides a key): the prompt pass's attention then runs the
        kernel it runs without CoreVital (flash attention on a GPU) while the statistics read the
        mask. One check of the padding per mask, as plain generation makes.
        """
        if not self.fast or args or kwargs.get("q_length", 1) <= 1 or not kwargs.get("allow_is_causal_skip"):
            return False
        return sdpa_mask(**kwargs) is None

    def _additive(self, mask: Tensor, dtype: torch.dtype) -> Tensor:
        """:func:`_additive_of` ``mask``, made once per mask and pass (the layers of a pass share
        their masks)."""
        for boolean, additive in self._additive_masks:
            if boolean is mask and additive.dtype == dtype:
                return additive
        additive = _additive_of(mask, dtype)
        self._additive_masks.append((mask, additive))
        return additive

    # --- prompt pass -----------------------------------------------------------------------------
    def _prompt_pass(
        self,
        site: AttentionSite,
        query: Tensor,
        key: Tensor,
        attention_mask: Tensor | None,
        mask: MaskEntry,
        kwargs: dict[str, Any],
    ) -> None:
        """A self-attention layer of the prompt pass on the fast path: its observed rows for the
        step's record, every row for the prompt scorer.

        With a side stream (:attr:`side`, a CUDA device), the observed rows are recomputed alone on
        the model's stream and the scoring of every row runs on the side stream
        (:mod:`.side_stream`): the model's next layers do not wait for it. Without one, the scoring's
        probabilities give the observed rows too.
        """
        if self.side is None or not query.is_cuda:
            self._score_prompt(site, query, key, attention_mask, mask, kwargs, observe=True)
            return
        logits = _recomputed_logits(query, key, attention_mask, kwargs, self._rows)
        observed = torch.softmax(logits, dim=-1, dtype=torch.float32)
        self._add_finished(site, observed, mask, query.shape[2], key.shape[2])
        read = [value for value in kwargs.values() if isinstance(value, Tensor)]
        with self.side.running(query.device, query, key, attention_mask, mask.tensor, *read):
            self._score_prompt(site, query, key, attention_mask, mask, kwargs, observe=False)

    def _score_prompt(
        self,
        site: AttentionSite,
        query: Tensor,
        key: Tensor,
        attention_mask: Tensor | None,
        mask: MaskEntry,
        kwargs: dict[str, Any],
        *,
        observe: bool,
    ) -> None:
        """Give the prompt scorer every row of a prompt-pass layer (``observe``: and keep the observed
        rows): a few key-value heads at a time where the layer is too large (:meth:`_prompt_pass_by_heads`),
        as logits where the scorer takes them (its compiled form), else as recomputed probabilities."""
        assert self.prompt is not None
        q_len, kv_len = query.shape[2], key.shape[2]
        if self.prompt.too_large(query, key, kwargs):
            self._prompt_pass_by_heads(site, query, key, mask, kwargs, observe=observe)
            return
        logits = _recomputed_logits(query, key, attention_mask, kwargs, slice(0, q_len))
        if self.prompt.takes_logits(q_len):
            if observe:
                observed = torch.softmax(logits[:, :, self._rows], dim=-1, dtype=torch.float32)
                self._add_finished(site, observed, mask, q_len, kv_len)
            self.prompt.add(site.layer, logits, mask.tensor, logits=True)
            return
        weights = torch.softmax(logits, dim=-1, dtype=torch.float32)
        del logits
        if observe:
            # a copy: a view would hold the layer's whole [B, H, P, P] probabilities until the pass ends
            self._add_finished(site, weights[:, :, self._rows].clone(), mask, q_len, kv_len)
        self.prompt.add(site.layer, weights, mask.tensor, owned=True)

    def _prompt_pass_by_heads(
        self,
        site: AttentionSite,
        query: Tensor,
        key: Tensor,
        mask: MaskEntry,
        kwargs: dict[str, Any],
        *,
        observe: bool,
    ) -> None:
        """The prompt pass of one layer scored a few key-value heads at a time (bounded memory).

        Every prompt statistic is per head, so the groups' results are concatenated over heads. A
        loop over head groups, at the prefill only: one [B, H, P, P] float32 block of a long prompt
        is what it avoids (SmolLM2, 512 tokens: 9 MiB, and prompt statistics make a copy of it).
        ``observe``: keep the observed rows too.
        """
        assert self.prompt is not None
        q_heads, q_len = query.shape[1], query.shape[2]
        kv_heads, kv_len = key.shape[1], key.shape[2]
        group = q_heads // kv_heads
        width = self.prompt.head_group_width(query, key)
        derived = self.prompt.mask_of(mask.tensor, query.shape[0], q_len, query.device)
        as_logits = self.prompt.takes_logits(q_len)
        observed: list[Tensor] = []
        found: list[tuple[PromptHeadParts, Tensor | None]] = []
        for start in range(0, kv_heads, width):  # head groups, not single heads: see the docstring
            stop = min(start + width, kv_heads)
            logits = _recomputed_logits(
                query[:, start * group : stop * group],
                key[:, start:stop],
                mask.tensor,
                kwargs,
                slice(0, q_len),
            )
            if observe:
                observed.append(torch.softmax(logits[:, :, self._rows], dim=-1, dtype=torch.float32))
            if as_logits:
                found.append(self.prompt.parts_of(logits, derived, logits=True))
                continue
            weights = torch.softmax(logits, dim=-1, dtype=torch.float32)
            del logits
            found.append(self.prompt.parts_of(weights, derived, overwrite=True, recomputed=True))
            del weights
        if observe:
            self._add_finished(site, torch.cat(observed, dim=1), mask, q_len, kv_len)
        self.prompt.set_by_heads(site.layer, found, derived)

    def _reduce_encoder(self, layer: int, weights: Tensor, mask: Tensor | None) -> None:
        batch, heads, q_len, kv_len = weights.shape
        visible = visible_keys(mask, slice(0, q_len), batch, q_len, kv_len, weights.device)
        rows = weights.transpose(1, 2).reshape(1, batch * q_len, heads, kv_len)
        self.encoder_stats[layer] = summarize_attention(
            rows.float(), visible.reshape(1, batch * q_len, kv_len), causal=False
        )

    # --- installation --------------------------------------------------------------------------
    @contextmanager
    def installed(self, model: nn.Module, configs: list[Any] | None = None) -> Iterator[AttentionTap]:
        """Route the model's attention through this tap; restore everything on exit.

        ``configs``: the model's config objects (:func:`~.hf_compat.model_configs`), when known.
        """
        # One name per model, the same for every generation: transformers' compiled forward is
        # specialised on the configured name, so a new name per generation would recompile it.
        name = f"corevital_tap_{id(model):x}"
        self.name = f"{name}_{next(_TAP_IDS)}" if attention_registered(name) else name
        try:
            with (
                registered_attention(self.name, self, self._model_mask),
                attention_implementation(model, self.name, configs),
            ):
                yield self
        finally:
            self._buffer = RowBuffer(self._rows, self._num[SiteKind.SELF])
            self._visible = VisibleMasks()
