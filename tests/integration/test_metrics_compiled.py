"""corevital.metrics.compiled: reductions compiled by torch.compile, run as written where that fails."""

from __future__ import annotations

import threading

import pytest
import torch

from corevital.metrics.compiled import CompiledReduction


def test_a_reduction_compiles_once_for_every_shape_and_equals_its_written_form() -> None:
    """Symbolic shapes: inputs of three sizes, one compilation; the values of the function as written."""
    from torch._dynamo.utils import counters

    def row_sums(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=-1, dtype=torch.float32).square().sum(dim=-1)

    reduction = CompiledReduction(row_sums)
    counters.clear()
    for rows, width in ((3, 5), (4, 9), (7, 33)):
        x = torch.randn(rows, width, generator=torch.Generator().manual_seed(width))
        torch.testing.assert_close(reduction(x), row_sums(x), rtol=1e-6, atol=1e-7)
    assert reduction.failure is None
    assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"]


def test_calls_from_several_threads_give_each_its_own_result() -> None:
    """Generations in several threads (a server) call one reduction at once: each gets its result."""
    reduction = CompiledReduction(lambda x: (x * 2).sum(dim=-1))
    inputs = [torch.full((4, 8 + i), float(i)) for i in range(6)]
    found: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        found[i] = reduction(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reduction.failure is None
    for i, x in enumerate(inputs):
        torch.testing.assert_close(found[i], (x * 2).sum(dim=-1))


def test_a_reduction_that_cannot_compile_runs_as_written(caplog: pytest.LogCaptureFixture) -> None:
    """A graph break (a value read on the host) fails ``fullgraph`` compilation: the reduction runs as
    written from then on, the reason kept and logged once."""
    from corevital.metrics.compiled import CompiledReduction

    def host_branch(x: torch.Tensor) -> torch.Tensor:
        return x * 2 if float(x.sum()) > 0 else x

    reduction = CompiledReduction(host_branch)
    x = torch.ones(3)
    with caplog.at_level("WARNING", logger="corevital.metrics.compiled"):
        assert torch.equal(reduction(x), x * 2)
        assert torch.equal(reduction(-x), -x)
    assert reduction.failure is not None
    assert [r.getMessage() for r in caplog.records if "runs uncompiled" in r.getMessage()] == [
        f"host_branch runs uncompiled: compiling it failed ({reduction.failure})"
    ]
