"""The fast attention path (model keeps SDPA) gives the eager path's numbers (float32, 1e-4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from corevital.capture.loading import LoadedModel
from corevital.capture.options import Tuning
from corevital.capture.runner import capture_prompts
from tests.integration.conftest import tiny_settings
from tests.support.report_fields import ATTENTION_FIELDS
from tests.support.tiny_models import ARCHITECTURES
from tests.support.values import present

PROMPTS = ["The quick brown fox jumps over", "a b c"]
FIELDS = (*ATTENTION_FIELDS, "max_weight_per_head")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fast_path_equals_eager(arch: str, tiny_loaded: Callable[[str], LoadedModel]) -> None:
    loaded = tiny_loaded(arch)
    assert loaded.capabilities.fast_attention_supported
    fast = capture_prompts(loaded, PROMPTS, tiny_settings(attention_path="fast", max_new_tokens=6)).sequences
    eager = capture_prompts(
        loaded, PROMPTS, tiny_settings(attention_path="eager", max_new_tokens=6)
    ).sequences
    for f, e in zip(fast, eager, strict=True):
        assert f.generated_token_ids == e.generated_token_ids
        for name in FIELDS:
            np.testing.assert_allclose(
                getattr(f.attention, name), getattr(e.attention, name), atol=1e-4, rtol=1e-4, err_msg=name
            )
        np.testing.assert_array_equal(present(f.attention).num_keys, present(e.attention).num_keys)
        np.testing.assert_allclose(f.logits.entropy, e.logits.entropy, atol=1e-4, rtol=1e-4)
        if f.cross_attention is not None:
            for name in FIELDS[:-1]:
                np.testing.assert_allclose(
                    getattr(f.cross_attention, name), getattr(e.cross_attention, name), atol=1e-4, rtol=1e-4
                )
        if f.encoder_attention is not None:
            np.testing.assert_allclose(
                f.encoder_attention.entropy_mean,
                present(e.encoder_attention).entropy_mean,
                atol=1e-4,
                rtol=1e-4,
            )
        pf, pe = present(f.prompt_telemetry), present(e.prompt_telemetry)
        np.testing.assert_allclose(present(pf.basin_scores), present(pe.basin_scores), atol=1e-4, rtol=1e-4)
        for layer_f, layer_e in zip(pf.heads, pe.heads, strict=True):
            for head_f, head_e in zip(layer_f, layer_e, strict=True):
                np.testing.assert_allclose(head_f.weights, head_e.weights, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "bart"])
def test_layer_by_layer_scores_equal_stacked_keys(
    arch: str, tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layers scored in one matmul over their stacked keys (as on a GPU) or one by one: the same numbers."""
    loaded = tiny_loaded(arch)
    settings = tiny_settings(attention_path="fast", max_new_tokens=5)

    def attention(tuning: Tuning) -> list[tuple[list[int], Any]]:
        run = capture_prompts(loaded, PROMPTS, settings, tuning=tuning)
        return [(s.generated_token_ids, s.attention) for s in run.sequences]

    layered = attention(Tuning())
    stacked = attention(Tuning(stack_keys_on_cpu=True))
    # beyond the budget: one by one again
    over_budget = attention(Tuning(stack_keys_on_cpu=True, stacked_keys_bytes=0))
    for (ids, want), (s_ids, s_att), (o_ids, o_att) in zip(layered, stacked, over_budget, strict=True):
        assert ids == s_ids == o_ids
        for name in FIELDS:
            for got in (getattr(s_att, name), getattr(o_att, name)):
                np.testing.assert_allclose(got, getattr(want, name), atol=1e-6, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bart", "t5"])
def test_fast_path_equals_eager_without_padding(arch: str, tiny_loaded: Callable[[str], LoadedModel]) -> None:
    """One prompt: no padding, so decoding steps run without any mask (every key visible)."""
    loaded = tiny_loaded(arch)
    prompt = ["The quick brown fox jumps over"]
    fast = capture_prompts(loaded, prompt, tiny_settings(attention_path="fast", max_new_tokens=6)).sequences[
        0
    ]
    eager = capture_prompts(
        loaded, prompt, tiny_settings(attention_path="eager", max_new_tokens=6)
    ).sequences[0]
    assert fast.generated_token_ids == eager.generated_token_ids
    for name in FIELDS:
        got, want = getattr(fast.attention, name), getattr(eager.attention, name)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=name)
    np.testing.assert_array_equal(present(fast.attention).num_keys, present(eager.attention).num_keys)
    for name in ("renormalized", "has_nan", "has_inf", "collapsed_head_count", "focused_head_count"):
        np.testing.assert_array_equal(getattr(fast.attention, name), getattr(eager.attention, name), name)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_prompt_pass_sdpa_takes_the_mask_plain_generation_gives_it(
    arch: str, tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without padding, the prompt pass's SDPA runs causal with no mask tensor (as without CoreVital:
    transformers skips that mask, so a GPU runs flash attention); with padding it gets the mask. The
    statistics read the mask either way: the numbers equal the eager path's."""
    from corevital.capture import attention_tap

    loaded = tiny_loaded(arch)
    seen: list[tuple[int, bool]] = []
    sdpa = attention_tap._sdpa

    def recording(module: Any, query: Any, key: Any, value: Any, mask: Any, **kwargs: Any) -> Any:
        seen.append((query.shape[2], mask is None))
        return sdpa(module, query, key, value, mask, **kwargs)

    monkeypatch.setattr(attention_tap, "_sdpa", recording)
    settings = tiny_settings(attention_path="fast", max_new_tokens=4)
    one = capture_prompts(loaded, ["The quick brown fox jumps over"], settings).sequences[0]
    prompt_calls = [no_mask for q_len, no_mask in seen if q_len > 1]
    assert prompt_calls and all(prompt_calls)  # every layer of the prompt pass: no mask tensor
    seen.clear()
    capture_prompts(loaded, PROMPTS, settings)  # two prompts of different lengths: padded
    prompt_calls = [no_mask for q_len, no_mask in seen if q_len > 1]
    assert prompt_calls and not any(prompt_calls)
    monkeypatch.undo()
    eager = capture_prompts(
        loaded, ["The quick brown fox jumps over"], tiny_settings(attention_path="eager", max_new_tokens=4)
    ).sequences[0]
    assert one.generated_token_ids == eager.generated_token_ids
    pf, pe = present(one.prompt_telemetry), present(eager.prompt_telemetry)
    np.testing.assert_allclose(present(pf.basin_scores), present(pe.basin_scores), atol=1e-4, rtol=1e-4)
    for name in FIELDS:
        np.testing.assert_allclose(
            getattr(one.attention, name), getattr(eager.attention, name), atol=1e-4, rtol=1e-4, err_msg=name
        )
