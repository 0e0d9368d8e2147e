"""Prompt telemetry of the attention of the pass that reads the prompt.

The prefill of a decoder-only model (the encoder of an encoder-decoder model) computes every prompt
row of every layer's attention once. :class:`PromptScorer` turns those [B, H, P, P] weights into
sparse attention, basin scores and a RAG context's attention share (:mod:`corevital.metrics.prompt`),
scoring several layers' heads as one block within a memory budget, and keeps one result per layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from corevital.capture.row_buffer import visible_keys
from corevital.metrics.prompt import (
    PromptAttentionStats,
    PromptHeadParts,
    PromptMask,
    logit_head_parts,
    prompt_attention_from_parts,
    prompt_head_parts,
    recomputed_head_parts,
    span_attention_share,
)


class PromptScorer:
    """Scores the prompt rows of each layer's attention, once per layer, for one generation."""

    def __init__(
        self,
        layers: int,
        *,
        threshold: float,
        cap: int,
        chunk_bytes: int | None = None,
        prompt_length: int | None = None,
        context_span: tuple[int, int] | None = None,
    ) -> None:
        self.threshold = threshold
        self.cap = cap
        # Largest float32 [B, H, P, P] block scored at once (None: no limit).
        self.chunk_bytes = chunk_bytes
        self.prompt_length = prompt_length  # set when the pass reads more than the prompt (replay)
        self.context_span = context_span  # a RAG context's prompt tokens [start, end)
        # Whether the row reductions run compiled (set per generation, before its prompt pass: where
        # its decoding steps are compiled; :class:`~corevital.capture.options.Tuning`).
        self.compiled = False
        self.stats: list[PromptAttentionStats | None] = [None] * layers
        self.span_share: list[Tensor | None] = [None] * layers
        # Layers' prompt weights [B, H, P, P] waiting to be scored together (:meth:`finish`).
        self._layers: list[int] = []
        self._blocks: list[Tensor] = []
        self._owned = False  # whether every waiting block is probabilities the tap recomputed
        self._logits = False  # whether the waiting blocks are the tap's logits (:meth:`takes_logits`)
        self._mask: Tensor | None = None
        # The last mask's derived helpers, kept for the pass's next layers within the chunk budget.
        self._derived: tuple[Tensor | None, int, int, PromptMask] | None = None

    def wants(self, layer: int) -> bool:
        return self.stats[layer] is None

    def takes_logits(self, positions: int) -> bool:
        """Whether the tap gives a prompt of ``positions`` tokens as logits rather than probabilities.

        Where the row reductions run compiled and the prompt is long enough for the compiled form to
        apply (:func:`~corevital.metrics.prompt.logit_head_parts`): the layers' float32 probabilities
        are then never made. Not for a RAG context's share, which reads every probability, nor for a
        pass that reads more than the prompt.
        """
        return (
            self.compiled
            and self.cap > 0
            and positions >= 4 * self.cap
            and self.context_span is None
            and self.prompt_length is None
        )

    def add(
        self, layer: int, weights: Tensor, mask: Tensor | None, *, owned: bool = False, logits: bool = False
    ) -> None:
        """A layer's weights [B, H, Q, K] over the prompt, scored now or with the next layers.

        ``owned``: ``weights`` are float32 probabilities the tap recomputed as ``softmax(scores +
        mask)`` and nothing else reads: the scoring uses them as its working buffer instead of a
        float32 copy, and relies on what such probabilities guarantee (:func:`recomputed_head_parts`).
        ``logits``: ``weights`` are the logits ``scores·scale + mask`` whose softmax the probabilities
        are (:meth:`takes_logits`), reduced without them (:func:`logit_head_parts`).
        """
        if self.stats[layer] is not None:
            return
        if self.prompt_length is not None:
            weights = weights[:, :, : self.prompt_length, : self.prompt_length]
            mask = None if mask is None else mask[:, :, : self.prompt_length, : self.prompt_length]
            owned = False  # a view of a larger block
        if self.chunk_bytes is None:  # no memory budget: each layer on its own
            sizes = [weights.shape[1]]
            self._score([layer], weights, mask, sizes, overwrite=owned, recomputed=owned, logits=logits)
            return
        # Counted as the float32 copy the scoring makes; at most a model's layers wait.
        waiting = sum(4 * block.numel() for block in self._blocks)
        full = waiting + 4 * weights.numel() > self.chunk_bytes // 2
        if self._layers and (mask is not self._mask or logits != self._logits or full):
            self.finish()
        self._logits = logits
        self._owned = owned and (self._owned or not self._layers)  # every waiting block the tap's
        self._layers.append(layer)
        self._blocks.append(weights)
        self._mask = mask

    def finish(self) -> None:
        """Score the prompt weights of the layers waiting, as one [B, ΣH, P, P] block.

        Every prompt statistic is per head and the layers of one forward pass share a mask, so
        the layers' heads are scored together, which costs one layer's kernels instead of one set
        per layer (at batch 1, launches are the prefill's cost). The block (and its float32 copy
        during scoring) stays within the chunk budget. The concatenated block, or a lone layer's
        weights the tap made for the scorer, is scored in place: no float32 copy (a layer too
        large to wait with others, e.g. a long prompt's on a GPU, is read and written once less).
        """
        if not self._layers:
            return
        layers, blocks, mask = self._layers, self._blocks, self._mask
        self._layers, self._blocks, self._mask = [], [], None
        sizes = [block.shape[1] for block in blocks]
        overwrite = len(blocks) > 1 or self._owned
        weights = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
        del blocks
        self._score(
            layers, weights, mask, sizes, overwrite=overwrite, recomputed=self._owned, logits=self._logits
        )

    def end_pass(self) -> None:
        """The forward pass is over: score what waits and drop the mask's helpers."""
        self.finish()
        self._derived = None

    def held_tensors(self) -> list[Tensor]:
        """Prompt weights waiting to be scored (at most half the chunk budget, until the pass ends)."""
        return list(self._blocks)

    def _score(
        self,
        layers: list[int],
        weights: Tensor,
        mask: Tensor | None,
        sizes: list[int],
        *,
        overwrite: bool,
        recomputed: bool,
        logits: bool = False,
    ) -> None:
        """Prompt statistics of ``weights``, the ``sizes`` heads of each of ``layers`` side by side."""
        found = self.stats_of(weights, mask, overwrite=overwrite, recomputed=recomputed, logits=logits)
        if found is None:
            return
        stats, share = found
        split = {f.name: torch.split(getattr(stats, f.name), sizes, dim=1) for f in dataclasses.fields(stats)}
        shares = None if share is None else torch.split(share, sizes, dim=1)
        for slot, target in enumerate(layers):  # once per prompt pass, over the layers scored together
            self.stats[target] = PromptAttentionStats(**{name: value[slot] for name, value in split.items()})
            self.span_share[target] = None if shares is None else shares[slot]

    def stats_of(
        self,
        weights: Tensor,
        mask: Tensor | None,
        *,
        overwrite: bool = False,
        recomputed: bool = False,
        logits: bool = False,
    ) -> tuple[PromptAttentionStats, Tensor | None] | None:
        """Sparse attention and basin scores (and the RAG span share) of prompt weights [B, H, P, P].

        ``overwrite``, ``recomputed``, ``logits``: see :meth:`parts_of`.
        """
        batch, _, q_len, kv_len = weights.shape
        if q_len != kv_len:  # not a pass over the whole prompt (e.g. a continued cache)
            return None
        derived = self.mask_of(mask, batch, q_len, weights.device)
        parts, share = self.parts_of(
            weights, derived, overwrite=overwrite, recomputed=recomputed, logits=logits
        )
        return self.finished(parts, derived), share

    def mask_of(self, mask: Tensor | None, batch: int, positions: int, device: torch.device) -> PromptMask:
        """What the statistics derive from the model's prompt mask: made once for the layers sharing it.

        Kept from one call to the next while its [B, P, P] float32 part fits the chunk budget (the
        layers of a prefill share one mask); a longer prompt's is made again per layer.
        """
        if self._derived is not None:
            known, known_batch, known_positions, derived = self._derived
            if known is mask and known_batch == batch and known_positions == positions:
                return derived
        visible = visible_keys(mask, slice(0, positions), batch, positions, positions, device)
        derived = PromptMask.of(visible, batch, positions, device)
        small = self.chunk_bytes is None or derived.nbytes() <= self.chunk_bytes
        self._derived = (mask, batch, positions, derived) if small else None
        return derived

    def parts_of(
        self,
        weights: Tensor,
        mask: PromptMask,
        *,
        overwrite: bool = False,
        recomputed: bool = False,
        logits: bool = False,
    ) -> tuple[PromptHeadParts, Tensor | None]:
        """Per head, what the statistics keep of prompt weights [B, H, P, P] (and the RAG span share).

        ``overwrite``: the caller is done with ``weights``, which may serve as the working buffer.
        ``recomputed`` (with ``overwrite``): they are float32 probabilities the tap recomputed
        (:func:`~corevital.metrics.prompt.recomputed_head_parts`). ``logits``: they are the logits of
        :meth:`takes_logits` (:func:`~corevital.metrics.prompt.logit_head_parts`, compiled where
        :attr:`compiled` says).
        """
        if logits:  # never with a RAG context's share (takes_logits)
            return logit_head_parts(weights, mask, cap=self.cap, compiled=self.compiled), None
        share = None
        if self.context_span is not None:
            share = span_attention_share(weights, mask.visible, *self.context_span)
        fast = recomputed and overwrite and weights.dtype == torch.float32 and weights.is_contiguous()
        if fast:
            return recomputed_head_parts(weights, mask, cap=self.cap), share
        return prompt_head_parts(weights, mask, cap=self.cap, overwrite=overwrite), share

    def finished(self, parts: PromptHeadParts, mask: PromptMask) -> PromptAttentionStats:
        return prompt_attention_from_parts(parts, mask, threshold=self.threshold, cap=self.cap)

    # --- a layer too large to score at once ---------------------------------------------------------
    def too_large(self, query: Tensor, key: Tensor, kwargs: dict[str, Any]) -> bool:
        """Whether a layer's prompt pass is too large to score every head at once."""
        if self.chunk_bytes is None or self.prompt_length is not None:
            return False
        batch, heads, q_len, _ = query.shape
        too_large = 4 * batch * heads * q_len * key.shape[2] > self.chunk_bytes
        return too_large and kwargs.get("position_bias") is None and q_len == key.shape[2]

    def head_group_width(self, query: Tensor, key: Tensor) -> int:
        """Key-value heads per group when a layer is scored a few heads at a time."""
        assert self.chunk_bytes is not None
        batch, q_heads, q_len, _ = query.shape
        kv_heads, kv_len = key.shape[1], key.shape[2]
        per_kv_head = 4 * batch * (q_heads // kv_heads) * q_len * kv_len
        return max(1, self.chunk_bytes // per_kv_head)

    def set_by_heads(
        self, layer: int, found: list[tuple[PromptHeadParts, Tensor | None]], mask: PromptMask
    ) -> None:
        """A layer's statistics from its head groups' parts (each from :meth:`parts_of`), in head order."""
        self.stats[layer] = self.finished(PromptHeadParts.cat([parts for parts, _ in found]), mask)
        shares = [share for _, share in found]
        if all(share is not None for share in shares):
            self.span_share[layer] = torch.cat([s for s in shares if s is not None], dim=1)
