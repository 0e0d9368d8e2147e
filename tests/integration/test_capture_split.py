"""Capture of a model split over a GPU and the CPU (``device_map``), against the same model on one device.

Layers on different devices leave their hidden states and attention rows where they ran; the
observer reduces each layer's rows on its own device and gathers the states once per step. The
reports have the same structure as a one-device run's (every layer, every step, prompt telemetry)
and the same values within the tolerance of CUDA against CPU arithmetic. Needs a CUDA device.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest
import torch

from corevital.monitor import CoreVitalMonitor
from corevital.report.schema import Report
from tests.support.tiny_models import build_model, build_tokenizer

PROMPTS = ["The quick brown fox jumps over the lazy dog", "Hi there"]
NEW_TOKENS = 6


def _watched(
    model: Any, tokenizer: Any, device: str, capture: Literal["full", "summary"]
) -> tuple[torch.Tensor, list[Report]]:
    inputs = {k: v.to(device) for k, v in tokenizer(PROMPTS, return_tensors="pt", padding=True).items()}
    monitor = CoreVitalMonitor(device=device, capture=capture)
    with monitor.watch(model, tokenizer) as watcher:
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return out.cpu(), watcher.reports


def _values(report: Report) -> np.ndarray:
    rows = []
    for step in report.timeline:
        row = [step.logits_summary.entropy]
        for layer in step.layers:
            row += [layer.hidden_summary.l2_norm_mean, layer.attention_summary.entropy_mean]
        rows.append(row)
    return np.array(rows, dtype=float)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a split over devices needs a CUDA device")
@pytest.mark.parametrize("capture", ["full", "summary"])
def test_split_over_gpu_and_cpu_reports_like_one_device(capture: Literal["full", "summary"]) -> None:
    from accelerate import dispatch_model  # type: ignore[import-untyped]

    tokenizer = build_tokenizer()
    whole = build_model("llama", seed=0)
    split = build_model("llama", seed=0)
    layers = split.config.num_hidden_layers
    device_map = {
        "model.embed_tokens": 0,
        "model.rotary_emb": 0,
        **{f"model.layers.{i}": 0 if i < layers // 2 else "cpu" for i in range(layers)},
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    split = dispatch_model(split, device_map=device_map)
    whole_out, whole_reports = _watched(whole, tokenizer, "cpu", capture)
    split_out, split_reports = _watched(split, tokenizer, "cuda", capture)
    assert torch.equal(whole_out, split_out)
    for one, two in zip(whole_reports, split_reports, strict=True):
        assert len(two.timeline) == len(one.timeline) == NEW_TOKENS
        assert all(
            len(step.layers) == len(ref.layers) for step, ref in zip(two.timeline, one.timeline, strict=True)
        )
        assert (two.prompt_analysis is None) == (one.prompt_analysis is None)
        np.testing.assert_allclose(_values(two), _values(one), rtol=1e-3, atol=1e-3, equal_nan=True)
