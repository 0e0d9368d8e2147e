"""Each decoder layer's hidden state at the decoded position, kept by wrappers around the layers' forward.

transformers returns hidden states (``output_hidden_states=True``) through forward hooks it installs
on every decoder layer and attention module; a module with a hook takes PyTorch's slow call path on
every call, host time that a decoding step bound by the host (the dynamic cache at batch 1) pays in
full (docs/performance.md, "Host work per generation and per step"). Where the model's checks
verified the modules its hidden states come from (:mod:`.model_checks`,
:class:`~.layer_stream.StreamSites`: each decoder layer's output and, for the last state, the base
model's ``last_hidden_state`` or the last layer's output), and no forward hook of the user's may
change those modules' outputs after them (:func:`outputs_as_returned`), a :class:`LayerOutputTap`
wraps those modules' ``forward`` (an instance attribute for the time of one generation, as
:mod:`.mlp_inputs` does) and the observer asks for no hidden states:

- an eager forward pass keeps a reference to each state at the last position (a copy of it when the
  pass covers several positions, so the pass's outputs are not kept alive);
- a compiled decoding step (transformers compiles the model's call: the observer opens a list for
  the step inside the trace) writes each state's last position into that list, which the observer
  returns from the graph with the step's other outputs
  (:meth:`~.observer.StepObserver._compiled_forward_end`); the graph has no output-capturing hooks in
  it and needs none installed before it is traced. Parts of the step that dynamo leaves to run
  uncompiled (a graph break) write into the same list.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from torch import Tensor

from corevital.capture.hf_compat import other_forward_hooks
from corevital.capture.layer_stream import StreamSites
from corevital.capture.module_forward import every_slot, forward_replaced


def outputs_as_returned(sites: StreamSites) -> bool:
    """Whether a wrapper around each site's ``forward`` sees the output the module returns: no forward
    hook on the sites (nor a global one) may change it afterwards (a fault injected, a steering vector
    added, an activation patched), except transformers' own output-capturing hooks, which only record.
    Where one may, the observer reads the states transformers returns, after every hook."""
    return not other_forward_hooks((*sites.blocks, sites.base))


class LayerOutputTap:
    """Hidden states 1..L of the latest forward pass, at its last position, from the verified sites.

    ``keeping``: whether an eager pass keeps its states (the observer turns it off for a pass whose
    states come from elsewhere: the prompt's streamed pass). ``compiled``: the list a compiled step
    writes into, opened by the observer inside the trace (None: no compiled step is running).
    """

    def __init__(self, sites: StreamSites) -> None:
        self.sites = sites
        # state l (1..L) is layer l-1's output; with ``tie_last`` state L is the base model's
        # last_hidden_state (after the final norm) and the last layer's own output is not needed
        self.blocks = sites.blocks[:-1] if sites.tie_last else sites.blocks
        self.layers = len(sites.blocks)
        self.keeping = True
        self.compiled: list[Tensor | None] | None = None
        self._latest: list[Tensor | None] = [None] * self.layers

    @contextmanager
    def installed(self) -> Iterator[LayerOutputTap]:
        try:
            with ExitStack() as stack:
                for slot, block in enumerate(self.blocks):
                    wrapped = self._wrapped(slot, block.forward, base=False)
                    stack.enter_context(forward_replaced(block, wrapped))
                if self.sites.tie_last:
                    base = self.sites.base
                    wrapped = self._wrapped(self.layers - 1, base.forward, base=True)
                    stack.enter_context(forward_replaced(base, wrapped))
                yield self
        finally:
            self._latest[:] = [None] * self.layers
            self.compiled = None

    def _wrapped(self, slot: int, forward: Any, *, base: bool) -> Any:
        latest = self._latest  # one list for the tap's life: take() empties it in place
        tap = self

        def kept(*args: Any, **kwargs: Any) -> Any:
            output = forward(*args, **kwargs)
            if base:
                state = output.get("last_hidden_state") if hasattr(output, "get") else None
            else:
                state = output[0] if isinstance(output, tuple) else output
            if not isinstance(state, Tensor) or state.dim() != 3:
                return output
            compiled = tap.compiled
            if compiled is not None:
                # a compiled decoding step: traced, or a part of it dynamo left to run uncompiled
                compiled[slot] = state[:, -1:]
            elif tap.keeping:
                # a pass over several positions: a copy of the last, not the pass's output
                latest[slot] = state if state.shape[1] == 1 else state[:, -1:].clone()
            return output

        return kept

    def open_compiled(self) -> None:
        """Inside a traced pass: the list its states are written into (:meth:`take_compiled`)."""
        self.compiled = [None] * self.layers

    def take_compiled(self) -> tuple[Tensor, ...] | None:
        """The compiled step's states ([B, 1, d] each), or None when some layer wrote none."""
        compiled, self.compiled = self.compiled, None
        return None if compiled is None else every_slot(compiled)

    def take(self) -> tuple[Tensor, ...] | None:
        """States 1..L ([B, 1, d] each) of the eager pass that just ran, or None when some layer kept
        none (the tap is emptied for the next pass either way). A compiled step whose end runs
        uncompiled (dynamo resumed it outside the graph) gives the states written for it."""
        if self.compiled is not None:
            return self.take_compiled()
        return every_slot(self._latest)
