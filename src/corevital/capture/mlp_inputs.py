"""The residual stream between each decoder layer's attention and its MLP, at the decoded position.

A pre-norm decoder layer computes ``m = h + attention(norm₁(h))`` and then ``h' = m + mlp(norm₂(m))``:
the input of the norm before the MLP (``post_attention_layernorm`` in Llama-style models, ``ln_2``
in GPT-2, ``pre_feedforward_layernorm`` in Gemma) is ``m``. A wrapper around that norm's forward keeps a
reference to its input's last position (of a pass over several positions, the prefill, a copy of
it, made for several layers at once), so the step's reduction can take the MLP's own update
ratio ``‖h' − m‖ / ‖m‖`` (:func:`corevital.metrics.hidden.mlp_update_ratio`): exactly 0 when the
MLP is silenced (a zeroed RMSNorm weight before it), never near 0 in a healthy layer.

The observer tells the tap what the next pass is (:meth:`MlpInputTap.begin_pass`): at a decoding
step a wrapper's work is one attribute test and one list store, the input checked once for the
whole step when the step's rows are copied together (:meth:`~.step_window.StepWindow.keep_rows`).

Decoder-only models only; nothing is kept inside a compiled step (the observer begins no pass there,
so the compiled graph is unchanged) and a model without such a norm in every layer
gets no tap, nor does a model whose attention and MLP run in parallel on the same input
(GPT-NeoX's ``use_parallel_residual``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from corevital.capture.module_forward import every_slot, first_argument, forwards_replaced, last_positions
from corevital.capture.registry import layer_stack
from corevital.metrics.prompt import DEFAULT_CHUNK_BYTES

# The norm whose input is the residual after the attention, in the order looked for (Gemma's
# ``post_attention_layernorm`` normalises the attention's output, so its pre-MLP norm comes first).
PRE_MLP_NORMS = ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2")


class MlpInputTap:
    """Keeps each layer's pre-MLP residual (last position) of the latest forward pass.

    The norm's ``forward`` is wrapped for the time the tap is installed (an instance attribute,
    removed afterwards) rather than given a forward pre-hook: a module with a hook takes PyTorch's
    slow call path, several times the cost of one more Python call, on every layer and step.

    ``one``, ``several``: whether the pass the observer began (:meth:`begin_pass`) covers one position
    or several (neither: it keeps nothing).
    """

    def __init__(
        self,
        norms: tuple[nn.Module, ...],
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        *,
        positional: bool = False,
    ) -> None:
        self.norms = norms
        # the model's check pass called every norm with one positional argument: wrappers take one
        # (:class:`~.module_forward.CallForms`)
        self.positional = positional
        # Float32 bytes of a pass over several positions (the prefill) that the tap may hold to copy
        # its layers' last positions in one kernel (half of it, as the layer stream's groups).
        self.chunk_bytes = chunk_bytes
        self.one = False
        self.several = False
        self._latest: list[Tensor | None] = [None] * len(norms)
        self._empty = (None,) * len(norms)
        # a pass over several positions: (layer, input) whose last position is not copied yet
        self._waiting: list[tuple[int, Tensor]] = []
        self._waiting_bytes = 0

    @contextmanager
    def installed(self) -> Iterator[MlpInputTap]:
        try:
            with forwards_replaced(
                (norm, self._wrapped(layer, norm.forward)) for layer, norm in enumerate(self.norms)
            ):
                yield self
        finally:
            self._latest[:] = self._empty
            self._drop_waiting()
            self.one = self.several = False

    def begin_pass(self, positions: int | None) -> None:
        """The next forward pass covers ``positions`` positions (None: not known); what an earlier
        pass kept and nobody took is dropped."""
        self.one = positions == 1
        self.several = positions != 1
        self._latest[:] = self._empty
        if self._waiting:
            self._drop_waiting()

    def keep_none(self) -> None:
        """The next forward pass keeps nothing (a compiled decoding step, whose graph the wrappers'
        stores would not leave)."""
        self.one = self.several = False

    def _wrapped(self, layer: int, forward: Any) -> Any:
        latest = self._latest  # one list for the tap's life: emptied in place
        tap = self

        def keep_one(state: Any) -> Any:
            if tap.one:
                latest[layer] = state
            elif tap.several:
                tap._keep_last(layer, state)
            return forward(state)

        if self.positional:
            return keep_one

        def keep(*args: Any, **kwargs: Any) -> Any:
            # args[0] inline: a positional call, the usual one, takes no helper's frame
            if tap.one:
                latest[layer] = args[0] if args else first_argument(args, kwargs)
            elif tap.several:
                tap._keep_last(layer, args[0] if args else first_argument(args, kwargs))
            return forward(*args, **kwargs)

        return keep

    def _keep_last(self, layer: int, state: Any) -> None:
        """A state of a pass over several positions (the prefill): a copy of its last position, later
        (:meth:`_wait`); one over a single position, as it is."""
        if not isinstance(state, Tensor) or state.dim() != 3:
            self._latest[layer] = None
        elif state.shape[1] == 1:
            self._latest[layer] = state
        else:
            self._wait(layer, state)

    def _wait(self, layer: int, state: Tensor) -> None:
        """Hold a pass's input until its last position is copied with other layers' (the pass's
        inputs held stay within half the chunk budget in float32)."""
        size = 4 * state.numel()
        if self._waiting and self._waiting_bytes + size > self.chunk_bytes // 2:
            self._copy_waiting()
        self._waiting.append((layer, state))
        self._waiting_bytes += size

    def _copy_waiting(self) -> None:
        """The last position of every input waiting, copied in one kernel: views of that copy."""
        if not self._waiting:
            return
        lasts = last_positions([state for _, state in self._waiting])
        for (layer, _), last in zip(self._waiting, lasts, strict=True):
            self._latest[layer] = last
        self._drop_waiting()

    def _drop_waiting(self) -> None:
        self._waiting.clear()
        self._waiting_bytes = 0

    def take(self) -> tuple[Tensor, ...] | None:
        """Every layer's kept residual ([B, 1, d]; of a pass over one position, what the norms got,
        unchecked) of the forward that just ran, or None when some layer's norm was not called (the
        tap is emptied either way, and keeps nothing until the next :meth:`begin_pass`)."""
        self.one = self.several = False
        self._copy_waiting()
        return every_slot(self._latest)


def mlp_input_tap(model: Any, num_layers: int) -> MlpInputTap | None:
    """A tap on ``model``'s pre-MLP norms, or None (encoder-decoder, or a layer without one)."""
    norms = pre_mlp_norms(model, num_layers)
    return None if norms is None else MlpInputTap(norms)


def pre_mlp_norms(model: Any, num_layers: int) -> tuple[nn.Module, ...] | None:
    """Each layer's norm before its MLP, or None (encoder-decoder, or a layer without one)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return None
    if getattr(config, "use_parallel_residual", False) or getattr(config, "parallel_attn", False):
        return None  # attention and MLP read the same input: no residual between them
    base = getattr(model, "base_model", None)
    stack = layer_stack(base if isinstance(base, nn.Module) else None, num_layers)
    if stack is None:
        return None
    norms = []
    for block in stack[1]:
        found = next((getattr(block, name) for name in PRE_MLP_NORMS if hasattr(block, name)), None)
        if not isinstance(found, nn.Module):
            return None
        norms.append(found)
    return tuple(norms)
