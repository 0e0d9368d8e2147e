"""The model registry: where the layers and attention modules of a loaded model are, and what works.

Layer stacks are found structurally (the ``nn.ModuleList`` of blocks under the decoder and the
encoder), attention modules as the innermost modules named ``*Attention`` inside each block, and
classified as self- or cross-attention by their attribute name. :func:`probe_capabilities` then
runs one tiny forward pass with the tap installed and checks that every layer reported.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import torch
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


def probe_capabilities(model: Any, tokenizer: Any, caps: ModelCapabilities) -> ModelCapabilities:
    """Check on the loaded model that hidden states and every layer's attention can be observed."""
    from corevital.capture.attention_tap import AttentionTap

    sites = find_attention_sites(model, caps)
    self_layers = {s.layer for s in sites if s.kind is SiteKind.SELF}
    if len(self_layers) != caps.num_layers:
        detail = f"found self-attention in {len(self_layers)} of {caps.num_layers} layers"
        return caps.with_probe(attention=False, hidden=True, detail=detail)
    tap = AttentionTap(sites, num_layers=caps.num_layers, num_encoder_layers=caps.num_encoder_layers or 0)
    device = next(model.parameters()).device
    ids = torch.tensor([[_probe_token(tokenizer, caps)] * 3], device=device)
    kwargs: dict[str, Any] = {"input_ids": ids, "output_hidden_states": True}
    if caps.is_encoder_decoder:
        kwargs["decoder_input_ids"] = ids[:, :2]
    try:
        with torch.no_grad(), tap.installed(model):
            tap.begin_forward()
            out = model(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure means "not observable", said in the detail
        return caps.with_probe(
            attention=False, hidden=False, detail=f"probe failed: {type(exc).__name__}: {exc}"
        )
    hidden = out.get("decoder_hidden_states") if caps.is_encoder_decoder else out.get("hidden_states")
    hidden_ok = hidden is not None and len(hidden) == caps.num_layers + 1
    seen = tap.layers_seen(SiteKind.SELF)
    ok = seen == caps.num_layers
    detail = "all layers observed" if ok else f"attention observed in {seen} of {caps.num_layers} layers"
    return caps.with_probe(attention=ok, hidden=hidden_ok, detail=detail)


def _probe_token(tokenizer: Any, caps: ModelCapabilities) -> int:
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int) and 0 <= value < caps.vocab_size:
            return value
    return 0
