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
:mod:`.mlp_inputs` does) and the observer asks for no hidden states. Where the same check verified
the norms the states pass through (:attr:`~.layer_stream.StreamSites.entries`: states 1..L-1 are
the inputs of layers 2..L's norms before attention, state L the final norm's output), the norms are
wrapped instead of the layers: a decoder layer's call carries half a dozen keyword arguments, which
a wrapper's ``**kwargs`` packs and the layer's parameters match again, some 5k host instructions a
call against 0.8k for a norm's wrapper that takes its one argument (where the check pass saw it
called so: :attr:`~.layer_stream.StreamSites.positional`; docs/performance.md, "Host instructions
per decoding step").

The observer tells the tap what the next pass is (:meth:`LayerOutputTap.begin_pass`), so that a
wrapper's work at a decoding step is one attribute test and one list store:

- an eager pass over one position keeps a reference to each state (checked for the whole step,
  when the step's states are copied together: :meth:`~.step_window.StepWindow.keep_rows`);
- an eager pass over several positions keeps a copy of each state's last position, so the pass's
  outputs are not kept alive;
- a compiled decoding step (transformers compiles the model's call: the observer opens a list for
  the step inside the trace) writes each state's last position into that list, which the observer
  returns from the graph with the step's other outputs
  (:meth:`~.observer.StepObserver._compiled_forward_end`); the graph has no output-capturing hooks in
  it and needs none installed before it is traced. Parts of the step that dynamo leaves to run
  uncompiled (a graph break) write into the same list.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from corevital.capture.hf_compat import other_forward_hooks
from corevital.capture.layer_stream import StreamSites
from corevital.capture.module_forward import every_slot, first_argument, forwards_replaced


def outputs_as_returned(sites: StreamSites) -> bool:
    """Whether a wrapper around each site's ``forward`` sees the output the module returns: no forward
    hook on the sites (nor a global one) may change it afterwards (a fault injected, a steering vector
    added, an activation patched), except transformers' own output-capturing hooks, which only record.
    Where one may, the observer reads the states transformers returns, after every hook."""
    final = () if sites.final is None else (sites.final,)
    return not other_forward_hooks((*sites.blocks, sites.base, *final))


def _inputs_as_called(entries: tuple[nn.Module, ...]) -> bool:
    """Whether a wrapper around each entry norm's ``forward`` sees the input the norm was called with:
    no forward pre-hook on them (nor a global one) may change it first."""
    return not nn.modules.module._global_forward_pre_hooks and not any(
        entry._forward_pre_hooks for entry in entries
    )


def _block_state(output: Any) -> Any:
    return output[0] if isinstance(output, tuple) else output


def _base_state(output: Any) -> Any:
    return output.get("last_hidden_state") if hasattr(output, "get") else None


class LayerOutputTap:
    """Hidden states 1..L of the latest forward pass, at its last position, from the verified sites.

    ``one``, ``several``: whether the pass the observer began (:meth:`begin_pass`) covers one position
    or several and keeps its states (neither: it keeps none). ``compiled``: the list a compiled step
    writes into, opened by the observer inside the trace (None: no compiled step is running).
    """

    def __init__(self, sites: StreamSites) -> None:
        self.sites = sites
        self.layers = len(sites.blocks)
        self.one = False
        self.several = False
        self.compiled: list[Tensor | None] | None = None
        self._latest: list[Tensor | None] = [None] * self.layers
        self._empty = (None,) * self.layers

    def begin_pass(self, positions: int | None, *, keep: bool = True) -> None:
        """The next forward pass covers ``positions`` positions (None: not known) and keeps its states
        (``keep``); what an earlier pass kept and nobody took is dropped."""
        self.one = keep and positions == 1
        self.several = keep and positions != 1
        self._latest[:] = self._empty

    def _readers(self) -> list[tuple[nn.Module, Any]]:
        """Each slot's module and its wrapper: state l + 1 in slot l."""
        sites, last = self.sites, self.layers - 1
        if sites.entries and _inputs_as_called(sites.entries):
            # verified: the norms before attention, and the final norm or the last layer
            one = sites.positional  # each called with one positional argument: a wrapper that takes one
            readers = [
                (entry, self._input_kept(slot, entry.forward, one))
                for slot, entry in enumerate(sites.entries)
            ]
            if sites.tie_last and sites.final is not None:
                final = sites.final
                kept = self._output_kept_one(last, final.forward) if one else None
                readers.append((final, kept or self._output_kept(last, final.forward, None)))
            else:
                block = sites.blocks[-1]
                readers.append((block, self._output_kept(last, block.forward, _block_state)))
            return readers
        # state l (1..L) is layer l-1's output; with ``tie_last`` state L is the base model's
        # last_hidden_state (after the final norm) and the last layer's own output is not needed
        blocks = sites.blocks[:-1] if sites.tie_last else sites.blocks
        readers = [
            (block, self._output_kept(slot, block.forward, _block_state)) for slot, block in enumerate(blocks)
        ]
        if sites.tie_last:
            readers.append((sites.base, self._output_kept(last, sites.base.forward, _base_state)))
        return readers

    @contextmanager
    def installed(self) -> Iterator[LayerOutputTap]:
        try:
            with forwards_replaced(self._readers()):
                yield self
        finally:
            self._latest[:] = self._empty
            self.compiled = None
            self.one = self.several = False

    def _input_kept(self, slot: int, forward: Any, one_argument: bool) -> Any:
        latest = self._latest  # one list for the tap's life: emptied in place
        tap = self

        def kept_one(state: Any) -> Any:
            if tap.one:
                latest[slot] = state
            elif tap.several or tap.compiled is not None:
                tap._keep_last(slot, state)
            return forward(state)

        if one_argument:
            return kept_one

        def kept(*args: Any, **kwargs: Any) -> Any:
            # args[0] inline: a positional call, the usual one, takes no helper's frame
            if tap.one:
                latest[slot] = args[0] if args else first_argument(args, kwargs)
            elif tap.several or tap.compiled is not None:
                tap._keep_last(slot, args[0] if args else first_argument(args, kwargs))
            return forward(*args, **kwargs)

        return kept

    def _output_kept(self, slot: int, forward: Any, state_of: Any) -> Any:
        latest = self._latest
        tap = self

        def kept(*args: Any, **kwargs: Any) -> Any:
            output = forward(*args, **kwargs)
            if tap.one:
                latest[slot] = output if state_of is None else state_of(output)
            elif tap.several or tap.compiled is not None:
                tap._keep_last(slot, output if state_of is None else state_of(output))
            return output

        return kept

    def _output_kept_one(self, slot: int, forward: Any) -> Any:
        latest = self._latest
        tap = self

        def kept(state: Any) -> Any:
            output = forward(state)
            if tap.one:
                latest[slot] = output
            elif tap.several or tap.compiled is not None:
                tap._keep_last(slot, output)
            return output

        return kept

    def _keep_last(self, slot: int, state: Any) -> None:
        """A compiled step's state (traced, or a part of it dynamo left to run uncompiled) or one of a
        pass over several positions: its last position (a copy of it, so the pass's outputs are not
        kept alive)."""
        if not isinstance(state, Tensor) or state.dim() != 3:
            return
        if self.compiled is not None:
            self.compiled[slot] = state[:, -1:]
        else:
            self._latest[slot] = state if state.shape[1] == 1 else state[:, -1:].clone()

    def open_compiled(self) -> None:
        """Inside a traced pass: the list its states are written into (:meth:`take_compiled`)."""
        self.one = self.several = False
        self.compiled = [None] * self.layers

    def take_compiled(self) -> tuple[Tensor, ...] | None:
        """The compiled step's states ([B, 1, d] each), or None when some layer wrote none."""
        compiled, self.compiled = self.compiled, None
        return None if compiled is None else every_slot(compiled)

    def take(self) -> tuple[Tensor, ...] | None:
        """States 1..L ([B, 1, d] each; of a pass over one position, what the modules got or returned,
        unchecked) of the eager pass that just ran, or None when some layer kept none (the tap is
        emptied for the next pass either way, and keeps nothing until the next :meth:`begin_pass`).
        A compiled step whose end runs uncompiled (dynamo resumed it outside the graph) gives the
        states written for it."""
        self.one = self.several = False
        if self.compiled is not None:
            return self.take_compiled()
        return every_slot(self._latest)
