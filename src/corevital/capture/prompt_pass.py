"""What the pass over the prompt yields once per generation: prompt telemetry and the encoder summary.

:class:`PromptPass` streams the prefill's hidden states layer by layer (:mod:`.layer_stream`) and
computes the prompt's surprisals and layer transformations from it (decoder-only models), or the
layer transformations of the encoder (encoder-decoder models). :class:`EncoderSummary` hooks the
encoder of an encoder-decoder model and summarises its hidden states once. Both hand their device
results (:meth:`PromptPass.device_results`, :meth:`EncoderSummary.device_results`) to the observer,
which moves them to the host with the last window of steps, in one copy; the prompt attention comes
from the tap's :class:`~.prompt_scorer.PromptScorer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from corevital.capture.attention_tap import AttentionTap
from corevital.capture.layer_stream import LayerStream, StreamedStates, StreamSites
from corevital.capture.mask_forms import UnreadableMask, prompt_padding
from corevital.capture.side_stream import SideStream, beside
from corevital.capture.tensor_parallel import ShardGroup, combine
from corevital.metrics.hidden import summarize_hidden
from corevital.metrics.prompt import layer_transformations, prompt_surprisals, prompt_surprisals_from_states
from corevital.metrics.types import AttentionStats, HiddenStats


@dataclass(frozen=True)
class PromptDeviceStats:
    """Prompt telemetry computed from the pass that reads the prompt (device tensors, then host)."""

    surprisals: Tensor | None  # [B, P-1] bits (decoder-only)
    layer_transformations: Tensor  # [L, B]


def prompt_visible(kwargs: dict[str, Any]) -> Tensor | None:
    """[B, P] True for the real tokens of a pass over a prompt; None when it has no tokens to score.

    The mask may be 2-D, 4-D over a static cache, or a dict by layer type (:mod:`.mask_forms`).
    """
    input_ids = kwargs.get("input_ids")
    if input_ids is None or input_ids.shape[1] < 2:
        return None
    batch, length = input_ids.shape
    try:
        padding = prompt_padding(kwargs.get("attention_mask"), batch, length)
    except UnreadableMask:  # a flex attention block mask: which tokens are padding is not known
        return None
    return torch.ones_like(input_ids, dtype=torch.bool) if padding is None else padding


class PromptPass:
    """The prefill of one generation: its hidden states streamed, its prompt telemetry kept."""

    def __init__(self, head: nn.Module | None, sites: StreamSites | None, chunk_bytes: int) -> None:
        # Prompt surprisals from the output head, a few positions at a time, where it gives the
        # model's logits (None: the prefill keeps every position's logits, :mod:`.output_head`).
        self.head = head
        # The prefill's hidden states reduced layer by layer as they appear (:mod:`.layer_stream`).
        self._sites = sites
        self.chunk_bytes = chunk_bytes
        self._stream: LayerStream | None = None  # attached for the prefill only
        self.device: PromptDeviceStats | None = None
        # Where the prompt telemetry is computed (:mod:`.side_stream`; None: the model's stream), set
        # per generation before its prompt pass; :attr:`device` is read after the side stream's join.
        self.side: SideStream | None = None
        # (PromptDeviceStats, per-layer attention stats, per-layer RAG span shares), on the host
        # (:meth:`device_results` moved there by the observer)
        self.host: tuple[Any, Any, Any] | None = None

    def start_stream(self, kwargs: dict[str, Any], reads_prompt: bool) -> bool:
        """Stream the prefill's hidden states (instead of keeping them all) when the model allows."""
        input_ids = kwargs.get("input_ids")
        if self._sites is None or input_ids is None or input_ids.shape[1] < 2:
            return False
        visible = prompt_visible(kwargs) if reads_prompt else None
        self._stream = LayerStream(self._sites, visible=visible, chunk_bytes=self.chunk_bytes, side=self.side)
        self._stream.attach()
        return True

    def end_stream(self) -> StreamedStates | None:
        if self._stream is None:
            return None
        stream, self._stream = self._stream, None
        stream.detach()
        return stream.result()

    def observe(
        self,
        kwargs: dict[str, Any],
        logits: Tensor,
        streamed: StreamedStates | None,
        states: tuple[Tensor, ...] | None,
    ) -> None:
        """Prompt telemetry of the pass over the prompt: from its streamed reduction, or the kept states
        (on the side stream where there is one)."""
        reads = [logits, *(value for value in kwargs.values() if isinstance(value, Tensor)), *(states or ())]
        if streamed is not None:
            reads.append(streamed.final)
        with beside(self.side, logits.device, *reads):
            if streamed is not None:
                self.device = self._stats(kwargs, logits, streamed.final, streamed.transformations)
                return
            visible = prompt_visible(kwargs)
            if states is None or visible is None:
                self.device = None
                return
            changes = layer_transformations(states, visible, chunk_bytes=self.chunk_bytes)
            self.device = self._stats(kwargs, logits, states[-1], changes)

    def observe_encoder(self, states: tuple[Tensor, ...], mask: Tensor | None) -> None:
        """Prompt telemetry of an encoder's pass: its layer transformations."""
        batch, length = states[0].shape[:2]
        visible = torch.ones(batch, length, dtype=torch.bool, device=states[0].device)
        if mask is not None:
            visible = mask.bool()
        self.device = PromptDeviceStats(
            surprisals=None, layer_transformations=layer_transformations(states, visible)
        )

    def _stats(
        self, kwargs: dict[str, Any], logits: Tensor, final: Tensor, transformations: Tensor | None
    ) -> PromptDeviceStats | None:
        """The prompt's surprisals (from the last hidden states ``final`` or the logits) with its
        layer transformations [L, B]."""
        input_ids, visible = kwargs.get("input_ids"), prompt_visible(kwargs)
        if input_ids is None or visible is None or transformations is None:
            return None
        if self.head is not None and final.shape[1] == input_ids.shape[1]:
            surprisals = prompt_surprisals_from_states(
                final,
                self.head,
                input_ids,
                visible,
                vocab_size=logits.shape[-1],
                chunk_bytes=self.chunk_bytes,
            )
        elif logits.shape[1] == input_ids.shape[1]:
            surprisals = prompt_surprisals(logits, input_ids, visible)
        else:
            return None
        return PromptDeviceStats(surprisals, transformations)

    def device_results(
        self, tap: AttentionTap | None, shards: ShardGroup | None = None
    ) -> tuple[PromptDeviceStats, list[Any], list[Any]] | None:
        """The prompt telemetry with the tap's prompt attention (device tensors) to move to the host
        once, after generation (into :attr:`host`), or None when the pass computed none.

        ``shards``: a tensor-parallel model's ranks, whose per-head prompt attention is joined first.
        """
        if self.device is None:
            return None
        layers = list(tap.prompt_stats) if tap is not None else []
        if any(stats is None for stats in layers):
            layers = []
        shares = list(tap.prompt_span_share) if tap is not None else []
        if not shares or any(share is None for share in shares):
            shares = []
        if shards is not None and (layers or shares):
            layers, shares = combine(layers, shards), combine(shares, shards)
        return self.device, layers, shares


class EncoderSummary:
    """An encoder-decoder model's encoder, summarised once per generation (hooks on the encoder)."""

    def __init__(self, layers: int, clip_value: float, prompt: PromptPass | None) -> None:
        self.layers = layers
        self.clip_value = clip_value
        self.prompt = prompt  # also gets the encoder's prompt telemetry, when computed
        self.hidden: HiddenStats | None = None
        self.mask: Tensor | None = None
        self.hidden_host: HiddenStats | None = None
        self.attention_host: list[AttentionStats | None] = []
        self.mask_host: np.ndarray | None = None

    def pre_forward(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs["output_hidden_states"] = True
        self.mask = kwargs.get("attention_mask")
        return args, kwargs

    def post_forward(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        states = output.get("hidden_states")
        if states is None or len(states) != self.layers + 1:
            return
        with torch.no_grad():
            stacked = torch.stack(states[1:])  # [L_enc, B, S, d]
            layers, batch, length, width = stacked.shape
            self.hidden = summarize_hidden(
                stacked.reshape(layers, batch * length, width), clip_value=self.clip_value
            )
            if self.prompt is not None:
                self.prompt.observe_encoder(states, self.mask)

    def device_results(self, tap: AttentionTap | None) -> tuple[HiddenStats, Tensor | None, list[Any]] | None:
        """The encoder summaries with the tap's encoder attention (device tensors) to move to the host
        once, after generation (:meth:`take_host`), or None when the encoder was not observed."""
        if self.hidden is None:
            return None
        attention = list(tap.encoder_stats) if tap is not None else []
        mask = self.mask.bool() if self.mask is not None else None
        return self.hidden, mask, attention

    def take_host(self, host: tuple[Any, Any, Any] | None) -> None:
        """Keep the host copy of :meth:`device_results`."""
        if host is not None:
            self.hidden_host, self.mask_host, self.attention_host = host
