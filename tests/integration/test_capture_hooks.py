"""transformers' output-capturing hooks: capture leaves a model's hooks as it found them.

transformers returns hidden states by installing forward hooks on every decoder layer and attention
module the first time a forward asks for them, and keeps them for the model's life; a module with
a hook takes PyTorch's slow call path in every later forward, asked for outputs or not. Capture
asks for hidden states in its load-time check, and in every observed step of a model whose layers
it cannot tap (:mod:`corevital.capture.layer_outputs`; tests/integration/test_layer_outputs.py):
where the model had none of those hooks before, it removes them afterwards, so a later generation
that nobody observes runs as on a model CoreVital never touched. Where decoding steps were compiled
with the hooks, they stay (the graphs were traced with them).
"""

from __future__ import annotations

from typing import Any

import torch

from corevital.capture.hf_compat import (
    _capture_hooks_removable,
    output_capture_hooks,
    output_capture_hooks_as_found,
    remove_output_capture_hooks,
)
from corevital.capture.loading import loaded_from_existing
from corevital.monitor import CoreVitalMonitor
from tests.support.tiny_models import build_model, build_tokenizer

PROMPTS = ["The quick brown fox jumps over the lazy dog", "Hi there"]


def _ids(model: Any) -> torch.Tensor:
    return torch.tensor([[1, 2, 3, 4, 5]], device=next(model.parameters()).device)


def _hidden(model: Any) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        states: tuple[torch.Tensor, ...] = model(_ids(model), output_hidden_states=True).hidden_states
    return states


def test_transformers_installs_the_hooks_once_asked_and_installs_them_again_after_removal() -> None:
    """The touchpoint: what transformers installs, what removal clears, and that the hidden states
    transformers returns after a removal are those it returned before."""
    model = build_model("llama", seed=0)
    layers = model.config.num_hidden_layers
    assert _capture_hooks_removable()
    assert output_capture_hooks(model) == 0
    first = _hidden(model)
    assert len(first) == layers + 1
    installed = output_capture_hooks(model)
    assert installed >= layers  # at least one on every decoder layer (here also every attention module)
    assert remove_output_capture_hooks(model) == installed
    assert output_capture_hooks(model) == 0
    assert not any("_output_capturing_hooks_installed" in vars(m) for m in model.modules())
    again = _hidden(model)
    assert output_capture_hooks(model) == installed
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)


def test_the_block_leaves_the_hooks_as_found() -> None:
    model = build_model("llama", seed=0)
    with output_capture_hooks_as_found(model):
        _hidden(model)
        assert output_capture_hooks(model) > 0
    assert output_capture_hooks(model) == 0
    with output_capture_hooks_as_found(model, install=True):
        assert output_capture_hooks(model) > 0  # before any forward asks
    assert output_capture_hooks(model) == 0
    with output_capture_hooks_as_found(model, keep=lambda: True):
        _hidden(model)
    kept = output_capture_hooks(model)
    assert kept > 0
    with output_capture_hooks_as_found(model):  # hooks the model had before: left alone
        _hidden(model)
    assert output_capture_hooks(model) == kept


def test_loading_and_observing_leave_no_hooks_and_the_reports_keep_their_hidden_states() -> None:
    model = build_model("llama", seed=0)
    tokenizer = build_tokenizer()
    loaded_from_existing(model, tokenizer)  # the load-time check asks for hidden states
    assert output_capture_hooks(model) == 0
    layers = model.config.num_hidden_layers
    for capture in ("summary", "full"):
        monitor = CoreVitalMonitor(device="cpu", capture=capture)
        inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
        with monitor.watch(model, tokenizer) as watcher:
            model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
        assert output_capture_hooks(model) == 0, capture
        for report in watcher.reports:
            assert len(report.timeline) == 6
            assert "HIDDEN_STATES_NOT_AVAILABLE" not in [w.code for w in report.warnings]
            if capture == "full":  # a summary report keeps no per-layer detail
                for step in report.timeline:
                    norms = [layer.hidden_summary.l2_norm_mean for layer in step.layers]
                    assert len(norms) == layers and all(n > 0 for n in norms)


def test_a_model_with_hooks_of_its_own_keeps_them() -> None:
    model = build_model("llama", seed=0)
    tokenizer = build_tokenizer()
    _hidden(model)  # the user asked for hidden states before CoreVital saw the model
    hooks = output_capture_hooks(model)
    monitor = CoreVitalMonitor(device="cpu", capture="summary")
    inputs = tokenizer(PROMPTS[:1], return_tensors="pt")
    with monitor.watch(model, tokenizer):
        model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert output_capture_hooks(model) == hooks
