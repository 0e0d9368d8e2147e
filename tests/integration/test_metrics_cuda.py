"""The metrics on a CUDA device: same numbers as on the CPU, no host synchronisation, one copy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from corevital.metrics.attention import summarize_attention
from corevital.metrics.hidden import make_sketch_matrix, summarize_hidden
from corevital.metrics.logits import sampling_distribution_stats, summarize_logits, token_surprisal
from corevital.metrics.transfer import to_host, to_host_later, to_host_many

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

RTOL, ATOL = 1e-5, 1e-6


class no_host_sync:
    """Any synchronising CUDA call inside the block raises (torch's sync debug mode)."""

    def __enter__(self) -> None:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc: object) -> None:
        torch.cuda.set_sync_debug_mode("default")


def assert_close_fields(gpu: object, cpu: object) -> None:
    for name, value in vars(cpu).items():
        got = getattr(gpu, name)
        if value is None:
            assert got is None, name
            continue
        assert got.device.type == "cuda", name
        if name == "topk_ids":
            continue  # ties may come in another order; the probabilities are compared
        torch.testing.assert_close(got.cpu(), value, rtol=RTOL, atol=ATOL, equal_nan=True, msg=name)


def logits_inputs() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 32000, generator=gen) * torch.tensor([0.5, 2, 5, 20, 3, 3]).unsqueeze(-1)
    logits[1, 5] = math.nan
    logits[4, 9] = math.inf
    logits[5, ::2] = -math.inf
    return logits


@pytest.mark.parametrize("mode", ["full", "topk_approx"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_on_cuda_match_cpu(mode: str, dtype: torch.dtype) -> None:
    logits = logits_inputs().to(dtype)
    tokens = torch.tensor([0, 1, 2, 3, 4, 6])
    cpu = summarize_logits(logits, entropy_mode=mode)  # type: ignore[arg-type]
    dev_logits, dev_tokens = logits.cuda(), tokens.cuda()
    with no_host_sync():
        gpu = summarize_logits(dev_logits, entropy_mode=mode)  # type: ignore[arg-type]
        surprisal = token_surprisal(dev_logits, gpu.log_normalizer, dev_tokens)
        sampling = sampling_distribution_stats(dev_logits / 0.7, dev_tokens)
    assert_close_fields(gpu, cpu)
    torch.testing.assert_close(
        surprisal.cpu(),
        token_surprisal(logits, cpu.log_normalizer, tokens),
        equal_nan=True,
        rtol=RTOL,
        atol=1e-5,
    )
    for g, c in zip(sampling, sampling_distribution_stats(logits / 0.7, tokens), strict=True):
        torch.testing.assert_close(g.cpu(), c, equal_nan=True, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hidden_on_cuda_matches_cpu(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    hidden = (torch.randn(32, 4, 1024, generator=gen) * 3).to(dtype)
    hidden[3, 1, 7] = math.nan
    hidden[5, 2, 8] = math.inf
    hidden[6, 0, :4] = 5e7
    sketch_cpu = make_sketch_matrix(1024, 32)
    sketch_gpu = make_sketch_matrix(1024, 32, device="cuda")
    assert torch.equal(sketch_gpu.cpu(), sketch_cpu)
    cpu = summarize_hidden(hidden, sketch_matrix=sketch_cpu)
    dev_hidden = hidden.cuda()
    with no_host_sync():
        gpu = summarize_hidden(dev_hidden, sketch_matrix=sketch_gpu)
    for name, value in vars(cpu).items():
        if value is None:  # a statistic not asked for here (the update ratios)
            assert getattr(gpu, name) is None, name
            continue
        got = getattr(gpu, name).cpu()
        # float32 sums in another order: relative to the vector's scale, not to a mean near zero.
        atol = 1e-4 if name in ("mean", "sketch") else ATOL
        torch.testing.assert_close(got, value, rtol=RTOL, atol=atol, equal_nan=True, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_on_cuda_matches_cpu(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(2)
    layers, rows, heads, keys = 8, 3, 16, 2048
    mask = torch.ones(layers, rows, keys, dtype=torch.bool)
    mask[:, 1, :100] = False
    mask[2, :, :-512] = False
    mask[:, 2, :-3] = False
    scores = torch.randn(layers, rows, heads, keys, generator=gen) * 4
    weights = torch.softmax(scores.masked_fill(~mask.unsqueeze(2), -math.inf), dim=-1)
    weights = torch.where(mask.unsqueeze(2), weights, 7.0)
    weights[4, 0, 3, 10] = math.nan
    weights[5, 0, 2, 11] = math.inf
    weights[6, 1, 1] *= 0.5
    weights = weights.to(dtype)
    cpu = summarize_attention(weights, mask)
    dev_weights, dev_mask = weights.cuda(), mask.cuda()
    with no_host_sync():
        gpu = summarize_attention(dev_weights, dev_mask)
        summarize_attention(dev_weights, dev_mask, causal=False)
    assert_close_fields(gpu, cpu)


def test_to_host_makes_one_device_to_host_copy() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 1000, generator=gen).cuda()
    hidden = torch.randn(12, 4, 256, generator=gen).cuda()
    weights = torch.softmax(torch.randn(12, 4, 8, 64, generator=gen), dim=-1).cuda()
    mask = torch.ones(12, 4, 64, dtype=torch.bool, device="cuda")
    step = (
        summarize_logits(logits),
        summarize_hidden(hidden, sketch_matrix=make_sketch_matrix(256, 32, device="cuda")),
        summarize_attention(weights, mask),
    )
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        host = to_host(step)
        many = to_host_many([step, step])
    dtoh = [e for e in prof.events() if "memcpy" in e.name.lower() and "dtoh" in e.name.lower()]
    assert len(dtoh) == 2, [e.name for e in prof.events() if "memcpy" in e.name.lower()]
    assert host[0].entropy.shape == (4,) and host[2].max_weight_per_head.shape == (12, 4, 8)
    assert len(many) == 2
    torch.testing.assert_close(torch.from_numpy(host[1].l2_norm), step[1].l2_norm.cpu())


def test_a_copy_started_without_waiting_waits_for_itself_only() -> None:
    """``to_host_later``: one device-to-host copy, the same arrays as ``to_host``, and its result
    does not wait for device work queued after the copy started (a kernel that sleeps)."""
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 1000, generator=gen).cuda()
    hidden = torch.randn(12, 4, 256, generator=gen).cuda()
    step = (summarize_logits(logits), summarize_hidden(hidden))
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        pending = to_host_later(step)
        torch.cuda._sleep(2_000_000_000)  # type: ignore[no-untyped-call]  # about a second of device time, queued after the copy
        host = pending.result()
        still_running = not torch.cuda.current_stream().query()
    torch.cuda.synchronize()
    assert still_running, "the result waited for the work queued after its copy"
    dtoh = [e for e in prof.events() if "memcpy" in e.name.lower() and "dtoh" in e.name.lower()]
    assert len(dtoh) == 1, [e.name for e in prof.events() if "memcpy" in e.name.lower()]
    want = to_host(step)
    for got_stats, want_stats in zip(host, want, strict=True):
        for name, value in vars(want_stats).items():
            if value is not None:
                np.testing.assert_array_equal(getattr(got_stats, name), value, err_msg=name)
