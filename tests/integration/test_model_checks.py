"""The once-per-model checks: one three-token pass answers attention, hidden states, head and stream."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from corevital.capture import attention_tap
from corevital.capture.loading import loaded_from_existing
from corevital.capture.model_checks import logits_head, model_checks, stream_sites
from tests.support.tiny_models import build_model, build_tokenizer


def _count_passes(model: torch.nn.Module) -> tuple[list[int], Any]:
    lengths: list[int] = []

    def pre(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        lengths.append(-1 if ids is None else int(ids.shape[1]))

    return lengths, model.register_forward_pre_hook(pre, with_kwargs=True)


def test_loading_runs_one_pass_that_answers_every_check() -> None:
    model = build_model("llama")
    lengths, handle = _count_passes(model)
    loaded = loaded_from_existing(model, build_tokenizer())
    assert logits_head(model) is not None and stream_sites(model) is not None  # no pass of their own
    loaded_from_existing(model, build_tokenizer())  # nor a second probe
    handle.remove()
    assert lengths == [3]
    caps = loaded.capabilities
    assert caps.attention_available and caps.hidden_states_available
    assert caps.attention_detail == "all layers observed"


def test_encoder_decoder_models_get_the_attention_check_only() -> None:
    model = build_model("t5")
    caps = loaded_from_existing(model, build_tokenizer()).capabilities
    assert caps.attention_available and caps.hidden_states_available
    checks = model_checks(model)
    assert checks.head is None and checks.stream is None


def test_attention_that_cannot_be_observed_leaves_head_and_stream_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(attention_tap, "eager_attention_function", lambda module: None)
    model = build_model("llama")
    lengths, handle = _count_passes(model)
    caps = loaded_from_existing(model, build_tokenizer()).capabilities
    handle.remove()
    assert not caps.attention_available and not caps.hidden_states_available
    assert caps.attention_detail.startswith("probe failed: RuntimeError: ")
    assert lengths == [3, 3]  # the tap's pass failed; a second one without it
    assert logits_head(model) is not None and stream_sites(model) is not None
