"""What capture costs: host transfers per step, memory held between steps, no per-value syncs."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import corevital.capture.observer as observer_module
import corevital.capture.step_window as step_window_module
from corevital.capture.loading import LoadedModel
from corevital.capture.observer import StepObserver
from corevital.capture.options import Tuning
from corevital.capture.records import StepEvent
from corevital.capture.runner import capture_prompts
from tests.integration.conftest import tiny_settings
from tests.support.compare import assert_stats_close
from tests.support.values import present

SRC = Path(__file__).resolve().parents[2] / "src" / "corevital"
PER_STEP_SOURCES = [
    SRC / "metrics" / "logits.py",
    SRC / "metrics" / "hidden.py",
    SRC / "metrics" / "attention.py",
    SRC / "metrics" / "transfer.py",
    SRC / "capture" / "observer.py",
    SRC / "capture" / "attention_tap.py",
    SRC / "capture" / "layer_stream.py",
]


def test_no_per_value_host_sync_in_the_per_step_path() -> None:
    offenders = []
    for path in PER_STEP_SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if is_call and node.func.attr in ("item", "tolist", "numpy", "cpu"):  # type: ignore[attr-defined]
                offenders.append(f"{path.name}: {ast.unparse(node)}")
    # The single place where a step's concatenated buffer crosses to the host, and the host
    # buffer's numpy view (a host tensor: no transfer).
    assert sorted(offenders) == ["transfer.py: chunks.cpu()", "transfer.py: self.host.numpy()"]


_LAYER_OR_HEAD_NAMES = {"layer", "layers", "head", "heads", "l", "h"}


def test_no_python_loop_over_layers_or_heads_in_per_step_code() -> None:
    offenders = []
    for path in PER_STEP_SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.For | ast.comprehension):
                target = node.target
                names = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
                source = ast.unparse(node.iter)
                if names & _LAYER_OR_HEAD_NAMES or "num_layers" in source or "num_heads" in source:
                    offenders.append(f"{path.name}: for {ast.unparse(target)} in {source}")
    assert offenders == []


def _count_transfers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each host transfer the observer makes: "steps:N" (a flush of N steps), with "+prompt" when the
    prompt telemetry goes in the same copy, or "prompt" (it alone)."""
    calls: list[str] = []
    real = step_window_module.to_host  # type: ignore[attr-defined]  # the names the window calls
    real_later = step_window_module.to_host_later  # type: ignore[attr-defined]

    def counted(obj: Any) -> Any:
        label, along = "", obj  # the window's flush: ([(StepBatch, per-step attention), ...], along)
        if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], list):
            label, along = f"steps:{sum(batch.steps for batch, _ in obj[0])}", obj[1]
        if along is not None and along[0] is not None:  # (prompt telemetry, encoder summary)
            label = f"{label}+prompt" if label else "prompt"
        calls.append(label)
        return real(obj)

    def counted_later(reduced: Any) -> Any:  # a full window during generation: its batches alone
        calls.append(f"steps:{sum(batch.steps for batch, _ in reduced)}")
        return real_later(reduced)

    monkeypatch.setattr(step_window_module, "to_host", counted)
    monkeypatch.setattr(step_window_module, "to_host_later", counted_later)
    return calls


def test_one_host_transfer_per_step_with_a_live_callback(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_transfers(monkeypatch)
    steps: list[StepEvent] = []
    run = capture_prompts(
        tiny_loaded("llama"), ["The quick brown fox"], tiny_settings(max_new_tokens=12), callback=steps.append
    )
    assert run.sequences[0].num_steps == 12
    # One copy per step (a window of one), plus one after generation for the prompt telemetry.
    assert calls == ["steps:1"] * len(steps) + ["prompt"] and len(steps) >= 12


def test_transfers_are_batched_without_a_callback(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_transfers(monkeypatch)
    run = capture_prompts(tiny_loaded("llama"), ["The quick brown fox"], tiny_settings(max_new_tokens=40))
    assert run.sequences[0].num_steps == 40
    # Windows of 32 steps (the prefill's and 31 decoding steps), the remaining 8 at the end in one
    # copy with the prompt telemetry.
    assert calls == ["steps:32", "steps:8+prompt"]


def test_the_last_window_is_reduced_during_the_last_step(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reduction of the last steps is launched in the last step, before generate() returns (so
    on a GPU the host launches it while the device still runs that step), and still crosses to the
    host in the one copy after generation."""
    loaded = tiny_loaded("llama")
    calls = _count_transfers(monkeypatch)
    events: list[str] = []
    real_reduce = step_window_module.StepWindow.reduce
    real_finish = observer_module.StepObserver._finish_step

    def reduce(self: step_window_module.StepWindow) -> None:
        if self.waiting:
            events.append(f"reduce:{len(self.waiting)}")
        real_reduce(self)

    def finish(self: StepObserver, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        events.append("step")
        return real_finish(self, input_ids, scores, **kwargs)

    real_generate = loaded.model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        output = real_generate(*args, **kwargs)
        events.append("returned")
        return output

    monkeypatch.setattr(step_window_module.StepWindow, "reduce", reduce)
    monkeypatch.setattr(observer_module.StepObserver, "_finish_step", finish)
    monkeypatch.setattr(loaded.model, "generate", generate)
    run = capture_prompts(loaded, ["The quick brown fox"], tiny_settings(max_new_tokens=40))
    assert run.sequences[0].num_steps == 40
    assert events == ["step"] * 32 + ["reduce:32"] + ["step"] * 8 + ["reduce:8", "returned"]
    assert calls == ["steps:32", "steps:8+prompt"]


def test_progress_sees_each_window_a_step_after_it_fills_and_every_step_at_the_end(
    tiny_loaded: Callable[[str], LoadedModel],
) -> None:
    """The progress callback: once a step, reading the steps already on the host (a full window's
    copy, started in the step that fills it, is unpacked in the next), then once after generation
    with every step."""
    seen: list[tuple[int, int]] = []
    capture_prompts(
        tiny_loaded("llama"),
        ["The quick brown fox"],
        tiny_settings(max_new_tokens=40),
        progress=lambda _offset, _batch, done, host: seen.append((done, len(host))),
    )
    expected = [(step, 0) for step in range(1, 33)] + [(step, 32) for step in range(33, 41)] + [(40, 40)]
    assert seen == expected


def test_a_generation_longer_than_announced_loses_no_step(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An observer told of fewer steps than generate() makes (a ``max_new_tokens`` it could not see)
    prepares its end too early; the steps after it are reduced at the end, every value as without
    (floating-point values to rounding: steps reduced in other batches)."""
    loaded = tiny_loaded("llama")
    settings = tiny_settings(max_new_tokens=40)
    expected = capture_prompts(loaded, ["The quick brown fox"], settings).sequences[0]
    real_init = observer_module.StepObserver.__init__

    def init(self: StepObserver, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **{**kwargs, "max_new_tokens": 20})

    monkeypatch.setattr(observer_module.StepObserver, "__init__", init)
    calls = _count_transfers(monkeypatch)
    got = capture_prompts(loaded, ["The quick brown fox"], settings).sequences[0]
    # the first 20 steps reduced at step 20 wait on the device for the next copy: here the last one
    assert calls == ["steps:40+prompt"]
    assert got.generated_token_ids == expected.generated_token_ids
    for name in ("logits", "chosen", "hidden", "attention"):
        assert_stats_close(getattr(got, name), getattr(expected, name), name, rtol=1e-6, atol=1e-7)
    got_prompt, want_prompt = present(got.prompt_telemetry), present(expected.prompt_telemetry)
    np.testing.assert_array_equal(got_prompt.layer_transformations, want_prompt.layer_transformations)
    np.testing.assert_array_equal(present(got_prompt.surprisals), present(want_prompt.surprisals))


def _held_bytes_per_step(loaded: LoadedModel, tokens: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    held: list[int] = []
    real_finish = observer_module.StepObserver._finish_step

    def finish(self: StepObserver, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        result = real_finish(self, input_ids, scores, **kwargs)
        held.append(self.held_device_bytes())
        return result

    monkeypatch.setattr(observer_module.StepObserver, "_finish_step", finish)
    run = capture_prompts(loaded, ["Once upon a time"], tiny_settings(max_new_tokens=tokens))
    assert run.sequences[0].num_steps == tokens, "the tiny model must not stop early for this test"
    return held


def test_memory_held_between_steps_does_not_grow_with_length(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between steps capture holds only not-yet-transferred step summaries: a bounded amount."""
    loaded = tiny_loaded("llama")
    short = _held_bytes_per_step(loaded, 64, monkeypatch)
    long = _held_bytes_per_step(loaded, 400, monkeypatch)
    assert max(long) == max(short)
    # The held amount cycles with the transfer batch instead of growing.
    assert np.argmax(long) < 64


def test_the_prompt_pass_keeps_only_the_observed_rows(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompt telemetry scores every row of the prefill; of each layer only the last row may outlive
    it, besides the prompt weights waiting to be scored together (at most half the chunk budget)."""
    loaded = tiny_loaded("llama")
    caps = loaded.capabilities
    prompt = " ".join(["word"] * 60)
    first = capture_prompts(loaded, [prompt], tiny_settings(max_new_tokens=1))
    length = len(first.sequences[0].prompt.token_ids)
    layer_block = caps.num_attention_heads * length * length * 4  # one layer's [H, P, P] float32
    held: list[int] = []
    real_post = observer_module.StepObserver._post_forward

    def post(self: StepObserver, *args: Any, **kwargs: Any) -> None:
        held.append(present(self.tap).held_bytes())
        return real_post(self, *args, **kwargs)

    monkeypatch.setattr(observer_module.StepObserver, "_post_forward", post)
    tuning = Tuning(prompt_chunk_bytes=3 * layer_block)
    run = capture_prompts(loaded, [prompt], tiny_settings(max_new_tokens=2), tuning=tuning)
    assert length >= 60 and run.sequences[0].prompt_telemetry is not None
    last_rows = caps.num_layers * caps.num_attention_heads * length * 4  # [L, H, 1, P] float32
    # One layer's block waits (half of 3 blocks); [L, H, P, P] of every layer would be L blocks.
    assert caps.num_layers >= 2
    assert 0 < held[0] <= 2 * last_rows + layer_block
