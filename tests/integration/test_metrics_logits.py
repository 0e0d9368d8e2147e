"""Logit statistics against a slow float64 reference (spec/metrics.md §1)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from corevital.metrics.logits import (
    sampling_distribution_stats,
    summarize_chosen,
    summarize_logits,
    token_surprisal,
)

RTOL, ATOL = 1e-5, 1e-6


def ref_row(row: np.ndarray, topk: int, mass_k: int, mode: str = "full") -> dict[str, Any]:
    """One row, float64, straight from the definitions."""
    v = len(row)
    nan_row = {"entropy": math.nan, "margin": math.nan, "mass": math.nan}
    if np.isnan(row).any() or (row == math.inf).any():
        return nan_row
    m = max(row)
    z = sum(math.exp(x - m) for x in row)
    lse = m + math.log(z)
    p = [math.exp(x - lse) for x in row]
    order = sorted(range(v), key=lambda i: -p[i])
    ps = [p[i] for i in order]
    if mode == "full":
        entropy = -sum(q * math.log2(q) for q in p if q > 0)
    else:
        k = min(v, max(topk, 50))
        head = ps[:k]
        entropy = -sum(q * math.log2(q) for q in head if q > 0)
        r = max(0.0, 1.0 - sum(head))
        if r > 1e-9 and v > k:
            entropy += -r * math.log2(r) + r * math.log2(v - k)
    return {
        "entropy": entropy,
        "margin": ps[0] - ps[1] if v > 1 else 0.0,
        "mass": sum(ps[: min(mass_k, v)]),
        "top_probs": ps[: min(topk, v)],
        "p": p,
        "lse": lse,
    }


def check_against_ref(logits: torch.Tensor, topk: int = 5, mass_k: int = 10, mode: str = "full") -> None:
    stats = summarize_logits(logits, topk=topk, mass_k=mass_k, entropy_mode=mode)  # type: ignore[arg-type]
    x = logits.float().numpy().astype(np.float64)
    # The approximation's tail term amplifies the float32 rounding of r = 1 - sum(p_head) (about one
    # ulp of the logsumexp, ~4e-6 for peaked rows with logits near 60) by log2(V / r) (~20x). The
    # approximation's own error is orders of magnitude larger than this.
    entropy_atol = ATOL if mode == "full" else 1e-4
    for i, row in enumerate(x):
        ref = ref_row(row, topk, mass_k, mode)
        assert stats.entropy[i].item() == pytest.approx(
            ref["entropy"], rel=RTOL, abs=entropy_atol, nan_ok=True
        )
        assert stats.top_k_margin[i].item() == pytest.approx(ref["margin"], rel=RTOL, abs=ATOL, nan_ok=True)
        assert stats.topk_mass[i].item() == pytest.approx(ref["mass"], rel=RTOL, abs=ATOL, nan_ok=True)
        if "top_probs" in ref:
            np.testing.assert_allclose(stats.topk_probs[i].numpy(), ref["top_probs"], rtol=RTOL, atol=ATOL)
            # Tied tokens may come in any order: check that each id carries the probability reported.
            p_at_ids = [ref["p"][j] for j in stats.topk_ids[i].tolist()]
            np.testing.assert_allclose(p_at_ids, ref["top_probs"], rtol=RTOL, atol=ATOL)
            assert stats.log_normalizer[i].item() == pytest.approx(ref["lse"], rel=RTOL, abs=ATOL)


def random_logits(n: int, v: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.5, 2.0, 5.0, 20.0] * n)[:n].unsqueeze(-1)  # flat to very peaked rows
    return torch.randn(n, v, generator=gen) * scale


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("v", [7, 1000])
def test_full_entropy_matches_reference(seed: int, v: int) -> None:
    check_against_ref(random_logits(6, v, seed))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_input_dtypes_are_computed_in_float32(dtype: torch.dtype) -> None:
    logits = random_logits(4, 300, 3).to(dtype)
    stats = summarize_logits(logits)
    assert stats.entropy.dtype == torch.float32
    check_against_ref(logits)


def test_stats_are_float32_and_shaped() -> None:
    stats = summarize_logits(random_logits(3, 100, 0), topk=4, mass_k=10)
    assert stats.entropy.shape == stats.top_k_margin.shape == stats.topk_mass.shape == (3,)
    assert stats.topk_ids.shape == stats.topk_probs.shape == (3, 4)
    assert stats.has_nan.dtype == stats.has_inf.dtype == torch.bool
    assert stats.topk_ids.dtype == torch.int64


def test_uniform_distribution_has_log2_v_bits() -> None:
    stats = summarize_logits(torch.zeros(2, 1024))
    torch.testing.assert_close(stats.entropy, torch.full((2,), 10.0))
    torch.testing.assert_close(stats.top_k_margin, torch.zeros(2))


def test_masked_tokens_contribute_zero() -> None:
    logits = random_logits(3, 64, 5)
    logits[0, ::2] = -math.inf
    logits[1, 1:] = -math.inf  # a single allowed token: a certain distribution
    stats = summarize_logits(logits)
    assert not stats.has_nan.any() and not stats.has_inf.any()
    assert torch.isfinite(stats.entropy).all()
    assert stats.entropy[1].item() == 0.0
    assert stats.top_k_margin[1].item() == 1.0
    check_against_ref(logits)


def test_nan_row_does_not_poison_other_rows() -> None:
    logits = random_logits(4, 200, 7)
    logits[1, 17] = math.nan
    stats = summarize_logits(logits)
    assert stats.has_nan.tolist() == [False, True, False, False]
    assert not stats.has_inf.any()
    for field in (stats.entropy, stats.top_k_margin, stats.topk_mass):
        assert torch.isnan(field[1]) and torch.isfinite(field[[0, 2, 3]]).all()
    assert torch.isnan(stats.topk_probs[1]).all()
    check_against_ref(logits)


def test_positive_inf_is_flagged_and_isolated() -> None:
    logits = random_logits(3, 50, 8)
    logits[2, 3] = math.inf
    logits[0, 4] = -math.inf
    stats = summarize_logits(logits)
    assert stats.has_inf.tolist() == [False, False, True]
    assert not stats.has_nan.any()
    assert torch.isnan(stats.entropy[2]) and torch.isfinite(stats.entropy[:2]).all()
    check_against_ref(logits)


def test_vocabulary_of_one() -> None:
    stats = summarize_logits(torch.tensor([[3.0], [-2.0]]), topk=5, mass_k=10)
    assert stats.entropy.tolist() == [0.0, 0.0]
    assert stats.top_k_margin.tolist() == [0.0, 0.0]
    assert stats.topk_mass.tolist() == [1.0, 1.0]
    assert stats.topk_ids.tolist() == [[0], [0]]
    assert stats.topk_probs.tolist() == [[1.0], [1.0]]


def test_topk_and_mass_k_are_clipped_to_vocabulary() -> None:
    logits = random_logits(2, 3, 9)
    stats = summarize_logits(logits, topk=5, mass_k=10)
    assert stats.topk_ids.shape == (2, 3)
    torch.testing.assert_close(stats.topk_mass, torch.ones(2))
    check_against_ref(logits, topk=5, mass_k=10)


def test_topk_and_mass_k_differ() -> None:
    check_against_ref(random_logits(3, 500, 10), topk=3, mass_k=20)
    check_against_ref(random_logits(3, 500, 11), topk=12, mass_k=2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_topk_approx_matches_its_reference(seed: int) -> None:
    check_against_ref(random_logits(6, 2000, seed), mode="topk_approx")


def test_topk_approx_is_exact_when_head_covers_vocabulary() -> None:
    logits = random_logits(4, 40, 12)
    full = summarize_logits(logits)
    approx = summarize_logits(logits, entropy_mode="topk_approx")
    torch.testing.assert_close(approx.entropy, full.entropy, rtol=RTOL, atol=ATOL)


def test_topk_approx_is_exact_for_uniform_and_close_for_peaked() -> None:
    approx = summarize_logits(torch.zeros(1, 5000), entropy_mode="topk_approx")
    assert approx.entropy.item() == pytest.approx(math.log2(5000), rel=1e-5)
    peaked = torch.randn(1, 5000, generator=torch.Generator().manual_seed(13)) * 8  # mass is in the head
    full = summarize_logits(peaked).entropy.item()
    assert summarize_logits(peaked, entropy_mode="topk_approx").entropy.item() == pytest.approx(
        full, abs=0.05
    )


def test_topk_approx_edge_rows() -> None:
    logits = random_logits(4, 300, 14)
    logits[0, 5] = math.nan
    logits[1, 6] = math.inf
    logits[2, :-3] = -math.inf  # fewer finite tokens than the exact head
    stats = summarize_logits(logits, entropy_mode="topk_approx")
    assert stats.has_nan.tolist() == [True, False, False, False]
    assert stats.has_inf.tolist() == [False, True, False, False]
    assert torch.isnan(stats.entropy[:2]).all() and torch.isfinite(stats.entropy[2:]).all()
    check_against_ref(logits, mode="topk_approx")


class _FullSizeFloatRecorder(TorchFunctionMode):
    """Records every floating-point tensor of a given size that a torch call returns."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel = numel
        self.seen: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, tuple) else (out,)
        for o in outs:
            inputs = [a for a in args if isinstance(a, torch.Tensor)]
            if (
                isinstance(o, torch.Tensor)
                and o.is_floating_point()
                and o.numel() == self.numel
                and not any(o is a for a in inputs)
            ):
                self.seen.append(getattr(func, "__name__", str(func)))
        return out


def test_topk_approx_builds_no_full_size_float_tensor() -> None:
    logits = random_logits(4, 4096, 15)
    with _FullSizeFloatRecorder(logits.numel()) as rec:
        summarize_logits(logits, entropy_mode="topk_approx")
    assert rec.seen == []
    with _FullSizeFloatRecorder(logits.numel()) as rec:
        summarize_logits(logits, entropy_mode="full")
    assert "log_softmax" in rec.seen  # the recorder does see the full softmax when there is one


def test_token_surprisal_matches_reference() -> None:
    logits = random_logits(5, 300, 16)
    logits[4, 7] = -math.inf
    tokens = torch.tensor([0, 10, 299, 5, 7])
    stats = summarize_logits(logits)
    got = token_surprisal(logits, stats.log_normalizer, tokens)
    x = logits.numpy().astype(np.float64)
    for i, tok in enumerate(tokens.tolist()):
        m = x[i].max()
        lse = m + math.log(np.exp(x[i] - m).sum())
        assert got[i].item() == pytest.approx(-(x[i, tok] - lse) / math.log(2), rel=RTOL, abs=1e-5)
    assert got[4].item() == math.inf


def test_surprisal_of_bfloat16_logits_uses_their_float32_values() -> None:
    logits = random_logits(3, 100, 17).bfloat16()
    stats = summarize_logits(logits)
    tokens = torch.tensor([1, 2, 3])
    expected = token_surprisal(logits.float(), stats.log_normalizer, tokens)
    torch.testing.assert_close(token_surprisal(logits, stats.log_normalizer, tokens), expected)


def warp(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    scores = logits / temperature
    kth = scores.topk(top_k, dim=-1).values[:, -1:]
    return scores.masked_fill(scores < kth, -math.inf)


def test_sampling_distribution_stats_match_reference() -> None:
    logits = random_logits(4, 200, 18)
    scores = warp(logits, 0.7, 20)
    tokens = scores.argmax(dim=-1)
    tokens[1] = scores[1].topk(5).indices[-1]
    entropy, prob = sampling_distribution_stats(scores, tokens)
    x = scores.numpy().astype(np.float64)
    for i in range(4):
        finite = x[i][np.isfinite(x[i])]
        p = np.exp(finite - finite.max())
        p /= p.sum()
        assert entropy[i].item() == pytest.approx(-(p * np.log2(p)).sum(), rel=RTOL, abs=ATOL)
        pt = math.exp(x[i, tokens[i]] - finite.max()) / np.exp(finite - finite.max()).sum()
        assert prob[i].item() == pytest.approx(pt, rel=RTOL, abs=ATOL)
    assert (entropy <= math.log2(20) + 1e-5).all()


def test_summarize_chosen() -> None:
    logits = random_logits(2, 100, 19)
    stats = summarize_logits(logits)
    tokens = torch.tensor([3, 4])
    plain = summarize_chosen(logits, stats.log_normalizer, tokens)
    assert plain.sampling_entropy is None and plain.sampling_prob is None
    torch.testing.assert_close(plain.surprisal, token_surprisal(logits, stats.log_normalizer, tokens))
    sampled = summarize_chosen(logits, stats.log_normalizer, tokens, scores=logits / 0.5)
    assert sampled.sampling_entropy is not None and sampled.sampling_prob is not None
    assert sampled.sampling_entropy.shape == (2,)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        summarize_logits(torch.zeros(3))
    with pytest.raises(ValueError):
        summarize_logits(torch.zeros(2, 3), topk=0)
    with pytest.raises(ValueError):
        summarize_logits(torch.zeros(2, 3), entropy_mode="nope")  # type: ignore[arg-type]
