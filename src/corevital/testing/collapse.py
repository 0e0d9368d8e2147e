"""Collapsed attention (:func:`inject_attention_collapse`): every head of one layer's self-attention
puts all its weight on each query's first visible key. See :mod:`corevital.testing.faults` for the
mechanism (an additive-mask bonus through the model's own attention call, or a temperature
fallback) and its caveats."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from corevital.testing.sites import (
    QUERY_PROJECTIONS,
    Fault,
    Stack,
    Undo,
    _self_attention,
    _unwrap,
    hooked,
)

__all__ = ["inject_attention_collapse"]


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

    def install(fault: Fault) -> Iterator[Undo]:
        for index, attention in enumerate(_self_attention(_unwrap(model), layer, stack)):
            yield from _collapse_hooks(
                attention, fault, counts_steps=index == 0, bidirectional=stack == "encoder"
            )

    with hooked("attention_collapse", layer, stack, from_step, install) as fault:
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
        (p for name in QUERY_PROJECTIONS if isinstance(p := getattr(attention, name, None), nn.Module)), None
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
                f"a numeric 'scaling' attribute nor a query projection ({', '.join(QUERY_PROJECTIONS)})"
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
