"""Hidden-state statistics against a slow float64 reference (spec/metrics.md §2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from corevital.metrics.hidden import make_sketch_matrix, summarize_hidden

RTOL, ATOL = 1e-5, 1e-6
FIELDS = ("mean", "std", "l2_norm", "max_abs", "clip_fraction", "clip_max_before")


def ref_vector(v: np.ndarray, clip: float) -> dict[str, float]:
    """One hidden vector, float64, element by element."""
    finite = [abs(x) for x in v if math.isfinite(x)]
    clipped = [abs(x) > clip for x in v]  # NaN compares False, ±inf is beyond any finite clip
    c = [min(max(x, -clip), clip) if not math.isnan(x) else math.nan for x in v]
    mean = sum(c) / len(c)
    return {
        "mean": mean,
        "std": math.sqrt(sum((x - mean) ** 2 for x in c) / len(c)),
        "l2_norm": math.sqrt(sum(x * x for x in c)),
        "max_abs": max((abs(x) for x in c), key=lambda a: (math.isnan(a), a)),
        "clip_fraction": sum(clipped) / len(v),
        "clip_max_before": max(finite, default=0.0),
        "clipped": any(clipped),
        "has_nan": any(math.isnan(x) for x in v),
        "has_inf": any(math.isinf(x) for x in v),
    }


def check_against_ref(hidden: torch.Tensor, clip: float = 1e6) -> None:
    stats = summarize_hidden(hidden, clip_value=clip)
    x = hidden.float().numpy().astype(np.float64)
    for layer in range(x.shape[0]):
        for row in range(x.shape[1]):
            ref = ref_vector(x[layer, row], clip)
            for name in FIELDS:
                got = getattr(stats, name)[layer, row].item()
                assert got == pytest.approx(ref[name], rel=RTOL, abs=ATOL, nan_ok=True), (name, layer, row)
            for name in ("clipped", "has_nan", "has_inf"):
                assert getattr(stats, name)[layer, row].item() is ref[name], (name, layer, row)


def random_hidden(layers: int, rows: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-2, 3, layers).reshape(layers, 1, 1)  # growing norms with depth
    return torch.randn(layers, rows, d, generator=gen) * scale + 0.3


@pytest.mark.parametrize("seed", [0, 1])
def test_random_matches_reference(seed: int) -> None:
    check_against_ref(random_hidden(4, 3, 64, seed))


def test_shapes_and_dtypes() -> None:
    stats = summarize_hidden(random_hidden(5, 2, 32, 0))
    for name in FIELDS:
        assert getattr(stats, name).shape == (5, 2) and getattr(stats, name).dtype == torch.float32
    for name in ("clipped", "has_nan", "has_inf"):
        assert getattr(stats, name).dtype == torch.bool
    assert stats.sketch is None


def test_one_layer_one_row() -> None:
    check_against_ref(random_hidden(1, 1, 16, 2))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_dtypes_are_computed_in_float32(dtype: torch.dtype) -> None:
    hidden = random_hidden(3, 2, 48, 3).to(dtype)
    before = hidden.clone()
    stats = summarize_hidden(hidden)
    assert stats.mean.dtype == torch.float32
    check_against_ref(hidden)
    assert torch.equal(hidden, before)


def test_clipping_fraction_and_max_before() -> None:
    hidden = random_hidden(2, 3, 10, 4)
    hidden[0, 1, 2] = 3e6
    hidden[0, 1, 5] = -7e7
    hidden[1, 2, 0] = 1e6  # exactly at the clip value: not beyond it
    stats = summarize_hidden(hidden)
    assert stats.clipped.tolist() == [[False, True, False], [False, False, False]]
    assert stats.clip_fraction[0, 1].item() == pytest.approx(0.2)
    assert stats.clip_max_before[0, 1].item() == pytest.approx(7e7)
    assert stats.max_abs[0, 1].item() == pytest.approx(1e6)
    assert stats.clip_max_before[1, 2].item() == pytest.approx(1e6)
    check_against_ref(hidden)


def test_clipping_does_not_modify_float32_input() -> None:
    hidden = random_hidden(2, 2, 8, 5)
    hidden[1, 1, 1] = 5e9
    before = hidden.clone()
    summarize_hidden(hidden)
    assert torch.equal(hidden, before)


def test_custom_clip_value() -> None:
    hidden = random_hidden(3, 2, 40, 6)  # the deepest layer has |h| in the thousands
    stats = summarize_hidden(hidden, clip_value=100.0)
    assert stats.clipped[2].all() and not stats.clipped[0].any()
    check_against_ref(hidden, clip=100.0)


def test_nan_is_flagged_and_isolated() -> None:
    hidden = random_hidden(3, 2, 16, 7)
    hidden[1, 0, 4] = math.nan
    hidden[1, 0, 9] = 2e6
    stats = summarize_hidden(hidden)
    assert stats.has_nan.tolist() == [[False, False], [True, False], [False, False]]
    assert not stats.has_inf.any()
    assert torch.isnan(stats.mean[1, 0]) and torch.isfinite(stats.mean[1, 1])
    assert stats.clipped[1, 0] and stats.clip_fraction[1, 0].item() == pytest.approx(1 / 16)
    assert stats.clip_max_before[1, 0].item() == pytest.approx(2e6)
    check_against_ref(hidden)


def test_inf_is_clamped_counted_and_flagged() -> None:
    hidden = random_hidden(2, 2, 8, 8)
    hidden[0, 0, 0] = math.inf
    hidden[0, 0, 1] = -math.inf
    hidden[1, 1, :] = math.inf  # nothing finite left
    stats = summarize_hidden(hidden)
    assert stats.has_inf.tolist() == [[True, False], [False, True]]
    assert not stats.has_nan.any()
    assert stats.clip_fraction[0, 0].item() == pytest.approx(0.25)
    assert stats.max_abs[0, 0].item() == pytest.approx(1e6)
    assert torch.isfinite(stats.mean[0, 0]) and torch.isfinite(stats.std[0, 0])
    assert stats.clip_max_before[1, 1].item() == 0.0
    check_against_ref(hidden)


def test_nan_and_inf_in_the_same_vector() -> None:
    hidden = random_hidden(1, 1, 8, 9)
    hidden[0, 0, 0] = math.nan
    hidden[0, 0, 1] = -math.inf
    stats = summarize_hidden(hidden)
    assert stats.has_nan.item() and stats.has_inf.item()
    check_against_ref(hidden)


def test_sketch_matches_reference() -> None:
    hidden = random_hidden(3, 2, 24, 10)
    hidden[2, 1, 3] = 4e6
    sketch_matrix = make_sketch_matrix(24, 8, seed=5)
    stats = summarize_hidden(hidden, sketch_matrix=sketch_matrix)
    assert stats.sketch is not None and stats.sketch.shape == (3, 2, 8)
    r = sketch_matrix.numpy().astype(np.float64)
    for layer in range(3):
        for row in range(2):
            c = np.clip(hidden[layer, row].numpy().astype(np.float64), -1e6, 1e6)
            expected = [sum(c[i] * r[i, j] for i in range(24)) for j in range(8)]
            scale = np.abs(c).max() * np.abs(r).max()  # float32 matmul error grows with the inputs
            np.testing.assert_allclose(
                stats.sketch[layer, row].numpy(), expected, rtol=RTOL, atol=1e-6 * scale
            )


def test_sketch_matrix_is_deterministic_and_scaled() -> None:
    a = make_sketch_matrix(256, 32)
    assert a.shape == (256, 32) and a.dtype == torch.float32
    assert torch.equal(a, make_sketch_matrix(256, 32, seed=0))
    assert not torch.equal(a, make_sketch_matrix(256, 32, seed=1))
    torch.manual_seed(1234)  # the global RNG state must not matter
    assert torch.equal(a, make_sketch_matrix(256, 32))
    # Entries N(0, 1)/sqrt(d): each column has squared norm close to 1.
    col_norms = (a**2).sum(dim=0)
    assert col_norms.mean().item() == pytest.approx(1.0, abs=0.05)
    assert a.std().item() * math.sqrt(256) == pytest.approx(1.0, abs=0.05)
    assert make_sketch_matrix(256, 32, dtype=torch.float64).dtype == torch.float64


def test_sketch_matrix_golden_values() -> None:
    # Pinned so that a change of torch's CPU generator (which would make new sketches incomparable
    # with stored ones) is noticed.
    got = make_sketch_matrix(4, 3, seed=0)
    expected = torch.tensor(
        [
            [0.7704980373, -0.1467144489, -1.0893946886],
            [0.2842156291, -0.5422611833, -0.6992977262],
            [0.2016734183, 0.4190131724, -0.3596287966],
            [-0.2016717643, -0.2983176708, 0.0910182446],
        ]
    )
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        summarize_hidden(torch.zeros(2, 3))
    with pytest.raises(ValueError):
        summarize_hidden(torch.zeros(1, 2, 3), sketch_matrix=torch.zeros(4, 2))
    with pytest.raises(ValueError):
        summarize_hidden(torch.zeros(1, 2, 3), clip_value=0.0)
