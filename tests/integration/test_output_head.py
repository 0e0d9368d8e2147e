"""Prompt surprisals from the output head, a few positions at a time, equal the full-logits ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import corevital.capture.observer as observer_module
from corevital.capture.loading import LoadedModel
from corevital.capture.model_checks import logits_head
from corevital.capture.runner import capture_prompts
from tests.integration.conftest import tiny_settings
from tests.support.values import present

DECODER_ONLY = ["gpt2", "llama", "mistral", "qwen2", "phi3", "mixtral"]
PROMPTS = ["The quick brown fox jumps over the lazy dog again and again", "a b c"]


@pytest.mark.parametrize("arch", DECODER_ONLY)
def test_head_surprisals_equal_full_logits(
    arch: str, tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = tiny_loaded(arch)
    assert logits_head(loaded.model) is not None  # these heads give the model's logits
    settings = tiny_settings(max_new_tokens=3)
    from_head = capture_prompts(loaded, PROMPTS, settings).sequences
    monkeypatch.setattr(observer_module, "logits_head", lambda model: None)
    from_logits = capture_prompts(loaded, PROMPTS, settings).sequences
    for got, want in zip(from_head, from_logits, strict=True):
        a = present(present(got.prompt_telemetry).surprisals)
        b = present(present(want.prompt_telemetry).surprisals)
        assert a.shape == b.shape and np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_prefill_keeps_one_position_of_logits_with_the_head(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The point of the head: the prefill no longer asks the model for every position's logits."""
    loaded = tiny_loaded("llama")
    asked: list[object] = []
    real_pre = observer_module.StepObserver._pre_forward

    def pre(
        self: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = real_pre(self, args, kwargs)
        asked.append(kwargs.get("logits_to_keep"))
        return args, kwargs

    monkeypatch.setattr(observer_module.StepObserver, "_pre_forward", pre)
    capture_prompts(loaded, PROMPTS[:1], tiny_settings(max_new_tokens=2))
    assert asked and 0 not in asked


def test_post_processed_logits_keep_the_full_logits_path() -> None:
    """A model that soft-caps its logits: the head alone does not give them, so it is not used."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=0.5,
    )
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).eval()  # type: ignore[no-untyped-call]
    assert logits_head(model) is None
    config_plain = Gemma2Config(**{**config.to_dict(), "final_logit_softcapping": None})
    assert logits_head(Gemma2ForCausalLM(config_plain).eval()) is not None  # type: ignore[no-untyped-call]
