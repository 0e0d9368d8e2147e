"""A module's ``forward`` replaced for a while, instead of forward hooks; what such wrappers keep.

A module with forward hooks takes PyTorch's slow call path on every call, and where transformers
compiles a model's ``__call__`` each hook on the top-level module becomes a compiled frame of its
own. An instance attribute ``forward`` (a function that calls the original) costs one Python call
and is traced into the caller's graph. :func:`forward_replaced` sets it for the time of a ``with``
block and puts back whatever the instance held before (accelerate's device hooks keep their own
``forward`` there too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import repeat
from operator import is_not
from typing import Any, cast

import torch
from torch import Tensor, nn

_NOT_SET = object()


@contextmanager
def forward_replaced(module: nn.Module, forward: Callable[..., Any]) -> Iterator[None]:
    """``module.forward`` is ``forward`` inside the block, as it was before afterwards."""
    # written to the instance dictionary directly: Module.__setattr__ checks every assignment
    # against parameters, buffers and submodules
    saved = module.__dict__.get("forward", _NOT_SET)
    module.__dict__["forward"] = forward
    try:
        yield
    finally:
        if saved is _NOT_SET:
            module.__dict__.pop("forward", None)
        else:
            module.__dict__["forward"] = saved


@contextmanager
def forwards_replaced(replacements: Iterable[tuple[nn.Module, Callable[..., Any]]]) -> Iterator[None]:
    """Each module's ``forward`` replaced inside the block (:func:`forward_replaced` for many modules
    at once, without a context manager each: a tap installs one wrapper per layer every generation),
    as it was before afterwards, put back in the reverse order."""
    saved: list[tuple[nn.Module, Any]] = []
    try:
        for module, forward in replacements:
            saved.append((module, module.__dict__.get("forward", _NOT_SET)))
            module.__dict__["forward"] = forward
        yield
    finally:
        for module, before in reversed(saved):
            if before is _NOT_SET:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = before


def first_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A module's input: its first positional argument, else its first keyword's value (the only one
    a norm takes), else None."""
    return args[0] if args else next(iter(kwargs.values()), None)


class CallForms:
    """While installed (forward pre-hooks, for a check pass): whether every call of ``modules``
    passed exactly one positional argument and no keyword, each module called at least once.

    A wrapper that takes one argument costs a call some 1k host instructions less than one that
    packs ``*args, **kwargs`` (a new tuple and dictionary a call); where a model's check pass saw its
    norms called that way, the taps wrap them so (its code calls them the same way every pass).
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = tuple(modules)
        self._called: set[int] = set()
        self._other = False

    @contextmanager
    def installed(self) -> Iterator[CallForms]:
        handles = [m.register_forward_pre_hook(self._seen, with_kwargs=True) for m in self.modules]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _seen(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._called.add(id(module))
        if len(args) != 1 or kwargs:
            self._other = True

    @property
    def one_argument(self) -> bool:
        return bool(self.modules) and not self._other and len(self._called) == len(set(map(id, self.modules)))


def every_slot(slots: list[Tensor | None]) -> tuple[Tensor, ...] | None:
    """What the wrappers of one pass kept, one slot per layer, or None when some layer kept nothing;
    the slots are emptied for the next pass either way."""
    kept = tuple(slots)
    slots[:] = [None] * len(kept)
    # identity tests in C (``None in kept`` would compare tensors with ``==``): once a step per tap
    if not all(map(is_not, kept, repeat(None))):
        return None
    return cast("tuple[Tensor, ...]", kept)


def last_positions(states: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Each state [B, S, d] at its last position, [B, 1, d]: views of one copy made for all of them
    (one kernel, not one per state), so that nothing holds the states themselves."""
    return torch.stack([state[:, -1] for state in states]).unsqueeze(2).unbind(0)
