"""A window's decoding rows scored together, against each step scored alone over its own keys."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from corevital.capture import attention_window
from corevital.capture.attention_tap import AttentionTap
from corevital.capture.attention_window import DecodeRows, reduce_decode_rows
from corevital.capture.options import Tuning
from corevital.capture.registry import AttentionSite, SiteKind
from corevital.metrics.attention import summarize_attention
from tests.support.decode_step import StandInAttention, decode_mask_kwargs


@pytest.mark.parametrize("lengths", [[5, 6, 9], [7, 8, 9]], ids=["steps-apart", "consecutive"])
def test_window_scores_only_the_keys_its_steps_saw(
    monkeypatch: pytest.MonkeyPatch, lengths: list[int]
) -> None:
    """Slots past the longest step (a static cache's unwritten tail, here NaN) are not scored; steps
    one after another or not (their key counts made on the device or copied there)."""
    scored: list[int] = []
    real = attention_window.row_scores  # type: ignore[attr-defined]  # the name reduce_decode_rows calls

    def counted(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        scored.append(key.shape[2])
        return real(query, key)

    monkeypatch.setattr(attention_window, "row_scores", counted)
    gen = torch.Generator().manual_seed(7)
    layers, batch, q_heads, kv_heads, dim, capacity = 3, 2, 4, 2, 8, 40
    keys = [torch.randn(batch, kv_heads, capacity, dim, generator=gen) for _ in range(layers)]
    for k in keys:
        k[:, :, max(lengths) :] = math.nan  # never seen by any step of the window
    scale = dim**-0.5
    steps = [
        DecodeRows(
            queries=torch.randn(batch, layers, q_heads, dim, generator=gen),
            key_length=length,
            padding=None,
            scale=scale,
        )
        for length in lengths
    ]
    got = reduce_decode_rows(steps, keys, Tuning())
    assert scored and set(scored) == {max(lengths)}
    for index, step in enumerate(steps):
        # the reference: each step alone, over exactly the keys it saw, eager softmax in float32
        rows = []
        for layer in range(layers):
            k = keys[layer][:, :, : step.key_length].repeat_interleave(q_heads // kv_heads, dim=1)
            scores = step.queries[:, layer, :, None] @ k.transpose(-1, -2) * scale  # [B, H, 1, K]
            rows.append(torch.softmax(scores.float(), dim=-1)[:, :, 0])  # [B, H, K]
        want = summarize_attention(torch.stack(rows), None, causal=True)
        for f in dataclasses.fields(want):
            torch.testing.assert_close(
                getattr(got, f.name)[index], getattr(want, f.name), rtol=1e-5, atol=1e-6, equal_nan=True
            )
    assert not got.has_nan.any()
    assert got.num_keys.tolist() == [[[n] * batch] * layers for n in lengths]


def test_layers_rows_wait_together_only_where_they_agree_checked_at_one_step_a_generation() -> None:
    """A decoding step's rows wait for the window only where every layer's agree in shape, dtype,
    device, mask and scale. The shapes, dtype and device are constants of a generation: the tap
    compares them until one step's layers agree, then only the masks and scales; a step whose
    layers disagree leaves its rows to be scored with the step, and the next step is compared in full."""
    layers = 3
    modules = [StandInAttention() for _ in range(layers)]
    sites = [
        AttentionSite(module=m, kind=SiteKind.SELF, layer=i, path=f"layers.{i}")
        for i, m in enumerate(modules)
    ]
    tap = AttentionTap(sites, num_layers=layers, num_encoder_layers=0, fast=True)
    mask_kwargs = decode_mask_kwargs(16)

    def step(head_sizes: list[int], scales: list[float]) -> tuple[bool, bool]:
        """(the rows waited, the next step's buffer compares the layout)."""
        tap.begin_forward()
        tap.defer_decode = True
        mask = tap._model_mask(**mask_kwargs)
        keys = []
        for module, size, scale in zip(modules, head_sizes, scales, strict=True):
            query, key = torch.randn(1, 4, 1, size), torch.randn(1, 1, 16, size)
            keys.append(key)
            tap(module, query, key, torch.randn(1, 1, 16, size), mask, dropout=0.0, scaling=scale)
        waited = tap.take_decode_rows(keys) is not None
        return waited, tap._buffer.decode.check_layout

    with torch.no_grad():
        assert step([8, 8, 16], [0.5] * 3) == (False, True), "a layer of another head size"
        assert step([8, 8, 8], [0.5] * 3) == (True, False), "agreed: the layout is not compared again"
        assert step([8, 8, 8], [0.5, 0.5, 0.25]) == (False, False), "a layer of another scale"
        assert step([8, 8, 8], [0.5] * 3) == (True, False)
