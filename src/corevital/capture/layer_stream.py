"""The pass over a prompt reduced layer by layer, instead of keeping every layer's output.

With ``output_hidden_states=True`` transformers keeps each layer's output [B, P, d] until the
forward pass returns: for the pass over a prompt that is (L + 1) x P x d values, more than the
key/value cache (SmolLM2-135M, 512 tokens: 18 MB, 6% of a plain run's peak memory). Of that pass
the observer needs only each layer's last position, the cosine between consecutive layers (prompt
telemetry) and the final states (prompt surprisals). A :class:`LayerStream` hooks the modules
transformers itself records hidden states from (the base model's ``_can_record_outputs``) and
reduces each output when the next one appears, so at most two layers' outputs stay alive.

Whether the hooked outputs are exactly the hidden states transformers would return is checked
once per model on a three-token pass (:func:`stream_sites`); where they are not, or the model
declares no recorder, the observer keeps asking for ``output_hidden_states``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from corevital.metrics.prompt import DEFAULT_CHUNK_BYTES, layer_transformations


@dataclass(frozen=True)
class StreamSites:
    """Where a decoder-only model's hidden states come from."""

    base: nn.Module  # the model whose forward returns ``last_hidden_state``
    blocks: tuple[nn.Module, ...]  # the modules whose outputs are hidden states 1..L
    index: int  # which element of a block's tuple output is its hidden state
    capture_initial: bool  # hidden state 0 is the first block's input (the embeddings)
    tie_last: bool  # hidden state L is the base model's ``last_hidden_state`` (after the final norm)


@dataclass(frozen=True)
class StreamedStates:
    """What the observer keeps of a streamed pass."""

    last_positions: tuple[Tensor, ...]  # hidden states 1..L at the last position, each [B, 1, d] (copies)
    final: Tensor  # hidden state L, every position [B, P, d]
    transformations: Tensor | None  # [L, B] (``layer_transformations`` of states 0..L), when asked


class LayerStream:
    """Reduces one forward pass's hidden states as the model produces them."""

    def __init__(
        self,
        sites: StreamSites,
        *,
        visible: Tensor | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        keep_all: bool = False,
    ) -> None:
        self.sites = sites
        self.visible = visible  # [B, P]: layer transformations are computed when given
        self.chunk_bytes = chunk_bytes
        self.keep_all = keep_all  # keep every hidden state (the one-time check only)
        self.kept: list[Tensor] = []
        self._count = 0
        self._previous: Tensor | None = None
        self._pending: Tensor | None = None
        self._last: list[Tensor] = []
        self._changes: list[Tensor] = []
        self._result: StreamedStates | None = None

    @contextmanager
    def installed(self) -> Iterator[LayerStream]:
        handles = [block.register_forward_hook(self._on_block) for block in self.sites.blocks]
        handles.append(self.sites.base.register_forward_hook(self._on_base))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def result(self) -> StreamedStates | None:
        """The reduced pass, once the base model has returned with one state per block (else None)."""
        return self._result

    def _on_block(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self.sites.capture_initial and self._count == 0 and args:
            self._push(args[0])
        state = output[self.sites.index] if isinstance(output, tuple) else output
        if state is not None:
            self._push(state)

    def _on_base(self, module: nn.Module, args: tuple, output: Any) -> None:
        last = output.get("last_hidden_state") if hasattr(output, "get") else None
        expected = len(self.sites.blocks) + int(self.sites.capture_initial)
        if self._pending is None or self._count != expected:
            self._reset()
            return
        final = last if self.sites.tie_last and last is not None else self._pending
        self._pending = None
        self._finish(final)
        changes = torch.cat(self._changes) if self._changes and self.visible is not None else None
        self._result = StreamedStates(tuple(self._last), final, changes)
        self._reset()

    def _push(self, state: Tensor) -> None:
        self._count += 1
        if self._pending is not None:
            self._finish(self._pending)
        self._pending = state

    def _finish(self, state: Tensor) -> None:
        """Hidden state ``l`` is complete: compare it with state ``l - 1``, keep its last position."""
        if self.keep_all:
            self.kept.append(state)
        if self._previous is not None:
            self._last.append(state[:, -1:].clone())
            if self.visible is not None:
                pair = (self._previous, state)
                self._changes.append(layer_transformations(pair, self.visible, chunk_bytes=self.chunk_bytes))
        self._previous = state

    def _reset(self) -> None:
        self._count = 0
        self._previous = self._pending = None
        self._last, self._changes = [], []


_SITES: weakref.WeakKeyDictionary[nn.Module, StreamSites | None] = weakref.WeakKeyDictionary()


def stream_sites(model: Any) -> StreamSites | None:
    """The verified sites of ``model``'s hidden states, or None where a pass cannot be streamed."""
    if model not in _SITES:
        _SITES[model] = _verified(model, _candidate_sites(model, tie_last=True)) or _verified(
            model, _candidate_sites(model, tie_last=False)
        )
    return _SITES[model]


def _candidate_sites(model: Any, *, tie_last: bool) -> StreamSites | None:
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return None
    base = getattr(model, "base_model", None)
    recorders = getattr(base, "_can_record_outputs", None)
    spec = recorders.get("hidden_states") if isinstance(recorders, dict) else None
    if not isinstance(base, nn.Module) or spec is None or isinstance(spec, list | tuple):
        return None
    target = spec if isinstance(spec, type) else getattr(spec, "target_class", None)
    class_name = spec if isinstance(spec, str) else getattr(spec, "class_name", None)
    layer_name = getattr(spec, "layer_name", None)
    blocks = []
    for name, module in base.named_modules():
        matches = (isinstance(target, type) and isinstance(module, target)) or (
            isinstance(class_name, str) and name.endswith(class_name)
        )
        if matches and (layer_name is None or f".{layer_name.strip('.')}." in f".{name}."):
            blocks.append(module)
    if not blocks:
        return None
    return StreamSites(
        base=base,
        blocks=tuple(blocks),
        index=int(getattr(spec, "index", 0)),
        capture_initial=bool(getattr(spec, "capture_initial_hidden_state", True)),
        tie_last=tie_last,
    )


@torch.no_grad()
def _verified(model: Any, sites: StreamSites | None) -> StreamSites | None:
    """``sites`` if a streamed three-token pass sees exactly the hidden states transformers returns."""
    if sites is None:
        return None
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    device = next(model.parameters()).device
    ids = torch.arange(1, min(4, vocab), device=device).unsqueeze(0)
    if ids.shape[1] < 2:
        return None
    stream = LayerStream(sites, keep_all=True)
    try:
        with stream.installed():
            out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    except (RuntimeError, TypeError, ValueError):
        return None
    theirs = out.get("hidden_states")
    ours = stream.kept
    if stream.result() is None or not theirs or len(theirs) != len(ours):
        return None
    pairs = zip(ours, theirs, strict=True)
    same = all(a is b or (a.shape == b.shape and torch.equal(a, b)) for a, b in pairs)
    return sites if same else None
