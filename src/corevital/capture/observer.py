"""Observing ``generate()`` step by step without changing what it generates.

Installed by :meth:`StepObserver.installed` (a context manager that always removes everything):

- a wrapper around the top-level model's ``forward`` (an instance attribute for the time of one
  generation, not module hooks: a module with hooks takes PyTorch's slow call path, and where
  transformers compiles the model's ``__call__`` each hook is a compiled frame of its own, so the
  wrapper keeps a compiled step one frame and one CUDA graph). Before the forward pass it asks for
  hidden states and opens a new step (for the pass over the prompt it hooks the layers instead,
  which reduce their outputs as they appear: :mod:`.layer_stream`); after it, it takes the step's
  raw logits, hidden states and attention rows and copies the logits row and the per-layer rows
  side by side into the step's slot of its window's slab (of the prefill only the last position;
  with a cache that only appends, the attention query rows apart), a
  :class:`~corevital.capture.steps.RawStep`;
- the attention tap (full and on_risk capture) collects each layer's decode-step attention row;
- a logits processor placed last sees the distribution actually sampled from;
- a stopping criterion sees the chosen tokens and ends the step. The waiting steps are reduced with
  :mod:`corevital.metrics` together, in one batch, and moved to the host in one copy
  (:mod:`.steps`, :mod:`.attention_window`): every step when a live callback needs each step's
  values at once (it may then stop sequences), otherwise once per window of up to ``flush_every``
  steps, which costs one step's kernels per window instead of per step.

Encoder-decoder models: a hook on the encoder summarises its hidden states once per generation,
and the tap reduces encoder self-attention layer by layer as it runs.

The observer wires its parts together: the tap and sketch (:mod:`.instruments`), the window of
waiting steps (:class:`~.step_window.StepWindow`), the prompt pass and encoder summary
(:mod:`.prompt_pass`) and a live callback (:class:`~.live.LiveCallback`).
"""

from __future__ import annotations

import functools
import math
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from corevital.capture.attention_window import DecodeRows
from corevital.capture.hf_compat import (
    decoding_steps_compiled,
    last_logits_processor,
    output_capture_hooks_as_found,
)
from corevital.capture.instruments import attention_tap
from corevital.capture.layer_outputs import LayerOutputTap, outputs_as_returned
from corevital.capture.live import LiveCallback
from corevital.capture.mask_forms import UnreadableMask, prompt_padding, readable_mask
from corevital.capture.model_checks import logits_head, stream_sites
from corevital.capture.model_constants import ModelConstants
from corevital.capture.module_forward import forward_replaced
from corevital.capture.options import CaptureOptions
from corevital.capture.prompt_pass import EncoderSummary, PromptPass
from corevital.capture.records import CaptureWarning, ProgressCallback, StepCallback
from corevital.capture.registry import AttentionSite, SiteKind
from corevital.capture.side_stream import SideStream
from corevital.capture.step_window import StepWindow, held_bytes
from corevital.capture.steps import DeviceStep, RawStep
from corevital.capture.tensor_parallel import shard_group
from corevital.metrics.attention import summarize_attention
from corevital.metrics.types import AttentionStats


def _gathered(states: tuple[Any, ...], device: torch.device) -> tuple[Any, ...]:
    """Each layer's state on ``device``: a model split over devices (``device_map``) has its layers'
    outputs where each layer ran; they are reduced together, so they are gathered once per step.
    (What is not a tensor stays as it is, for :func:`_packed` to refuse.)"""
    if all(getattr(state, "device", device) == device for state in states):
        return states
    return tuple(state.to(device) if isinstance(state, Tensor) else state for state in states)


def _rows(rows: tuple[Any, ...]) -> Tensor | None:
    """``rows`` ([B, 1, d] tensors) copied side by side, ``[B, n, d]``, by one kernel; None where some
    row is not such a tensor or their widths differ."""
    try:
        packed = torch.cat(rows, dim=1)
    except (TypeError, RuntimeError):
        return None
    return packed if packed.dim() == 3 and packed.shape[1] == len(rows) else None


def _packed(
    states: tuple[Any, ...], mlp_inputs: tuple[Any, ...] | None, whole: bool
) -> tuple[Tensor | None, Tensor | None, bool]:
    """Where a step's rows do not go into its window's slab (a model split over devices, rows that
    are not one residual stream: :meth:`~.step_window.StepWindow.keep_rows`), every layer's state
    and pre-MLP residual at the pass's last position, copied side by side by one kernel:
    ``([B, 2L, d], None, True)``, the residuals after the states (a step's ``joined``
    rows, split once for its window), or ``([B, L, d] or None, [B, L, d] or None, False)``, a copy
    each, where they are not one residual stream. ``whole``: the states hold every position of a pass
    over several positions (the prefill's states as transformers returned them); the taps and the
    prompt's stream keep the last position only, and the residuals are always so.

    A step keeps these until its window is reduced. The model's own tensors, one allocation each,
    would stay allocated meanwhile, 64 per step in a 32-layer model and thousands per window: the
    device's caching allocator then serves every other allocation of the model more slowly, and a
    decoding step bound by the host pays for it on every operator (docs/performance.md, "Host work
    per generation and per step"). One copy per step frees them at once.

    The rows the taps kept at a pass over one position are what the modules got or returned,
    unchecked (one check here instead of one per layer): a kind of rows not all [B, 1, d] tensors
    of one width is left out (None).
    """
    if whole:
        states = tuple(state[:, -1:] for state in states)
    if mlp_inputs is None:
        return _rows(states), None, False
    packed = _rows(states + mlp_inputs)
    if packed is None:  # not one residual stream (or some row is not a state): each kind on its own
        return _rows(states), _rows(mlp_inputs), False
    return packed, None, True


def _positions(kwargs: dict[str, Any]) -> int | None:
    """How many positions of each sequence a forward pass computes (its ``input_ids`` or
    ``inputs_embeds``), or None where its keywords do not say."""
    ids = kwargs.get("input_ids")
    if ids is None:
        ids = kwargs.get("inputs_embeds")
    shape: tuple[int, ...] = getattr(ids, "shape", ())
    return shape[1] if len(shape) >= 2 else None


def _empty(cache: Any) -> bool:
    """Whether a generation's cache holds no positions yet (None: generate() makes a new one).

    A static cache's length is a device tensor; it is read once per generation, at the prefill.
    """
    length = getattr(cache, "get_seq_length", None)
    return cache is None or not callable(length) or bool(length() == 0)


def _last_row(collected: tuple[Tensor, Tensor | None] | None, causal: bool) -> AttentionStats | None:
    if collected is None:
        return None
    weights, visible = collected  # [L, B, 1, H, K], [L, B, 1, K] (None: every key visible)
    return summarize_attention(weights[:, :, 0], None if visible is None else visible[:, :, 0], causal=causal)


def free_memory(devices: tuple[torch.device, ...]) -> int | None:
    """Bytes each of ``devices`` can still give this process, the least of them, when all are CUDA
    devices (the driver's free memory and what torch's allocator holds unused); None otherwise (a
    model on the CPU, or split over a GPU and the CPU). Driver queries, no synchronisation."""
    if not devices or any(d.type != "cuda" for d in devices) or not torch.cuda.is_available():
        return None
    free = []
    for device in devices:
        driver_free, _total = torch.cuda.mem_get_info(device)
        stats = torch.cuda.memory_stats(device)  # one snapshot of the allocator for both figures
        free.append(
            driver_free
            + stats.get("reserved_bytes.all.current", 0)
            - stats.get("allocated_bytes.all.current", 0)
        )
    return int(min(free))


class StepObserver:
    """Per-generation observer; create one per ``generate()`` call."""

    def __init__(
        self,
        constants: ModelConstants,
        sites: list[AttentionSite],
        options: CaptureOptions,
        callback: StepCallback | None = None,
        eos_token_ids: tuple[int, ...] = (),
        batch_offset: int = 0,
        started: float | None = None,
        progress: ProgressCallback | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        """``constants``: the loaded model's (its model, capabilities, weight bytes, sketch matrix
        and pre-MLP norms, made once per model). ``max_new_tokens``: the generation's last possible
        step, where the observer prepares its end (:meth:`prepare_finish`); None when not known."""
        self.constants = constants
        self.model = model = constants.model
        self.caps = caps = constants.caps
        size = constants.weight_bytes
        free = free_memory(constants.devices)
        self.options = options = replace(options, tuning=options.tuning.resolved(size, free))
        chunk = options.tuning.prompt_chunk(size)
        self.tap, self.warnings = attention_tap(
            caps, sites, options, prompt_chunk_bytes=chunk, context_span=options.context_span
        )
        sketch = constants.sketch(options, next(model.parameters()).device)
        self._split = len(constants.devices) > 1  # layers on several devices (``device_map``)
        self.shards = shard_group(model)  # a tensor-parallel model's ranks (:mod:`.tensor_parallel`)
        self.window = StepWindow(options, sketch, options.tuning.deferred_budget(size), self.shards)
        decoder_only = not caps.is_encoder_decoder
        head = logits_head(model) if options.observe_prompt and decoder_only else None
        stream = stream_sites(model) if decoder_only else None
        self.prompt = PromptPass(head, stream, chunk)
        # Where the prompt telemetry is computed (:mod:`.side_stream`; None: the model's stream),
        # settled at the prompt pass with the reductions (``Tuning.side_stream``).
        self.side: SideStream | None = None
        self.mlp_tap = constants.mlp_tap(chunk)  # the residual before each MLP
        # each layer's hidden state, without transformers' output-capturing hooks (None: the model's
        # sites were not verified, or a hook may change their outputs; its forwards are then asked
        # for ``output_hidden_states``)
        tappable = stream is not None and outputs_as_returned(stream)
        self.layer_outputs = LayerOutputTap(stream) if stream is not None and tappable else None
        self.encoder = None
        if caps.is_encoder_decoder:
            telemetry = self.prompt if options.observe_prompt else None
            self.encoder = EncoderSummary(caps.num_encoder_layers or 0, options.hidden_clip_value, telemetry)
        self.live = None if callback is None else LiveCallback(callback, eos_token_ids, batch_offset)
        self._pending: RawStep | None = None  # the step whose forward pass ran, its token not chosen yet
        self._scores: Tensor | None = None  # that step's processed scores, when they differ from the logits
        self._no_stop_tensor: Tensor | None = None
        # Compiled decoding steps (:meth:`_compiled_forward_end`): the packed outputs of the last
        # one and where each part lies in them; the keys counted on the host, the prompt's padding.
        self._compiled_packed: tuple[Tensor, ...] | None = None
        self._compiled_steps = 0  # compiled decoding steps taken in this generation
        self._compiled_layout: tuple[tuple[str, int, int, tuple[int, ...]], ...] = ()
        self._compiled_scale = 1.0
        self._compiled_attention = False
        self._compiled_attention_warned = False
        self._cache: Any = None
        self._key_length = 0
        self._padding: Tensor | None = None
        self._hidden_missing_warned = False
        # whether the model's forward returns hidden states unless told not to (its config says so)
        self._hidden_by_default = bool(getattr(getattr(model, "config", None), "output_hidden_states", False))
        self._forwards = 0
        self._pass_positions: int | None = None  # positions of each sequence the latest eager pass computed
        self._last_step_end = time.perf_counter()
        self.step_ms: list[float] = []
        # time.perf_counter() when the batch started (tokenizing) and at the end of each step: the
        # host's clock where it already waits for the step (generate() reads the step's tokens).
        self.started = self._last_step_end if started is None else started
        self.max_new_tokens = max_new_tokens
        self._batch = 0  # the batch size generate() decodes (0 until its first step)
        self._finish_results: tuple[Any, Any] | None = None  # :meth:`prepare_finish`'s device results
        self.step_ends: list[float] = []
        self.progress = progress
        self.batch_offset = batch_offset

    @property
    def host_steps(self) -> list[DeviceStep]:
        return self.window.host_steps

    @property
    def stop_steps(self) -> dict[int, int]:
        """Batch index -> the step at which the live callback stopped that sequence."""
        return {} if self.live is None else self.live.stop_steps

    # --- hooks -----------------------------------------------------------------------------
    def _reads_prompt(self) -> bool:
        return self._forwards == 0 and self.options.observe_prompt and not self.caps.is_encoder_decoder

    def _pre_forward(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # Traced into the compiled step's graph when transformers compiles the model's __call__, run
        # as it is otherwise; both open the list the compiled attention function fills
        # (:meth:`_compiled_forward_end` takes it).
        if self.tap is not None:
            self.tap.compiled_rows = [] if self._compiled_attention else None
        if torch.compiler.is_compiling():
            if self.layer_outputs is not None:
                self.layer_outputs.open_compiled()
            if self.mlp_tap is not None:
                self.mlp_tap.keep_none()
            # the caller's True is kept (its generate() output holds every step's states)
            asked = kwargs.get("output_hidden_states") is True
            kwargs["output_hidden_states"] = asked or self.layer_outputs is None
            return args, kwargs
        if self._forwards == 0:
            self._note_prefill(kwargs)
        elif self.side is not None:
            self.side.release_done()  # the prompt pass's tensors, once the side stream has read them
        reads_prompt = self._reads_prompt()
        if reads_prompt and not readable_mask(kwargs.get("attention_mask")):
            self.warnings.append(
                CaptureWarning(
                    "PROMPT_MASK_UNREADABLE",
                    f"the model got its attention mask as a {type(kwargs.get('attention_mask')).__name__} "
                    "(flex attention), whose values cannot be read: no prompt telemetry",
                )
            )
        streams = self._forwards == 0 and self.prompt.start_stream(kwargs, reads_prompt)
        # prompt telemetry not streamed reads every position's states, which only transformers returns
        tapped = self.layer_outputs is not None and not streams and not reads_prompt
        positions = self._pass_positions = _positions(kwargs)
        if self.layer_outputs is not None:
            self.layer_outputs.begin_pass(positions, keep=tapped)
        if self.mlp_tap is not None:
            self.mlp_tap.begin_pass(positions)
        # What the caller's generate() gave: True (its output keeps the states) is kept.
        given = kwargs.get("output_hidden_states")
        wanted = given is True or (not streams and not tapped)
        # Not asked where the forward would not return them anyway: a keyword the model does not name
        # travels down through every layer's and attention's ``**kwargs`` (a dictionary merged and
        # its name matched against each callee's parameters), some 0.3M host instructions a step
        # on Llama-3-8B's layout (docs/performance.md, "Host instructions per decoding step").
        if wanted or self._hidden_by_default or given is not None:
            kwargs["output_hidden_states"] = wanted
        if reads_prompt and self.prompt.head is None:
            kwargs["logits_to_keep"] = 0  # every prompt position's logits, for prompt surprisals
        if self.tap is not None:
            self.tap.begin_forward()
            cache = kwargs.get("cache", kwargs.get("past_key_values"))  # the name changed in transformers 5
            self.tap.defer_decode = positions == 1 and self._may_defer_attention(cache)
            self.tap.prefill_from_start = self._forwards == 0 and _empty(cache)
        return args, kwargs

    def _note_prefill(self, kwargs: dict[str, Any]) -> None:
        """The cache, the keys it holds after the prefill and the prompt's padding, for compiled steps.

        Compiled decoding steps cannot tell the host how many keys they saw (that would wait for the
        device): the host counts them, one per compiled step after the prefill.
        """
        ids = kwargs.get("input_ids")
        ids = kwargs.get("inputs_embeds") if ids is None else ids
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        self._cache = cache
        self._settle_compiled_reductions(cache)
        if ids is None or not _empty(cache) or self.caps.is_encoder_decoder:
            return  # compiled steps keep no attention rows: their keys' positions are not known here
        batch, self._key_length = int(ids.shape[0]), int(ids.shape[1])
        try:
            self._padding = prompt_padding(kwargs.get("attention_mask"), batch, self._key_length)
        except UnreadableMask:
            return
        self._compiled_attention = True

    def _settle_compiled_reductions(self, cache: Any) -> None:
        """Whether this generation's reductions run compiled (``Tuning.compiled_reductions``; None:
        where generate() compiles its decoding steps over ``cache``) and its prompt telemetry on a
        stream of its own (``Tuning.side_stream``; None: where they run as written, on CUDA devices),
        settled at its prompt pass."""
        tuning = self.options.tuning
        compiled = tuning.compiled_reductions
        if compiled is None:
            compiled = decoding_steps_compiled(self.model, cache)
        self.options = replace(self.options, tuning=replace(tuning, compiled_reductions=compiled))
        self.window.options = self.options
        if self.tap is not None and self.tap.prompt is not None:
            self.tap.prompt.compiled = compiled
        beside = not compiled if tuning.side_stream is None else tuning.side_stream
        cuda = any(device.type == "cuda" for device in self.constants.devices)
        self.side = SideStream() if beside and cuda and self.options.observe_prompt else None
        self.prompt.side = self.side
        if self.tap is not None:
            self.tap.side = self.side

    def _join_side(self) -> None:
        if self.side is not None:
            self.side.join()

    def _may_defer_attention(self, cache: Any) -> bool:
        """Whether this forward's decode-step attention rows may wait for the window's reduction.

        Only after the prefill, without a live callback, for a decoder-only model whose cache only
        appends keys (:mod:`.attention_window`); the tap still checks each layer's call.
        """
        if self.live is not None or self.caps.is_encoder_decoder or self.window.steps_cap <= 1:
            return False
        if self._forwards == 0 or cache is None:
            return False
        return self.window.cache_only_appends(cache)

    def _post_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if torch.compiler.is_compiling():
            self._compiled_forward_end(output)
            return
        if torch.is_grad_enabled():  # a forward called outside generate()'s no_grad
            with torch.no_grad():
                self._keep_step(kwargs, output)
        else:
            self._keep_step(kwargs, output)

    def _keep_step(self, kwargs: dict[str, Any], output: Any) -> None:
        """What an uncompiled forward leaves for its step: its logits row, one copy of every layer's
        state (and pre-MLP residual) and (full capture) its attention, reduced with the step's
        window later.

        Runs on the host between the forward and generate()'s choice of the token, once a step: the
        common case (a decoding step with the layers tapped) takes the fewest calls.
        """
        logits = output.logits
        several = logits.shape[1] > 1  # a pass over several positions (the prefill)
        streamed = self.prompt.end_stream()
        tapped = None if self.layer_outputs is None else self.layer_outputs.take()
        reads_prompt = self._reads_prompt()
        layers = self.caps.num_layers
        states = None
        if tapped is None or reads_prompt:  # the states transformers returned, where asked for them
            states = output.get("decoder_hidden_states" if self.caps.is_encoder_decoder else "hidden_states")
        layer_states = None
        whole = False  # the states hold every position of the pass (those transformers returned)
        if streamed is not None and len(streamed.last_positions) == layers:
            layer_states = streamed.last_positions
        elif tapped is not None and len(tapped) == layers:
            layer_states = tapped
        elif states is not None and len(states) == layers + 1:
            layer_states, whole = states[1:], self._pass_positions != 1
        else:
            self._warn_hidden_missing()
        mlp_inputs = None if self.mlp_tap is None else self.mlp_tap.take()
        if layer_states is not None and self._split:
            layer_states = _gathered(layer_states, logits.device)
            if mlp_inputs is not None:
                mlp_inputs = _gathered(mlp_inputs, logits.device)
        attention = cross = None
        decode_rows = None
        if self.tap is not None:
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            decode_rows = self.tap.take_decode_rows(self.window.appended_keys(cache))
            if decode_rows is None:
                attention = _last_row(self.tap.collected(SiteKind.SELF), causal=True)
                if self.caps.is_encoder_decoder:
                    cross = _last_row(self.tap.collected(SiteKind.CROSS), causal=False)
            self.tap.release()
        if reads_prompt:
            self.prompt.observe(kwargs, logits, streamed, states)
        # A step keeps these until its window is reduced: its logits row and its layers' rows copied
        # side by side into its slot of the window's slab, or (where they are not one residual
        # stream) its logits by reference (of a pass over several positions, the prefill, a copy of
        # the last position) and its layers' rows copied.
        self._forwards += 1
        logits_row = logits[:, -1:] if several else logits
        if layer_states is not None and not self._split:
            rows = tuple(state[:, -1:] for state in layer_states) if whole else layer_states
            kept = self.window.keep_rows(logits_row, rows, mlp_inputs, self._steps_left)
            if kept is not None:
                slab, slot = kept
                joined = mlp_inputs is not None
                self._pending = RawStep(
                    None, None, attention, cross, decode_rows, joined=joined, slab=slab, slot=slot
                )
                return
        packed = mids = None
        joined = False
        if layer_states is not None:
            packed, mids, joined = _packed(layer_states, mlp_inputs, whole)
            if packed is None:
                self._warn_hidden_missing()
        logits_row = logits_row.clone() if several else logits_row
        self._pending = RawStep(
            logits_row, packed, attention, cross, decode_rows, mlp_inputs=mids, joined=joined
        )

    def _steps_left(self) -> int | None:
        """Steps the generation may still take, the one whose forward just ran included (None: not
        known); one where a live callback reads every step as it ends."""
        if self.live is not None:
            return 1
        return None if self.max_new_tokens is None else self.max_new_tokens - len(self.step_ends)

    def _warn_hidden_missing(self) -> None:
        if not self._hidden_missing_warned:
            self._hidden_missing_warned = True
            self.warnings.append(
                CaptureWarning("HIDDEN_STATES_NOT_AVAILABLE", "the model returned no per-layer hidden states")
            )

    def _compiled_forward_end(self, output: Any) -> None:
        """The end of a compiled decoding step, traced into its graph: what the step keeps, packed.

        The logits row, every layer's hidden state and (full capture) every layer's query row are
        written into one tensor per dtype, ``[B, n]``: outputs of the graph, which a CUDA-graph
        replay of the next step overwrites, so :meth:`_take_compiled_step` copies them (one copy
        each) before that. Nothing here reads a tensor's values or depends on the step's number, so
        the graph is the same for every step and every generation.
        """
        layers = self.caps.num_layers
        if self.layer_outputs is not None:
            states = self.layer_outputs.take_compiled()  # states 1..L
        else:
            key = "decoder_hidden_states" if self.caps.is_encoder_decoder else "hidden_states"
            returned = output.get(key)
            states = None if returned is None or len(returned) != layers + 1 else tuple(returned[1:])
        rows = None if self.tap is None else self.tap.compiled_rows
        # the logits [B, 1, V], as eager steps keep them
        parts: list[tuple[str, Tensor]] = [("logits", output.logits[:, -1:, :])]
        if states is not None and len(states) == layers:
            parts.append(("states", torch.cat(states, dim=1)))  # [B, L, d]
        if rows is not None and len(rows) == self.caps.num_layers:
            parts.append(("rows", torch.cat(rows, dim=2).transpose(1, 2)))  # [B, L, Hq, D]
        dtypes = list(dict.fromkeys(tensor.dtype for _, tensor in parts))
        packed, layout = [], []
        for group, dtype in enumerate(dtypes):
            members = [(name, tensor) for name, tensor in parts if tensor.dtype == dtype]
            offset = 0
            for name, tensor in members:
                layout.append((name, group, offset, tuple(tensor.shape)))
                offset += tensor[0].numel()
            packed.append(torch.cat([tensor.flatten(1) for _, tensor in members], dim=1))
        self._compiled_packed = tuple(packed)
        self._compiled_layout = tuple(layout)
        self._compiled_scale = 1.0 if self.tap is None else self.tap.compiled_scale
        if self.tap is not None:
            self.tap.compiled_rows = None

    def _take_compiled_step(self) -> RawStep | None:
        """The compiled step's packed outputs copied out of the graph's memory, as a :class:`RawStep`."""
        packed = self._compiled_packed
        if packed is None:
            return None
        self._compiled_packed = None
        self._compiled_steps += 1
        self._forwards += 1
        self._key_length += 1
        copies = [tensor.clone() for tensor in packed]
        found: dict[str, Tensor] = {}
        for name, group, offset, shape in self._compiled_layout:
            width = math.prod(shape[1:])
            found[name] = copies[group][:, offset : offset + width].view(shape)
        rows = None
        if "rows" in found and self.window.follow_static_cache(self._cache):
            rows = DecodeRows(found["rows"], self._key_length, self._padding, self._compiled_scale)
        elif self.tap is not None and not self._compiled_attention_warned:
            self._compiled_attention_warned = True
            self.warnings.append(
                CaptureWarning(
                    "ATTENTION_NOT_AVAILABLE",
                    "attention inside a compiled decoding step is observed on the fast attention path over "
                    "a static cache of full-attention layers only: the compiled steps here have none",
                )
            )
        return RawStep(found["logits"], found.get("states"), None, None, rows)

    # --- generate() plug-ins -----------------------------------------------------------------
    def _observe_scores(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.options.sampling_changes_distribution:
            self._scores = scores
        return scores

    def _finish_step(self, input_ids: Tensor, scores: Any, **kwargs: Any) -> Tensor:
        now = time.perf_counter()
        self.step_ms.append((now - self._last_step_end) * 1000.0)
        self.step_ends.append(now)
        self._last_step_end = now
        pending = self._pending if self._compiled_packed is None else self._take_compiled_step()
        batch = self._batch = input_ids.shape[0]
        if pending is None:  # a step without a forward pass we saw: nothing to record
            return self._no_stop(batch, input_ids.device)
        self._pending = None
        # input_ids is a new tensor every step, never written to (generate() concatenates); it may
        # be on another device than the model's (the window moves the tokens it reads from it)
        pending.ids = input_ids
        pending.scores, self._scores = self._scores, None
        full = self.window.add(pending)
        if self.live is not None:  # a live callback reads each step at once: a window of one
            self.window.flush()
            step = len(self.window.host_steps) - 1
            answer = self.live.ask(self.window.host_steps[-1], step, batch, input_ids.device)
            self._report_progress(batch)
            return answer
        self.window.collect()  # a window whose copy the previous step started
        if len(self.step_ends) == self.max_new_tokens:
            self.prepare_finish()  # the last step: its window is moved with the prompt's results
        elif full:
            self.window.flush_later()
        self._report_progress(batch)
        return self._no_stop(batch, input_ids.device)

    def _report_progress(self, batch: int) -> None:
        if self.progress is not None:
            self.progress(self.batch_offset, batch, len(self.step_ends), self.window.host_steps)

    def _no_stop(self, batch: int, device: torch.device) -> Tensor:
        """All-False [B] answer of the stopping criterion, made once (generate() only reads it)."""
        if self._no_stop_tensor is None or self._no_stop_tensor.shape[0] != batch:
            self._no_stop_tensor = torch.zeros(batch, dtype=torch.bool, device=device)
        return self._no_stop_tensor

    def held_device_bytes(self) -> int:
        """Bytes of device tensors the observer holds between steps (not counting host summaries).

        Waiting steps count the model's tensors they keep alive (logits rows, hidden states, query rows).
        """
        held = self.window.held_bytes()
        if self._pending is not None:
            held += held_bytes(self._pending)
        if self.tap is not None:
            held += self.tap.held_bytes()
        return held

    def prepare_finish(self) -> None:
        """Launch what :meth:`finish` moves to the host: the prompt telemetry, the encoder summary
        and the reduction of the waiting steps, without waiting for the device.

        Called during the generation's last step (``max_new_tokens`` reached), while the device still
        runs that step's forward pass and before generate() waits for it, so the host's share of
        the end of a generation overlaps the device's. Steps after it (a longer generation than
        announced) are reduced by :meth:`finish` as usual.
        """
        if self._finish_results is None:
            if self.side is not None:  # the prompt telemetry computed beside the model's stream
                self.side.join()
            prompt = self.prompt.device_results(self.tap, self.shards)
            encoder = None if self.encoder is None else self.encoder.device_results(self.tap)
            self._finish_results = (prompt, encoder)
        self.window.reduce()

    def finish(self) -> None:
        """After generation: reduce the last waiting steps and move them, the prompt telemetry and the
        encoder summary to the host in one copy (see :class:`~.step_window.StepWindow`)."""
        self.prepare_finish()
        assert self._finish_results is not None
        prompt, encoder = self.window.flush(along=self._finish_results)
        self._finish_results = None
        self.prompt.host = prompt
        if self.encoder is not None:
            self.encoder.take_host(encoder)
        if self._batch:  # the progress callback's last call: every step on the host
            self._report_progress(self._batch)

    # --- installation ------------------------------------------------------------------------
    def _observed_forward(self, forward: Any) -> Any:
        """``forward`` between :meth:`_pre_forward` and :meth:`_post_forward`, with its signature
        (generate() reads the forward's parameters)."""
        pre, post = self._pre_forward, self._post_forward

        @functools.wraps(forward)
        def observed(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = pre(args, kwargs)
            output = forward(*args, **kwargs)
            post(args, kwargs, output)
            return output

        return observed

    @contextmanager
    def installed(self) -> Iterator[tuple[LogitsProcessorList, StoppingCriteriaList]]:
        """Install every hook; yield the processor and criterion lists to pass to ``generate()``."""
        model = self.model
        with ExitStack() as stack:
            # The hooks transformers returns hidden states through, where the model's layers are not
            # tapped: installed for this generation and removed after it where the model had none,
            # unless its steps were compiled with them (a pass that reads the whole prompt's states
            # asks for them even where the layers are tapped).
            stack.enter_context(
                output_capture_hooks_as_found(
                    model, install=self.layer_outputs is None, keep=lambda: self._compiled_steps > 0
                )
            )
            # written to the instance dictionary directly (Module.__setattr__ checks every assignment
            # against parameters, buffers and submodules); accelerate's device hooks live there too
            # Generations of one model are observed one at a time (:func:`generation_lock`), so
            # wrappers are removed in the order they were installed.
            stack.enter_context(forward_replaced(model, self._observed_forward(model.forward)))
            handles: list[Any] = []
            if self.encoder is not None:
                encoder = model.get_encoder()
                handles.append(encoder.register_forward_pre_hook(self.encoder.pre_forward, with_kwargs=True))
                handles.append(encoder.register_forward_hook(self.encoder.post_forward, with_kwargs=True))
            for handle in handles:
                stack.callback(handle.remove)
            if self.options.sampling_changes_distribution:
                stack.enter_context(last_logits_processor(model, _ScoreObserver(self)))
            if self.tap is not None:
                stack.enter_context(self.tap.installed(model, self.constants.configs))
            if self.mlp_tap is not None:
                stack.enter_context(self.mlp_tap.installed())
            if self.layer_outputs is not None:
                stack.enter_context(self.layer_outputs.installed())
            stack.callback(self.prompt.end_stream)  # a forward that raised leaves no hook behind
            stack.callback(self._join_side)  # a generation that raised leaves no side work unjoined
            yield LogitsProcessorList(), StoppingCriteriaList([_StepFinisher(self)])
        self.finish()


_GENERATION_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def generation_lock(model: Any) -> threading.RLock:
    """The lock that makes observed generations of ``model`` run one at a time.

    Observing installs per-model state for one generation (the wrapped forward and norms, the
    attention function, the layer stream): two generations of one model observed at once from two
    threads would see each other's steps and could end in either order. Re-entrant: a generation
    observed from inside another on the same thread nests.
    """
    with _LOCKS_LOCK:
        lock = _GENERATION_LOCKS.get(model)
        if lock is None:
            lock = _GENERATION_LOCKS[model] = threading.RLock()
        return lock


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
