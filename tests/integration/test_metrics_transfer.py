"""Moving a step's statistics to the host in one copy."""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from corevital.metrics.attention import summarize_attention
from corevital.metrics.hidden import make_sketch_matrix, summarize_hidden
from corevital.metrics.logits import summarize_chosen, summarize_logits
from corevital.metrics.transfer import to_host, to_host_later, to_host_many
from corevital.metrics.types import AttentionStats, ChosenTokenStats, HiddenStats, LogitStats

# Tensor methods other than .cpu()/.to() that read a tensor's values from the host.
HOST_READS = {"item", "tolist", "__array__", "__float__", "__int__", "__bool__", "__index__"}


class TensorCallRecorder(TorchFunctionMode):
    """Records the name of every torch function and tensor method called, with its arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        self.calls.append((getattr(func, "__name__", str(func)), args, kwargs))
        return func(*args, **kwargs)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def host_moves(self) -> list[str]:
        """``.cpu()`` calls and ``.to(...)`` calls that name a device."""
        moves = [name for name in self.names() if name == "cpu"]
        for name, args, kwargs in self.calls:
            if name == "to" and ("device" in kwargs or any(isinstance(a, (str, torch.device)) for a in args)):
                moves.append("to(device)")
        return moves


def make_step(device: str = "cpu") -> tuple[LogitStats, ChosenTokenStats, HiddenStats, AttentionStats]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 50, generator=gen).to(device)
    logits[1, 3] = math.nan
    lstats = summarize_logits(logits)
    chosen = summarize_chosen(logits, lstats.log_normalizer, torch.tensor([1, 2], device=device))
    hidden = summarize_hidden(
        torch.randn(3, 2, 16, generator=gen).to(device),
        sketch_matrix=make_sketch_matrix(16, 4, device=device),
    )
    mask = torch.ones(3, 2, 6, dtype=torch.bool, device=device)
    weights = torch.softmax(torch.randn(3, 2, 4, 6, generator=gen), dim=-1).to(device)
    return lstats, chosen, hidden, summarize_attention(weights, mask)


def assert_same_on_host(device_obj: object, host_obj: object) -> None:
    assert type(device_obj) is type(host_obj)
    for name, value in vars(device_obj).items():
        got = getattr(host_obj, name)
        if value is None:
            assert got is None
            continue
        assert isinstance(got, np.ndarray), name
        expected = value.cpu().numpy()
        if value.dtype.is_floating_point:
            assert got.dtype == np.float32, name
            expected = expected.astype(np.float32)
        elif value.dtype == torch.bool:
            assert got.dtype == np.bool_, name
        else:
            assert got.dtype == np.int64, name
        assert got.shape == tuple(value.shape), name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_round_trip_of_a_whole_step() -> None:
    step = make_step()
    host = to_host(step)
    assert isinstance(host, tuple) and len(host) == 4
    for device_obj, host_obj in zip(step, host, strict=True):
        assert_same_on_host(device_obj, host_obj)


def test_one_host_copy_for_a_whole_step() -> None:
    step = make_step()
    with TensorCallRecorder() as rec:
        to_host(step)
    assert rec.host_moves() == ["cpu"]
    assert rec.names().count("numpy") == 1  # on the buffer that .cpu() returned
    assert not HOST_READS & set(rec.names())


def test_one_host_copy_for_several_steps() -> None:
    steps = [make_step(), make_step(), make_step()]
    with TensorCallRecorder() as rec:
        host = to_host_many(steps)
    assert rec.host_moves() == ["cpu"]
    assert len(host) == 3
    for step, host_step in zip(steps, host, strict=True):
        for device_obj, host_obj in zip(step, host_step, strict=True):
            assert_same_on_host(device_obj, host_obj)


def test_a_copy_started_without_waiting_gives_the_same_arrays() -> None:
    steps = [make_step(), make_step()]
    with TensorCallRecorder() as rec:
        pending = to_host_later(steps)
        later = pending.result()
    assert rec.host_moves() == ["cpu"]  # off CUDA the copy is made at once, still one
    for step, host_step in zip(steps, later, strict=True):
        for device_obj, host_obj in zip(step, host_step, strict=True):
            assert_same_on_host(device_obj, host_obj)


def test_the_recorder_sees_host_reads() -> None:
    # The counting above is only meaningful if the recorder catches every way of reading a tensor.
    t = torch.ones(3)
    with TensorCallRecorder() as rec:
        t.cpu()
        t.to("cpu")
        t.sum().item()
    assert rec.host_moves() == ["cpu", "to(device)"]
    assert "item" in rec.names()


@dataclass(frozen=True)
class Inner:
    big: torch.Tensor
    flags: torch.Tensor
    half: torch.Tensor


@dataclass(frozen=True)
class Outer:
    inner: Inner
    scalar: torch.Tensor
    empty: torch.Tensor
    nothing: torch.Tensor | None
    label: str


Pair = namedtuple("Pair", ["a", "b"])


def as_array(value: object) -> np.ndarray:
    """A leaf that ``to_host`` made a numpy array (the dataclass above declares a tensor)."""
    assert isinstance(value, np.ndarray), type(value)
    return value


def test_dtypes_and_exotic_structures() -> None:
    big = torch.tensor([2**40 + 1, -(2**53) + 3, 7], dtype=torch.int64)  # not exact in float32
    obj = Outer(
        inner=Inner(
            big=big,
            flags=torch.tensor([[True, False], [False, True]]),
            half=torch.tensor([1.5, math.nan, -math.inf], dtype=torch.bfloat16),
        ),
        scalar=torch.tensor(3, dtype=torch.int32),
        empty=torch.zeros(0, 4),
        nothing=None,
        label="step",
    )
    structure = {"obj": obj, "pair": Pair(torch.arange(5, dtype=torch.int16), [torch.tensor(2.5)])}
    host = to_host(structure)
    h = host["obj"]
    assert isinstance(h, Outer) and isinstance(h.inner, Inner)
    big_h, flags_h, half_h = as_array(h.inner.big), as_array(h.inner.flags), as_array(h.inner.half)
    assert big_h.dtype == np.int64 and big_h.tolist() == big.tolist()
    assert flags_h.dtype == np.bool_ and flags_h.tolist() == [[True, False], [False, True]]
    assert half_h.dtype == np.float32
    np.testing.assert_array_equal(half_h, [1.5, np.nan, -np.inf])
    scalar_h, empty_h = as_array(h.scalar), as_array(h.empty)
    assert scalar_h.shape == () and scalar_h.dtype == np.int64 and int(scalar_h) == 3
    assert empty_h.shape == (0, 4) and empty_h.dtype == np.float32
    assert h.nothing is None and h.label == "step"
    assert isinstance(host["pair"], Pair)
    assert host["pair"].a.tolist() == [0, 1, 2, 3, 4] and host["pair"].a.dtype == np.int64
    assert isinstance(host["pair"].b, list) and host["pair"].b[0].dtype == np.float32
    # Every array is aligned for its dtype, though they share one buffer.
    for arr in (big_h, flags_h, half_h, host["pair"].a):
        assert arr.flags.aligned


def test_nothing_to_copy() -> None:
    with TensorCallRecorder() as rec:
        assert to_host(("a", None, 3)) == ("a", None, 3)
        assert to_host_many([]) == []
    assert rec.host_moves() == []


def test_tensors_requiring_grad_are_detached() -> None:
    t = torch.ones(3, requires_grad=True) * 2
    assert to_host((t,))[0].tolist() == [2.0, 2.0, 2.0]


def test_complex_tensors_are_rejected() -> None:
    with pytest.raises(TypeError):
        to_host((torch.zeros(2, dtype=torch.complex64),))


def test_strided_and_non_contiguous_tensors() -> None:
    a = torch.arange(12.0).reshape(4, 3)
    single = a[:, 1][:1]  # one element whose stride is 3: reshape(-1) keeps that stride
    host = to_host((single, a[:, 2], a.t(), torch.tensor(5)[None]))
    assert host[0].tolist() == [1.0]
    assert host[1].tolist() == [2.0, 5.0, 8.0, 11.0]
    np.testing.assert_array_equal(host[2], a.t().numpy())
    assert host[3].tolist() == [5]


def test_a_window_costs_a_dispatch_per_statistic_not_per_tensor() -> None:
    """The same statistic of every step is stacked in one dispatch: 32 steps' 1,216 tensors take
    the torch calls of 2 steps' 76 (attribute reads aside), and arrive exactly."""

    def calls(steps: list[Any]) -> tuple[list[str], list[Any]]:
        with TensorCallRecorder() as rec:
            host = to_host_many(steps)
        assert rec.host_moves() == ["cpu"]
        return [name for name in rec.names() if name != "__get__"], host

    steps = [make_step() for _ in range(32)]
    many, host = calls(steps)
    few, _ = calls(steps[:2])
    assert many == few and len(many) < 50, many
    for step, host_step in zip(steps, host, strict=True):
        for device_obj, host_obj in zip(step, host_step, strict=True):
            assert_same_on_host(device_obj, host_obj)


def test_stacked_scalars_stay_arrays() -> None:
    host = to_host((torch.tensor(1.5), torch.tensor(2.5), torch.tensor([3, 4]), torch.tensor(7)))
    assert [type(a) for a in host] == [np.ndarray] * 4
    assert [a.shape for a in host] == [(), (), (2,), ()]
    assert [a.tolist() for a in host] == [1.5, 2.5, [3, 4], 7]


def test_stacked_tensors_requiring_grad_are_detached() -> None:
    a, b = torch.ones(3, requires_grad=True) * 2, torch.ones(3, requires_grad=True) * 3
    assert [x.tolist() for x in to_host((a, b))] == [[2.0] * 3, [3.0] * 3]
