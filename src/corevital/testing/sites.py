"""Where a fault goes: layer ``k`` of a loaded model, its sub-modules and norms, and what an
injector reports (:class:`Fault`). Shared by :mod:`.faults` and :mod:`.collapse`."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from corevital.capture.capabilities import capabilities_from_config
from corevital.capture.registry import SiteKind, find_attention_sites, submodule_from

__all__ = ["Fault", "find_layer", "find_norm", "find_submodule", "hooked"]

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

QUERY_PROJECTIONS = ("q_proj", "q", "query")

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


@contextmanager
def hooked(
    kind: str, layer: int, stack: Stack, from_step: int, install: Callable[[Fault], Iterable[Undo]]
) -> Iterator[Fault]:
    """The ``with`` block of one injector: a :class:`Fault` whose hooks ``install`` registers.

    ``install`` locates its modules, registers its hooks and yields how to undo each one (a hook's
    ``remove``, an attribute's restore) as it goes; every undo runs on exit, last first, also when
    the body (or ``install`` itself, half-way) raises.
    """
    _check_step(from_step)
    fault = Fault(kind=kind, layer=layer, stack=stack, from_step=from_step)
    with ExitStack() as undo:
        for fn in install(fault):
            undo.callback(fn)
        yield fault


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


# --- arguments -------------------------------------------------------------------------------------


def _check_step(from_step: int) -> None:
    if isinstance(from_step, bool) or not isinstance(from_step, int) or from_step < 0:
        raise ValueError(f"from_step must be an int >= 0, not {from_step!r}")


def _check_positions(positions: str) -> None:
    if positions not in ("all", "last"):
        raise ValueError(f"positions must be 'all' or 'last', not {positions!r}")


def find_submodule(block: nn.Module, name: str) -> nn.Module | None:
    """The first sub-module of ``block`` whose dotted name is ``name`` or ends with ``.name``."""
    for path, sub in block.named_modules():
        if path == name or path.endswith("." + name):
            found: nn.Module = sub
            return found
    return None


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
