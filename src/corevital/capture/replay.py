"""Teacher-forced capture: the statistics of a known sequence from one forward pass.

Feeding prompt + generated tokens through the model once gives, at each generated position, the
same logits, hidden states and attention rows that incremental decoding produced for that token
(up to floating-point reordering). Used for beam search, whose hypotheses are reordered at every
step, so that the report follows exactly the beam that was returned.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from corevital.capture.assemble import reduce_rows, series
from corevital.capture.hf_compat import output_capture_hooks_as_found
from corevital.capture.instruments import attention_tap, sketch_matrix
from corevital.capture.loading import LoadedModel
from corevital.capture.options import CaptureOptions
from corevital.capture.prompt_pass import PromptDeviceStats
from corevital.capture.prompt_telemetry import prompt_telemetry_for
from corevital.capture.records import PromptRecord, SequenceCapture
from corevital.capture.registry import AttentionSite, SiteKind
from corevital.capture.tensor_parallel import combine, shard_group
from corevital.metrics.attention import summarize_attention
from corevital.metrics.hidden import summarize_hidden
from corevital.metrics.logits import summarize_logits, token_surprisal
from corevital.metrics.prompt import layer_transformations, prompt_surprisals
from corevital.metrics.transfer import to_host
from corevital.metrics.types import ChosenTokenStats


def _steps_first(stats: Any) -> Any:
    """[L, T, ...] arrays to [T, L, ...], the layout of a sequence's series."""
    if stats is None:
        return None
    values = {}
    for f in dataclasses.fields(stats):
        value = getattr(stats, f.name)
        values[f.name] = None if value is None else np.swapaxes(np.asarray(value), 0, 1)
    return type(stats)(**values)


def _prompt_stats(out: Any, kwargs: dict[str, Any], encoder_decoder: bool, length: int) -> PromptDeviceStats:
    if encoder_decoder:
        states = tuple(out.encoder_hidden_states)
        visible = torch.ones(states[0].shape[:2], dtype=torch.bool, device=states[0].device)
        return PromptDeviceStats(None, layer_transformations(states, visible))
    ids = kwargs["input_ids"][:, :length]
    visible = torch.ones_like(ids, dtype=torch.bool)
    states = tuple(state[:, :length] for state in out.hidden_states)  # the prompt's positions (views)
    surprisals = prompt_surprisals(out.logits[:, :length], ids, visible) if length > 1 else None
    return PromptDeviceStats(surprisals, layer_transformations(states, visible))


def replay_sequence(
    loaded: LoadedModel,
    prompt: PromptRecord,
    token_ids: list[int],
    options: CaptureOptions,
    sites: list[AttentionSite],
) -> SequenceCapture:
    model, caps = loaded.model, loaded.capabilities
    device = loaded.device
    steps = len(token_ids)
    prompt_ids = torch.tensor([prompt.token_ids], device=device)
    if caps.is_encoder_decoder:
        start = model.generation_config.decoder_start_token_id
        if start is None:
            start = model.config.decoder_start_token_id
        decoder = torch.tensor([[int(start), *token_ids[:-1]]], device=device)
        kwargs: dict[str, Any] = {"input_ids": prompt_ids, "decoder_input_ids": decoder}
        rows = slice(0, steps)
    else:
        full = torch.tensor([[*prompt.token_ids, *token_ids[:-1]]], device=device)
        kwargs = {"input_ids": full}
        first = len(prompt.token_ids) - 1
        rows = slice(first, first + steps)
    tap, _ = attention_tap(
        caps,
        sites,
        options,
        prompt_chunk_bytes=None,  # one sequence: each layer's prompt weights scored whole
        prompt_length=None if caps.is_encoder_decoder else len(prompt.token_ids),
    )
    if tap is not None:
        tap.observe_rows(rows)
    sketch = sketch_matrix(caps, options, device)
    with torch.no_grad(), output_capture_hooks_as_found(model):
        if tap is not None:
            with tap.installed(model):
                tap.begin_forward()
                out = model(**kwargs, output_hidden_states=True)
                self_rows = tap.collected(SiteKind.SELF)
                cross_rows = tap.collected(SiteKind.CROSS)
        else:
            out = model(**kwargs, output_hidden_states=True)
            self_rows = cross_rows = None
        logits = out.logits[0, rows]
        lstats = summarize_logits(
            logits, topk=options.topk, mass_k=options.topk_mass_k, entropy_mode=options.entropy_mode
        )
        chosen_ids = torch.tensor(token_ids, device=device)
        chosen = ChosenTokenStats(
            chosen_ids, token_surprisal(logits, lstats.log_normalizer, chosen_ids), None, None
        )
        states = out.decoder_hidden_states if caps.is_encoder_decoder else out.hidden_states
        hidden = summarize_hidden(
            torch.stack(states[1:])[:, 0, rows], clip_value=options.hidden_clip_value, sketch_matrix=sketch
        )
        attention = cross = None
        if self_rows is not None:
            attention = summarize_attention(self_rows[0][:, 0], _first(self_rows[1]), causal=True)
        if cross_rows is not None:
            cross = summarize_attention(cross_rows[0][:, 0], _first(cross_rows[1]), causal=False)
        encoder_hidden = None
        if caps.is_encoder_decoder and out.encoder_hidden_states is not None:
            encoder_hidden = summarize_hidden(
                torch.stack(out.encoder_hidden_states[1:])[:, 0], clip_value=options.hidden_clip_value
            )
        prompt_stats = (
            _prompt_stats(out, kwargs, caps.is_encoder_decoder, len(prompt.token_ids))
            if (tap is not None and options.observe_prompt)
            else None
        )
    prompt_layers = list(tap.prompt_stats) if tap is not None and prompt_stats is not None else []
    shards = shard_group(model)
    if shards is not None:  # a tensor-parallel model: each rank saw its own heads (:mod:`.tensor_parallel`)
        attention, cross = combine([attention, cross], shards)
        prompt_layers = combine(prompt_layers, shards)
    host = to_host((lstats, chosen, hidden, attention, cross, encoder_hidden, prompt_stats, prompt_layers))
    h_logits, h_chosen, h_hidden, h_attention, h_cross, h_encoder, h_prompt, h_layers = host
    capture = SequenceCapture(
        batch_index=0,
        batch_size=1,
        prompt=prompt,
        generated_token_ids=list(token_ids),
        generated_text="",
        finish_reason="length",
        logits=h_logits,
        chosen=h_chosen,
        hidden=_steps_first(h_hidden),
        attention=_steps_first(h_attention),
        cross_attention=_steps_first(h_cross),
    )
    if h_encoder is not None:
        every_token = np.ones(len(prompt.token_ids), dtype=bool)
        capture.encoder_hidden = reduce_rows(h_encoder, every_token, axis=1)
        if tap is not None and all(s is not None for s in tap.encoder_stats):
            per_layer = [reduce_rows(to_host(s), every_token, axis=1) for s in tap.encoder_stats]
            capture.encoder_attention = series(per_layer, 0, axis=0)
    if h_prompt is not None:
        capture.prompt_telemetry = prompt_telemetry_for(h_prompt, h_layers, 0, len(prompt.token_ids))
    return capture


def _first(visible: torch.Tensor | None) -> torch.Tensor | None:
    """The first sequence's key visibility [L or 1, R, K] (None: every key visible)."""
    return None if visible is None else visible[:, 0]
