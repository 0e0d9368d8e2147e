"""Each layer's hidden state read by wrappers around the layers, not through transformers' hooks.

Where the model's checks verified the modules its hidden states come from, an observed generation
asks transformers for no hidden states (whose hooks would send every decoder layer and attention
module down PyTorch's slow call path) and reads them from :class:`LayerOutputTap` instead. The
reference is the generation observed with the states transformers returns (the tap disabled): the
hidden-state statistics must be identical, family by family, since the tap keeps the very tensors
transformers would have returned.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Literal

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

import corevital.capture.observer as observer_module
from corevital.capture.hf_compat import output_capture_hooks, remove_output_capture_hooks
from corevital.capture.layer_outputs import LayerOutputTap, outputs_as_returned
from corevital.capture.layer_stream import StreamSites
from corevital.capture.loading import loaded_from_existing
from corevital.capture.mlp_inputs import pre_mlp_norms
from corevital.capture.model_checks import model_checks, stream_sites
from corevital.capture.module_forward import CallForms
from corevital.capture.observer import _packed
from corevital.capture.runner import capture_prompts
from corevital.monitor import CoreVitalMonitor
from corevital.report.schema import Report
from tests.integration.conftest import tiny_settings
from tests.support.compare import assert_stats_close
from tests.support.tiny_models import build_family_model, build_tokenizer

PROMPTS = ["The quick brown fox jumps over the lazy dog", "Hi there"]  # the second is left-padded
NEW_TOKENS = 5
PARALLEL = ("gpt_neox", "falcon")  # attention and MLP in parallel: no residual between them
# Llama's layout, GPT-2's (a final norm outside the layers), sliding-window and full layers
# (gemma3_text), multi-head latent attention (deepseek_v3), attention sinks (gpt_oss), per-layer-type
# masks (qwen3), and the two parallel layouts
TAPPED_FAMILIES = ("llama", "gpt2", "gemma3_text", "gpt_neox", "deepseek_v3", "gpt_oss", "qwen3", "falcon")


class _HooksDuringSteps(LogitsProcessor):
    """A processor of the user's that counts transformers' output-capturing hooks at every step."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.counts: list[int] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.counts.append(output_capture_hooks(self.model))
        return scores


def _watched(
    model: Any, tokenizer: Any, capture: Literal["full", "summary"] = "full"
) -> tuple[torch.Tensor, list[Report], list[int]]:
    counter = _HooksDuringSteps(model)
    monitor = CoreVitalMonitor(device="cpu", capture=capture)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with monitor.watch(model, tokenizer) as watcher:
        out = model.generate(
            **inputs,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            logits_processor=LogitsProcessorList([counter]),
        )
    return out, watcher.reports, counter.counts


def _captured(model: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch, *, tapped: bool) -> list[Any]:
    if not tapped:
        monkeypatch.setattr(observer_module, "LayerOutputTap", lambda sites: None)
    try:
        run = capture_prompts(
            loaded_from_existing(model, tokenizer),
            PROMPTS,
            tiny_settings(max_new_tokens=NEW_TOKENS, capture="full", ignore_eos=True),
        )
    finally:
        monkeypatch.undo()
    return run.sequences


@pytest.mark.parametrize("family", TAPPED_FAMILIES)
def test_the_tapped_states_are_those_transformers_returns(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every hidden-state statistic (the update ratios included) equal, bit for bit."""
    model = build_family_model(family, seed=0)
    tokenizer = build_tokenizer()
    tapped = _captured(model, tokenizer, monkeypatch, tapped=True)
    assert stream_sites(model) is not None, f"{family}: the sites of its hidden states were not verified"
    returned = _captured(model, tokenizer, monkeypatch, tapped=False)
    assert output_capture_hooks(model) == 0
    for got, want in zip(tapped, returned, strict=True):
        assert got.generated_token_ids == want.generated_token_ids
        assert got.num_steps == NEW_TOKENS
        assert got.hidden is not None
        assert np.asarray(got.hidden.l2_norm).shape == (NEW_TOKENS, model.config.num_hidden_layers)
        assert (np.asarray(got.hidden.l2_norm) > 0).all()
        has_mlp_inputs = pre_mlp_norms(model, model.config.num_hidden_layers) is not None
        assert (got.hidden.mlp_update_ratio is not None) == has_mlp_inputs == (family not in PARALLEL)
        assert_stats_close(got.hidden, want.hidden, f"{family} hidden", rtol=0, atol=0)
        assert [w.code for w in got.warnings] == [w.code for w in want.warnings]


def test_observed_steps_run_without_transformers_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the tap, no step of an observed generation has the hooks; without it (sites not
    verified) every step has them, and they are removed afterwards."""
    model = build_family_model("llama", seed=0)
    tokenizer = build_tokenizer()
    captures: tuple[Literal["full", "summary"], ...] = ("full", "summary")
    for capture in captures:
        _, reports, hooks = _watched(model, tokenizer, capture)
        assert hooks and not any(hooks), capture
        assert output_capture_hooks(model) == 0
        for report in reports:
            assert len(report.timeline) == NEW_TOKENS
            assert "HIDDEN_STATES_NOT_AVAILABLE" not in [w.code for w in report.warnings]
    monkeypatch.setattr(observer_module, "LayerOutputTap", lambda sites: None)
    _, reports, hooks = _watched(model, tokenizer)
    assert all(hooks), "the states transformers returns come through its hooks"
    assert output_capture_hooks(model) == 0


@pytest.mark.parametrize("config_returns_states", [False, True])
def test_a_tapped_step_adds_no_keyword_the_forward_would_not_need(config_returns_states: bool) -> None:
    """A tapped decoding step asks for no hidden states by leaving ``output_hidden_states`` out, as
    plain generate() does (a keyword the model does not name travels down through every layer's
    ``**kwargs``); where the model's config would return them, it says False. Either way no step
    has transformers' hooks and the reports have every step (and, in full capture, every layer)."""
    model = build_family_model("llama", seed=0)
    model.config.output_hidden_states = config_returns_states
    tokenizer = build_tokenizer()
    given: list[object] = []
    forward = model.forward

    def recording(*args: Any, **kwargs: Any) -> Any:
        given.append(kwargs.get("output_hidden_states", "absent"))
        return forward(*args, **kwargs)

    model.forward = recording  # an instance attribute, beneath the observer's own wrapper
    for capture in ("full", "summary"):
        given.clear()
        _, reports, hooks = _watched(model, tokenizer, capture)
        steps = NEW_TOKENS - 1  # the forwards after the prompt's (full capture reads the prompt in one more)
        assert len(given) >= NEW_TOKENS, capture
        assert given[-steps:] == [False if config_returns_states else "absent"] * steps, capture
        assert hooks and not any(hooks), capture
        for report in reports:
            assert len(report.timeline) == NEW_TOKENS
            if capture == "full":  # a summary report keeps no per-layer timeline
                assert all(len(step.layers) == model.config.num_hidden_layers for step in report.timeline)
            assert "HIDDEN_STATES_NOT_AVAILABLE" not in [w.code for w in report.warnings]
    del model.forward


@pytest.mark.parametrize("capture", ["full", "summary"])
def test_hidden_states_the_callers_generate_asks_for_are_returned(capture: str) -> None:
    """generate(output_hidden_states=True, return_dict_in_generate=True) under watch returns every
    step's states, those of the same generation unobserved (bit for bit in summary capture, which
    leaves the attention to the model; to float32 rounding in full capture, whose attention function
    computes the prompt's outputs), and the report is whole."""
    model = build_family_model("llama", seed=0)
    tokenizer = build_tokenizer()
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    kwargs: dict[str, Any] = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}
    kwargs |= {"output_hidden_states": True, "return_dict_in_generate": True}
    reference = model.generate(**inputs, **kwargs)
    monitor = CoreVitalMonitor(device="cpu", capture=capture)  # type: ignore[arg-type]
    with monitor.watch(model, tokenizer) as watcher:
        out = model.generate(**inputs, **kwargs)
    assert torch.equal(out.sequences, reference.sequences)
    assert len(out.hidden_states) == len(reference.hidden_states) == NEW_TOKENS
    for got, want in zip(out.hidden_states, reference.hidden_states, strict=True):
        assert got is not None and len(got) == len(want) == model.config.num_hidden_layers + 1
        for state, expected in zip(got, want, strict=True):
            tolerance = 1e-6 if capture == "full" else 0.0
            torch.testing.assert_close(state, expected, rtol=tolerance, atol=tolerance)
    for report in watcher.reports:
        assert len(report.timeline) == NEW_TOKENS
        assert "HIDDEN_STATES_NOT_AVAILABLE" not in [w.code for w in report.warnings]
        if capture == "full":
            assert all(len(step.layers) == model.config.num_hidden_layers for step in report.timeline)
            assert all(layer.hidden_summary.l2_norm_mean for step in report.timeline for layer in step.layers)


def _norm_called_twice(
    layer: Any, forward: Any, hidden_states: torch.Tensor, *args: Any, **kwargs: Any
) -> Any:
    layer.input_layernorm(hidden_states)
    return forward(hidden_states, *args, **kwargs)


def _without_norms(sites: StreamSites) -> StreamSites:
    return dataclasses.replace(sites, entries=(), final=None)


@pytest.mark.parametrize("read_at", ["norms", "layers"])
def test_the_tap_leaves_the_model_as_found(read_at: str) -> None:
    """The wrappers are instance attributes for the time of the block; what the instance held before
    (accelerate's device hooks keep a ``forward`` there) is put back. Where the norms were verified,
    the layers' norms before attention and the final norm are wrapped, else the layers and the base
    model. A pass the observer did not begin keeps nothing."""
    model = build_family_model("llama", seed=0)
    verified = stream_sites(model)
    assert verified is not None and len(verified.entries) == len(verified.blocks) - 1
    final = verified.final
    assert final is model.model.norm
    sites = verified if read_at == "norms" else _without_norms(verified)
    wrapped = [*sites.entries, final] if read_at == "norms" else [*sites.blocks[:-1], sites.base]
    untouched = [*sites.blocks, sites.base] if read_at == "norms" else [*verified.entries, final]
    first = wrapped[0]
    own = lambda *args, **kwargs: type(first).forward(first, *args, **kwargs)  # noqa: E731
    first.__dict__["forward"] = own
    tap = LayerOutputTap(sites)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad(), tap.installed():
        assert all("forward" in vars(module) for module in wrapped)
        assert not any("forward" in vars(module) for module in untouched)
        model(ids)
        assert tap.take() is None, "a pass the observer did not begin"
        tap.begin_pass(4)
        reference = model(ids, output_hidden_states=True).hidden_states
        kept = tap.take()
    assert first.__dict__["forward"] is own
    assert not any("forward" in vars(module) for module in wrapped[1:])
    assert kept is not None and len(kept) == len(sites.blocks)
    for state, want in zip(kept, reference[1:], strict=True):
        assert state.shape == (1, 1, want.shape[-1])
        assert torch.equal(state, want[:, -1:])
        assert state.data_ptr() != want.data_ptr(), "a pass over several positions keeps a copy"
    assert tap.take() is None, "taken once: the next pass starts empty"


@pytest.mark.parametrize("read_at", ["norms", "layers"])
def test_a_decoding_steps_states_are_kept_as_the_modules_had_them(read_at: str) -> None:
    """At a pass over one position a wrapper keeps the very tensor (no copy, no check: the step's
    rows are checked once, when they are copied together)."""
    model = build_family_model("llama", seed=0)
    verified = stream_sites(model)
    assert verified is not None
    sites = verified if read_at == "norms" else _without_norms(verified)
    tap = LayerOutputTap(sites)
    with torch.no_grad(), tap.installed():
        tap.begin_pass(1)
        step = model(torch.tensor([[4]]), output_hidden_states=True)
        kept = tap.take()
    assert kept is not None
    for state, want in zip(kept, step.hidden_states[1:], strict=True):
        assert state is want or torch.equal(state, want)
        assert state.data_ptr() == want.data_ptr(), "the model's own tensor"


def test_the_norms_are_read_only_where_the_check_pass_saw_the_states_there() -> None:
    """The norms read at decoding steps are verified on the check pass: each called once with (the
    layers' norms before attention) or returning (the final norm) the state it stands for. A model
    without a norm before attention (OLMo-2 normalises after) reads its layers; so does one whose
    norm before attention sees something else than the layer's input, or is called twice a pass."""
    olmo = stream_sites(build_family_model("olmo2", seed=0))
    assert olmo is not None and olmo.entries == () and olmo.final is None
    for change in ("input", "calls"):
        model = build_family_model("llama", seed=0)
        layer = model.model.layers[1]
        if change == "input":  # the layer's input changed before its norm sees it
            handle = layer.register_forward_pre_hook(lambda module, args: (args[0] * 1.5, *args[1:]))
        else:  # the norm called twice a pass
            layer.forward = functools.partial(_norm_called_twice, layer, layer.forward)
        try:
            sites = model_checks(model).stream
        finally:
            if change == "input":
                handle.remove()
            else:
                del layer.forward
        assert sites is not None and sites.entries == () and sites.final is None, change


def test_a_hook_that_changes_a_layers_output_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forward hook of the user's runs after the module's ``forward`` (the wrapper) and may change
    the output the next layer reads (a steering vector, a patched activation, an injected fault):
    the observer then reads the states transformers returns, after every hook. transformers' own
    output-capturing hooks, which only record, leave the layers tapped."""
    model = build_family_model("llama", seed=0)
    tokenizer = build_tokenizer()
    sites = stream_sites(model)
    assert sites is not None and outputs_as_returned(sites)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), output_hidden_states=True)  # the user asked: transformers' hooks
    assert output_capture_hooks(model) > 0 and outputs_as_returned(sites)
    remove_output_capture_hooks(model)
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, output: None)
    try:
        assert not outputs_as_returned(sites), "a global forward hook may change any module's output"
    finally:
        handle.remove()
    assert outputs_as_returned(sites)

    layer = 0  # not the last: its state is taken after the final norm
    handle = sites.blocks[layer].register_forward_hook(lambda module, args, output: output * 3.0)
    try:
        assert not outputs_as_returned(sites)
        hooked = _captured(model, tokenizer, monkeypatch, tapped=True)
        reference = _captured(model, tokenizer, monkeypatch, tapped=False)
    finally:
        handle.remove()
    clean = _captured(model, tokenizer, monkeypatch, tapped=True)
    for got, want, before in zip(hooked, reference, clean, strict=True):
        assert got.hidden is not None and before.hidden is not None
        assert_stats_close(got.hidden, want.hidden, "hooked", rtol=0, atol=0)
        # the first step (the prompt's last position) is the same pass: the layer's output tripled
        np.testing.assert_allclose(
            np.asarray(got.hidden.l2_norm)[0, layer],
            3.0 * np.asarray(before.hidden.l2_norm)[0, layer],
            rtol=1e-4,
        )


def test_a_compiled_steps_list_takes_the_states_of_its_uncompiled_parts() -> None:
    """Once the observer has opened a compiled step's list, every layer writes into it, traced or
    not (a part of the step dynamo leaves to run uncompiled), and the step's end, traced or not,
    takes them from it."""
    model = build_family_model("llama", seed=0)
    sites = stream_sites(model)
    assert sites is not None
    tap = LayerOutputTap(sites)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad(), tap.installed():
        tap.begin_pass(3)
        reference = model(ids, output_hidden_states=True).hidden_states
        assert tap.take() is not None
        tap.open_compiled()
        model(ids)
        written = tap.take()  # the step's end, run uncompiled
        assert tap.compiled is None and tap.take() is None
    assert written is not None
    for state, want in zip(written, reference[1:], strict=True):
        assert torch.equal(state, want[:, -1:])


def test_a_steps_rows_are_checked_once_when_they_are_copied_together() -> None:
    """The rows a decoding step's wrappers kept unchecked are copied side by side in one kernel (the
    pre-MLP residuals after the states: ``joined``); a kind whose rows are not all [B, 1, d]
    tensors of one width is left out, the other kept; rows of another width than the states (not
    one residual stream) are copied on their own."""
    states = tuple(torch.randn(2, 1, 8) for _ in range(3))
    mids = tuple(torch.randn(2, 1, 8) for _ in range(3))
    packed, got_mids, joined = _packed(states, mids, False)
    assert packed is not None and got_mids is None and joined
    assert torch.equal(packed, torch.cat(states + mids, dim=1))
    wider = tuple(torch.randn(2, 1, 16) for _ in range(3))
    packed, got_mids, joined = _packed(states, wider, False)
    assert packed is not None and got_mids is not None and not joined
    assert torch.equal(packed, torch.cat(states, dim=1)) and torch.equal(got_mids, torch.cat(wider, dim=1))
    for bad in ((None, *states[1:]), (states[0][:, 0], *states[1:]), tuple(s[:, 0] for s in states)):
        packed, got_mids, joined = _packed(bad, mids, False)
        assert packed is None and got_mids is not None and not joined
        assert torch.equal(got_mids, torch.cat(mids, dim=1))
        packed, got_mids, joined = _packed(states, bad, False)
        assert packed is not None and got_mids is None and not joined
        assert torch.equal(packed, torch.cat(states, dim=1))
    prefill = tuple(torch.randn(2, 5, 8) for _ in range(3))  # transformers' states of a prefill
    packed, _, _ = _packed(prefill, None, True)
    assert packed is not None and torch.equal(packed, torch.cat([s[:, -1:] for s in prefill], dim=1))
    assert _packed(prefill, None, False)[0] is None, "every position is not a decoding step's row"


def test_norms_the_check_pass_called_with_one_argument_get_wrappers_that_take_one() -> None:
    """A wrapper taking one argument costs a call less than one packing ``*args, **kwargs``; the
    taps use it for the norms the check pass saw called with one positional argument and nothing
    else (Llama's, here), and keep the general wrapper for a norm called otherwise."""
    forms = CallForms((torch.nn.Identity(), torch.nn.Identity()))
    with forms.installed():
        forms.modules[0](torch.zeros(1))
    assert not forms.one_argument, "a module never called"
    with forms.installed():
        forms.modules[1](torch.zeros(1))
    assert forms.one_argument
    with forms.installed():
        forms.modules[1](input=torch.zeros(1))
    assert not forms.one_argument, "a call by keyword"
    model = build_family_model("llama", seed=0)
    checks = model_checks(model)
    assert checks.stream is not None and checks.stream.positional and checks.mlp_positional
    monitor = CoreVitalMonitor(device="cpu", capture="summary")
    tokenizer = build_tokenizer()
    seen: dict[str, list[int]] = {}
    norm = model.model.layers[1].input_layernorm
    mlp_norm = model.model.layers[0].post_attention_layernorm
    forward = model.forward

    def recording(*args: Any, **kwargs: Any) -> Any:
        for name, module in (("entry", norm), ("mlp", mlp_norm)):
            seen.setdefault(name, []).append(len(inspect.signature(vars(module)["forward"]).parameters))
        return forward(*args, **kwargs)

    model.forward = recording
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with monitor.watch(model, tokenizer) as watcher:
        model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    del model.forward
    assert seen == {"entry": [1] * NEW_TOKENS, "mlp": [1] * NEW_TOKENS}
    assert all(report.timeline for report in watcher.reports)
