"""Attention statistics against a slow float64 reference (spec/metrics.md §3)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from corevital.metrics.attention import summarize_attention

RTOL, ATOL = 1e-5, 1e-6
TOL = 1e-3  # renormalisation tolerance
LN_FIELDS = (
    "entropy_mean",
    "entropy_min",
    "entropy_max",
    "entropy_mean_normalized",
    "concentration_max",
    "concentration_min",
    "collapsed_head_count",
    "collapsed_head_rate",
    "focused_head_count",
    "sink_mass_mean",
    "prev_token_mass_mean",
    "prev_token_mass_max",
    "num_keys",
)


def ref_head(a: list[float], causal: bool, rounding: float) -> dict[str, float | bool]:
    """One attention row over its visible keys (in key order), float64.

    The row is always divided by its sum; it is flagged when the sum misses 1 by more than the
    tolerance plus what rounding to the input dtype (unit roundoff ``rounding``) can explain.
    """
    k = len(a)
    total = sum(a)
    renorm = math.isfinite(total) and abs(total - 1.0) > TOL + rounding
    if not math.isfinite(total) or total == 0:
        nan = math.nan
        return {"E": nan, "N": nan, "max": nan, "sink": nan, "prev": nan, "renorm": renorm}
    a = [x / total for x in a]
    entropy = max(0.0, -sum(x * math.log(x) for x in a if x > 0))
    normalized = 0.0 if k == 1 else min(1.0, entropy / math.log(k))
    return {
        "E": entropy,
        "N": normalized,
        "max": max(a),
        "sink": a[0],
        "prev": a[-2] if causal and k >= 2 else math.nan,
        "renorm": renorm,
    }


def ref_layer_row(w: np.ndarray, mask: np.ndarray, causal: bool, rounding: float) -> dict[str, Any]:
    """w [H, K], mask [K] -> the per-(layer, row) statistics."""
    visible = [k for k in range(len(mask)) if mask[k]]
    heads = [ref_head([float(w[h, k]) for k in visible], causal, rounding) for h in range(w.shape[0])]
    n_heads, n_keys = len(heads), len(visible)

    def col(name: str) -> list[float]:
        return [float(h[name]) for h in heads]

    def nanmean(xs: list[float]) -> float:
        return math.nan if any(math.isnan(x) for x in xs) else sum(xs) / len(xs)

    def nanmax(xs: list[float]) -> float:
        return math.nan if any(math.isnan(x) for x in xs) else max(xs)

    def nanmin(xs: list[float]) -> float:
        return math.nan if any(math.isnan(x) for x in xs) else min(xs)

    collapsed = float(sum(n < 0.03 for n in col("N"))) if n_keys >= 4 else math.nan
    visible_w = [float(w[h, k]) for h in range(n_heads) for k in visible]
    return {
        "entropy_mean": nanmean(col("E")),
        "entropy_min": nanmin(col("E")),
        "entropy_max": nanmax(col("E")),
        "entropy_mean_normalized": nanmean(col("N")),
        "concentration_max": nanmax(col("max")),
        "concentration_min": nanmin(col("max")),
        "collapsed_head_count": collapsed,
        "collapsed_head_rate": collapsed / n_heads,
        "focused_head_count": float(sum(m > 0.9 for m in col("max"))),
        "sink_mass_mean": nanmean(col("sink")),
        "prev_token_mass_mean": nanmean(col("prev")),
        "prev_token_mass_max": nanmax(col("prev")),
        "num_keys": float(n_keys),
        "max_weight_per_head": col("max"),
        "renormalized": any(h["renorm"] for h in heads),
        "has_nan": any(math.isnan(x) for x in visible_w),
        "has_inf": any(math.isinf(x) for x in visible_w),
    }


def check_against_ref(weights: torch.Tensor, mask: torch.Tensor, causal: bool = True) -> None:
    stats = summarize_attention(weights, mask, causal=causal, renorm_tolerance=TOL)
    w = weights.float().numpy().astype(np.float64)
    m = torch.broadcast_to(mask, weights.shape[:2] + weights.shape[3:]).numpy()
    for layer in range(w.shape[0]):
        for row in range(w.shape[1]):
            ref = ref_layer_row(w[layer, row], m[layer, row], causal, torch.finfo(weights.dtype).eps / 2)
            where = (layer, row)
            for name in LN_FIELDS:
                got = float(getattr(stats, name)[layer, row].item())
                assert got == pytest.approx(ref[name], rel=RTOL, abs=ATOL, nan_ok=True), (name, where)
            np.testing.assert_allclose(
                stats.max_weight_per_head[layer, row].numpy(),
                ref["max_weight_per_head"],
                rtol=RTOL,
                atol=ATOL,
            )
            for name in ("renormalized", "has_nan", "has_inf"):
                assert getattr(stats, name)[layer, row].item() is ref[name], (name, where)


def softmax_rows(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention weights [L, N, H, K] over the visible keys, with garbage at the hidden ones."""
    visible = mask.unsqueeze(2)
    w = torch.softmax(scores.masked_fill(~visible, -math.inf), dim=-1)
    garbage = torch.rand(scores.shape, generator=torch.Generator().manual_seed(99)) * 5
    garbage.view(-1)[::7] = math.nan
    garbage.view(-1)[3::11] = math.inf
    return torch.where(visible, w, garbage)


def varied_mask(layers: int, rows: int, keys: int) -> torch.Tensor:
    """Left padding, a sliding window, and rows with very few keys."""
    mask = torch.ones(layers, rows, keys, dtype=torch.bool)
    mask[:, 1, :3] = False  # left padding
    if layers > 1:
        mask[1, :, : keys - 6] = False  # a sliding-window layer
    if rows > 2:
        mask[:, 2, :-3] = False  # K == 3: collapse is undefined
    if rows > 3:
        mask[:, 3, :-1] = False  # K == 1
    if rows > 4:
        mask[:, 4, :-2] = False  # K == 2
    if rows > 5:
        mask[0, 5, ::3] = False  # holes: the previous visible key is not key K-2
    return mask


def random_scores(shape: tuple[int, ...], seed: int, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("causal", [True, False])
def test_random_with_varied_masks(seed: int, causal: bool) -> None:
    mask = varied_mask(3, 6, 12)
    weights = softmax_rows(random_scores((3, 6, 5, 12), seed), mask)
    check_against_ref(weights, mask, causal=causal)


def test_peaked_heads_reach_collapse() -> None:
    mask = torch.ones(2, 3, 4, 16, dtype=torch.bool)[:, :, 0]
    weights = softmax_rows(random_scores((2, 3, 4, 16), 2, scale=12.0), mask)
    stats = summarize_attention(weights, mask)
    assert (stats.collapsed_head_count > 0).any()
    check_against_ref(weights, mask)


def test_hidden_keys_are_ignored_whatever_they_hold() -> None:
    mask = varied_mask(2, 3, 10)
    weights = softmax_rows(random_scores((2, 3, 4, 10), 3), mask)
    stats = summarize_attention(weights, mask)
    assert not stats.has_nan.any() and not stats.has_inf.any() and not stats.renormalized.any()
    clean = torch.where(mask.unsqueeze(2), weights, 0.0)
    other = summarize_attention(clean, mask)
    for name in LN_FIELDS:
        torch.testing.assert_close(getattr(stats, name), getattr(other, name), equal_nan=True)


def test_shapes_and_dtypes() -> None:
    mask = torch.ones(3, 2, 7, dtype=torch.bool)
    stats = summarize_attention(softmax_rows(random_scores((3, 2, 4, 7), 4), mask), mask)
    assert stats.max_weight_per_head.shape == (3, 2, 4)
    assert stats.entropy_mean.shape == stats.num_keys.shape == (3, 2)
    assert stats.entropy_mean.dtype == torch.float32
    assert stats.num_keys.dtype == stats.focused_head_count.dtype == torch.int64
    assert stats.renormalized.dtype == stats.has_nan.dtype == stats.has_inf.dtype == torch.bool


def test_uniform_attention_has_normalized_entropy_one() -> None:
    keys = 9
    weights = torch.full((1, 1, 3, keys), 1.0 / keys)
    stats = summarize_attention(weights, torch.ones(1, 1, keys, dtype=torch.bool))
    assert stats.entropy_mean.item() == pytest.approx(math.log(keys), rel=RTOL)
    assert stats.entropy_mean_normalized.item() == pytest.approx(1.0, rel=RTOL)
    assert stats.collapsed_head_count.item() == 0.0
    assert stats.sink_mass_mean.item() == pytest.approx(1 / keys)
    assert stats.prev_token_mass_max.item() == pytest.approx(1 / keys)


def test_perfectly_collapsed_head() -> None:
    weights = torch.full((1, 1, 4, 8), 1.0 / 8)
    weights[0, 0, 1] = 0.0
    weights[0, 0, 1, 0] = 1.0  # all mass on the first key: a sink
    stats = summarize_attention(weights, torch.ones(1, 1, 8, dtype=torch.bool))
    assert stats.entropy_min.item() == 0.0
    assert stats.collapsed_head_count.item() == 1.0
    assert stats.collapsed_head_rate.item() == 0.25
    assert stats.focused_head_count.item() == 1
    assert stats.concentration_max.item() == 1.0
    assert stats.concentration_min.item() == pytest.approx(1 / 8)
    check_against_ref(weights, torch.ones(1, 1, 8, dtype=torch.bool))


def test_single_key() -> None:
    weights = torch.zeros(2, 1, 3, 5)
    weights[..., 4] = 1.0
    mask = torch.zeros(2, 1, 5, dtype=torch.bool)
    mask[..., 4] = True
    stats = summarize_attention(weights, mask)
    assert stats.num_keys.tolist() == [[1], [1]]
    assert stats.entropy_mean_normalized.tolist() == [[0.0], [0.0]]
    assert torch.isnan(stats.collapsed_head_count).all() and torch.isnan(stats.collapsed_head_rate).all()
    assert torch.isnan(stats.prev_token_mass_mean).all()
    assert stats.sink_mass_mean.tolist() == [[1.0], [1.0]]
    check_against_ref(weights, mask)


@pytest.mark.parametrize("keys", [2, 3])
def test_too_few_keys_for_collapse(keys: int) -> None:
    weights = torch.zeros(1, 1, 2, keys)
    weights[..., -1] = 1.0  # a perfectly collapsed head, but with too few keys to call it that
    stats = summarize_attention(weights, torch.ones(1, 1, keys, dtype=torch.bool))
    assert torch.isnan(stats.collapsed_head_count).all()
    assert stats.entropy_mean.item() == 0.0
    assert stats.prev_token_mass_mean.item() == 0.0


def test_min_keys_for_collapse_is_configurable() -> None:
    weights = torch.zeros(1, 1, 2, 3)
    weights[..., -1] = 1.0
    stats = summarize_attention(weights, torch.ones(1, 1, 3, dtype=torch.bool), min_keys_for_collapse=3)
    assert stats.collapsed_head_count.item() == 2.0


def test_one_layer_single_head() -> None:
    mask = torch.ones(1, 2, 6, dtype=torch.bool)
    mask[0, 1, :2] = False
    weights = softmax_rows(random_scores((1, 2, 1, 6), 5), mask)
    stats = summarize_attention(weights, mask)
    torch.testing.assert_close(stats.entropy_min, stats.entropy_max)
    torch.testing.assert_close(stats.prev_token_mass_mean, stats.prev_token_mass_max)
    check_against_ref(weights, mask)


def test_rows_that_do_not_sum_to_one_are_renormalized_and_flagged() -> None:
    mask = torch.ones(2, 2, 6, dtype=torch.bool)
    base = softmax_rows(random_scores((2, 2, 3, 6), 6), mask)
    weights = base.clone()
    weights[0, 1, 2] *= 0.5  # one head of one row sums to 0.5: flagged
    weights[1, 0, 0] *= 1.0005  # within the tolerance: renormalised silently
    weights[1, 1, 1] *= 1.002  # beyond it: flagged
    stats = summarize_attention(weights, mask)
    assert stats.renormalized.tolist() == [[False, True], [False, True]]
    reference = summarize_attention(base, mask)
    for name in ("entropy_mean", "concentration_max", "sink_mass_mean", "prev_token_mass_mean"):
        torch.testing.assert_close(getattr(stats, name), getattr(reference, name))
    check_against_ref(weights, mask)


def test_bfloat16_rounding_is_not_flagged_but_real_deviations_are() -> None:
    # Eager attention of a bfloat16 model: float32 softmax rounded to bfloat16. Concentrated rows
    # then miss 1 by up to ~3e-3 from rounding alone.
    mask = torch.ones(4, 8, 4096, dtype=torch.bool)
    scores = random_scores((4, 8, 16, 4096), 12, scale=4.0)
    weights = torch.softmax(scores, dim=-1).bfloat16()
    assert ((weights.float().sum(-1) - 1).abs() > 1e-3).any()  # the case this is about
    stats = summarize_attention(weights, mask)
    assert not stats.renormalized.any()
    weights[2, 3, 5] *= 0.98
    assert summarize_attention(weights, mask).renormalized.nonzero().tolist() == [[2, 3]]


def test_all_zero_row_is_renormalized_to_nan() -> None:
    weights = torch.zeros(1, 1, 2, 4)
    weights[0, 0, 0, 1] = 1.0
    stats = summarize_attention(weights, torch.ones(1, 1, 4, dtype=torch.bool))
    assert stats.renormalized.item()
    assert torch.isnan(stats.entropy_mean).item() and stats.entropy_min.isnan().item()
    check_against_ref(weights, torch.ones(1, 1, 4, dtype=torch.bool))


def test_nan_and_inf_are_flagged_per_layer_and_row() -> None:
    mask = torch.ones(2, 3, 5, dtype=torch.bool)
    weights = softmax_rows(random_scores((2, 3, 4, 5), 7), mask)
    weights[1, 2, 0, 3] = math.nan
    weights[0, 1, 3, 1] = math.inf
    weights[1, 0, 1, 0] = math.nan
    weights[1, 0, 1, 2] = math.inf  # NaN and inf in the same head
    stats = summarize_attention(weights, mask)
    assert stats.has_nan.tolist() == [[False, False, False], [True, False, True]]
    assert stats.has_inf.tolist() == [[False, True, False], [True, False, False]]
    assert torch.isnan(stats.entropy_mean[1, 2]) and torch.isfinite(stats.entropy_mean[0, 0])
    check_against_ref(weights, mask)


def test_no_visible_key() -> None:
    mask = torch.ones(1, 2, 4, dtype=torch.bool)
    mask[0, 0] = False
    weights = softmax_rows(random_scores((1, 2, 2, 4), 8), torch.ones(1, 2, 4, dtype=torch.bool))
    stats = summarize_attention(weights, mask)
    assert stats.num_keys.tolist() == [[0, 4]]
    assert torch.isnan(stats.entropy_mean[0, 0]) and torch.isnan(stats.sink_mass_mean[0, 0])
    assert torch.isfinite(stats.entropy_mean[0, 1])


def test_mask_broadcast_over_layers() -> None:
    mask = torch.ones(1, 2, 8, dtype=torch.bool)
    mask[0, 0, :3] = False
    weights = softmax_rows(random_scores((3, 2, 4, 8), 9), mask.expand(3, 2, 8))
    torch.testing.assert_close(
        summarize_attention(weights, mask).entropy_mean,
        summarize_attention(weights, mask.expand(3, 2, 8).clone()).entropy_mean,
    )
    check_against_ref(weights, mask)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_input(dtype: torch.dtype) -> None:
    mask = varied_mask(2, 6, 10)
    weights = softmax_rows(random_scores((2, 6, 3, 10), 10), mask).to(dtype)
    before = weights.clone()
    stats = summarize_attention(weights, mask)
    assert stats.entropy_mean.dtype == torch.float32
    check_against_ref(weights, mask)
    assert torch.equal(weights.isnan(), before.isnan())
    assert torch.equal(weights.nan_to_num(), before.nan_to_num())


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        summarize_attention(torch.zeros(2, 3, 4), torch.ones(2, 3, 4, dtype=torch.bool))


@pytest.mark.parametrize("keys", [1, 2, 3, 9])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_mask_means_every_key_visible(keys: int, causal: bool, dtype: torch.dtype) -> None:
    """``key_mask=None`` (a decoding step without padding) gives what an all-True mask gives."""
    weights = torch.softmax(random_scores((3, 2, 4, keys), 11 + keys), dim=-1).to(dtype)
    if keys > 2:
        weights[1, 0, 2, 1] = math.nan
        weights[2, 1, 0, 0] = math.inf
        weights[0, 1, 3] *= 0.5  # a head to renormalise
    before = weights.clone()
    fast = summarize_attention(weights, None, causal=causal)
    ref = summarize_attention(weights, torch.ones(1, 2, keys, dtype=torch.bool), causal=causal)
    assert torch.equal(weights.nan_to_num(), before.nan_to_num())  # the input is not written to
    for name in (*LN_FIELDS, "max_weight_per_head", "renormalized", "has_nan", "has_inf"):
        got, want = getattr(fast, name), getattr(ref, name)
        assert got.shape == want.shape and got.dtype == want.dtype, name
        torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("masked", [True, False], ids=["mask", "every-key-visible"])
@pytest.mark.parametrize("causal", [True, False])
def test_overwrite_gives_the_same_statistics(masked: bool, causal: bool) -> None:
    """With ``overwrite`` the float32 weights are worked on in place: the same statistics, every
    field; without it the caller's weights are left as they were."""
    mask = varied_mask(3, 6, 12)
    weights = softmax_rows(random_scores((3, 6, 5, 12), 4), mask)
    if not masked:
        weights = torch.softmax(random_scores((3, 6, 5, 12), 5), dim=-1)
    key_mask = mask if masked else None
    before = weights.clone()
    want = summarize_attention(weights, key_mask, causal=causal)
    assert torch.equal(weights.nan_to_num(), before.nan_to_num())  # untouched without overwrite
    got = summarize_attention(weights.clone(), key_mask, causal=causal, overwrite=True)
    for name in (*LN_FIELDS, "max_weight_per_head", "renormalized", "has_nan", "has_inf"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), equal_nan=True, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal", [True, False])
def test_statistics_of_logits_equal_those_of_their_probabilities(causal: bool, dtype: torch.dtype) -> None:
    """``summarize_attention_logits`` (the row reductions compiled into one kernel) gives the
    statistics of the float32 softmax of its logits within float32 rounding: varied masks (hidden
    keys at the dtype's minimum), a NaN row, two shapes (one compilation serves both)."""
    from corevital.metrics.attention import fused_attention_row_parts, summarize_attention_logits

    for layers, rows, heads, keys in ((3, 6, 5, 12), (2, 4, 3, 20)):
        mask = varied_mask(layers, rows, keys)
        scores = random_scores((layers, rows, heads, keys), 7).to(dtype)
        logits = scores.masked_fill(~mask.unsqueeze(2), torch.finfo(dtype).min)
        logits[0, 3, 1, -1] = math.nan  # a fault: that head's row NaN throughout
        want = summarize_attention(torch.softmax(logits, dim=-1, dtype=torch.float32), mask, causal=causal)
        got = summarize_attention_logits(logits, mask, causal=causal)
        for name in (*LN_FIELDS, "max_weight_per_head", "renormalized", "has_nan", "has_inf"):
            torch.testing.assert_close(
                getattr(got, name), getattr(want, name), rtol=RTOL, atol=ATOL, equal_nan=True, msg=name
            )
        assert bool(got.has_nan[0, 3]) and not bool(got.has_nan[0, 2])
    assert fused_attention_row_parts.failure is None
