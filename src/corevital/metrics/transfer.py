"""Moving a step's statistics to the host in one copy.

The reductions leave dozens of small tensors on the model's device; copying each one would cost
one synchronising transfer apiece. :func:`to_host` and :func:`to_host_many` gather every tensor of
one or several steps into a single byte buffer on the device, copy that buffer with exactly one
``Tensor.cpu()`` call per non-host device (one in the usual single-device case), and split it
into numpy arrays on the host.

The buffer holds each tensor's raw bytes after a cast on the device to its host dtype, so every
value arrives exactly: bool stays bool, any integer dtype becomes int64 (no 2**24 limit, unlike a
float32 buffer), any floating dtype becomes float32. Tensors are laid out by descending item size,
which keeps every array aligned without padding. The arrays are views into the one host buffer.
A flush of 32 steps moves hundreds of small tensors, most of them the same statistic of each step:
tensors that share dtype and shape are stacked in one dispatch, the stacks of one host dtype
concatenated, then the bytes of those few buffers.

:func:`to_host_later` starts the same copy without waiting for it (a non-blocking copy into
page-locked memory on CUDA, followed by an event): :meth:`PendingHost.result` later waits for that
copy alone, not for device work queued after it.

Counting transfers in tests: the copy is the only ``Tensor.cpu`` call (or, started without waiting,
the only ``copy_`` into page-locked memory) and there is no
``.item()``/``.tolist()``/``.to("cpu")``, so a ``torch.overrides.TorchFunctionMode`` that records
the tensor methods called during ``to_host`` sees the transfers exactly; on CUDA the profiler's
device-to-host memcpy events confirm it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

_BOOL = (torch.bool, np.dtype(np.bool_))
_INT = (torch.int64, np.dtype(np.int64))
_FLOAT = (torch.float32, np.dtype(np.float32))


def to_host(step: Any) -> Any:
    """``step`` with every tensor replaced by a numpy array, after one device-to-host copy.

    ``step`` is a (possibly nested) dataclass, tuple, list or dict whose leaves are tensors, None
    or plain values; the same structure and dataclass types come back.
    """
    return to_host_many([step])[0]


def to_host_many(steps: Sequence[Any]) -> list[Any]:
    """:func:`to_host` for several steps at once, still with one copy per device."""
    result: list[Any] = PendingHost(list(steps), wait=True).result()
    return result


def _collect(obj: Any, out: list[Tensor]) -> None:
    """Append every tensor inside ``obj`` to ``out``, in :func:`_map_tensors`' order."""
    if isinstance(obj, Tensor):
        out.append(obj)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for name in _init_fields(type(obj)):
            _collect(getattr(obj, name), out)
    elif isinstance(obj, (tuple, list)):
        for value in obj:
            _collect(value, out)
    elif isinstance(obj, dict):
        for value in obj.values():
            _collect(value, out)


def _map_tensors(obj: Any, fn: Callable[[Tensor], Any]) -> Any:
    """``obj`` rebuilt with ``fn`` applied to each tensor, in a fixed depth-first order."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        return cls(**{name: _map_tensors(getattr(obj, name), fn) for name in _init_fields(cls)})
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_map_tensors(v, fn) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


@functools.cache
def _init_fields(cls: type) -> tuple[str, ...]:
    """The dataclass fields set by ``__init__`` (what ``dataclasses.replace`` would pass on)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


@functools.cache
def _host_dtype(dtype: torch.dtype) -> tuple[torch.dtype, np.dtype]:
    if dtype == torch.bool:
        return _BOOL
    if dtype.is_floating_point:
        return _FLOAT
    if dtype.is_complex:
        raise TypeError(f"complex tensors are not supported: {dtype}")
    return _INT


class _DeviceBytes:
    """One device's tensors packed into one byte buffer and its copy to the host (``.cpu()``, or
    without waiting on CUDA).

    Tensors of one host dtype go into one buffer: those that also share their own dtype and shape
    (the same statistic of every step in a window) are stacked in one dispatch, a lone tensor is
    flattened; the buffers' bytes are concatenated in descending item size and cross to the host
    together.
    """

    def __init__(self, tensors: list[Tensor], indices: list[int], *, wait: bool) -> None:
        groups: dict[tuple[torch.dtype, np.dtype], dict[tuple[torch.dtype, tuple[int, ...]], list[int]]] = {}
        for i in indices:
            t = tensors[i]
            groups.setdefault(_host_dtype(t.dtype), {}).setdefault((t.dtype, t.shape), []).append(i)
        self.groups = groups
        # Largest item size first: every array then starts at a multiple of its own item size.
        self.order = sorted(groups, key=lambda target: -target[1].itemsize)
        buffers = [
            torch.cat([_stacked([tensors[i] for i in same], target[0]) for same in groups[target].values()])
            for target in self.order
        ]
        self.sizes = [b.numel() * target[1].itemsize for target, b in zip(self.order, buffers, strict=True)]
        chunks = torch.cat([b.view(torch.uint8) for b in buffers])
        self.event: Any = None
        self.source: Tensor | None = None
        if wait or chunks.device.type != "cuda":
            self.host = chunks.cpu()
        else:
            # into page-locked memory without waiting: the copy runs after the work queued before it
            self.host = torch.empty(chunks.numel(), dtype=torch.uint8, pin_memory=True)
            self.host.copy_(chunks, non_blocking=True)
            self.event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            self.event.record(torch.cuda.current_stream(chunks.device))
            self.source = chunks  # kept until the copy is done

    def split(self, result: list[np.ndarray | None]) -> None:
        """Wait for this copy (only it) and write each tensor's array (a view) into ``result``."""
        if self.event is not None:
            self.event.synchronize()
            self.event = self.source = None
        host = self.host.numpy()
        offset = 0
        for target, nbytes in zip(self.order, self.sizes, strict=True):
            typed = host[offset : offset + nbytes].view(target[1])
            start = 0
            for (_, shape), same in self.groups[target].items():
                count = math.prod(shape) * len(same)
                block = typed[start : start + count].reshape((len(same), *shape))
                for k, i in enumerate(same):
                    result[i] = block[k, ...]  # a view; an array even for a 0-d tensor
                start += count
            offset += nbytes


class PendingHost:
    """The copy of ``obj``'s tensors to the host, one per device, started at once (``wait``: and
    finished); still running after :func:`to_host_later`."""

    def __init__(self, obj: Any, *, wait: bool) -> None:
        self._obj = obj
        tensors: list[Tensor] = []
        _collect(obj, tensors)
        self._count = len(tensors)
        by_device: dict[torch.device, list[int]] = {}
        for i, t in enumerate(tensors):
            by_device.setdefault(t.device, []).append(i)
        self._devices = [_DeviceBytes(tensors, indices, wait=wait) for indices in by_device.values()]

    def result(self) -> Any:
        """``obj`` with numpy arrays for tensors, waiting for this copy only (not later device work)."""
        found: list[np.ndarray | None] = [None] * self._count
        for device in self._devices:
            device.split(found)
        assert all(a is not None for a in found)
        arrays = iter(found)
        return _map_tensors(self._obj, lambda _t: next(arrays))


def to_host_later(obj: Any) -> PendingHost:
    """:func:`to_host` without waiting: the copy is queued on the device after the work that
    computes ``obj`` (into page-locked memory on CUDA), and :meth:`PendingHost.result` waits for it.

    The host is free until then: during a generation, the next steps are launched while the copy
    runs, and the arrays are unpacked while the device computes them. Off CUDA the copy is made at
    once. One copy per device, as :func:`to_host`.
    """
    return PendingHost(obj, wait=False)


def _stacked(same: list[Tensor], dtype: torch.dtype) -> Tensor:
    """Tensors of one dtype and shape as one 1-D tensor of ``dtype``, in order: one dispatch for many."""
    if len(same) == 1:
        return _flat(same[0], dtype)
    stacked = torch.stack(same)
    stacked = (stacked.detach() if stacked.requires_grad else stacked).reshape(-1)
    return stacked if stacked.dtype == dtype else stacked.to(dtype)


def _flat(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` as a 1-D tensor of ``dtype`` (a view where possible; ``torch.cat`` takes any strides)."""
    flat = (t.detach() if t.requires_grad else t).reshape(-1)
    return flat if flat.dtype == dtype else flat.to(dtype)


def tensor_bytes(obj: Any) -> int:
    """Total bytes of the tensors inside a (nested) dataclass or tuple."""
    total = 0

    def count(t: Tensor) -> Tensor:
        nonlocal total
        total += t.nbytes
        return t

    _map_tensors(obj, count)
    return total
