"""The per-layer update ratio ‖h_l − h_(l−1)‖ / ‖h_(l−1)‖: metric against a plain loop, capture against
the hidden states the model itself returns, and the analysis that reads it (silenced sub-layers)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from corevital.analysis.signals import SequenceSignals
from corevital.analysis.updates import UpdateThresholds, assess_layer_updates
from corevital.capture.loading import ModelSpec, load_model
from corevital.capture.mlp_inputs import MlpInputTap
from corevital.capture.runner import capture_prompts
from corevital.config import load_settings
from corevital.metrics.hidden import mlp_update_ratio, summarize_hidden
from corevital.pipeline import signals_from_capture
from corevital.testing import inject_zero_norm
from tests.support.tiny_models import save_tiny_model


def _reference(stack: torch.Tensor) -> torch.Tensor:
    """Plain loop over one stack [L, N, d]: NaN at the first and last layer."""
    out = torch.full(stack.shape[:2], math.nan)
    for layer in range(1, stack.shape[0] - 1):
        prev = stack[layer - 1].double()
        out[layer] = ((stack[layer].double() - prev).norm(dim=-1) / prev.norm(dim=-1)).float()
    return out


def test_update_ratio_matches_a_plain_loop_per_stack() -> None:
    gen = torch.Generator().manual_seed(3)
    stacks = [torch.randn(6, 4, 16, generator=gen) * (1 + i) for i in range(3)]
    stats = summarize_hidden(torch.cat(stacks), layers=6)
    assert stats.update_ratio is not None
    expected = torch.cat([_reference(s) for s in stacks])
    torch.testing.assert_close(stats.update_ratio, expected, equal_nan=True, rtol=1e-5, atol=1e-6)
    single = summarize_hidden(stacks[0]).update_ratio  # default: one stack
    torch.testing.assert_close(single, _reference(stacks[0]), equal_nan=True, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="stacks of 4"):
        summarize_hidden(torch.cat(stacks), layers=4)


def test_update_ratio_with_a_nan_layer_is_nan_there_and_after() -> None:
    stack = torch.randn(5, 2, 8)
    stack[2, 0, 3] = math.nan
    ratio = summarize_hidden(stack).update_ratio
    assert ratio is not None
    assert torch.isnan(ratio[2:4, 0]).all() and torch.isfinite(ratio[1:4, 1]).all()


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> object:
    directory = save_tiny_model("llama", Path(tmp_path_factory.mktemp("upd")), num_hidden_layers=6)
    loaded = load_model(ModelSpec(model=str(directory), device="cpu"))
    # random weights attend almost uniformly everywhere; sharper queries and keys make every layer
    # attend as a trained model's do, so that a uniform layer stands out
    with torch.no_grad():
        for block in loaded.model.model.layers:
            block.self_attn.q_proj.weight.mul_(8.0)
            block.self_attn.k_proj.weight.mul_(8.0)
    return loaded


SETTINGS = load_settings(
    {"device": "cpu", "max_new_tokens": 4, "temperature": 0.0, "chat_template": "off"}, environ={}
)


def test_captured_update_ratio_equals_the_models_own_hidden_states(llama: object) -> None:
    loaded: object = llama
    seq = capture_prompts(loaded, ["The quick brown fox"], SETTINGS).sequences[0]  # type: ignore[arg-type]
    assert seq.hidden is not None
    ratio = np.asarray(seq.hidden.update_ratio)  # [T, L]
    ids = torch.tensor([list(seq.prompt.token_ids)])
    with torch.no_grad():
        states = loaded.model(ids, output_hidden_states=True).hidden_states  # type: ignore[attr-defined]
    last = torch.stack([s[0, -1:] for s in states[1:]])  # layer outputs at the last prompt position
    np.testing.assert_allclose(ratio[0], _reference(last)[:, 0].numpy(), rtol=1e-4, atol=1e-6)
    caps = loaded.capabilities  # type: ignore[attr-defined]
    sig = signals_from_capture(seq, model_id="tiny", caps=caps)
    assert sig.hidden_update_ratio is not None and sig.hidden_update_ratio.shape == (4, 6)


def _signals(loaded: object, fault: str | None, layer: int) -> SequenceSignals:
    prompts = ["The quick brown fox", "A small cat sat on", "One two three four five"]
    if fault is None:
        run = capture_prompts(loaded, prompts, SETTINGS)  # type: ignore[arg-type]
    else:
        with inject_zero_norm(loaded, layer, fault):  # type: ignore[arg-type]
            run = capture_prompts(loaded, prompts, SETTINGS)  # type: ignore[arg-type]
    caps = loaded.capabilities  # type: ignore[attr-defined]
    return signals_from_capture(run.sequences[0], model_id="tiny", caps=caps)


def test_a_silenced_attention_is_found_at_its_layer(llama: object) -> None:
    clean = assess_layer_updates(_signals(llama, None, 3))
    assert clean.judged and not clean.detected
    found = assess_layer_updates(_signals(llama, "attention", 3))
    assert found.detected and found.findings[0].layer == 3
    assert found.findings[0].signal == "attention_entropy" and found.findings[0].direction == "high"
    strict = assess_layer_updates(_signals(llama, "attention", 3), UpdateThresholds(uniform_entropy=1.01))
    assert 3 not in [f.layer for f in strict.findings if f.signal == "attention_entropy"]


def test_the_diagnosis_flags_and_blames_a_silenced_attention(llama: object) -> None:
    from corevital.analysis.diagnose import diagnose
    from corevital.analysis.profiles import load_profile

    profile = load_profile("llama")
    clean = diagnose(_signals(llama, None, 2), profile)
    assert not clean.health_flags.layer_update_anomaly_detected
    faulted = diagnose(_signals(llama, "attention", 2), profile)
    assert faulted.health_flags.layer_update_anomaly_detected
    assert faulted.blamed_layers[0].layer == 2 and "attention_uniform" in faulted.blamed_layers[0].reasons


def test_mlp_update_ratio_matches_a_plain_loop() -> None:
    gen = torch.Generator().manual_seed(5)
    hidden, mids = torch.randn(2 * 5, 3, 16, generator=gen), torch.randn(2 * 5, 3, 16, generator=gen)
    ratio = mlp_update_ratio(hidden, mids, 5).view(2, 5, 3)
    for stack in range(2):
        for layer in range(5):
            row = stack * 5 + layer
            expected = (hidden[row].double() - mids[row].double()).norm(dim=-1) / mids[row].double().norm(
                dim=-1
            )
            if layer == 4:  # the last layer's state is taken after the final norm
                assert torch.isnan(ratio[stack, layer]).all()
            else:
                torch.testing.assert_close(ratio[stack, layer], expected.float(), rtol=1e-5, atol=1e-6)


def test_captured_mlp_update_ratio_equals_the_residual_after_each_attention(llama: object) -> None:
    """Reference: the residual between attention and MLP rebuilt from each attention module's own
    output (h_(l-1) + attention output), not from the pre-MLP norm the capture hooks."""
    loaded: object = llama
    seq = capture_prompts(loaded, ["The quick brown fox"], SETTINGS).sequences[0]  # type: ignore[arg-type]
    assert seq.hidden is not None and seq.hidden.mlp_update_ratio is not None
    ratio = np.asarray(seq.hidden.mlp_update_ratio)  # [T, L]
    blocks = loaded.model.model.layers  # type: ignore[attr-defined]
    outputs: list[torch.Tensor] = []
    handles = [b.self_attn.register_forward_hook(lambda m, a, o: outputs.append(o[0])) for b in blocks]
    ids = torch.tensor([list(seq.prompt.token_ids)])
    try:
        with torch.no_grad():
            states = loaded.model(ids, output_hidden_states=True).hidden_states  # type: ignore[attr-defined]
    finally:
        for handle in handles:
            handle.remove()
    for layer in range(len(blocks) - 1):
        mid = (states[layer] + outputs[layer])[0, -1].double()
        expected = (states[layer + 1][0, -1].double() - mid).norm() / mid.norm()
        assert ratio[0, layer] == pytest.approx(float(expected), rel=1e-4)
    assert np.isnan(ratio[:, -1]).all() and (ratio[:, :-1] > 0.02).all()


def test_a_silenced_mlp_is_found_at_its_layer_and_blamed_first(llama: object) -> None:
    from corevital.analysis.diagnose import diagnose
    from corevital.analysis.profiles import load_profile

    profile = load_profile("llama")
    assert not diagnose(_signals(llama, None, 1), profile).health_flags.layer_update_anomaly_detected
    for layer in (0, 2, 4):
        sig = _signals(llama, "mlp", layer)
        assert sig.hidden_mlp_update_ratio is not None
        assert (sig.hidden_mlp_update_ratio[:, layer] == 0.0).all()  # the MLP adds exactly nothing
        found = assess_layer_updates(sig)
        assert found.findings[0].layer == layer and found.findings[0].signal == "mlp_update_ratio"
        faulted = diagnose(sig, profile)
        assert faulted.health_flags.layer_update_anomaly_detected
        assert faulted.blamed_layers[0].layer == layer and "mlp_silent" in faulted.blamed_layers[0].reasons
        assert present_risk(faulted) >= 0.5 and "layer_update_anomaly" in faulted.risk.risk_factors


def present_risk(diagnosis: object) -> float:
    return float(diagnosis.risk.risk_score)  # type: ignore[attr-defined]


@pytest.mark.parametrize("chunk_bytes", [2**30, 1])
def test_a_prefills_residuals_are_copied_together_within_the_budget(chunk_bytes: int) -> None:
    """Of a pass over several positions the tap keeps each layer's last position, copied for as many
    layers at once as the budget holds (every layer; one at a time with a budget of one byte); a
    decoding step's single position is kept as the norm got it. A pass the observer did not begin
    keeps nothing."""
    norms = tuple(torch.nn.Identity() for _ in range(4))
    tap = MlpInputTap(norms, chunk_bytes)
    inputs = [torch.randn(2, 5, 8) for _ in norms]
    with tap.installed():
        for norm, state in zip(norms, inputs, strict=True):
            norm(state)
        assert tap.take() is None, "a pass the observer did not begin"
        tap.begin_pass(5)
        for norm, state in zip(norms, inputs, strict=True):
            norm(state)
        kept = tap.take()
        assert kept is not None
        for got, state in zip(kept, inputs, strict=True):
            torch.testing.assert_close(got, state[:, -1:], rtol=0, atol=0)
        copies = {got.untyped_storage().data_ptr() for got in kept}
        assert len(copies) == (1 if chunk_bytes > 1 else len(norms))
        assert not copies & {state.untyped_storage().data_ptr() for state in inputs}
        steps = [torch.randn(2, 1, 8) for _ in norms]
        tap.begin_pass(1)
        for norm, state in zip(norms, steps, strict=True):
            norm(state)
        step = tap.take()
        assert step is not None and all(got is state for got, state in zip(step, steps, strict=True))
        tap.begin_pass(5)
        for norm, state in zip(norms, inputs, strict=True):  # a pass over several positions never taken
            norm(state)
        tap.begin_pass(1)
        for norm, state in zip(norms, steps, strict=True):
            norm(state)
        step = tap.take()  # the decoding step's own, nothing of the pass before
        assert step is not None and all(got is state for got, state in zip(step, steps, strict=True))
