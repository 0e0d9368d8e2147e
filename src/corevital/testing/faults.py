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
import operator
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from corevital.capture.capabilities import capabilities_from_config
from corevital.capture.registry import SiteKind, find_attention_sites, submodule_from

__all__ = [
    "Fault",
    "find_layer",
    "inject_attention_collapse",
    "inject_nan",
    "inject_scale",
    "inject_zero_norm",
]

Stack = Literal["decoder", "encoder"]
Positions = Literal["all", "last"]
NormSite = Literal["attention", "mlp"]

# The norm before each sub-layer, by attribute name, in the order they are looked for (Gemma's
# ``post_attention_layernorm`` follows its attention, so ``pre_feedforward_layernorm`` comes first).
_NORM_NAMES: dict[str, tuple[str, ...]] = {
    "attention": ("input_layernorm", "ln_1", "self_attn_layer_norm", "attention_norm", "ln_attn", "norm1"),
    "mlp": (
        "pre_feedforward_layernorm",
        "post_attention_layernorm",
        "ln_2",
        "final_layer_norm",
        "ffn_norm",
        "ln_mlp",
        "norm2",
    ),
}

_QUERY_PROJECTIONS = ("q_proj", "q", "query")

Undo = Callable[[], None]


@dataclass
class Fault:
    """What an injector did so far (yielded by the ``with`` statement)."""

    kind: str
    layer: int
    stack: Stack
    from_step: int
    steps: int = 0  # calls of the faulted layer since the block was entered
    fired: int = 0  # of which faulted (steps >= from_step)
    mechanism: str | None = None  # how the last faulted call was changed ("output", "mask", ...)


# --- locating layer k ------------------------------------------------------------------------------


def _unwrap(model: Any) -> nn.Module:
    """The ``nn.Module`` of a Hugging Face model or of a CoreVital ``LoadedModel``."""
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    raise TypeError(f"expected a torch model or a LoadedModel, got {type(model).__name__}")


def _stack_root_and_size(model: nn.Module, stack: Stack) -> tuple[nn.Module, int]:
    caps = capabilities_from_config(model.config)
    if stack == "decoder":
        root = submodule_from(model, "get_decoder") if caps.is_encoder_decoder else model
        return root or model, caps.num_layers
    if stack == "encoder":
        if not caps.is_encoder_decoder:
            raise ValueError(
                f"{type(model).__name__} has no encoder: stack='encoder' needs an encoder-decoder"
            )
        root = submodule_from(model, "get_encoder")
        if root is None:
            raise ValueError(f"{type(model).__name__} does not expose its encoder (get_encoder())")
        return root, caps.num_encoder_layers or 0
    raise ValueError(f"stack must be 'decoder' or 'encoder', not {stack!r}")


def find_layer(model: Any, layer: int, *, stack: Stack = "decoder") -> nn.Module:
    """Block ``layer`` of the model's decoder (or encoder): the module CoreVital reports as that layer.

    Found the way CoreVital's registry finds it: the first ``nn.ModuleList`` under the stack whose
    length is the configured number of layers. Raises ``ValueError`` for an index out of range.
    """
    module = _unwrap(model)
    root, size = _stack_root_and_size(module, stack)
    blocks = next(
        (m for m in root.modules() if isinstance(m, nn.ModuleList) and len(m) == size and size > 0), None
    )
    if blocks is None:
        raise ValueError(f"could not find the {stack} layers of {type(module).__name__} ({size} expected)")
    if isinstance(layer, bool):
        raise TypeError("layer must be an int, not bool")
    layer = operator.index(layer)  # ints and numpy integers; TypeError for anything else
    if not 0 <= layer < size:
        raise ValueError(f"layer {layer} is out of range: the {stack} has {size} layers (0..{size - 1})")
    return blocks[layer]


def _self_attention(model: nn.Module, layer: int, stack: Stack) -> list[nn.Module]:
    find_layer(model, layer, stack=stack)  # range check with the same message
    caps = capabilities_from_config(model.config)
    wanted = SiteKind.ENCODER if stack == "encoder" else SiteKind.SELF
    found = [s.module for s in find_attention_sites(model, caps) if s.kind is wanted and s.layer == layer]
    if not found:
        raise ValueError(f"found no self-attention module in {stack} layer {layer} of {type(model).__name__}")
    return found


# --- hooks -----------------------------------------------------------------------------------------


def _check_step(from_step: int) -> None:
    if isinstance(from_step, bool) or not isinstance(from_step, int) or from_step < 0:
        raise ValueError(f"from_step must be an int >= 0, not {from_step!r}")


def _check_positions(positions: str) -> None:
    if positions not in ("all", "last"):
        raise ValueError(f"positions must be 'all' or 'last', not {positions!r}")


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


def find_submodule(block: nn.Module, name: str) -> nn.Module | None:
    """The first sub-module of ``block`` whose dotted name is ``name`` or ends with ``.name``."""
    for path, sub in block.named_modules():
        if path == name or path.endswith("." + name):
            found: nn.Module = sub
            return found
    return None


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
    _check_step(from_step)
    fault = Fault(kind=kind, layer=layer, stack=stack, from_step=from_step)
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

    # On the block itself, prepend=True: run before Hugging Face's own output-recording hook on the
    # block, so the recorded hidden_states are the faulted ones.
    handles = [
        block.register_forward_pre_hook(pre, prepend=True),
        target.register_forward_hook(post, prepend=target is block),
    ]
    try:
        yield fault
    finally:
        for handle in handles:
            handle.remove()


def find_norm(block: nn.Module, which: NormSite) -> tuple[str, nn.Module]:
    """(name, module) of the norm before the block's attention (``"attention"``) or MLP (``"mlp"``)."""
    if which not in _NORM_NAMES:
        raise ValueError(f"which must be 'attention' or 'mlp', not {which!r}")
    for name in _NORM_NAMES[which]:
        found = getattr(block, name, None)
        if isinstance(found, nn.Module):
            return name, found
    raise ValueError(
        f"found no norm before the {which} of {type(block).__name__} (looked for {_NORM_NAMES[which]})"
    )


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


@contextmanager
def inject_attention_collapse(
    model: Any,
    layer: int,
    *,
    from_step: int = 0,
    stack: Stack = "decoder",
) -> Iterator[Fault]:
    """Every head of layer ``layer``'s self-attention puts all its weight on one key from ``from_step`` on.

    The key is each query's first visible key (the "attention sink"): the module's additive
    attention mask gets a bonus of ``1e4`` on that key, so the model's own softmax is one-hot there.
    Without a mask tensor (SDPA's causal shortcut) the attention temperature is divided by ``1e4``
    instead. See the module docstring.
    """
    _check_step(from_step)
    module = _unwrap(model)
    attentions = _self_attention(module, layer, stack)
    fault = Fault(kind="attention_collapse", layer=layer, stack=stack, from_step=from_step)
    with ExitStack() as undo:
        for index, attention in enumerate(attentions):
            hooks = _collapse_hooks(
                attention, fault, counts_steps=index == 0, bidirectional=stack == "encoder"
            )
            for fn in hooks:
                undo.callback(fn)
        yield fault


_SINK_BONUS = 1e4  # added to the chosen key's mask entry: e^-1e4 = 0 for every other key
_SHARPNESS = 1e4  # fallback: factor on q·kᵀ (softmax temperature / 1e4)
_MASK_KWARGS = ("attention_mask", "mask")  # T5 calls its attention module with mask=


def _sink_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """An additive mask that keeps ``mask``'s visibility and favours each row's first visible key."""
    if mask.dtype == torch.bool:
        additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        additive.masked_fill_(~mask, torch.finfo(dtype).min)
        visible = mask
    else:
        additive = mask
        visible = mask > torch.finfo(mask.dtype).min / 2
    first = visible.to(torch.uint8).argmax(dim=-1, keepdim=True)  # first True (0 if none is)
    bonus = torch.zeros_like(additive).scatter_(-1, first, _SINK_BONUS)
    return additive + bonus


def _open_mask(hidden: Any, dtype: torch.dtype) -> Tensor | None:
    """The all-visible additive mask [B, 1, S, S] of an encoder self-attention called without one."""
    if not isinstance(hidden, Tensor) or hidden.dim() != 3:
        return None
    batch, length = hidden.shape[:2]
    return torch.zeros(batch, 1, length, length, dtype=dtype, device=hidden.device)


def _collapse_hooks(
    attention: nn.Module, fault: Fault, *, counts_steps: bool, bidirectional: bool
) -> list[Undo]:
    """Hooks that make ``attention`` collapse on faulted steps; returns how to remove them.

    ``bidirectional``: an encoder self-attention, for which a missing mask means "every key visible".
    """
    base = getattr(attention, "scaling", None)
    has_scaling = isinstance(base, int | float) and not isinstance(base, bool)
    own_scaling = "scaling" in attention.__dict__
    projection = next(
        (p for name in _QUERY_PROJECTIONS if isinstance(p := getattr(attention, name, None), nn.Module)), None
    )
    dtype = next((p.dtype for p in attention.parameters() if p.is_floating_point()), torch.float32)
    sharpen_query = [False]

    def restore_scaling() -> None:
        if not has_scaling:
            return
        if own_scaling:
            attention.__dict__["scaling"] = base
        else:
            attention.__dict__.pop("scaling", None)

    def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        step = fault.steps
        if counts_steps:
            fault.steps += 1
        if step < fault.from_step:
            return None
        fault.fired += 1
        for name in _MASK_KWARGS:
            mask = kwargs.get(name)
            if mask is None and name in kwargs and bidirectional:
                mask = _open_mask(args[0] if args else kwargs.get("hidden_states"), dtype)
            if isinstance(mask, Tensor) and mask.dim() == 4:
                fault.mechanism = "mask"
                return args, {**kwargs, name: _sink_mask(mask, dtype)}
        if has_scaling:
            fault.mechanism = "scaling"
            module.__dict__["scaling"] = base * _SHARPNESS  # type: ignore[operator]
        elif projection is not None:
            fault.mechanism = "query"
            sharpen_query[0] = True
        else:
            raise RuntimeError(
                f"cannot collapse {type(module).__name__}: it got no 4-D attention mask and has neither "
                f"a numeric 'scaling' attribute nor a query projection ({', '.join(_QUERY_PROJECTIONS)})"
            )
        return None

    def post(module: nn.Module, args: Any, output: Any) -> None:
        restore_scaling()
        sharpen_query[0] = False

    def sharpen(module: nn.Module, args: Any, output: Any) -> Any:
        return output * _SHARPNESS if sharpen_query[0] and isinstance(output, Tensor) else None

    handles = [
        attention.register_forward_pre_hook(pre, with_kwargs=True),
        attention.register_forward_hook(post, always_call=True),
    ]
    if projection is not None:
        handles.append(projection.register_forward_hook(sharpen))
    return [*(h.remove for h in handles), restore_scaling]
