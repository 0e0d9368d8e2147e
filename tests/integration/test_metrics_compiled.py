"""corevital.metrics.compiled: reductions compiled by torch.compile, run as written where that fails."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

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


def _rss_peak_mib(work: Callable[[], object]) -> float:
    """How far the process's resident set rises above where it stands while ``work`` runs (Linux:
    the high-water mark reset first through /proc/self/clear_refs)."""
    status = Path("/proc/self/status")

    def mib(key: str) -> float:
        found = re.search(rf"^{key}:\s+(\d+) kB", status.read_text(), re.MULTILINE)
        assert found is not None
        return int(found.group(1)) / 1024

    Path("/proc/self/clear_refs").write_text("5")
    before = mib("VmRSS")
    work()
    return mib("VmHWM") - before


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_compiled_row_reductions_keep_no_tensor_the_size_of_their_logits() -> None:
    """Compiled, the prompt's and the window's row reductions read 64 MiB of bfloat16 logits and keep
    no float32 tensor of their size (128 MiB) in memory: the process's resident set rises by less
    than 24 MiB while they run, against at least 128 MiB for the same functions run as written."""
    from corevital.metrics.attention import attention_row_parts, fused_attention_row_parts
    from corevital.metrics.prompt import fused_prompt_row_parts, prompt_row_parts

    gen = torch.Generator().manual_seed(0)

    def prompt_inputs(batch: int, heads: int, n: int) -> tuple[torch.Tensor, ...]:
        logits = torch.randn(batch, heads, n, n, generator=gen).to(torch.bfloat16)
        return logits, torch.rand(batch, n, n, generator=gen)

    def window_inputs(rows: int, steps: int, heads: int, keys: int) -> tuple[torch.Tensor, ...]:
        logits = torch.randn(rows, steps, heads, keys, generator=gen).to(torch.bfloat16)
        hidden = torch.rand(rows, steps, 1, keys, generator=gen) < 0.1
        return logits, hidden, torch.randint(0, keys, (rows, steps, 2), generator=gen)

    cases: list[
        tuple[CompiledReduction[Any], Callable[..., Any], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]
    ]
    cases = [
        (fused_prompt_row_parts, prompt_row_parts, prompt_inputs(3, 5, 70), prompt_inputs(2, 16, 1024)),
        (
            fused_attention_row_parts,
            attention_row_parts,
            window_inputs(6, 5, 7, 90),
            window_inputs(16, 32, 32, 2048),
        ),
    ]
    for fused, written, small, large in cases:
        fused(*small)  # compiled here, on other sizes (symbolic shapes: the large call compiles nothing)
        assert large[0].nbytes == 64 * 2**20
        compiled_peak = _rss_peak_mib(partial(fused, *large))
        written_peak = _rss_peak_mib(partial(written, *large))
        assert fused.failure is None
        assert compiled_peak < 24 and written_peak >= 128, (fused.fn.__name__, compiled_peak, written_peak)


def test_more_kinds_of_input_than_dynamos_default_limit_stay_compiled() -> None:
    """Three dtypes and four shapes with and without dimensions of 1 (each a compilation of its
    own): more than dynamo's default of 8 for one function, and the reduction stays compiled."""
    from torch._dynamo.utils import counters

    reduction = CompiledReduction(lambda x: torch.softmax(x, dim=-1, dtype=torch.float32).amax(dim=-1))
    counters.clear()
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for shape in ((4, 6), (1, 6), (4, 1), (1, 1)):
            x = torch.randn(shape).to(dtype)
            torch.testing.assert_close(
                reduction(x), torch.softmax(x, dim=-1, dtype=torch.float32).amax(dim=-1)
            )
    assert reduction.failure is None
    assert counters["stats"]["unique_graphs"] > 8


def test_after_a_failed_compilation_the_written_forms_take_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a reduction's compilation has failed, the functions that use it take the written form
    (the probabilities made once, reduced in place), not the compiled form run uncompiled: the same
    statistics within float32 rounding, and the compiled form is not called again."""
    import corevital.metrics.attention as attention_module
    import corevital.metrics.prompt as prompt_module
    from corevital.metrics.attention import summarize_attention_logits
    from corevital.metrics.prompt import PromptMask, logit_head_parts, prompt_visibility

    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 4, 5, 12, generator=gen)
    mask = torch.ones(3, 4, 12, dtype=torch.bool)
    mask[:, 1, :3] = False
    vis = prompt_visibility(torch.ones(2, 40, dtype=torch.long))
    prompt_logits = torch.randn(2, 3, 40, 40, generator=gen).masked_fill(~vis.unsqueeze(1), -3e38)
    derived = PromptMask.of(vis, 2, 40, prompt_logits.device)
    compiled = (
        summarize_attention_logits(logits, mask),
        logit_head_parts(prompt_logits, derived, cap=5, compiled=True),
    )

    def failed() -> CompiledReduction[Any]:
        reduction: CompiledReduction[Any] = CompiledReduction(
            lambda *args: pytest.fail("the compiled form ran after its compilation failed")
        )
        reduction.failure = "RuntimeError: no compiler"
        return reduction

    monkeypatch.setattr(attention_module, "fused_attention_row_parts", failed())
    monkeypatch.setattr(prompt_module, "fused_prompt_row_parts", failed())
    stats = summarize_attention_logits(logits, mask)
    parts = logit_head_parts(prompt_logits, derived, cap=5, compiled=True)
    torch.testing.assert_close(stats.entropy_mean, compiled[0].entropy_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        stats.max_weight_per_head, compiled[0].max_weight_per_head, rtol=1e-5, atol=1e-6
    )
    assert torch.equal(parts.top_flat, compiled[1].top_flat)
    torch.testing.assert_close(parts.middle_share, compiled[1].middle_share, rtol=1e-5, atol=1e-6)
