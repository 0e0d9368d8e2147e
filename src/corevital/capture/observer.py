"""Observing ``generate()`` step by step without changing what it generates.

Installed by :meth:`StepObserver.installed` (a context manager that always removes everything):

- a forward pre-hook on the top-level model asks for hidden states and opens a new step (for the
  pass over the prompt it hooks the layers instead, which reduce their outputs as they appear:
  :mod:`.layer_stream`);
- the attention tap (full and on_risk capture) collects each layer's decode-step attention row;
- a forward hook on the top-level model takes the step's raw logits, hidden states and attention
  rows the moment the forward pass returns and keeps references to them (of the prefill only the
  last position; with a cache that only appends, only the attention query rows) in a
  :class:`~corevital.capture.steps.RawStep`;
- a logits processor placed last sees the distribution actually sampled from;
- a stopping criterion sees the chosen tokens and ends the step. The waiting steps are reduced with
  :mod:`corevital.metrics` together, in one batch, and moved to the host in one copy
  (:mod:`.steps`, :mod:`.attention_window`): every step when a live callback needs each step's
  values at once (it may then stop sequences), otherwise once per window of up to ``flush_every``
  steps, which costs one step's kernels per window instead of per step.

Encoder-decoder models: a hook on the encoder summarises its hidden states once per generation,
and the tap reduces encoder self-attention layer by layer as it runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from corevital.capture.attention_window import append_only_keys, is_append_only
from corevital.capture.capabilities import ModelCapabilities
from corevital.capture.hf_compat import last_logits_processor
from corevital.capture.instruments import attention_tap, model_bytes, sketch_matrix
from corevital.capture.layer_stream import LayerStream, StreamedStates
from corevital.capture.model_checks import logits_head, stream_sites
from corevital.capture.options import CaptureOptions
from corevital.capture.records import CaptureWarning, StepCallback, StepEvent
from corevital.capture.registry import AttentionSite, SiteKind
from corevital.capture.steps import DeviceStep, RawStep, reduce_raw_steps, split_host_batch
from corevital.metrics.attention import summarize_attention
from corevital.metrics.hidden import summarize_hidden
from corevital.metrics.prompt import (
    layer_transformations,
    prompt_surprisals,
    prompt_surprisals_from_states,
)
from corevital.metrics.transfer import to_host
from corevital.metrics.types import AttentionStats, HiddenStats


@dataclass(frozen=True)
class PromptDeviceStats:
    """Prompt telemetry computed from the pass that reads the prompt (device tensors, then host)."""

    surprisals: Tensor | None  # [B, P-1] bits (decoder-only)
    layer_transformations: Tensor  # [L, B]


def _last_positions(states: tuple[Tensor, ...]) -> Tensor:
    """Each layer's state [B, S, d] at the last position, stacked: [L, B, d], in one copy.

    A decoding step's states have one position, so they are concatenated as they are; the pass
    over the prompt copies only the last position of each (not every prompt position).
    """
    if states[0].shape[1] == 1:
        return torch.cat(states, dim=1).transpose(0, 1)
    return torch.stack([state[:, -1] for state in states])


def _prompt_visible(kwargs: dict[str, Any]) -> Tensor | None:
    """[B, P] True for the real tokens of a pass over a prompt; None when it has no tokens to score."""
    input_ids = kwargs.get("input_ids")
    if input_ids is None or input_ids.shape[1] < 2:
        return None
    mask = kwargs.get("attention_mask")
    return torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask.bool()


def _uniform_runs(raw: list[RawStep]) -> list[list[RawStep]]:
    """``raw`` cut into runs of consecutive steps of one kind, each reduced in one batch.

    Steps of one generation normally form a single run; a run ends where a step lacks a part the
    previous one had (hidden states, a sampling distribution, deferred attention rows) or the reverse.
    """
    runs: list[list[RawStep]] = []
    for step in raw:
        if runs and runs[-1][-1].kind() == step.kind():
            runs[-1].append(step)
        else:
            runs.append([step])
    return runs


def _last_row(collected: tuple[Tensor, Tensor | None] | None, causal: bool) -> AttentionStats | None:
    if collected is None:
        return None
    weights, visible = collected  # [L, B, 1, H, K], [L, B, 1, K] (None: every key visible)
    return summarize_attention(weights[:, :, 0], None if visible is None else visible[:, :, 0], causal=causal)


class StepObserver:
    """Per-generation observer; create one per ``generate()`` call."""

    def __init__(
        self,
        model: Any,
        caps: ModelCapabilities,
        sites: list[AttentionSite],
        options: CaptureOptions,
        callback: StepCallback | None = None,
        eos_token_ids: tuple[int, ...] = (),
        batch_offset: int = 0,
    ) -> None:
        self.batch_offset = batch_offset
        self.model = model
        self.caps = caps
        self.options = options
        self.callback = callback
        self.eos_token_ids = eos_token_ids
        device = next(model.parameters()).device
        self.device = device
        size = model_bytes(model)
        self._deferred_budget = options.tuning.deferred_budget(size)
        self._prompt_chunk_bytes = options.tuning.prompt_chunk(size)
        self.tap, self.warnings = attention_tap(
            caps,
            sites,
            options,
            prompt_chunk_bytes=self._prompt_chunk_bytes,
            context_span=options.context_span,
        )
        self.sketch = sketch_matrix(caps, options, device)
        self._pending: RawStep | None = None
        self._deferred_bytes = 0
        # Prompt surprisals from the output head, a few positions at a time, where it gives the
        # model's logits; otherwise the prefill keeps every position's logits (:mod:`.output_head`).
        self._head = None
        if options.observe_prompt and not caps.is_encoder_decoder:
            self._head = logits_head(model)
        # The prefill's hidden states reduced layer by layer as they appear (:mod:`.layer_stream`).
        self._stream_sites = None if caps.is_encoder_decoder else stream_sites(model)
        self._stream: LayerStream | None = None  # attached for the prefill only
        self._cache: Any = None  # the generation's key/value cache, when attention rows are deferred
        self._cache_append_only = False
        self._no_stop_tensor: Tensor | None = None
        self._scores: Tensor | None = None
        self._unflushed: list[RawStep] = []
        self.host_steps: list[DeviceStep] = []  # the same dataclasses, fields as numpy arrays
        self.encoder_hidden: HiddenStats | None = None
        self.encoder_mask: Tensor | None = None
        self.encoder_hidden_host: HiddenStats | None = None
        self.encoder_attention_host: list[AttentionStats | None] = []
        self.encoder_mask_host: np.ndarray | None = None
        self.stop_steps: dict[int, int] = {}  # batch index -> step at which the callback stopped it
        self._finished_host: np.ndarray | None = None
        self._hidden_missing_warned = False
        self._forwards = 0
        self._last_step_end = time.perf_counter()
        self.step_ms: list[float] = []
        self.prompt_device: PromptDeviceStats | None = None
        # (PromptDeviceStats, per-layer attention stats, per-layer RAG span shares), on the host
        self.prompt_host: tuple[Any, Any, Any] | None = None

    # --- hooks -----------------------------------------------------------------------------
    def _reads_prompt(self) -> bool:
        return self._forwards == 0 and self.options.observe_prompt and not self.caps.is_encoder_decoder

    def _pre_forward(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs["output_hidden_states"] = not self._start_stream(kwargs)
        if self._reads_prompt() and self._head is None:
            kwargs["logits_to_keep"] = 0  # every prompt position's logits, for prompt surprisals
        if self.tap is not None:
            self.tap.begin_forward()
            cache = kwargs.get("cache", kwargs.get("past_key_values"))  # the name changed in transformers 5
            self.tap.defer_decode = self._may_defer_attention(cache)
        return args, kwargs

    def _start_stream(self, kwargs: dict[str, Any]) -> bool:
        """Stream the prefill's hidden states (instead of keeping them all) when the model allows."""
        input_ids = kwargs.get("input_ids")
        if self._forwards != 0 or self._stream_sites is None or input_ids is None or input_ids.shape[1] < 2:
            return False
        visible = _prompt_visible(kwargs) if self._reads_prompt() else None
        self._stream = LayerStream(self._stream_sites, visible=visible, chunk_bytes=self._prompt_chunk_bytes)
        self._stream.attach()
        return True

    def _end_stream(self) -> StreamedStates | None:
        if self._stream is None:
            return None
        stream, self._stream = self._stream, None
        stream.detach()
        return stream.result()

    def _may_defer_attention(self, cache: Any) -> bool:
        """Whether this forward's decode-step attention rows may wait for the window's reduction.

        Only after the prefill, without a live callback, for a decoder-only model whose cache only
        appends keys (:mod:`.attention_window`); the tap still checks each layer's call.
        """
        if self.callback is not None or self.caps.is_encoder_decoder or self.options.tuning.flush_every <= 1:
            return False
        if self._forwards == 0 or cache is None:
            return False
        if cache is not self._cache:
            if self._cache is not None:
                self.flush()  # rows deferred against another cache are scored against it first
            self._cache = cache
            self._cache_append_only = is_append_only(cache)
        return self._cache_append_only

    def _post_forward(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        with torch.no_grad():
            logits_row = output.logits[:, -1, :]
            states = (
                output.get("decoder_hidden_states")
                if self.caps.is_encoder_decoder
                else output.get("hidden_states")
            )
            streamed = self._end_stream()
            layer_states = None
            if streamed is not None and len(streamed.last_positions) == self.caps.num_layers:
                layer_states = streamed.last_positions
            elif states is not None and len(states) == self.caps.num_layers + 1:
                layer_states = states[1:]
            elif not self._hidden_missing_warned:
                self._hidden_missing_warned = True
                self.warnings.append(
                    CaptureWarning(
                        "HIDDEN_STATES_NOT_AVAILABLE", "the model returned no per-layer hidden states"
                    )
                )
            attention = cross = None
            decode_rows = None
            if self.tap is not None:
                decode_rows = self.tap.take_decode_rows()
            if self.tap is not None and decode_rows is None:
                attention = _last_row(self.tap.collected(SiteKind.SELF), causal=True)
                if self.caps.is_encoder_decoder:
                    cross = _last_row(self.tap.collected(SiteKind.CROSS), causal=False)
            if self.tap is not None:
                self.tap.release()
            if self._reads_prompt():
                self.prompt_device = self._prompt_device(kwargs, output.logits, streamed, states)
            # A step keeps references to these until its window is reduced; of a pass over several
            # positions (the prefill) only the last position is kept, as a copy.
            if output.logits.shape[1] > 1:
                logits_row = logits_row.clone()
            if layer_states is not None and layer_states[0].shape[1] > 1:
                layer_states = tuple(_last_positions(layer_states).unsqueeze(2).unbind(0))
            self._pending = RawStep(logits_row, layer_states, attention, cross, decode_rows)
            self._forwards += 1

    def _prompt_device(
        self,
        kwargs: dict[str, Any],
        logits: Tensor,
        streamed: StreamedStates | None,
        states: tuple[Tensor, ...] | None,
    ) -> PromptDeviceStats | None:
        """Prompt telemetry of the pass over the prompt: from its streamed reduction, or the kept states."""
        if streamed is not None:
            return self._prompt_stats(kwargs, logits, streamed.final, streamed.transformations)
        visible = _prompt_visible(kwargs)
        if states is None or visible is None:
            return None
        changes = layer_transformations(states, visible, chunk_bytes=self._prompt_chunk_bytes)
        return self._prompt_stats(kwargs, logits, states[-1], changes)

    def _prompt_stats(
        self, kwargs: dict[str, Any], logits: Tensor, final: Tensor, transformations: Tensor | None
    ) -> PromptDeviceStats | None:
        """The prompt's surprisals (from the last hidden states ``final`` or the logits) with its
        layer transformations [L, B]."""
        input_ids, visible = kwargs.get("input_ids"), _prompt_visible(kwargs)
        if input_ids is None or visible is None or transformations is None:
            return None
        if self._head is not None and final.shape[1] == input_ids.shape[1]:
            surprisals = prompt_surprisals_from_states(
                final,
                self._head,
                input_ids,
                visible,
                vocab_size=logits.shape[-1],
                chunk_bytes=self._prompt_chunk_bytes,
            )
        elif logits.shape[1] == input_ids.shape[1]:
            surprisals = prompt_surprisals(logits, input_ids, visible)
        else:
            return None
        return PromptDeviceStats(surprisals, transformations)

    def _encoder_pre(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs["output_hidden_states"] = True
        mask = kwargs.get("attention_mask")
        self.encoder_mask = mask
        return args, kwargs

    def _encoder_post(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        states = output.get("hidden_states")
        if states is None or len(states) != (self.caps.num_encoder_layers or 0) + 1:
            return
        with torch.no_grad():
            stacked = torch.stack(states[1:])  # [L_enc, B, S, d]
            layers, batch, length, width = stacked.shape
            self.encoder_hidden = summarize_hidden(
                stacked.reshape(layers, batch * length, width), clip_value=self.options.hidden_clip_value
            )
            if self.options.observe_prompt:
                mask = self.encoder_mask
                visible = torch.ones(batch, length, dtype=torch.bool, device=stacked.device)
                if mask is not None:
                    visible = mask.bool()
                self.prompt_device = PromptDeviceStats(
                    surprisals=None, layer_transformations=layer_transformations(states, visible)
                )

    # --- generate() plug-ins -----------------------------------------------------------------
    def _observe_scores(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.options.sampling_changes_distribution:
            self._scores = scores
        return scores

    def _finish_step(self, input_ids: Tensor, scores: Any, **kwargs: Any) -> Tensor:
        now = time.perf_counter()
        self.step_ms.append((now - self._last_step_end) * 1000.0)
        self._last_step_end = now
        pending = self._pending
        batch = input_ids.shape[0]
        if pending is None:  # a step without a forward pass we saw: nothing to record
            return self._no_stop(batch, input_ids.device)
        self._pending = None
        pending.tokens = input_ids[:, -1]  # input_ids is a new tensor every step, never written to
        pending.scores, self._scores = self._scores, None
        self._unflushed.append(pending)
        self._deferred_bytes += pending.float32_bytes()
        if self.callback is not None:  # a live callback reads each step at once: a window of one
            self.flush()
            return self._ask_callback(self.host_steps[-1], batch, input_ids.device)
        if (
            len(self._unflushed) >= self.options.tuning.flush_every
            or self._deferred_bytes >= self._deferred_budget
        ):
            self.flush()
        return self._no_stop(batch, input_ids.device)

    def _no_stop(self, batch: int, device: torch.device) -> Tensor:
        """All-False [B] answer of the stopping criterion, made once (generate() only reads it)."""
        if self._no_stop_tensor is None or self._no_stop_tensor.shape[0] != batch:
            self._no_stop_tensor = torch.zeros(batch, dtype=torch.bool, device=device)
        return self._no_stop_tensor

    def _ask_callback(self, host: DeviceStep, batch: int, device: torch.device) -> Tensor:
        assert self.callback is not None
        step_index = len(self.host_steps) - 1
        tokens = np.asarray(host.chosen.token_ids).astype(np.int64)
        if self._finished_host is None:
            self._finished_host = np.zeros(batch, dtype=bool)
        event = StepEvent(
            step=step_index,
            token_ids=tokens,
            finished=self._finished_host.copy(),
            batch_offset=self.batch_offset,
            logits=host.logits,
            chosen=host.chosen,
            hidden=host.hidden,
            attention=host.attention,
            cross_attention=host.cross_attention,
        )
        decision = self.callback(event)
        stop = np.zeros(batch, dtype=bool)
        if decision is True:
            stop[:] = True
        elif isinstance(decision, np.ndarray):
            stop |= decision.astype(bool).reshape(batch)
        stop &= ~self._finished_host
        for index in np.flatnonzero(stop):
            self.stop_steps.setdefault(int(index), step_index)
        self._finished_host |= stop | np.isin(tokens, self.eos_token_ids)
        return torch.as_tensor(stop, device=device)

    def held_device_bytes(self) -> int:
        """Bytes of device tensors the observer holds between steps (not counting host summaries).

        Waiting steps count the model's tensors they keep alive (logits rows, hidden states, query rows).
        """
        from corevital.metrics.transfer import tensor_bytes

        waiting = [*self._unflushed, *([self._pending] if self._pending is not None else [])]
        held = 0
        for step in waiting:
            held += step.held_bytes() + tensor_bytes((step.attention, step.cross_attention))
        if self.tap is not None:
            held += self.tap.held_bytes()
        return held

    def _cache_keys(self) -> list[Tensor]:
        keys = append_only_keys(self._cache)
        if keys is None:
            raise RuntimeError("attention rows were deferred but the cache holds no keys")
        return keys

    def flush(self) -> None:
        """Reduce the waiting steps in one batch per kind and move them to the host in one copy."""
        if not self._unflushed:
            return
        waiting, self._unflushed, self._deferred_bytes = self._unflushed, [], 0
        with torch.no_grad():
            batches = [
                (
                    reduce_raw_steps(
                        group,
                        self.options,
                        sketch=self.sketch,
                        keys=None if group[0].decode_rows is None else self._cache_keys(),
                    ),
                    [(step.attention, step.cross_attention) for step in group],
                )
                for group in _uniform_runs(waiting)
            ]
        for batch, attention in to_host(batches):
            self.host_steps.extend(split_host_batch(batch, attention))

    def finalize_prompt(self) -> None:
        """Move prompt telemetry to the host (once, after generation)."""
        if self.prompt_device is None:
            return
        layers = list(self.tap.prompt_stats) if self.tap is not None else []
        if any(stats is None for stats in layers):
            layers = []
        shares = list(self.tap.prompt_span_share) if self.tap is not None else []
        if not shares or any(share is None for share in shares):
            shares = []
        self.prompt_host = to_host((self.prompt_device, layers, shares))

    def finalize_encoder(self) -> None:
        """Move the encoder summaries to the host (once, after generation)."""
        if self.encoder_hidden is None:
            return
        attention = list(self.tap.encoder_stats) if self.tap is not None else []
        mask = self.encoder_mask.bool() if self.encoder_mask is not None else None
        self.encoder_hidden_host, self.encoder_mask_host, self.encoder_attention_host = to_host(
            (self.encoder_hidden, mask, attention)
        )

    # --- installation ------------------------------------------------------------------------
    @contextmanager
    def installed(self) -> Iterator[tuple[LogitsProcessorList, StoppingCriteriaList]]:
        """Install every hook; yield the processor and criterion lists to pass to ``generate()``."""
        model = self.model
        with ExitStack() as stack:
            handles = [
                model.register_forward_pre_hook(self._pre_forward, with_kwargs=True),
                model.register_forward_hook(self._post_forward, with_kwargs=True),
            ]
            if self.caps.is_encoder_decoder:
                encoder = model.get_encoder()
                handles.append(encoder.register_forward_pre_hook(self._encoder_pre, with_kwargs=True))
                handles.append(encoder.register_forward_hook(self._encoder_post, with_kwargs=True))
            for handle in handles:
                stack.callback(handle.remove)
            if self.options.sampling_changes_distribution:
                stack.enter_context(last_logits_processor(model, _ScoreObserver(self)))
            if self.tap is not None:
                stack.enter_context(self.tap.installed(model))
            stack.callback(self._end_stream)  # a forward that raised leaves no hook behind
            yield LogitsProcessorList(), StoppingCriteriaList([_StepFinisher(self)])
        self.flush()


class _ScoreObserver(LogitsProcessor):
    """Placed after generate()'s own processors: sees the distribution actually sampled from."""

    def __init__(self, observer: StepObserver) -> None:
        self.observer = observer

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.observer._observe_scores(input_ids, scores)  # type: ignore[return-value]


class _StepFinisher(StoppingCriteria):
    def __init__(self, observer: StepObserver) -> None:
        self.observer = observer

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        return self.observer._finish_step(input_ids, scores, **kwargs)  # type: ignore[return-value]
