"""Known faults injected into a loaded model, to check that CoreVital notices them.

Each injector is a context manager that makes one layer of a loaded Hugging Face model misbehave
for the duration of a ``with`` block and puts the model back exactly as it was on exit, also when
the body raises. Nothing is copied or re-loaded: the fault is a few PyTorch hooks on the layer's
modules, removed on exit (with any attribute they changed restored), so the weights are never
touched.

::

    from corevital.testing import inject_nan

    with inject_nan(loaded.model, layer=3, from_step=2) as fault:
        run = capture_prompts(loaded, ["The quick brown fox"], settings)
    assert run.sequences[0].hidden.has_nan[2, 3]  # CoreVital saw it
    assert fault.fired > 0  # and the fault did happen

The faults:

- :func:`inject_nan`: every element of layer ``k``'s output hidden states becomes NaN (or only
  the last position's, ``positions="last"``).
- :func:`inject_scale`: layer ``k``'s output hidden states are multiplied by ``factor``
  ("exploding activations").

  Both replace the block's output in a forward hook registered *ahead of* Hugging Face's own
  output-recording hook, so the ``hidden_states`` the model returns (and CoreVital reads) are the
  faulted ones, and every later layer computes on them.
- :func:`inject_scale` with ``module="q_proj"``: the output of a sub-module of layer ``k`` (found by
  its attribute name, e.g. the query projection) is multiplied instead: ×100 on ``q_proj``
  multiplies ``q·kᵀ`` by 100, a sharpened softmax in every head of that layer.
- :func:`inject_zero_norm`: the RMSNorm/LayerNorm before layer ``k``'s attention
  (``which="attention"``: ``input_layernorm``, ``ln_1``, ...) or before its MLP (``which="mlp"``:
  ``post_attention_layernorm``, ``ln_2``, ...) behaves as if its weight were zero: its output
  becomes its bias (zero for RMSNorm), so that sub-layer adds (almost) nothing to the residual
  stream. A forward hook replaces the norm's output; the weight itself is not changed.
- :func:`inject_attention_collapse`: every head of layer ``k``'s self-attention (not the
  cross-attention of an encoder-decoder) puts all its weight on one key, the first key each query
  can see (the "attention sink", where real collapses usually land). A forward pre-hook on the
  layer's attention module, the one CoreVital's registry finds (``GPT2Attention``,
  ``LlamaAttention``, ``MistralAttention``, ``Qwen2Attention``, ``Phi3Attention``,
  ``MixtralAttention``, ``T5Attention``, ``BartAttention``), replaces the additive attention mask
  the module is called with (``attention_mask=``; T5: ``mask=``) by one that adds ``1e4`` to that
  key's entry: every key stays as visible as before, and the model's own softmax comes out
  one-hot. The change goes through the model's own attention call, so CoreVital, which reads the
  weights its attention function returns, sees a real collapse. Unlike sharpening the softmax
  (which cannot separate keys with equal scores, e.g. a repeated token in T5, which has no
  absolute positions), it collapses every head at every step, in any dtype. An encoder called
  without a mask (no padding) gets an all-visible one. Where the module receives no 4-D mask
  (SDPA's causal shortcut, without CoreVital's tap), the fault falls back to dividing the softmax
  temperature by ``1e4``: the module's ``scaling`` attribute (the factor ``q·kᵀ`` is multiplied
  by, passed as ``scaling=`` to every attention implementation) is multiplied for the duration of
  the call, or, without one, the output of its query projection (``q_proj``, ``q``, ``query``).
  ``Fault.mechanism`` says which was used.

"Layer ``k``" is block ``k`` of the decoder (of a decoder-only model, its only stack), the same
index CoreVital reports as layer ``k``; ``stack="encoder"`` selects the encoder of an
encoder-decoder model. A step is one call of the faulted layer since the ``with`` block was
entered, so for the decoder step 0 is the prefill and step ``n`` the ``n``-th generated token's
forward pass; the encoder runs once per ``generate()``. The ``model`` argument may be the Hugging
Face model or CoreVital's :class:`~corevital.capture.loading.LoadedModel`.

Caveats:

- Hugging Face reports the *last* layer's hidden state after the model's final norm (``norm``
  in Llama-style models, ``ln_f`` in GPT-2, ``final_layer_norm`` in T5; BART's decoder has none),
  and CoreVital reports what the model returns. A NaN injected in the last block shows; a scale
  does not, because the final norm divides it out again (the fault is real but harmless to the
  model: its logits barely change). Inject scale faults into earlier layers to see exploding
  activations in ``hidden.l2_norm``.
- A scaled hidden state shows in ``hidden.l2_norm`` only while it stays below
  ``hidden_clip_value`` (default ``1e6``): statistics are taken on clamped values. In float16 the
  default ``factor=1e4`` can overflow (65504) in the following layers, which then report
  ``inf``/NaN: a realistic consequence, but pick a smaller factor to see only the scale.
- CoreVital calls a head collapsed only with at least ``min_keys_for_collapse`` (4) visible keys:
  T5 and BART decoders start from one token, so their first steps report NaN there (the
  concentration is 1 all the same).
- The temperature fallback collapses a head onto its highest-scoring key, so it cannot separate
  exactly tied keys, and in float16 ``q·kᵀ × 1e4`` may overflow to ``inf`` (NaN attention).
- Steps are counted per call of the layer: a teacher-forced replay (beam search) is one call, so
  ``from_step > 0`` faults nothing there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from corevital.testing.collapse import inject_attention_collapse
from corevital.testing.sites import (
    Fault,
    NormSite,
    Positions,
    Stack,
    Undo,
    _check_positions,
    _check_step,
    _unwrap,
    find_layer,
    find_norm,
    find_submodule,
    hooked,
)

__all__ = [
    "Fault",
    "find_layer",
    "inject_attention_collapse",
    "inject_nan",
    "inject_scale",
    "inject_zero_norm",
]


# --- hooks -----------------------------------------------------------------------------------------


def _map_hidden(output: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``output`` with its hidden states (the tensor, or a tuple's first element) replaced by ``fn``."""
    if isinstance(output, Tensor):
        return fn(output)
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return (fn(output[0]), *output[1:])
    raise TypeError(f"cannot find the hidden states in a layer output of type {type(output).__name__}")


@contextmanager
def _hidden_fault(
    model: Any, layer: int, stack: Stack, from_step: int, kind: str, fn: Callable[[Tensor], Tensor]
) -> Iterator[Fault]:
    _check_step(from_step)
    block = find_layer(model, layer, stack=stack)
    with _output_fault(block, block, layer, stack, from_step, kind, "output", fn) as fault:
        yield fault


def _last_position(hidden: Tensor, value: Callable[[Tensor], Tensor]) -> Tensor:
    out = hidden.clone()
    out[..., -1, :] = value(hidden[..., -1, :])
    return out


@contextmanager
def inject_nan(
    model: Any,
    layer: int,
    *,
    from_step: int = 0,
    positions: Positions = "all",
    stack: Stack = "decoder",
) -> Iterator[Fault]:
    """Layer ``layer``'s output hidden states become NaN from step ``from_step`` on.

    ``positions="all"`` sets every element, ``"last"`` only the last position of each forward pass
    (the token being decoded; the NaN then spreads to later steps through the KV cache).
    """
    _check_positions(positions)

    def nan(hidden: Tensor) -> Tensor:
        if positions == "last":
            return _last_position(hidden, lambda h: torch.full_like(h, math.nan))
        return torch.full_like(hidden, math.nan)

    with _hidden_fault(model, layer, stack, from_step, "nan", nan) as fault:
        yield fault


@contextmanager
def inject_scale(
    model: Any,
    layer: int,
    factor: float = 1e4,
    *,
    from_step: int = 0,
    positions: Positions = "all",
    stack: Stack = "decoder",
    module: str | None = None,
) -> Iterator[Fault]:
    """Layer ``layer``'s output hidden states are multiplied by ``factor`` from step ``from_step`` on.

    ``module``: multiply the output of that sub-module of the layer instead, named by its
    attribute (``"q_proj"``, ``"mlp"``, ``"self_attn.o_proj"``: the first sub-module whose dotted
    name ends with it). See the module's caveats: the last layer's reported hidden state is taken
    after the final norm.
    """
    _check_positions(positions)
    factor = float(factor)
    if not math.isfinite(factor):
        raise ValueError(f"factor must be finite, not {factor!r}")

    def scale(hidden: Tensor) -> Tensor:
        if positions == "last":
            return _last_position(hidden, lambda h: h * factor)
        return hidden * factor

    if module is None:
        with _hidden_fault(model, layer, stack, from_step, "scale", scale) as fault:
            yield fault
        return
    block = find_layer(model, layer, stack=stack)
    target = find_submodule(block, module)
    if target is None:
        raise ValueError(f"layer {layer} of {type(_unwrap(model)).__name__} has no sub-module {module!r}")
    with _output_fault(block, target, layer, stack, from_step, "scale", module, scale) as fault:
        yield fault


@contextmanager
def _output_fault(
    block: nn.Module,
    target: nn.Module,
    layer: int,
    stack: Stack,
    from_step: int,
    kind: str,
    mechanism: str,
    fn: Callable[[Tensor], Tensor],
) -> Iterator[Fault]:
    """``target``'s output (a sub-module of ``block``) replaced by ``fn`` on faulted steps.

    Steps are counted on the block, so a sub-module called several times per step (or not at all)
    does not shift them.
    """

    def install(fault: Fault) -> Iterator[Undo]:
        active = [False]

        def pre(module: nn.Module, args: Any) -> None:
            active[0] = fault.steps >= from_step
            fault.steps += 1

        def post(module: nn.Module, args: Any, output: Any) -> Any:
            if not active[0]:
                return None
            fault.fired += 1
            fault.mechanism = mechanism
            return _map_hidden(output, fn)

        # On the block itself, prepend=True: run before Hugging Face's own output-recording hook on
        # the block, so the recorded hidden_states are the faulted ones.
        yield block.register_forward_pre_hook(pre, prepend=True).remove
        yield target.register_forward_hook(post, prepend=target is block).remove

    with hooked(kind, layer, stack, from_step, install) as fault:
        yield fault


@contextmanager
def inject_zero_norm(
    model: Any,
    layer: int,
    which: NormSite = "attention",
    *,
    from_step: int = 0,
    positions: Positions = "all",
    stack: Stack = "decoder",
) -> Iterator[Fault]:
    """Layer ``layer``'s pre-attention (or pre-MLP) norm acts as if its weight were zero.

    The norm's output becomes its bias (zero for RMSNorm and bias-free LayerNorm): computed as
    ``(y - b) * 0 + b`` from the norm's own output ``y``, so a NaN or Inf reaching the norm still
    shows, as it would through a zero weight. ``Fault.mechanism`` names the norm.
    """
    _check_positions(positions)
    block = find_layer(model, layer, stack=stack)
    name, norm = find_norm(block, which)
    bias = getattr(norm, "bias", None)

    def silence(out: Tensor) -> Tensor:
        def zero(h: Tensor) -> Tensor:
            if isinstance(bias, Tensor):
                return (h - bias) * 0 + bias
            return h * 0

        if positions == "last":
            return _last_position(out, zero)
        return zero(out)

    with _output_fault(block, norm, layer, stack, from_step, f"zero_norm_{which}", name, silence) as fault:
        yield fault
