"""Prompt telemetry against slow float64 references (spec/metrics.md §5)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from corevital.metrics.prompt import (
    PromptHeadParts,
    PromptMask,
    fused_prompt_row_parts,
    layer_transformations,
    logit_head_parts,
    prompt_attention,
    prompt_attention_from_parts,
    prompt_head_parts,
    prompt_row_parts,
    prompt_surprisals,
    prompt_visibility,
    recomputed_head_parts,
)

# --------------------------------------------------------------------------- references


def ref_membership(rank: int, n: int) -> Fraction:
    """Overlap of [rank, rank + 1) with [n/3, 2n/3), exactly."""
    lo, hi = Fraction(n, 3), Fraction(2 * n, 3)
    return max(Fraction(0), min(Fraction(rank + 1), hi) - max(Fraction(rank), lo))


def ref_basin(w: list[list[float]], vis: list[list[bool]]) -> float:
    """One head: mean over queries seeing >= 3 keys of the middle mass over the mean edge mass."""
    mids: list[float] = []
    for q, row in enumerate(w):
        keys = [k for k in range(len(row)) if vis[q][k]]
        if len(keys) < 3:
            continue
        total = sum(row[k] for k in keys)
        mid = sum(float(ref_membership(r, len(keys))) * row[k] for r, k in enumerate(keys)) / total
        mids.append(mid)
    if not mids:
        return math.nan
    edge = sum(1.0 - m for m in mids)
    return sum(mids) / edge if edge else math.inf


def ref_sparse(
    w: list[list[float]], vis: list[list[bool]], threshold: float, cap: int
) -> list[tuple[int, int, float]]:
    """One head: (query, key, weight) above threshold among visible pairs, largest first, relative."""
    first = min((k for q in range(len(w)) for k in range(len(w)) if vis[q][k]), default=0)
    entries = [
        (q - first, k - first, w[q][k])
        for q in range(len(w))
        for k in range(len(w))
        if vis[q][k] and not math.isnan(w[q][k]) and w[q][k] > threshold
    ]
    entries.sort(key=lambda e: -e[2])
    return entries[:cap]


def ref_visibility(mask: list[int], window: int | None = None) -> list[list[bool]]:
    p = len(mask)
    return [
        [bool(mask[q] and mask[k] and k <= q and (window is None or q - k < window)) for k in range(p)]
        for q in range(p)
    ]


# --------------------------------------------------------------------------- builders


def left_padded_mask(lengths: list[int], p: int) -> torch.Tensor:
    return torch.tensor([[0] * (p - n) + [1] * n for n in lengths])


def random_attention(
    mask: torch.Tensor, heads: int, seed: int, hidden_fill: float = math.nan
) -> torch.Tensor:
    """Softmax over each query's visible keys; hidden entries hold ``hidden_fill`` (should be ignored)."""
    gen = torch.Generator().manual_seed(seed)
    vis = prompt_visibility(mask)  # [B, P, P]
    b, p, _ = vis.shape
    logits = torch.randn(b, heads, p, p, generator=gen, dtype=torch.float64) * 2.0
    logits = logits.masked_fill(~vis.unsqueeze(1), -math.inf)
    w = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # rows with no visible key: 0
    return w.masked_fill(~vis.unsqueeze(1), hidden_fill).float()


def uniform_attention(mask: torch.Tensor, heads: int) -> torch.Tensor:
    vis = prompt_visibility(mask).float()
    w = vis / vis.sum(dim=-1, keepdim=True).clamp(min=1.0)
    return w.unsqueeze(1).expand(-1, heads, -1, -1).contiguous()


def check_attention(weights: torch.Tensor, vis: torch.Tensor, threshold: float, cap: int) -> None:
    stats = prompt_attention(weights, vis, threshold=threshold, cap=cap)
    b, h, p, _ = weights.shape
    assert stats.query_index.shape == stats.key_index.shape == stats.weight.shape == (b, h, cap)
    assert stats.count.shape == stats.basin_scores.shape == (b, h)
    w64 = weights.double().tolist()
    for i in range(b):
        v = vis[i].tolist()
        for j in range(h):
            ref = ref_basin(w64[i][j], v)
            assert stats.basin_scores[i, j].item() == pytest.approx(ref, rel=1e-5, abs=1e-6, nan_ok=True)
            want = ref_sparse(w64[i][j], v, threshold, cap)
            n = int(stats.count[i, j])
            assert n == len(want), (i, j)
            got = list(
                zip(
                    stats.query_index[i, j, :n].tolist(),
                    stats.key_index[i, j, :n].tolist(),
                    stats.weight[i, j, :n].tolist(),
                    strict=True,
                )
            )
            assert [g[2] for g in got] == sorted((g[2] for g in got), reverse=True)
            # Ties at the cap make the chosen set ambiguous: compare the weights kept, then check
            # every kept entry is a real, distinct one and that nothing heavier than the cut is missing.
            assert [g[2] for g in got] == pytest.approx([e[2] for e in want], rel=1e-6)
            assert len({(q, k) for q, k, _ in got}) == n
            first = min((k for q in range(p) for k in range(p) if v[q][k]), default=0)
            for q, k, wt in got:
                assert v[q + first][k + first] and wt == pytest.approx(
                    w64[i][j][q + first][k + first], rel=1e-6
                )
            cut = want[-1][2] if want else math.inf
            heavier = {(q, k) for q, k, wt in want if wt > cut * (1 + 1e-6)}
            assert heavier <= {(q, k) for q, k, _ in got}, (i, j)
            assert (stats.query_index[i, j, n:] == -1).all()
            assert (stats.key_index[i, j, n:] == -1).all()
            assert (stats.weight[i, j, n:] == 0).all()


# --------------------------------------------------------------------------- attention


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_causal_attention_with_left_padding(seed: int) -> None:
    mask = left_padded_mask([12, 9, 4, 2, 1], 12)
    weights = random_attention(mask, heads=3, seed=seed)
    vis = prompt_visibility(mask)
    check_attention(weights, vis, threshold=0.05, cap=7)
    check_attention(weights, vis, threshold=0.01, cap=50)
    check_attention(weights, vis, threshold=0.0, cap=200)


def test_left_padding_does_not_shift_indices() -> None:
    mask = left_padded_mask([8], 8)
    weights = random_attention(mask, heads=2, seed=5)
    padded_mask = left_padded_mask([8], 13)
    padded = torch.full((1, 2, 13, 13), 0.25)  # garbage in hidden entries
    padded[:, :, 5:, 5:] = weights
    a = prompt_attention(weights, prompt_visibility(mask), threshold=0.02, cap=10)
    b = prompt_attention(padded, prompt_visibility(padded_mask), threshold=0.02, cap=10)
    for name in ("query_index", "key_index", "weight", "count"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    torch.testing.assert_close(a.basin_scores, b.basin_scores)


@pytest.mark.parametrize("p", [3, 4, 5, 6, 7, 10, 31, 64])
def test_uniform_causal_attention_gives_one_half(p: int) -> None:
    mask = left_padded_mask([p, max(p - 2, 3)], p)
    stats = prompt_attention(uniform_attention(mask, heads=2), prompt_visibility(mask))
    torch.testing.assert_close(stats.basin_scores, torch.full((2, 2), 0.5), rtol=0, atol=1e-6)


def test_ignoring_the_middle_third_reads_as_lost_in_the_middle() -> None:
    p = 30
    mask = left_padded_mask([p], p)
    vis = prompt_visibility(mask)
    weights = torch.zeros(1, 2, p, p)
    for q in range(p):
        n = q + 1
        # head 0: only keys entirely outside the middle third (ranks < floor(n/3), >= ceil(2n/3))
        edges = [k for k in range(n) if k < n // 3 or k >= -(-2 * n // 3)] if n >= 3 else list(range(n))
        weights[0, 0, q, edges] = 1.0 / len(edges)
        # head 1: a U shape that still looks at the middle, at a fifth of the edge weight
        row = torch.tensor([0.2 if ref_membership(k, n) > 0 else 1.0 for k in range(n)])
        weights[0, 1, q, :n] = row / row.sum()
    stats = prompt_attention(weights, vis)
    assert stats.basin_scores[0, 0].item() == pytest.approx(0.0, abs=1e-7)
    assert 0.0 < stats.basin_scores[0, 1].item() < 0.3
    check_attention(weights, vis, threshold=0.01, cap=50)


def test_middle_only_attention_is_large() -> None:
    p = 9
    mask = left_padded_mask([p], p)
    weights = torch.zeros(1, 1, p, p)
    for q in range(p):
        n = q + 1
        weights[0, 0, q, :n] = torch.tensor([1.0 if ref_membership(k, n) == 1 else 0.01 for k in range(n)])
        weights[0, 0, q, :n] /= weights[0, 0, q, :n].sum()
    stats = prompt_attention(weights, prompt_visibility(mask))
    assert stats.basin_scores[0, 0].item() > 5.0
    check_attention(weights, prompt_visibility(mask), threshold=0.0, cap=100)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_short_prompts(p: int) -> None:
    mask = left_padded_mask([p], p)
    weights = uniform_attention(mask, heads=2)
    vis = prompt_visibility(mask)
    stats = prompt_attention(weights, vis, cap=5)
    if p < 3:
        assert torch.isnan(stats.basin_scores).all()
    else:  # only the last query sees three keys: 1/3 on the middle one
        torch.testing.assert_close(stats.basin_scores, torch.full((1, 2), 0.5))
    check_attention(weights, vis, threshold=0.01, cap=5)
    check_attention(weights, vis, threshold=0.0, cap=1)


def test_sequence_shorter_than_three_in_a_batch_is_nan_alone() -> None:
    mask = left_padded_mask([6, 2], 6)
    stats = prompt_attention(uniform_attention(mask, heads=1), prompt_visibility(mask))
    assert stats.basin_scores[0, 0].item() == pytest.approx(0.5)
    assert math.isnan(stats.basin_scores[1, 0].item())


def test_sparse_threshold_is_strict_and_cap_pads() -> None:
    mask = left_padded_mask([4], 4)
    weights = uniform_attention(mask, heads=1)  # rows 1, 1/2, 1/3, 1/4
    vis = prompt_visibility(mask)
    stats = prompt_attention(weights, vis, threshold=0.25, cap=20)  # 1/4 is not above 1/4
    assert stats.count.item() == 1 + 2 + 3
    assert stats.weight.shape == (1, 1, 20)
    assert stats.weight[0, 0, 0].item() == 1.0 and (stats.query_index[0, 0, 0].item(), 0) == (0, 0)
    capped = prompt_attention(weights, vis, threshold=0.0, cap=3)
    assert capped.count.item() == 3
    assert capped.weight[0, 0].tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert set(
        zip(capped.query_index[0, 0, 1:].tolist(), capped.key_index[0, 0, 1:].tolist(), strict=True)
    ) == {
        (1, 0),
        (1, 1),
    }
    none = prompt_attention(weights, vis, cap=0)
    assert none.weight.shape == (1, 1, 0) and none.count.item() == 0


def test_non_finite_weights_spoil_only_their_head() -> None:
    mask = left_padded_mask([6], 6)
    weights = uniform_attention(mask, heads=3)
    weights[0, 1, 4, 2] = math.nan
    weights[0, 2, 5, 1] = math.inf
    stats = prompt_attention(weights, prompt_visibility(mask), threshold=0.1, cap=50)
    assert stats.basin_scores[0, 0].item() == pytest.approx(0.5)
    assert math.isnan(stats.basin_scores[0, 1].item())
    assert math.isnan(stats.basin_scores[0, 2].item())
    n = int(stats.count[0, 1])
    assert not torch.isnan(stats.weight[0, 1, :n]).any()  # the NaN entry is never kept
    assert (4, 2) not in set(
        zip(stats.query_index[0, 1, :n].tolist(), stats.key_index[0, 1, :n].tolist(), strict=True)
    )


def test_low_precision_weights_and_shared_mask() -> None:
    mask = left_padded_mask([10, 7], 10)
    weights = random_attention(mask, heads=2, seed=3, hidden_fill=0.0)
    vis = prompt_visibility(mask)
    full = prompt_attention(weights, vis)
    half = prompt_attention(weights.bfloat16(), vis)
    torch.testing.assert_close(half.basin_scores, full.basin_scores, rtol=2e-2, atol=1e-3)
    # a [1, P, P] mask broadcasts over the batch
    one = left_padded_mask([10], 10)
    shared = prompt_attention(weights[:1], prompt_visibility(one)[0:1].expand(1, -1, -1))
    torch.testing.assert_close(shared.basin_scores, full.basin_scores[:1])


def test_heads_scored_in_groups_equal_the_layer_at_once() -> None:
    """One mask's helpers, each head group's parts, concatenated: the statistics of the whole layer."""
    mask = left_padded_mask([9, 6, 9], 9)
    weights = random_attention(mask, heads=7, seed=5, hidden_fill=0.3)
    weights[1, 4, 6, 3] = math.nan  # a group with a NaN head among clean ones
    vis = prompt_visibility(mask)
    whole = prompt_attention(weights, vis, threshold=0.05, cap=12)
    derived = PromptMask.of(vis, 3, 9, weights.device)
    for sizes, overwrite in (([7], False), ([1] * 7, True), ([3, 2, 2], False), ([4, 3], True)):
        # overwrite: each group's own contiguous copy serves as the working buffer
        groups = [g.clone() for g in torch.split(weights, sizes, dim=1)]
        each = [prompt_head_parts(g, derived, cap=12, overwrite=overwrite) for g in groups]
        parts = PromptHeadParts.cat(each)
        split = prompt_attention_from_parts(parts, derived, threshold=0.05, cap=12)
        for name in ("query_index", "key_index", "weight", "count", "basin_scores"):
            torch.testing.assert_close(
                getattr(split, name), getattr(whole, name), rtol=0, atol=0, equal_nan=True
            )


def test_bad_arguments_are_one_line_errors() -> None:
    mask = left_padded_mask([4], 4)
    weights = uniform_attention(mask, heads=2)
    vis = prompt_visibility(mask)
    derived = PromptMask.of(vis, 1, 4, weights.device)
    with pytest.raises(ValueError, match="weights must be"):
        prompt_attention(weights[0], vis)
    with pytest.raises(ValueError, match="threshold must be"):
        prompt_attention(weights, vis, threshold=-0.1)
    with pytest.raises(ValueError, match="cap must be"):
        prompt_attention(weights, vis, cap=-1)
    with pytest.raises(ValueError, match="weights must be"):
        prompt_head_parts(weights[:, :, :3], derived)
    with pytest.raises(ValueError, match="cap must be"):
        prompt_head_parts(weights, derived, cap=-1)
    with pytest.raises(ValueError, match="threshold must be"):
        prompt_attention_from_parts(prompt_head_parts(weights, derived), derived, threshold=math.nan)


def test_sliding_window_visibility() -> None:
    mask = left_padded_mask([7, 5], 7)
    for window in (None, 1, 3):
        vis = prompt_visibility(mask, window=window)
        want = [ref_visibility(row, window) for row in mask.tolist()]
        assert vis.tolist() == want
    vis = prompt_visibility(mask, window=3)
    weights = random_attention(mask, heads=2, seed=9, hidden_fill=0.0)
    weights = weights * vis.unsqueeze(1)
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-9)
    check_attention(weights, vis, threshold=0.05, cap=10)


# --------------------------------------------------------------------------- surprisals


def ref_surprisals(logits: torch.Tensor, ids: torch.Tensor, visible: torch.Tensor) -> list[list[float]]:
    out = []
    x = logits.double().tolist()
    for b in range(logits.shape[0]):
        row = []
        for i in range(logits.shape[1] - 1):
            if not (visible[b, i] and visible[b, i + 1]):
                row.append(math.nan)
                continue
            lse = math.log(sum(math.exp(v) for v in x[b][i]))
            row.append((lse - x[b][i][int(ids[b, i + 1])]) / math.log(2.0))
        out.append(row)
    return out


@pytest.mark.parametrize("chunk", [1, 3, 256])
def test_surprisals_match_reference_with_padding(chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    b, p, v = 3, 9, 17
    logits = torch.randn(b, p, v, generator=gen) * 3.0
    mask = left_padded_mask([9, 5, 1], p).bool()
    ids = torch.randint(0, v, (b, p), generator=gen)
    ids[~mask] = -7  # padding ids need not be valid vocabulary ids
    got = prompt_surprisals(logits, ids, mask, chunk_size=chunk)
    assert got.shape == (b, p - 1) and got.dtype == torch.float32
    want = torch.tensor(ref_surprisals(logits, ids, mask), dtype=torch.float32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert torch.isnan(got[1, :4]).all() and not torch.isnan(got[1, 4:]).any()
    assert torch.isnan(got[2]).all()


def test_surprisals_low_precision_logits_and_short_prompts() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 11, generator=gen).bfloat16()
    ids = torch.randint(0, 11, (2, 6), generator=gen)
    mask = torch.ones(2, 6, dtype=torch.bool)
    got = prompt_surprisals(logits, ids, mask, chunk_size=4)
    want = torch.tensor(ref_surprisals(logits.float(), ids, mask), dtype=torch.float32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert prompt_surprisals(logits[:, :1], ids[:, :1], mask[:, :1]).shape == (2, 0)
    one = torch.full((1, 2, 4), -math.inf)
    one[0, 0, 2] = 0.0  # certain of token 2
    got = prompt_surprisals(one, torch.tensor([[0, 2]]), torch.ones(1, 2, dtype=torch.bool))
    assert got.tolist() == [[0.0]]
    got = prompt_surprisals(one, torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool))
    assert got.tolist() == [[math.inf]]


# --------------------------------------------------------------------------- layer transformations


def ref_transformations(hidden: torch.Tensor, visible: torch.Tensor) -> list[list[float]]:
    h = hidden.double().tolist()
    out = []
    for layer in range(1, hidden.shape[0]):
        row = []
        for b in range(hidden.shape[1]):
            cos = []
            for i in range(hidden.shape[2]):
                if not visible[b, i]:
                    continue
                x, y = h[layer - 1][b][i], h[layer][b][i]
                nx = max(math.sqrt(sum(a * a for a in x)), 1e-8)
                ny = max(math.sqrt(sum(a * a for a in y)), 1e-8)
                cos.append(sum(a * c for a, c in zip(x, y, strict=True)) / (nx * ny))
            row.append(1.0 - sum(cos) / len(cos) if cos else math.nan)
        out.append(row)
    return out


def test_layer_transformations_match_reference_with_padding() -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(5, 3, 7, 16, generator=gen)
    hidden[2] = hidden[1] * 3.0 + 0.1 * torch.randn(3, 7, 16, generator=gen)  # a quiet layer
    mask = left_padded_mask([7, 4, 0], 7).bool()
    hidden[:, ~mask] = math.nan  # padding positions must not leak
    got = layer_transformations(hidden, mask)
    assert got.shape == (4, 3) and got.dtype == torch.float32
    want = torch.tensor(ref_transformations(hidden, mask), dtype=torch.float32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert torch.isnan(got[:, 2]).all()
    assert got[1, 0].item() < 0.05  # layer 1 -> 2 barely changes the direction
    # The layer outputs as a tuple (HF's hidden_states), a few positions at a time: the same numbers.
    for chunk_bytes in (1, 5 * 3 * 16 * 4 * 3):  # one position per pass; three per pass
        chunked = layer_transformations(tuple(hidden.unbind(0)), mask, chunk_bytes=chunk_bytes)
        torch.testing.assert_close(chunked, got, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_layer_transformations_identical_orthogonal_opposite() -> None:
    eye = torch.eye(4)
    hidden = torch.stack([eye, eye, eye.roll(1, dims=-1), -eye.roll(1, dims=-1)])  # [4, 4, 4]
    hidden = hidden.unsqueeze(1)  # [L=4, B=1, P=4, d=4]
    mask = torch.ones(1, 4, dtype=torch.bool)
    got = layer_transformations(hidden, mask)
    torch.testing.assert_close(got, torch.tensor([[0.0], [1.0], [2.0]]))
    got16 = layer_transformations(hidden.bfloat16(), mask)
    torch.testing.assert_close(got16, torch.tensor([[0.0], [1.0], [2.0]]))
    assert layer_transformations(hidden[:1], mask).shape == (0, 1)


def test_span_attention_share_against_a_loop_reference() -> None:
    from corevital.metrics.prompt import span_attention_share

    torch.manual_seed(3)
    batch, heads, length, pad = 2, 3, 10, 2
    visible = torch.tril(torch.ones(length, length, dtype=torch.bool)).expand(batch, length, length).clone()
    visible[1, :, :pad] = False  # the second sequence is left-padded by two tokens
    visible[1, :pad, :] = False
    scores = torch.randn(batch, heads, length, length).masked_fill(~visible.unsqueeze(1), float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    start, end = 1, 4
    got = span_attention_share(weights, visible, start, end)
    for b in range(batch):
        offset = pad if b == 1 else 0
        for h in range(heads):
            num = den = 0.0
            for q in range(offset + end, length):
                row = weights[b, h, q].double()
                den += float(row.sum())
                num += float(row[offset + start : offset + end].sum())
            assert abs(float(got[b, h]) - num / den) < 1e-5
    assert torch.isnan(span_attention_share(weights, visible, 0, length)).all()


@pytest.mark.parametrize("cap", [2, 5, 50])
def test_recomputed_probabilities_give_the_statistics_of_any_weights(cap: int) -> None:
    """Probabilities recomputed as softmax(scores + additive mask), with left padding (rows that see
    no key: spread evenly), a NaN row: without masking passes, the kept entries of the general
    function exactly, its basin scores within float32 rounding, NaN where it gives NaN."""
    mask = left_padded_mask([9, 6, 9], 9)
    vis = prompt_visibility(mask)
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(3, 4, 9, 9, generator=gen) * 2
    scores[2, 1, 5, 0] = math.nan  # softmax makes the whole row NaN, as the tap's would
    additive = torch.where(vis, 0.0, torch.finfo(torch.float32).min).unsqueeze(1)
    probs = torch.softmax(scores + additive, dim=-1)
    assert torch.all(probs[1, :, :3] == 1 / 9)  # the padded sequence's keyless rows: even, not 0
    derived = PromptMask.of(vis, 3, 9, probs.device)
    want = prompt_attention_from_parts(
        prompt_head_parts(probs, derived, cap=cap), derived, threshold=0.01, cap=cap
    )
    buf = probs.clone()
    parts = recomputed_head_parts(buf, derived, cap=cap)
    got = prompt_attention_from_parts(parts, derived, threshold=0.01, cap=cap)
    for name in ("query_index", "key_index", "weight", "count"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=0)
    torch.testing.assert_close(got.basin_scores, want.basin_scores, rtol=1e-6, atol=1e-7, equal_nan=True)
    assert torch.isnan(got.basin_scores[2, 1]) and not torch.isnan(got.basin_scores[2, 0])
    assert not torch.equal(buf, probs)  # the buffer held the work
    with pytest.raises(ValueError, match="contiguous float32"):
        recomputed_head_parts(probs.double(), derived, cap=cap)


def _logits_and_probabilities(lengths: list[int], p: int, heads: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Logits as the tap recomputes them (scores plus the additive mask), left padding, one NaN row,
    and their softmax; the (query, key) visibility."""
    vis = prompt_visibility(left_padded_mask(lengths, p))
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(len(lengths), heads, p, p, generator=gen) * 2
    scores[-1, 1, p - 4, 0] = math.nan  # softmax makes the whole row NaN, as the tap's would
    logits = scores + torch.where(vis, 0.0, torch.finfo(torch.float32).min).unsqueeze(1)
    return logits, torch.softmax(logits, dim=-1), vis


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize(("p", "cap"), [(9, 2), (9, 5), (9, 50), (40, 5), (40, 12)])
def test_logits_give_the_statistics_of_their_probabilities(p: int, cap: int, compiled: bool) -> None:
    """A layer's logits (scores plus additive mask), with left padding (rows that see no key: spread
    evenly), a NaN row: the kept entries of the general function on their softmax exactly, its
    basin scores within float32 rounding, NaN where it gives NaN; as written and compiled, whether
    the prompt is longer than the cap (the top-k over the rows with the largest maxima) or not."""
    logits, probs, vis = _logits_and_probabilities([p, p - 3, p], p, 4, seed=3)
    assert torch.all(probs[1, :, :3] == 1 / p)  # the padded sequence's keyless rows: even, not 0
    derived = PromptMask.of(vis, 3, p, probs.device)
    want = prompt_attention_from_parts(
        prompt_head_parts(probs, derived, cap=cap), derived, threshold=0.01, cap=cap
    )
    before = logits.clone()
    parts = logit_head_parts(logits, derived, cap=cap, compiled=compiled)
    got = prompt_attention_from_parts(parts, derived, threshold=0.01, cap=cap)
    assert torch.equal(logits.nan_to_num(), before.nan_to_num())  # the logits are read, not written
    for name in ("query_index", "key_index", "weight", "count"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=0)
    tolerance = 1e-5 if compiled else 1e-6
    torch.testing.assert_close(got.basin_scores, want.basin_scores, rtol=tolerance, atol=1e-7, equal_nan=True)
    assert torch.isnan(got.basin_scores[2, 1]) and not torch.isnan(got.basin_scores[2, 0])
    assert int(got.count.sum()) > 0
    assert fused_prompt_row_parts.failure is None


def test_compiled_row_reductions_equal_the_written_ones() -> None:
    """``fused_prompt_row_parts`` (torch.compile, one compilation for every shape): each row's largest
    probability and middle mass within float32 rounding of ``prompt_row_parts``, NaN where it gives
    NaN, and the same statistics, in float32 and bfloat16 logits, over prompts of two lengths (both
    at least four times the cap: the compiled form applies)."""
    for dtype in (torch.float32, torch.bfloat16):
        for p, batch in ((40, 3), (23, 2)):
            logits, _, vis = _logits_and_probabilities([p, p - 3, p][:batch], p, 4, seed=p)
            logits = logits.to(dtype)
            derived = PromptMask.of(vis, batch, p, logits.device)
            row_max, mid = fused_prompt_row_parts(logits, derived.membership)
            want_max, want_mid = prompt_row_parts(logits, derived.membership)
            torch.testing.assert_close(row_max, want_max, rtol=1e-6, atol=1e-7, equal_nan=True)
            torch.testing.assert_close(mid, want_mid, rtol=1e-5, atol=1e-6, equal_nan=True)
            stats = [
                prompt_attention_from_parts(
                    logit_head_parts(logits, derived, cap=5, compiled=compiled), derived, cap=5
                )
                for compiled in (True, False)
            ]
            for name in ("query_index", "key_index", "count"):
                assert torch.equal(getattr(stats[0], name), getattr(stats[1], name)), name
            torch.testing.assert_close(stats[0].weight, stats[1].weight, rtol=0, atol=0)
            torch.testing.assert_close(
                stats[0].basin_scores, stats[1].basin_scores, rtol=1e-5, atol=1e-6, equal_nan=True
            )
    assert fused_prompt_row_parts.failure is None
