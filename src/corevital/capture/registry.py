"""The model registry: where the layers and attention modules of a loaded model are, and what works.

Layer stacks are found structurally (the ``nn.ModuleList`` of blocks under the decoder and the
encoder), attention modules as the innermost modules named ``*Attention`` inside each block, and
classified as self- or cross-attention by their attribute name. Whether every layer's attention
can then be observed is checked on the loaded model (:mod:`.model_checks`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from torch import nn

from corevital.capture.capabilities import ModelCapabilities

_CROSS_MARKERS = ("cross", "encdec", "encoder_attn")


class SiteKind(enum.Enum):
    SELF = "self"
    CROSS = "cross"
    ENCODER = "encoder"


@dataclass(frozen=True)
class AttentionSite:
    module: nn.Module
    kind: SiteKind
    layer: int
    path: str


def layer_stack(root: nn.Module | None, expected: int) -> tuple[str, nn.ModuleList] | None:
    """The first list of ``expected`` modules under ``root`` (its layers) with its name, or None."""
    if root is None or expected <= 0:
        return None
    for name, child in root.named_modules():
        if isinstance(child, nn.ModuleList) and len(child) == expected:
            return name, child
    return None


def _innermost_attention(block: nn.Module) -> list[tuple[str, nn.Module]]:
    found = [(n, m) for n, m in block.named_modules() if n and type(m).__name__.endswith("Attention")]
    names = [n for n, _ in found]
    return [(n, m) for n, m in found if not any(other.startswith(n + ".") for other in names)]


def submodule_from(model: nn.Module, getter: str) -> nn.Module | None:
    """``model.get_decoder()`` / ``model.get_encoder()`` when the model has it, else None."""
    fn = getattr(model, getter, None)
    if fn is None:
        return None
    try:
        result = fn()
    except (AttributeError, NotImplementedError, TypeError):
        return None
    return result if isinstance(result, nn.Module) else None


def find_attention_sites(model: nn.Module, caps: ModelCapabilities) -> list[AttentionSite]:
    """Every self-, cross- and encoder attention module with its layer index."""
    sites: list[AttentionSite] = []
    decoder = submodule_from(model, "get_decoder") if caps.is_encoder_decoder else model
    stacks: list[tuple[nn.Module | None, int, bool]] = [(decoder or model, caps.num_layers, False)]
    if caps.is_encoder_decoder:
        stacks.append((submodule_from(model, "get_encoder"), caps.num_encoder_layers or 0, True))
    for root, expected, is_encoder in stacks:
        stack = layer_stack(root, expected)
        if stack is None:
            continue
        stack_name, blocks = stack
        for index, block in enumerate(blocks):
            for name, module in _innermost_attention(block):
                if is_encoder:
                    kind = SiteKind.ENCODER
                elif any(marker in name.lower() for marker in _CROSS_MARKERS):
                    kind = SiteKind.CROSS
                else:
                    kind = SiteKind.SELF
                sites.append(AttentionSite(module, kind, index, f"{stack_name}.{index}.{name}"))
    return sites
