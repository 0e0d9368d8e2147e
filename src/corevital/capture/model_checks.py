"""Checks made once per model, on one three-token forward pass, when the model is loaded.

- whether every layer's attention can be observed (the tap installed, every self-attention layer
  reporting) and whether the hidden states of every layer come back (:func:`probe_capabilities`);
- whether the output head applied to the last hidden states gives the model's logits
  (:mod:`.output_head`: prompt surprisals without every position's logits);
- whether the pass over a prompt can be reduced layer by layer, and from which modules
  (:mod:`.layer_stream`: no layer output kept until the prefill ends).

All of them read the same small pass, so it runs once, with the tap and the stream's hooks both
installed, and the results are kept per model for as long as the model lives. Where the tap makes
the pass fail (attention that cannot be observed), the head and the stream are checked on a second
pass without it.
"""

from __future__ import annotations

import dataclasses
import weakref
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from corevital.capture.attention_tap import AttentionTap
from corevital.capture.capabilities import ModelCapabilities, capabilities_from_config
from corevital.capture.hf_compat import output_capture_hooks_as_found
from corevital.capture.layer_stream import LayerStream, StreamSites, candidate_sites, verified_sites
from corevital.capture.mlp_inputs import pre_mlp_norms
from corevital.capture.module_forward import CallForms
from corevital.capture.output_head import head_reproduces_logits, output_head
from corevital.capture.registry import SiteKind, find_attention_sites


@dataclass(frozen=True)
class ModelChecks:
    head: nn.Module | None  # the output head, when it reproduces the model's logits
    stream: StreamSites | None  # where a prompt pass can be streamed from, when it can
    attention: bool  # every self-attention layer observed through the tap
    hidden: bool  # the pass returned every layer's hidden states
    detail: str  # what the attention check found, in words
    # whether the pass called every pre-MLP norm (:func:`~.mlp_inputs.pre_mlp_norms`) with one
    # positional argument (:class:`~.module_forward.CallForms`)
    mlp_positional: bool = False


_CHECKS: weakref.WeakKeyDictionary[nn.Module, ModelChecks] = weakref.WeakKeyDictionary()


def probe_capabilities(model: Any, caps: ModelCapabilities) -> ModelCapabilities:
    """``caps`` with what the model's checks found: attention and hidden states observable or not."""
    checks = model_checks(model, caps)
    return caps.with_probe(attention=checks.attention, hidden=checks.hidden, detail=checks.detail)


def logits_head(model: Any) -> nn.Module | None:
    """The output head when it turns the last hidden states into the model's logits; else None."""
    return model_checks(model).head


def stream_sites(model: Any) -> StreamSites | None:
    """The verified sites of ``model``'s hidden states, or None where a pass cannot be streamed."""
    return model_checks(model).stream


def model_checks(model: Any, caps: ModelCapabilities | None = None) -> ModelChecks:
    """The checks of ``model`` (run on first use; ``caps`` from its config when not given)."""
    if model not in _CHECKS:
        if caps is None:
            caps = capabilities_from_config(model.config, model_class=type(model).__name__)
        _CHECKS[model] = _check(model, caps)
    return _CHECKS[model]


@torch.no_grad()
def _check(model: Any, caps: ModelCapabilities) -> ModelChecks:
    sites = find_attention_sites(model, caps)
    self_layers = {s.layer for s in sites if s.kind is SiteKind.SELF}
    if len(self_layers) != caps.num_layers:
        detail = f"found self-attention in {len(self_layers)} of {caps.num_layers} layers"
        return _checked_pass(model, caps, None, attention=False, hidden=True, detail=detail)
    tap = AttentionTap(sites, num_layers=caps.num_layers, num_encoder_layers=caps.num_encoder_layers or 0)
    try:
        return _checked_pass(model, caps, tap)
    except Exception as exc:  # noqa: BLE001 - any failure means "not observable", said in the detail
        detail = f"probe failed: {type(exc).__name__}: {exc}"
    return _checked_pass(model, caps, None, attention=False, hidden=False, detail=detail)


def _checked_pass(
    model: Any,
    caps: ModelCapabilities,
    tap: AttentionTap | None,
    *,
    attention: bool = False,
    hidden: bool = False,
    detail: str = "",
) -> ModelChecks:
    """The three-token pass, with ``tap`` installed when given (its failure is raised).

    Without a tap, the attention verdict is the one given, and a failing pass finds nothing.
    """
    sites = candidate_sites(model)
    stream = None if sites is None else LayerStream(sites, keep_all=True)
    final = () if sites is None or sites.final is None else (sites.final,)
    entry_forms = CallForms(() if sites is None else (*sites.entries, *final))
    norms = None if caps.is_encoder_decoder else pre_mlp_norms(model, caps.num_layers)
    mlp_forms = CallForms(norms or ())
    vocab = max(caps.vocab_size, 1)
    ids = torch.tensor([[token % vocab for token in (1, 2, 3)]], device=next(model.parameters()).device)
    kwargs: dict[str, Any] = {"input_ids": ids, "output_hidden_states": True, "use_cache": False}
    if caps.is_encoder_decoder:
        kwargs["decoder_input_ids"] = ids[:, :2]
    try:
        with ExitStack() as stack:
            stack.enter_context(output_capture_hooks_as_found(model))
            if tap is not None:
                stack.enter_context(tap.installed(model))
                tap.begin_forward()
            if stream is not None:
                stack.enter_context(stream.installed())
            stack.enter_context(entry_forms.installed())
            stack.enter_context(mlp_forms.installed())
            out = model(**kwargs)
            seen = 0 if tap is None else tap.layers_seen(SiteKind.SELF)
    except Exception:
        if tap is not None:
            raise
        return ModelChecks(head=None, stream=None, attention=attention, hidden=hidden, detail=detail)
    states = out.get("decoder_hidden_states") if caps.is_encoder_decoder else out.get("hidden_states")
    if tap is not None:
        hidden = states is not None and len(states) == caps.num_layers + 1
        layers = caps.num_layers
        attention = seen == layers
        detail = "all layers observed" if attention else f"attention observed in {seen} of {layers} layers"
    head, verified = None, None
    logits = out.get("logits")
    if not caps.is_encoder_decoder and states and logits is not None:
        head = output_head(model)
        if head is not None and not head_reproduces_logits(head, states[-1], logits):
            head = None
        verified = None if stream is None else verified_sites(stream, states)
        if verified is not None and verified.entries:
            verified = dataclasses.replace(verified, positional=entry_forms.one_argument)
    return ModelChecks(
        head=head,
        stream=verified,
        attention=attention,
        hidden=hidden,
        detail=detail,
        mlp_positional=mlp_forms.one_argument,
    )
