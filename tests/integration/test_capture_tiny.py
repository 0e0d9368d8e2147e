"""Capture on tiny random-weight models of every supported architecture (CPU, no network)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
import pytest
import torch
from transformers import PreTrainedModel

from corevital.capture.loading import LoadedModel
from corevital.capture.records import StepEvent
from corevital.capture.runner import capture_prompts
from corevital.errors import CaptureError
from tests.integration.conftest import tiny_settings
from tests.support.tiny_models import ARCHITECTURES, EXPECTED
from tests.support.values import present

PROMPTS = ["The quick brown fox jumps", "Hello world, this is a much longer prompt than the first one"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_capture_every_architecture(arch: str, tiny_loaded: Callable[[str], LoadedModel]) -> None:
    loaded = tiny_loaded(arch)
    shape = EXPECTED[arch]
    caps = loaded.capabilities
    assert caps.num_layers == shape.num_layers
    assert caps.num_attention_heads == shape.num_heads
    assert caps.num_key_value_heads == shape.num_kv_heads
    assert caps.hidden_size == shape.hidden_size
    assert caps.is_moe == shape.is_moe
    assert caps.num_encoder_layers == shape.num_encoder_layers
    assert caps.attention_available and caps.hidden_states_available

    run = capture_prompts(loaded, PROMPTS, tiny_settings(max_new_tokens=6))
    assert len(run.sequences) == 2
    vocab_bits = math.log2(caps.vocab_size)
    for seq in run.sequences:
        steps = seq.num_steps
        assert 1 <= steps <= 6
        hidden, attention = present(seq.hidden), present(seq.attention)
        assert hidden.l2_norm.shape == (steps, shape.num_layers)
        assert attention.max_weight_per_head.shape == (steps, shape.num_layers, shape.num_heads)
        entropy = seq.logits.entropy
        assert np.all((entropy >= 0) & (entropy <= vocab_bits + 1e-4))
        assert np.all(seq.chosen.surprisal >= -1e-5)
        assert np.all(seq.logits.top_k_margin <= seq.logits.topk_mass + 1e-6)
        normalized = attention.entropy_mean_normalized
        assert np.all((normalized >= -1e-6) & (normalized <= 1 + 1e-5))
        assert np.all(hidden.l2_norm > 0)
        if caps.is_encoder_decoder:
            assert seq.cross_attention is not None
            assert seq.cross_attention.entropy_mean.shape == (steps, shape.num_layers)
            assert present(seq.encoder_hidden).mean.shape == (shape.num_encoder_layers,)
            assert present(seq.encoder_attention).entropy_mean.shape == (shape.num_encoder_layers,)
            assert np.all(np.isnan(seq.cross_attention.prev_token_mass_mean))
        else:
            assert seq.cross_attention is None and seq.encoder_hidden is None
            # The decode-step query sees every prompt key plus the tokens generated so far.
            keys = attention.num_keys[:, 0]
            prompt_len = len(seq.prompt.token_ids)
            np.testing.assert_array_equal(keys, prompt_len + np.arange(steps))


def test_sampling_is_reproducible_under_a_seed(tiny_loaded: Callable[[str], LoadedModel]) -> None:
    loaded = tiny_loaded("llama")
    settings = tiny_settings(temperature=1.2, top_k=0, top_p=1.0, max_new_tokens=10, seed=7)
    first = capture_prompts(loaded, PROMPTS[:1], settings).sequences[0]
    again = capture_prompts(loaded, PROMPTS[:1], settings).sequences[0]
    other = capture_prompts(loaded, PROMPTS[:1], tiny_settings(temperature=1.2, max_new_tokens=10, seed=8))
    assert first.generated_token_ids == again.generated_token_ids
    np.testing.assert_array_equal(first.logits.entropy, again.logits.entropy)
    assert first.generated_token_ids != other.sequences[0].generated_token_ids
    # Temperature 1.2 changes the sampled distribution: its entropy is recorded beside the raw one.
    assert first.chosen.sampling_entropy is not None
    assert np.all(first.chosen.sampling_entropy > first.logits.entropy - 1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bart"])
def test_batch_matches_single_prompt_runs(arch: str, tiny_loaded: Callable[[str], LoadedModel]) -> None:
    loaded = tiny_loaded(arch)
    prompts = ["a b c", "The rain in Spain stays mainly", "x", "Numbers: 1 2 3 4 5 6 7 8 9 10 11 12"]
    settings = tiny_settings(max_new_tokens=8)
    batched = capture_prompts(loaded, prompts, settings).sequences
    for prompt, seq in zip(prompts, batched, strict=True):
        single = capture_prompts(loaded, [prompt], settings).sequences[0]
        assert seq.generated_token_ids == single.generated_token_ids
        for name in ("entropy", "top_k_margin", "topk_mass"):
            np.testing.assert_allclose(
                getattr(seq.logits, name), getattr(single.logits, name), rtol=1e-3, atol=1e-5
            )
        np.testing.assert_allclose(seq.chosen.surprisal, single.chosen.surprisal, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(present(seq.hidden).l2_norm, present(single.hidden).l2_norm, rtol=1e-3)
        for name in ("entropy_mean", "entropy_mean_normalized", "concentration_max", "sink_mass_mean"):
            np.testing.assert_allclose(
                getattr(seq.attention, name), getattr(single.attention, name), rtol=1e-3, atol=1e-5
            )


def _model_state(model: PreTrainedModel) -> dict[str, Any]:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    hooks = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs)
        for m in model.modules()
    )
    configs = {id(m.config): m.config._attn_implementation for m in model.modules() if hasattr(m, "config")}  # type: ignore[union-attr]
    return {
        "hooks": hooks,
        "attn": sorted(configs.values()),
        "instance_attrs": sorted(k for k in vars(model) if not k.startswith("_modules")),
        "wrapped_forwards": sorted(name for name, m in model.named_modules() if "forward" in vars(m)),
        "generation_config": model.generation_config.to_json_string(),
        "attention_functions": sorted(ALL_ATTENTION_FUNCTIONS.keys()),
        "mask_functions": sorted(ALL_MASK_ATTENTION_FUNCTIONS.keys()),
        "training": model.training,
    }


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_capture_leaves_the_model_as_it_found_it(
    arch: str, tiny_loaded: Callable[[str], LoadedModel]
) -> None:
    loaded = tiny_loaded(arch)
    before = _model_state(loaded.model)
    capture_prompts(loaded, PROMPTS, tiny_settings(temperature=0.7, max_new_tokens=4))
    assert _model_state(loaded.model) == before

    def explode(event: StepEvent) -> NoReturn:
        raise RuntimeError("boom from a callback")

    with pytest.raises((RuntimeError, CaptureError)):
        capture_prompts(loaded, PROMPTS, tiny_settings(temperature=0.7, max_new_tokens=4), callback=explode)
    assert _model_state(loaded.model) == before


@pytest.mark.parametrize("arch", ["llama", "bart"])
def test_live_callback_sees_every_step_and_can_stop(
    arch: str, tiny_loaded: Callable[[str], LoadedModel]
) -> None:
    loaded = tiny_loaded(arch)
    seen: list[tuple[int, np.ndarray]] = []

    def stop_first_at_step_two(event: StepEvent) -> np.ndarray:
        seen.append((event.step, event.logits.entropy.copy()))
        stop = np.zeros(len(event.token_ids), dtype=bool)
        if event.step == 2:
            stop[0] = True
        return stop

    run = capture_prompts(loaded, PROMPTS, tiny_settings(max_new_tokens=6), callback=stop_first_at_step_two)
    first, second = run.sequences
    assert first.finish_reason == "stopped_by_callback" and first.num_steps == 3
    assert first.stopped_at_step == 2
    assert second.num_steps >= 3
    assert [s for s, _ in seen][:3] == [0, 1, 2]
    np.testing.assert_allclose(seen[0][1][0], first.logits.entropy[0])


def test_summary_mode_does_no_attention_work(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    import corevital.capture.attention_tap as tap_module

    calls: list[int] = []
    original = tap_module.AttentionTap.__call__

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(tap_module.AttentionTap, "__call__", counted)
    run = capture_prompts(tiny_loaded("llama"), PROMPTS, tiny_settings(capture="summary"))
    assert calls == []
    seq = run.sequences[0]
    assert seq.attention is None and seq.hidden is not None
    assert seq.logits.entropy.shape == (seq.num_steps,)


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_beam_search_reports_the_returned_beam(arch: str, tiny_loaded: Callable[[str], LoadedModel]) -> None:
    loaded = tiny_loaded(arch)
    settings = tiny_settings(num_beams=3, max_new_tokens=6)
    seq = capture_prompts(loaded, PROMPTS[:1], settings).sequences[0]
    batch = loaded.tokenizer(PROMPTS[0], return_tensors="pt")
    with torch.no_grad():
        expected = loaded.model.generate(
            **batch,
            num_beams=3,
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
    start = 1 if loaded.capabilities.is_encoder_decoder else batch["input_ids"].shape[1]
    tokens = [t for t in expected[0, start:].tolist()][: seq.num_steps]
    assert seq.generated_token_ids == tokens
    assert any(w.code == "BEAM_SEARCH_REPLAYED" for w in seq.warnings)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5"])
def test_teacher_forced_replay_equals_live_capture(
    arch: str, tiny_loaded: Callable[[str], LoadedModel]
) -> None:
    """The two capture paths compute the same numbers for the same tokens (greedy)."""
    from corevital.capture.options import CaptureOptions
    from corevital.capture.registry import find_attention_sites
    from corevital.capture.replay import replay_sequence

    loaded = tiny_loaded(arch)
    settings = tiny_settings(max_new_tokens=6)
    live = capture_prompts(loaded, PROMPTS[:1], settings).sequences[0]
    sites = find_attention_sites(loaded.model, loaded.capabilities)
    options = CaptureOptions.from_settings(settings)
    replayed = replay_sequence(loaded, live.prompt, live.generated_token_ids, options, sites)
    np.testing.assert_allclose(replayed.logits.entropy, live.logits.entropy, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(replayed.chosen.surprisal, live.chosen.surprisal, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(present(replayed.hidden).l2_norm, present(live.hidden).l2_norm, rtol=1e-4)
    replayed_attention, live_attention = present(replayed.attention), present(live.attention)
    np.testing.assert_allclose(
        replayed_attention.entropy_mean, live_attention.entropy_mean, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_array_equal(replayed_attention.num_keys, live_attention.num_keys)
