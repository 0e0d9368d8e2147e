"""Prompt telemetry from the prefill pass (spec/metrics.md §5) on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corevital.capture.runner import capture_prompts
from corevital.pipeline import Pipeline
from tests.integration.conftest import tiny_settings

PROMPTS = ["The quick brown fox jumps over the lazy dog", "a b"]


def reference_surprisals(loaded, token_ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        logits = loaded.model(torch.tensor([token_ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp[torch.arange(len(token_ids) - 1), torch.tensor(token_ids[1:])]
    return (-picked / np.log(2.0)).numpy()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_prompt_surprisals_equal_a_teacher_forced_reference(arch: str, tiny_loaded) -> None:
    loaded = tiny_loaded(arch)
    run = capture_prompts(loaded, PROMPTS, tiny_settings(max_new_tokens=3))
    for seq in run.sequences:  # the second prompt is left-padded in the batch
        telemetry = seq.prompt_telemetry
        assert telemetry is not None and telemetry.surprisals is not None
        expected = reference_surprisals(loaded, seq.prompt.token_ids)
        np.testing.assert_allclose(telemetry.surprisals, expected, atol=1e-4, rtol=1e-4)
        assert telemetry.layer_transformations.shape == (loaded.capabilities.num_layers,)


def test_one_forward_pass_over_the_prompt(tiny_loaded) -> None:
    loaded = tiny_loaded("llama")
    prompt_len = []
    handle = loaded.model.register_forward_pre_hook(
        lambda module, args, kwargs: prompt_len.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        run = capture_prompts(loaded, PROMPTS[:1], tiny_settings(max_new_tokens=4))
    finally:
        handle.remove()
    length = len(run.sequences[0].prompt.token_ids)
    assert run.sequences[0].prompt_telemetry is not None
    assert prompt_len.count(length) == 1 and prompt_len[0] == length
    assert all(n == 1 for n in prompt_len[1:])


def test_sparse_attention_is_bounded_and_reported(tiny_loaded) -> None:
    loaded = tiny_loaded("llama")
    pipeline = Pipeline(tiny_settings(max_new_tokens=3, sparse_max_per_head=7, sparse_threshold=0.05))
    pipeline.use_model(loaded)
    report = pipeline.build(pipeline.capture(PROMPTS[:1]))[0]
    analysis = report.prompt_analysis
    caps = loaded.capabilities
    assert analysis is not None and len(analysis.layers) == caps.num_layers
    prompt_tokens = report.prompt.num_tokens
    for layer in analysis.layers:
        assert len(layer.heads) == caps.num_attention_heads
        assert len(layer.basin_scores) == caps.num_attention_heads
        for head in layer.heads:
            assert len(head.weights) <= 7
            assert all(w > 0.05 for w in head.weights)
            assert all(
                0 <= k <= q < prompt_tokens for q, k in zip(head.query_indices, head.key_indices, strict=True)
            )
    assert len(analysis.prompt_surprisals) == prompt_tokens - 1


def test_no_prompt_telemetry_really_skips_the_work(tiny_loaded, monkeypatch) -> None:
    import corevital.capture.attention_tap as tap_module
    import corevital.capture.observer as observer_module

    calls = []
    monkeypatch.setattr(tap_module, "prompt_attention", lambda *a, **k: calls.append("attention"))
    monkeypatch.setattr(observer_module, "prompt_surprisals", lambda *a, **k: calls.append("surprisals"))
    run = capture_prompts(tiny_loaded("llama"), PROMPTS[:1], tiny_settings(prompt_telemetry=False))
    assert calls == [] and run.sequences[0].prompt_telemetry is None


def test_encoder_decoder_prompt_telemetry_comes_from_the_encoder(tiny_loaded) -> None:
    loaded = tiny_loaded("bart")
    seq = capture_prompts(loaded, PROMPTS[:1], tiny_settings(max_new_tokens=3)).sequences[0]
    telemetry = seq.prompt_telemetry
    assert telemetry is not None and telemetry.surprisals is None
    assert len(telemetry.heads) == loaded.capabilities.num_encoder_layers
    assert telemetry.layer_transformations.shape == (loaded.capabilities.num_encoder_layers,)
