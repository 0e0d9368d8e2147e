"""The pass over a prompt reduced layer by layer, instead of keeping every layer's output.

With ``output_hidden_states=True`` transformers keeps each layer's output [B, P, d] until the
forward pass returns: for the pass over a prompt that is (L + 1) x P x d values, more than the
key/value cache (SmolLM2-135M, 512 tokens: 18 MB, 6% of a plain run's peak memory). Of that pass
the observer needs only each layer's last position, the cosine between consecutive layers (prompt
telemetry) and the final states (prompt surprisals). A :class:`LayerStream` hooks the decoder
layers and compares consecutive layers a group at a time, copying the group's last positions
together: the outputs of a group stay alive until it is compared, and a group holds as many
consecutive layers as fit half the chunk budget in float32 (at least two). One comparison and one
copy per group instead of one per layer: at batch 1 on a GPU, the prefill's cost is its kernel
launches.

Whether the hooked outputs are exactly the hidden states transformers would return is checked
once per model on a three-token pass (:mod:`.model_checks`); where they are not, the observer
keeps asking for ``output_hidden_states``. The same pass checks the one-argument modules the states
go through (:attr:`StreamSites.entries`: each layer's norm before its attention, and the final
norm), where a decoding step's states are cheaper to read (:mod:`.layer_outputs`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from corevital.capture.module_forward import first_argument, last_positions
from corevital.capture.registry import layer_stack
from corevital.capture.side_stream import SideStream, beside
from corevital.metrics.prompt import DEFAULT_CHUNK_BYTES, layer_transformations

# A decoder layer's first module, which gets the layer's input (hidden state l of layer l): its norm
# before the attention, in the order looked for; and the base model's norm after the last layer.
ENTRY_NORMS = ("input_layernorm", "ln_1", "ln_attn", "attention_norm")
FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm")


@dataclass(frozen=True)
class StreamSites:
    """Where a decoder-only model's hidden states come from."""

    base: nn.Module  # the model whose forward returns ``last_hidden_state``
    blocks: tuple[nn.Module, ...]  # the decoder layers: hidden state 0 is the first one's input,
    # states 1..L their outputs (the first element of a tuple output)
    tie_last: bool  # hidden state L is the base model's ``last_hidden_state`` (after the final norm)
    # One-argument modules the same states pass through, verified like the rest (empty, None: not
    # verified): ``entries[l]`` is called once a pass with hidden state l + 1 (layer l + 1's norm
    # before its attention, l = 0..L-2); ``final``, with ``tie_last``, returns hidden state L (the base
    # model's final norm). A norm's call costs the host less than a decoder layer's, whose keyword
    # arguments are matched against its parameters at every call (:mod:`.layer_outputs`).
    entries: tuple[nn.Module, ...] = ()
    final: nn.Module | None = None
    # whether the check pass called the entries and the final norm with one positional argument each
    # (:class:`~.module_forward.CallForms`: their wrappers then take one argument)
    positional: bool = False


@dataclass(frozen=True)
class StreamedStates:
    """What the observer keeps of a streamed pass."""

    last_positions: tuple[Tensor, ...]  # hidden states 1..L at the last position, each [B, 1, d]
    # (views of one copy per group of layers, not of the states)
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
        side: SideStream | None = None,
    ) -> None:
        self.sites = sites
        self.side = side  # where the layer transformations are computed (None: the model's stream)
        self.visible = visible  # [B, P]: layer transformations are computed when given
        self.chunk_bytes = chunk_bytes
        self.keep_all = keep_all  # keep every hidden state (the one-time check only)
        self.kept: list[Tensor] = []
        self.raw_last: Tensor | None = None  # kept too: the last layer's output and the base's
        self.base_last: Tensor | None = None  # ``last_hidden_state``, one of which is state L
        self._count = 0
        self._group: list[Tensor] = []  # consecutive complete states not yet compared (the first was)
        self._pending: Tensor | None = None
        self._last: list[Tensor] = []
        self._awaiting: list[Tensor] = []  # states of the group whose last position is not copied yet
        self._changes: list[Tensor] = []
        self._result: StreamedStates | None = None
        self._handles: list[RemovableHandle] = []
        # keep_all: what each entry module got and what the final module returned, every call
        self.entry_inputs: list[list[Any]] = [[] for _ in sites.entries]
        self.final_outputs: list[Any] = []

    def attach(self) -> None:
        """Hook the layers and the base model (until :meth:`detach`); with ``keep_all``, the entry
        and final modules too."""
        self._handles = [block.register_forward_hook(self._on_block) for block in self.sites.blocks]
        self._handles.append(self.sites.base.register_forward_hook(self._on_base))
        if self.keep_all:
            for inputs, entry in zip(self.entry_inputs, self.sites.entries, strict=True):
                hook = functools.partial(_record_input, inputs)
                self._handles.append(entry.register_forward_pre_hook(hook, with_kwargs=True))
            if self.sites.final is not None:
                hook = functools.partial(_record_output, self.final_outputs)
                self._handles.append(self.sites.final.register_forward_hook(hook))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @contextmanager
    def installed(self) -> Iterator[LayerStream]:
        self.attach()
        try:
            yield self
        finally:
            self.detach()

    def result(self) -> StreamedStates | None:
        """The reduced pass, once the base model has returned with one state per block (else None)."""
        return self._result

    def _on_block(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._count == 0 and args:
            self._push(args[0])
        state = output[0] if isinstance(output, tuple) else output
        if state is not None:
            self._push(state)

    def _on_base(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        last = output.get("last_hidden_state") if hasattr(output, "get") else None
        if self._pending is None or self._count != len(self.sites.blocks) + 1:
            self._reset()
            return
        if self.keep_all:
            self.raw_last, self.base_last = self._pending, last
        final = last if self.sites.tie_last and last is not None else self._pending
        self._pending = None
        self._finish(final)
        self._compare_group()
        changes = None
        if self._changes and self.visible is not None:
            with beside(self.side, self._changes[0].device):
                changes = torch.cat(self._changes)
        self._result = StreamedStates(tuple(self._last), final, changes)
        self._reset()

    def _push(self, state: Tensor) -> None:
        self._count += 1
        if self._pending is not None:
            self._finish(self._pending)
        self._pending = state

    def _finish(self, state: Tensor) -> None:
        """Hidden state ``l`` is complete: compare it with state ``l - 1`` when its group is full
        (:meth:`_compare_group`); its last position is copied with its group's (:meth:`_take_last`)."""
        if self.keep_all:
            self.kept.append(state)
        first = not self._group  # state 0, the first layer's input: no last position kept
        if len(self._group) >= 2 and 4 * state.numel() * (len(self._group) + 1) > self.chunk_bytes // 2:
            self._compare_group()
        self._group.append(state)
        if not first:
            self._awaiting.append(state)

    def _take_last(self) -> None:
        """Copy the last position of the states waiting for it, in one kernel: states of one group,
        alive until it is compared (one copy a group instead of one a layer)."""
        if self._awaiting:
            self._last.extend(last_positions(self._awaiting))
            self._awaiting = []

    def _compare_group(self) -> None:
        """``layer_transformations`` of the group's consecutive states, in one call (when asked for:
        ``visible``), and their last positions; the group's last state starts the next group."""
        self._take_last()
        if self.visible is not None and len(self._group) >= 2:
            with beside(self.side, self.visible.device, self.visible, *self._group):
                self._changes.append(
                    layer_transformations(self._group, self.visible, chunk_bytes=self.chunk_bytes)
                )
        self._group = self._group[-1:]

    def _reset(self) -> None:
        self._count = 0
        self._pending = None
        self._group, self._last, self._changes, self._awaiting = [], [], [], []


def _record_input(
    inputs: list[Any], module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    inputs.append(first_argument(args, kwargs))


def _record_output(outputs: list[Any], module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
    outputs.append(output)


def _named(module: nn.Module, names: tuple[str, ...]) -> nn.Module | None:
    """``module``'s first submodule of ``names`` (an attribute), or None."""
    found = next((getattr(module, name) for name in names if hasattr(module, name)), None)
    return found if isinstance(found, nn.Module) else None


def candidate_sites(model: Any) -> StreamSites | None:
    """Where a decoder-only model's hidden states should come from: its stack of decoder layers
    (:func:`~corevital.capture.registry.layer_stack`, as for attention sites) and its base model,
    and the norms they pass through (:data:`ENTRY_NORMS`, :data:`FINAL_NORMS`), ``tie_last`` and the
    norms still to be decided by :func:`verified_sites`."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return None
    base = getattr(model, "base_model", None)
    layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(base, nn.Module) or not isinstance(layers, int):
        return None
    stack = layer_stack(base, layers)
    if stack is None:
        return None
    blocks = tuple(stack[1])
    entries = tuple(_named(block, ENTRY_NORMS) for block in blocks[1:])
    found = () if None in entries else cast("tuple[nn.Module, ...]", entries)
    return StreamSites(
        base=base, blocks=blocks, tie_last=True, entries=found, final=_named(base, FINAL_NORMS)
    )


def verified_sites(stream: LayerStream, hidden_states: Sequence[Tensor] | None) -> StreamSites | None:
    """The stream's sites if the pass it kept (``keep_all``) saw exactly ``hidden_states``, the
    states the same pass returned; ``tie_last`` says which last state they end with."""
    ours = stream.kept
    if stream.result() is None or not hidden_states or len(hidden_states) != len(ours):
        return None
    pairs = zip(ours[:-1], hidden_states[:-1], strict=True)
    if not all(_same(a, b) for a, b in pairs):
        return None
    last = hidden_states[-1]
    if stream.base_last is not None and _same(stream.base_last, last):
        tie_last = True
    elif stream.raw_last is not None and _same(stream.raw_last, last):
        tie_last = False
    else:
        return None
    # the norms, where each was called once with (entries) or returned (final) the state it stands for
    entries = stream.sites.entries
    if len(entries) != len(hidden_states) - 2 or not all(
        len(got) == 1 and _same_tensor(got[0], want)
        for got, want in zip(stream.entry_inputs, hidden_states[1:-1], strict=True)
    ):
        entries = ()
    final = stream.sites.final if tie_last else None
    if final is not None and not (
        len(stream.final_outputs) == 1 and _same_tensor(stream.final_outputs[0], last)
    ):
        final = None
    if tie_last and final is None:
        entries = ()  # state L would still need the base model's wrapper: the layers' serve as well
    if not entries:
        final = None
    return dataclasses.replace(stream.sites, tie_last=tie_last, entries=entries, final=final)


def _same(a: Tensor, b: Tensor) -> bool:
    return a is b or (a.shape == b.shape and torch.equal(a, b))


def _same_tensor(a: Any, b: Tensor) -> bool:
    return isinstance(a, Tensor) and _same(a, b)
