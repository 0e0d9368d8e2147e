"""The prompt telemetry on a CUDA stream of its own (corevital.capture.side_stream).

On a CPU the side stream runs its work where it stands. On a CUDA device (``CV_TEST_DEVICE`` is not
needed: these tests run wherever one is present) the stream's rules are checked against what the
caching allocator and the streams do without them, and a capture with the telemetry beside the
model reports what one with the telemetry on the model's stream does.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from corevital.capture.loading import LoadedModel, ModelSpec, load_model
from corevital.capture.options import Tuning
from corevital.capture.records import SequenceCapture
from corevital.capture.runner import capture_prompts
from corevital.capture.side_stream import SideStream
from tests.integration.conftest import tiny_settings
from tests.support.compare import assert_stats_close

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# A kernel that keeps the side stream busy for some tens of milliseconds (clock cycles of the GPU):
# what the model's stream queues meanwhile runs before the side stream's next kernel.
SLEEP_CYCLES = 100_000_000
ELEMENTS = 1 << 20
PROMPTS = ["The quick brown fox jumps over the lazy dog near the river bank", "a b c"]


def test_on_a_cpu_device_the_work_runs_where_it_stands() -> None:
    side = SideStream()
    x = torch.arange(4.0)
    with side.running(torch.device("cpu"), x):
        y = x * 2
    side.join()
    assert y.tolist() == [0.0, 2.0, 4.0, 6.0]


@cuda
@pytest.mark.gpu
def test_a_tensor_the_side_stream_reads_is_not_written_over_before_it_is_read() -> None:
    device = torch.device("cuda")
    side = SideStream()
    x = torch.full((ELEMENTS,), 3.0, device=device)
    torch.cuda.synchronize()
    with side.running(device, x):
        torch.cuda._sleep(SLEEP_CYCLES)  # type: ignore[no-untyped-call]
        total = x.sum()
    del x  # freed on the model's stream while the side stream has not read it yet
    # the model's stream's next block of that size: not written over x before the side stream reads it
    # (the allocator keeps x's block, or makes the model's stream wait before reusing it)
    other = torch.full((ELEMENTS,), 7.0, device=device)
    side.join()
    assert total.item() == 3.0 * ELEMENTS
    assert other.sum().item() == 7.0 * ELEMENTS


@cuda
@pytest.mark.gpu
def test_the_tensors_side_work_reads_are_referenced_until_it_has_run_or_is_joined() -> None:
    device = torch.device("cuda")
    side = SideStream()
    x = torch.ones(ELEMENTS, device=device)
    torch.cuda.synchronize()
    with side.running(device, x):
        torch.cuda._sleep(SLEEP_CYCLES)  # type: ignore[no-untyped-call]
        x.sum()
    read = weakref.ref(x)
    del x
    side.release_done()
    assert read() is not None  # the side stream still sleeps before its read
    torch.cuda.synchronize()
    side.release_done()
    assert read() is None
    y = torch.ones(ELEMENTS, device=device)
    with side.running(device, y):
        torch.cuda._sleep(SLEEP_CYCLES)  # type: ignore[no-untyped-call]
        y.sum()
    read = weakref.ref(y)
    del y
    side.join()  # the model's stream waits on the device: what it queues next runs after the read
    assert read() is None


@cuda
@pytest.mark.gpu
def test_the_model_stream_reads_side_results_after_join() -> None:
    device = torch.device("cuda")
    side = SideStream()
    torch.cuda.synchronize()
    with side.running(device):
        torch.cuda._sleep(SLEEP_CYCLES)  # type: ignore[no-untyped-call]
        ones = torch.ones(ELEMENTS, device=device)
    side.join()
    assert ones.sum().item() == ELEMENTS  # the sum, on the model's stream, ran after the fill


@cuda
@pytest.mark.gpu
def test_side_work_starts_after_what_the_model_stream_queued() -> None:
    device = torch.device("cuda")
    side = SideStream()
    x = torch.zeros(ELEMENTS, device=device)
    torch.cuda.synchronize()
    # on the model's stream, before the write the side stream reads
    torch.cuda._sleep(SLEEP_CYCLES)  # type: ignore[no-untyped-call]
    x.fill_(5.0)
    with side.running(device, x):
        total = x.sum()
    side.join()
    assert total.item() == 5.0 * ELEMENTS


@contextmanager
def _counted_side_work(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.device]]:
    """Every device a side stream runs work on, as it happens."""
    devices: list[torch.device] = []
    real = SideStream.running

    @contextmanager
    def running(self: SideStream, device: torch.device, *reads: Any) -> Iterator[None]:
        devices.append(device)
        with real(self, device, *reads):
            yield

    monkeypatch.setattr(SideStream, "running", running)
    yield devices


def _assert_prompts_equal(got: SequenceCapture, want: SequenceCapture) -> None:
    a, b = got.prompt_telemetry, want.prompt_telemetry
    assert a is not None and b is not None
    assert a.layers, "no prompt attention"
    for x, y in zip(a.layers, b.layers, strict=True):
        for name in ("query_indices", "key_indices", "weights", "count"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)
    np.testing.assert_array_equal(a.basin_scores, b.basin_scores)
    np.testing.assert_array_equal(a.layer_transformations, b.layer_transformations)
    np.testing.assert_array_equal(a.surprisals, b.surprisals)


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("chunk", [None, 1], ids=["layers-together", "heads-in-groups"])
def test_a_capture_scoring_beside_the_model_reports_what_one_on_its_stream_does(
    chunk: int | None, tiny_model_dir: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``chunk`` 1: the prompt chunk budget of one byte scores each layer a head group at a time."""
    loaded: LoadedModel = load_model(ModelSpec(model=str(tiny_model_dir("llama")), device="cuda"))
    settings = tiny_settings(device="cuda", max_new_tokens=6)
    runs = {}
    for beside in (False, True):
        tuning = Tuning(side_stream=beside, prompt_chunk_bytes=chunk)
        with _counted_side_work(monkeypatch) as devices:
            runs[beside] = capture_prompts(loaded, PROMPTS, settings, tuning=tuning).sequences
        assert bool(devices) == beside
        assert all(device.type == "cuda" for device in devices)
        monkeypatch.undo()
    for got, want in zip(runs[True], runs[False], strict=True):
        assert got.generated_token_ids == want.generated_token_ids
        _assert_prompts_equal(got, want)
        for name in ("logits", "chosen", "hidden", "attention"):
            # the first step's observed row is recomputed alone beside the model: float32 rounding
            assert_stats_close(getattr(got, name), getattr(want, name), name, rtol=1e-4, atol=1e-5)


@cuda
@pytest.mark.gpu
def test_generations_share_one_side_stream_and_its_cached_blocks(
    tiny_model_dir: Callable[[str], Path],
) -> None:
    """The caching allocator keeps a stream's freed blocks for that stream: a stream of each
    generation's own would reserve more memory with every generation."""
    loaded: LoadedModel = load_model(ModelSpec(model=str(tiny_model_dir("llama")), device="cuda"))
    settings = tiny_settings(device="cuda", max_new_tokens=3)
    reserved = []
    for _ in range(4):
        capture_prompts(loaded, PROMPTS, settings, tuning=Tuning(side_stream=True))
        torch.cuda.synchronize()
        reserved.append(torch.cuda.memory_reserved())
    assert reserved[1] == reserved[2] == reserved[3]


def test_a_cpu_capture_asked_for_a_side_stream_runs_on_its_one_path(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = tiny_loaded("llama")
    settings = tiny_settings(max_new_tokens=4)
    with _counted_side_work(monkeypatch) as devices:
        beside = capture_prompts(loaded, PROMPTS, settings, tuning=Tuning(side_stream=True)).sequences
    monkeypatch.undo()
    alone = capture_prompts(loaded, PROMPTS, settings, tuning=Tuning(side_stream=False)).sequences
    assert devices == []
    for got, want in zip(beside, alone, strict=True):
        _assert_prompts_equal(got, want)
