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

Counting transfers in tests: the copy is the only ``Tensor.cpu`` call and there is no
``.item()``/``.tolist()``/``.to("cpu")``, so a ``torch.overrides.TorchFunctionMode`` that records
the tensor methods called during ``to_host`` sees the transfers exactly; on CUDA the profiler's
device-to-host memcpy events confirm it.
"""

from __future__ import annotations

import dataclasses
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
    tensors: list[Tensor] = []

    def collect(t: Tensor) -> Tensor:
        tensors.append(t)
        return t

    _map_tensors(list(steps), collect)
    arrays = iter(_copy_to_host(tensors))
    return [_map_tensors(step, lambda _t: next(arrays)) for step in steps]


def _map_tensors(obj: Any, fn: Callable[[Tensor], Any]) -> Any:
    """``obj`` rebuilt with ``fn`` applied to each tensor, in a fixed depth-first order."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: _map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_map_tensors(v, fn) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


def _host_dtype(dtype: torch.dtype) -> tuple[torch.dtype, np.dtype]:
    if dtype == torch.bool:
        return _BOOL
    if dtype.is_floating_point:
        return _FLOAT
    if dtype.is_complex:
        raise TypeError(f"complex tensors are not supported: {dtype}")
    return _INT


def _copy_to_host(tensors: list[Tensor]) -> list[np.ndarray]:
    """Numpy copies of ``tensors`` (in order), one ``.cpu()`` call per device."""
    result: list[np.ndarray | None] = [None] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for indices in by_device.values():
        targets = [_host_dtype(tensors[i].dtype) for i in indices]
        # Largest item size first: every array then starts at a multiple of its own item size.
        order = sorted(range(len(indices)), key=lambda j: -targets[j][1].itemsize)
        chunks = [_flat(tensors[indices[j]], targets[j][0]).view(torch.uint8) for j in order]
        host = torch.cat(chunks).cpu().numpy()
        offset = 0
        for j, chunk in zip(order, chunks, strict=True):
            nbytes = chunk.numel()
            t = tensors[indices[j]]
            result[indices[j]] = host[offset : offset + nbytes].view(targets[j][1]).reshape(t.shape)
            offset += nbytes
    assert all(a is not None for a in result)
    return result  # type: ignore[return-value]


def _flat(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A 1-D, unit-stride copy or view of ``t`` in ``dtype`` (a size-1 slice may carry any stride)."""
    flat = t.detach().reshape(-1).to(dtype)
    return flat if flat.stride(0) == 1 else flat.clone(memory_format=torch.contiguous_format)


def tensor_bytes(obj: Any) -> int:
    """Total bytes of the tensors inside a (nested) dataclass or tuple."""
    total = 0

    def count(t: Tensor) -> Tensor:
        nonlocal total
        total += t.nbytes
        return t

    _map_tensors(obj, count)
    return total
