"""The prefill's hidden states reduced layer by layer give the numbers of the kept states, with less held."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import corevital.capture.observer as observer_module
from corevital.capture.layer_stream import LayerStream
from corevital.capture.loading import LoadedModel
from corevital.capture.model_checks import stream_sites
from corevital.capture.observer import StepObserver
from corevital.capture.records import SequenceCapture
from corevital.capture.runner import capture_prompts
from tests.integration.conftest import tiny_settings
from tests.support.compare import assert_stats_close
from tests.support.tiny_models import ARCHITECTURES
from tests.support.values import present

PROMPTS = ["The quick brown fox jumps over the lazy dog", "a b c"]  # the second is left-padded
DECODER_ONLY = [arch for arch in ARCHITECTURES if arch not in ("t5", "bart")]


def _capture(
    loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch, *, stream: bool, **settings: Any
) -> list[SequenceCapture]:
    if not stream:
        monkeypatch.setattr(observer_module, "stream_sites", lambda model: None)
    run = capture_prompts(loaded, PROMPTS, tiny_settings(max_new_tokens=4, **settings))
    monkeypatch.undo()
    return run.sequences


@pytest.mark.parametrize("arch", DECODER_ONLY)
def test_every_decoder_only_architecture_streams(
    arch: str, tiny_loaded: Callable[[str], LoadedModel]
) -> None:
    loaded = tiny_loaded(arch)
    sites = stream_sites(loaded.model)
    assert sites is not None
    assert len(sites.blocks) == loaded.capabilities.num_layers


@pytest.mark.parametrize("arch", ["t5", "bart"])
def test_encoder_decoders_keep_the_returned_states(
    arch: str, tiny_loaded: Callable[[str], LoadedModel]
) -> None:
    assert stream_sites(tiny_loaded(arch).model) is None


@pytest.mark.parametrize("arch", DECODER_ONLY)
@pytest.mark.parametrize("capture", ["full", "summary"])
def test_streamed_prefill_equals_the_returned_states(
    arch: str, capture: str, tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = tiny_loaded(arch)
    streamed = _capture(loaded, monkeypatch, stream=True, capture=capture)
    kept = _capture(loaded, monkeypatch, stream=False, capture=capture)
    for got, want in zip(streamed, kept, strict=True):
        assert got.generated_token_ids == want.generated_token_ids
        assert_stats_close(got.hidden, want.hidden, "hidden")  # step 0 is the prefill's last position
        assert (got.prompt_telemetry is None) == (want.prompt_telemetry is None) == (capture == "summary")
        if got.prompt_telemetry is not None:
            want_telemetry = present(want.prompt_telemetry)
            np.testing.assert_allclose(
                got.prompt_telemetry.layer_transformations,
                want_telemetry.layer_transformations,
                rtol=1e-5,
                atol=1e-6,
            )
            np.testing.assert_allclose(
                present(got.prompt_telemetry.surprisals), present(want_telemetry.surprisals), rtol=1e-5
            )


def _alive_block_outputs_at_return(
    loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch, *, stream: bool
) -> int:
    """How many blocks' prefill outputs are still alive when the model's forward pass returns."""
    if not stream:
        monkeypatch.setattr(observer_module, "stream_sites", lambda model: None)
    sites = stream_sites(loaded.model)
    assert sites is not None
    outputs: list[weakref.ref[torch.Tensor]] = []
    alive: list[int] = []

    def remember(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        state = output[0] if isinstance(output, tuple) else output
        if state.shape[1] > 1:
            outputs.append(weakref.ref(state))

    real_post = observer_module.StepObserver._post_forward

    def post(self: StepObserver, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        real_post(self, args, kwargs, output)
        if outputs and not alive:
            del output
            alive.append(sum(ref() is not None for ref in outputs))

    monkeypatch.setattr(observer_module.StepObserver, "_post_forward", post)
    handles = [block.register_forward_hook(remember) for block in sites.blocks]
    try:
        capture_prompts(loaded, [" ".join(["word"] * 40)], tiny_settings(max_new_tokens=2))
    finally:
        for handle in handles:
            handle.remove()
        monkeypatch.undo()
    return alive[0]


def test_the_prefill_keeps_no_layer_output(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamed, no block's [B, P, d] output outlives the pass; returned, every one does until it ends."""
    loaded = tiny_loaded("llama")
    layers = loaded.capabilities.num_layers
    assert _alive_block_outputs_at_return(loaded, monkeypatch, stream=False) >= layers - 1
    assert _alive_block_outputs_at_return(loaded, monkeypatch, stream=True) == 0


def test_a_stream_hooks_nothing_after_the_generation(tiny_loaded: Callable[[str], LoadedModel]) -> None:
    loaded = tiny_loaded("llama")
    sites = stream_sites(loaded.model)
    assert sites is not None
    before = [len(block._forward_hooks) for block in sites.blocks]
    capture_prompts(loaded, PROMPTS, tiny_settings(max_new_tokens=2))
    assert [len(block._forward_hooks) for block in sites.blocks] == before


def test_a_failed_pass_gives_no_result(tiny_loaded: Callable[[str], LoadedModel]) -> None:
    """A base model that returns before every block ran (an early exit) gives nothing to trust."""
    loaded = tiny_loaded("llama")
    sites = stream_sites(loaded.model)
    assert sites is not None
    short = dataclasses.replace(sites, blocks=(*sites.blocks, torch.nn.Linear(1, 1)))
    stream = LayerStream(short)
    with stream.installed(), torch.no_grad():
        loaded.model(input_ids=torch.tensor([[1, 2, 3]]))
    assert stream.result() is None


@pytest.mark.parametrize("chunk_bytes", [2**30, 1])
def test_last_positions_are_copied_a_group_at_a_time(
    chunk_bytes: int, tiny_loaded: Callable[[str], LoadedModel]
) -> None:
    """Each layer's last position is the state's own, copied once for a group of layers: the whole
    pass within the budget, each layer alone with a budget of one byte (groups of two states, the
    least, one of them the previous group's)."""
    loaded = tiny_loaded("llama")
    sites = stream_sites(loaded.model)
    assert sites is not None
    stream = LayerStream(sites, chunk_bytes=chunk_bytes, keep_all=True)
    with stream.installed(), torch.no_grad():
        loaded.model(input_ids=torch.tensor([[5, 6, 7, 8, 9]]))
    found = stream.result()
    assert found is not None
    layers = loaded.capabilities.num_layers
    assert len(found.last_positions) == layers
    for last, state in zip(found.last_positions, stream.kept[1:], strict=True):
        torch.testing.assert_close(last, state[:, -1:], rtol=0, atol=0)
        assert last.untyped_storage().data_ptr() != state.untyped_storage().data_ptr()
    copies = {last.untyped_storage().data_ptr() for last in found.last_positions}
    assert len(copies) == (1 if chunk_bytes > 1 else layers)
