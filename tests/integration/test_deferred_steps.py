"""Decoding steps reduced together in windows give the numbers of steps reduced one by one."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import corevital.capture.attention_tap as tap_module
import corevital.capture.observer as observer_module
import corevital.capture.step_window as step_window_module
import corevital.capture.steps as steps_module
from corevital.capture.loading import LoadedModel, ModelSpec, load_model
from corevital.capture.observer import free_memory
from corevital.capture.options import (
    DEFERRED_BOUNDS,
    FLUSH_EVERY,
    FLUSH_EVERY_CUDA,
    FREE_CAP_DEFERRED,
    FREE_CAP_PROMPT,
    FREE_CAP_STACKED,
    STACKED_KEYS_BYTES,
    CaptureOptions,
    Tuning,
)
from corevital.capture.records import SequenceCapture
from corevital.capture.runner import capture_prompts
from corevital.capture.step_window import StepWindow
from corevital.capture.steps import RawStep
from corevital.config import Settings
from corevital.pipeline import Pipeline
from tests.integration.conftest import tiny_settings
from tests.support.compare import assert_stats_close
from tests.support.compiled import count_calls
from tests.support.tiny_models import ARCHITECTURES, save_tiny_model
from tests.support.values import present

PROMPTS = ["The quick brown fox jumps over", "a b c"]


def _capture(
    loaded: LoadedModel, settings: Settings, monkeypatch: pytest.MonkeyPatch, *, flush_every: int
) -> list[SequenceCapture]:
    return capture_prompts(loaded, PROMPTS, settings, tuning=Tuning(flush_every=flush_every)).sequences


def _count_deferred_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of steps in each batched reduction of deferred attention rows, as it happens."""
    counts: list[int] = []
    real = steps_module.reduce_decode_rows  # type: ignore[attr-defined]  # the name steps calls

    def counted(steps: Any, keys: Any, tuning: Any) -> Any:
        counts.append(len(steps))
        return real(steps, keys, tuning)

    monkeypatch.setattr(steps_module, "reduce_decode_rows", counted)
    return counts


def _assert_same(got: SequenceCapture, want: SequenceCapture) -> None:
    for name in ("logits", "chosen", "hidden", "attention", "cross_attention"):
        assert_stats_close(getattr(got, name), getattr(want, name), name)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_windows_equal_single_steps(
    arch: str, tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = tiny_loaded(arch)
    settings = tiny_settings(max_new_tokens=9)
    one_by_one = _capture(loaded, settings, monkeypatch, flush_every=1)
    batched: list[int] = []
    real_reduce = step_window_module.reduce_raw_steps  # type: ignore[attr-defined]  # the name the window calls

    def reduce(raw: Any, *args: Any, **kwargs: Any) -> Any:
        batched.append(len(raw))
        return real_reduce(raw, *args, **kwargs)

    monkeypatch.setattr(step_window_module, "reduce_raw_steps", reduce)
    deferred_rows = _count_deferred_rows(monkeypatch)
    windowed = _capture(loaded, settings, monkeypatch, flush_every=3)  # windows end mid-generation
    assert batched and max(batched) > 1
    # Decoder-only models (append-only cache) defer their attention rows too; encoder-decoders do not.
    assert (max(deferred_rows, default=0) > 1) == (not loaded.capabilities.is_encoder_decoder)
    for got, want in zip(windowed, one_by_one, strict=True):
        assert got.generated_token_ids == want.generated_token_ids
        _assert_same(got, want)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5"])
def test_steps_that_keep_their_own_rows_equal_steps_in_a_slab(
    arch: str, tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step whose rows do not go into its window's slab (rows that are not one residual stream, a
    model split over devices) keeps its logits and a copy of its rows on its own: the same
    statistics, whether every step of a window does so or every other one (a window of both kinds)."""
    loaded = tiny_loaded(arch)
    settings = tiny_settings(max_new_tokens=7)
    slabs: list[bool] = []
    real_keep = StepWindow.keep_rows

    def keep(self: StepWindow, *args: Any) -> Any:
        kept = real_keep(self, *args)
        slabs.append(kept is not None)
        return kept

    monkeypatch.setattr(StepWindow, "keep_rows", keep)
    in_slabs = _capture(loaded, settings, monkeypatch, flush_every=32)
    assert slabs and all(slabs)
    monkeypatch.setattr(StepWindow, "keep_rows", lambda self, *args: None)
    own = _capture(loaded, settings, monkeypatch, flush_every=32)
    calls = iter(range(1000))
    monkeypatch.setattr(
        StepWindow, "keep_rows", lambda self, *args: real_keep(self, *args) if next(calls) % 2 else None
    )
    mixed = _capture(loaded, settings, monkeypatch, flush_every=32)
    for got_own, got_mixed, want in zip(own, mixed, in_slabs, strict=True):
        assert got_own.generated_token_ids == got_mixed.generated_token_ids == want.generated_token_ids
        _assert_same(got_own, want)
        _assert_same(got_mixed, want)


@pytest.mark.parametrize("entropy_mode", ["full", "topk_approx"])
def test_windows_equal_single_steps_when_sampling(
    entropy_mode: str, tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sampled with a temperature and top-k: the distribution sampled from is batched too."""
    loaded = tiny_loaded("llama")
    settings = tiny_settings(max_new_tokens=7, temperature=0.7, top_k=20, seed=3, entropy_mode=entropy_mode)
    one_by_one = _capture(loaded, settings, monkeypatch, flush_every=1)
    windowed = _capture(loaded, settings, monkeypatch, flush_every=32)
    for got, want in zip(windowed, one_by_one, strict=True):
        assert got.generated_token_ids == want.generated_token_ids
        assert got.chosen.sampling_entropy is not None
        _assert_same(got, want)


def test_window_ends_at_the_bytes_budget(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window whose logits and hidden-state rows pass the budget is reduced early: memory stays bounded."""
    loaded = tiny_loaded("llama")
    settings = tiny_settings(max_new_tokens=6)
    flushed: list[int] = []
    real_flush = step_window_module.StepWindow.flush

    def flush(self: step_window_module.StepWindow, along: Any = None) -> Any:
        flushed.append(len(self.waiting))
        return real_flush(self, along)

    monkeypatch.setattr(step_window_module.StepWindow, "flush", flush)
    run = capture_prompts(loaded, PROMPTS[:1], settings, tuning=Tuning(deferred_bytes=1))
    assert run.sequences[0].num_steps == 6
    assert max(flushed) <= 2  # every step is over the budget: windows of one step


def test_a_window_scores_its_attention_rows_in_pieces_within_the_budget(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attention rows larger than the budget are scored a few steps at a time; the window stays whole.

    The window closes on its logits and hidden-state rows (or ``flush_every``); its attention rows
    are scored in pieces of consecutive steps within the budget, with the numbers of single steps.
    """
    loaded = tiny_loaded("llama")
    settings = tiny_settings(max_new_tokens=9)
    want = _capture(loaded, settings, monkeypatch, flush_every=1)
    real_reduce = step_window_module.reduce_raw_steps  # type: ignore[attr-defined]  # the name the window calls
    windows: list[int] = []
    budgets: list[int | None] = []

    def reduce(raw: Any, *args: Any, attention_budget: int | None = None, **kwargs: Any) -> Any:
        windows.append(len(raw))
        budgets.append(attention_budget)
        # two or three steps' rows of this tiny model (2 prompts, 2 layers, 4 heads, ~10 keys)
        return real_reduce(raw, *args, attention_budget=6000, **kwargs)

    monkeypatch.setattr(step_window_module, "reduce_raw_steps", reduce)
    pieces = _count_deferred_rows(monkeypatch)
    got = _capture(loaded, settings, monkeypatch, flush_every=32)
    assert windows == [1, 8]  # the prefill's step, then every decoding step in one window
    assert budgets == [DEFERRED_BOUNDS[0]] * 2  # the window passes its budget (a tiny model: the floor)
    assert len(pieces) >= 3 and sum(pieces) == 8 and max(pieces) <= 2
    for a, b in zip(got, want, strict=True):
        assert a.generated_token_ids == b.generated_token_ids
        _assert_same(a, b)


def test_rows_of_a_sliding_window_cache_are_scored_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache that drops old keys (sliding window) cannot serve later steps: no deferred rows there."""
    loaded = load_model(
        ModelSpec(model=str(save_tiny_model("mistral", tmp_path, seed=0, sliding_window=4)), device="cpu")
    )
    settings = tiny_settings(max_new_tokens=8)
    want = _capture(loaded, settings, monkeypatch, flush_every=1)
    deferred = _count_deferred_rows(monkeypatch)
    got = _capture(loaded, settings, monkeypatch, flush_every=8)
    assert deferred == []
    for a, b in zip(got, want, strict=True):
        assert a.generated_token_ids == b.generated_token_ids
        assert int(np.max(present(a.attention).num_keys)) <= 4  # the window was in force
        _assert_same(a, b)


def test_the_window_budget_follows_the_model_size() -> None:
    low, high = DEFERRED_BOUNDS
    tuning = Tuning()
    assert tuning.deferred_budget(10_000) == low  # a tiny model still gets a window
    assert tuning.deferred_budget(16 * 2**30) == high  # Llama-3-8B, bfloat16
    assert low < tuning.deferred_budget(2 * 2**30) < high


def test_the_budgets_grow_with_an_accelerators_free_memory() -> None:
    """Free accelerator memory raises the budgets (never below the model-sized ones, never past their
    caps); budgets set explicitly stay as set; the CPU reports no free memory."""
    model = 16 * 2**30  # Llama-3-8B, bfloat16
    tuning = Tuning()
    sized = tuning.resolved(model, None)
    assert (sized.deferred_bytes, sized.prompt_chunk_bytes, sized.stacked_keys_bytes) == (
        tuning.deferred_budget(model),
        tuning.prompt_chunk(model),
        STACKED_KEYS_BYTES,
    )
    roomy = tuning.resolved(model, 120 * 2**30)  # an H200 holding the model
    assert (roomy.deferred_bytes, roomy.prompt_chunk_bytes, roomy.stacked_keys_bytes) == (
        FREE_CAP_DEFERRED,
        FREE_CAP_PROMPT,
        FREE_CAP_STACKED,
    )
    middle = tuning.resolved(model, 24 * 2**30)
    assert sized.deferred_bytes is not None and roomy.deferred_bytes is not None
    assert sized.deferred_bytes < (middle.deferred_bytes or 0) < roomy.deferred_bytes
    full = tuning.resolved(model, 2**30)  # a card nearly full: the model-sized budgets
    assert full == replace(sized, flush_every=FLUSH_EVERY_CUDA)
    explicit = Tuning(flush_every=4, deferred_bytes=5, prompt_chunk_bytes=6, stacked_keys_bytes=7)
    assert explicit.resolved(model, 120 * 2**30) == explicit
    assert free_memory((torch.device("cpu"),)) is None
    assert free_memory(()) is None
    if torch.cuda.is_available():
        cuda = torch.device("cuda", torch.cuda.current_device())
        free = free_memory((cuda,))
        assert free is not None and 0 < free <= torch.cuda.mem_get_info(cuda)[1]
        assert free_memory((cuda, torch.device("cpu"))) is None  # split over the GPU and the CPU


def test_a_window_holds_more_steps_on_cuda_devices() -> None:
    """Where the device's free memory is known (CUDA) a window reduces up to 128 steps together, on
    the CPU 32: on a GPU each window's reduction costs the host its kernel launches, whatever its
    size, while its bytes stay bounded by the bytes budget; a count set explicitly is kept."""
    model = 16 * 2**30
    assert (FLUSH_EVERY, FLUSH_EVERY_CUDA) == (32, 128)
    assert Tuning().window_steps() == FLUSH_EVERY
    assert Tuning().resolved(model, None).flush_every == FLUSH_EVERY
    assert Tuning().resolved(model, 60 * 2**30).flush_every == FLUSH_EVERY_CUDA
    assert Tuning(flush_every=8).resolved(model, 60 * 2**30).window_steps() == 8


def test_budgets_from_free_memory_change_no_number(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generation sizes its budgets from the device's free memory once, at its start; larger
    budgets (one window, one piece of rows, the keys stacked) give the same report."""
    loaded = tiny_loaded("llama")
    settings = tiny_settings(max_new_tokens=9)
    small = Tuning(deferred_bytes=1, prompt_chunk_bytes=2**10, stack_keys_on_cpu=True, stacked_keys_bytes=0)
    want = capture_prompts(loaded, PROMPTS, settings, tuning=small).sequences
    budgets: list[int] = []
    real_window = step_window_module.StepWindow.__init__

    def window(self: Any, options: Any, sketch: Any, budget_bytes: int, shards: Any = None) -> None:
        budgets.append(budget_bytes)
        real_window(self, options, sketch, budget_bytes, shards)

    asked: list[tuple[torch.device, ...]] = []

    def roomy(devices: tuple[torch.device, ...]) -> int:
        asked.append(devices)
        return 120 * 2**30

    monkeypatch.setattr(step_window_module.StepWindow, "__init__", window)
    monkeypatch.setattr(observer_module, "free_memory", roomy)
    pieces = _count_deferred_rows(monkeypatch)
    got = capture_prompts(loaded, PROMPTS, settings, tuning=Tuning(stack_keys_on_cpu=True)).sequences
    assert budgets == [FREE_CAP_DEFERRED] and asked == [(torch.device("cpu"),)]  # sized once, its device
    assert pieces == [8]  # the 8 decoding steps after the prefill, scored in one piece
    for a, b in zip(got, want, strict=True):
        assert a.generated_token_ids == b.generated_token_ids
        _assert_same(a, b)


def test_a_forward_whose_layers_do_not_all_defer_is_scored_at_once(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some layers deferring their rows and some not (e.g. mixed attention types): all scored per step."""
    loaded = tiny_loaded("llama")
    settings = tiny_settings(max_new_tokens=6)
    want = _capture(loaded, settings, monkeypatch, flush_every=1)
    real_init = tap_module.AttentionTap.__init__

    def even_layers_only(self: tap_module.AttentionTap, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)  # the odd layers' rows take the per-step path
        self._self_layers = {module: layer for module, layer in self._self_layers.items() if layer % 2 == 0}

    monkeypatch.setattr(tap_module.AttentionTap, "__init__", even_layers_only)
    deferred = _count_deferred_rows(monkeypatch)
    got = _capture(loaded, settings, monkeypatch, flush_every=8)
    assert deferred == []
    for a, b in zip(got, want, strict=True):
        assert a.generated_token_ids == b.generated_token_ids
        _assert_same(a, b)


def test_deferred_steps_before_a_step_scored_at_once(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deferred rows are scored against a cache that has grown since (padded batch): same numbers."""
    loaded = tiny_loaded("llama")
    settings = tiny_settings(max_new_tokens=7)
    want = _capture(loaded, settings, monkeypatch, flush_every=1)
    real_may_defer = observer_module.StepObserver._may_defer_attention
    calls = {"passes": 0}

    def not_the_third_step(self: observer_module.StepObserver, cache: Any) -> bool:
        may = real_may_defer(self, cache)
        if may:
            calls["passes"] += 1
        return may and calls["passes"] != 3

    monkeypatch.setattr(observer_module.StepObserver, "_may_defer_attention", not_the_third_step)
    got = _capture(loaded, settings, monkeypatch, flush_every=32)
    for a, b in zip(got, want, strict=True):
        assert a.generated_token_ids == b.generated_token_ids
        _assert_same(a, b)


def test_a_pipeline_passes_its_callers_budgets_to_the_capture(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets: list[int] = []
    real_window = step_window_module.StepWindow.__init__

    def window(self: Any, options: Any, sketch: Any, budget_bytes: int, shards: Any = None) -> None:
        budgets.append(budget_bytes)
        real_window(self, options, sketch, budget_bytes, shards)

    monkeypatch.setattr(step_window_module.StepWindow, "__init__", window)
    pipeline = Pipeline(tiny_settings(max_new_tokens=3))
    pipeline.use_model(tiny_loaded("llama"))
    pipeline.capture(PROMPTS[:1], tuning=Tuning(deferred_bytes=12_345))
    pipeline.capture(PROMPTS[:1])
    assert budgets == [12_345, Tuning().deferred_budget(pipeline.loaded.constants.weight_bytes)]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_windows_reduced_compiled_equal_windows_reduced_as_written(
    arch: str, tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Tuning.compiled_reductions``: a window's attention rows reduced from their logits by the
    compiled row reductions, the float32 probabilities never made, give every statistic of the
    windows reduced as written (float32 rounding), a left-padded batch, windows ending mid-generation."""
    import corevital.metrics.attention as attention_module

    fused = attention_module.fused_attention_row_parts
    calls = count_calls(monkeypatch, fused)
    loaded = tiny_loaded(arch)
    settings = tiny_settings(max_new_tokens=9)
    runs = {
        compiled: capture_prompts(
            loaded, PROMPTS, settings, tuning=Tuning(flush_every=4, compiled_reductions=compiled)
        ).sequences
        for compiled in (True, False)
    }
    assert len(calls) == 3 and fused.failure is None  # the windows of steps 1-4, 5-8 and 9
    for got, want in zip(runs[True], runs[False], strict=True):
        assert got.generated_token_ids == want.generated_token_ids
        _assert_same(got, want)


def test_a_window_keeps_one_ids_tensor_and_reads_every_token_from_it() -> None:
    """Each step leaves generate()'s input_ids; a step whose ids the next step extends by one token
    lets go of its own, and the window reads every step's token from the ids it kept: one slice
    for consecutive steps, the last column of each where steps added several tokens (assisted
    decoding)."""
    options = CaptureOptions.from_settings(tiny_settings())
    ids = torch.tensor([[5, 6, 7, 8, 9, 4], [1, 2, 3, 4, 0, 3]])  # a prompt of 2, then 4 tokens

    def window_of(lengths: list[int]) -> list[RawStep]:
        window = StepWindow(options, None, 2**30)
        steps = [RawStep(torch.zeros(2, 4), None, None, None, ids=ids[:, :n]) for n in lengths]
        for step in steps:
            window.add(step)
        assert window.waiting == steps
        return steps

    consecutive = window_of([3, 4, 5, 6])
    assert [step.ids is not None for step in consecutive] == [False, False, False, True]
    assert steps_module._chosen_tokens(consecutive, torch.device("cpu")).tolist() == [7, 3, 8, 4, 9, 0, 4, 3]
    assisted = window_of([3, 5, 6])  # the second step added two tokens, the third one
    assert [step.ids is not None for step in assisted] == [True, False, True]
    assert steps_module._chosen_tokens(assisted, torch.device("cpu")).tolist() == [7, 3, 9, 0, 4, 3]


def test_a_windows_steps_hold_one_slab_and_their_query_rows(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step waiting for its window holds its logits row and its layers' states and pre-MLP
    residuals side by side in its slot of the window's slab ([B, 1, V + 2L·d], one allocation for
    the window, made in its first step) and its query rows in a copy of their own: neither the
    forward's logits nor any of the model's per-layer tensors stays allocated. The slots hold the
    model's own values: the windows' statistics equal single steps'
    (:func:`test_windows_equal_single_steps`)."""
    loaded = tiny_loaded("llama")
    config = loaded.model.config
    layers, width, vocab = config.num_hidden_layers, config.hidden_size, config.vocab_size
    heads, dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    waiting: list[RawStep] = []
    held: list[int] = []
    real_add = StepWindow.add

    def add(self: StepWindow, step: RawStep) -> bool:
        waiting.append(step)
        full = real_add(self, step)
        held.append(self.held_bytes())
        return full

    monkeypatch.setattr(StepWindow, "add", add)
    _capture(loaded, tiny_settings(max_new_tokens=6), monkeypatch, flush_every=32)
    assert len(waiting) == 6
    batch = len(PROMPTS)
    slab = present(waiting[0].slab)  # the prefill's step too: one slab, six slots (six steps left)
    assert slab.buffer.shape == (6, batch, 1, vocab + 2 * layers * width)
    assert slab.buffer.untyped_storage().nbytes() == slab.buffer.numel() * slab.buffer.element_size()
    assert [step.slab is slab for step in waiting] == [True] * 6
    assert [step.slot for step in waiting] == list(range(6))
    decoding = waiting[1:]  # the prefill scores its rows at once; five decoding steps defer theirs
    slab_bytes = slab.buffer.numel() * slab.buffer.element_size()
    for index, step in enumerate(decoding):
        assert step.joined and step.logits_row is None and step.states is None and step.mlp_inputs is None
        queries = present(present(step.decode_rows).queries)
        assert queries.shape == (batch, layers, heads, dim)
        assert queries.untyped_storage().nbytes() == queries.numel() * queries.element_size()
        assert step.held_bytes() == queries.untyped_storage().nbytes()  # the slab is the window's
        query_bytes = sum(
            present(s.decode_rows).queries.untyped_storage().nbytes() for s in decoding[: index + 1]
        )
        # the slab counted once, its free slots too; the prefill's attention reduced already
        prefill = step_window_module.held_bytes(waiting[0])
        assert held[index + 1] == slab_bytes + prefill + query_bytes


def test_a_slab_is_made_for_the_steps_a_window_can_still_take() -> None:
    """A window's slab has a slot for every step it can still take: its step cap, its bytes budget
    and the steps the generation has left bound it. A slot holds the logits row, then the rows, then
    the further rows (the pre-MLP residuals); a step whose rows are not [B, 1, d] tensors of the
    logits' dtype is not copied into one (None: it keeps its own), one with another number of rows
    starts a slab of its own."""
    options = CaptureOptions.from_settings(tiny_settings())
    generator = torch.Generator().manual_seed(0)

    def step_rows(rows: int = 4, width: int = 3) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        logits = torch.randn(2, 1, 5, generator=generator)
        return logits, tuple(torch.randn(2, 1, width, generator=generator) for _ in range(rows))

    def keep(
        window: StepWindow, logits: torch.Tensor, rows: tuple[torch.Tensor, ...], left: int | None = None
    ) -> tuple[steps_module.StepSlab, int] | None:
        return window.keep_rows(logits, rows[:2], rows[2:], lambda: left)

    step_bytes = 4 * 2 * (5 + 4 * 3)
    window = StepWindow(replace(options, tuning=replace(options.tuning, flush_every=8)), None, 3 * step_bytes)
    logits, rows = step_rows()
    slab, slot = present(keep(window, logits, rows))
    assert (slab.capacity, slot, slab.rows, slab.width) == (3, 0, 4, 3)  # the bytes budget: three steps
    assert torch.equal(slab.buffer[0, :, 0, :5], logits[:, 0])
    assert torch.equal(slab.buffer[0, :, 0, 5:].view(2, 4, 3), torch.cat(rows, dim=1))
    second, slot = present(keep(window, *step_rows()))
    assert second is slab and slot == 1
    block_logits, block_rows = slab.block(0, 2)
    assert torch.equal(block_logits[0], logits[:, 0]) and torch.equal(block_rows[0], torch.cat(rows, dim=1))
    other, slot = present(keep(window, *step_rows(rows=2)))  # fewer rows: a slab of its own
    assert other is not slab and slot == 0 and other.rows == 2
    assert present(keep(StepWindow(options, None, 100 * step_bytes), logits, rows, left=2))[0].capacity == 2
    narrower = (*rows[:3], rows[3][:, :, :2])
    assert keep(StepWindow(options, None, step_bytes), logits, narrower) is None
    assert keep(StepWindow(options, None, step_bytes), logits, tuple(r.double() for r in rows)) is None


def test_a_step_whose_rows_no_longer_fit_its_slot_leaves_the_slab_untouched() -> None:
    """The slab checks every row when it is made and, for the steps after, the number of rows before
    the copy and the slot's width after it: a step whose rows changed width (wider or narrower) or
    whose copy fails (a row on another device) gets None and a slab of its own for the steps after
    it; the steps already in the slab keep their rows."""
    options = CaptureOptions.from_settings(tiny_settings())
    generator = torch.Generator().manual_seed(1)

    def step_rows(width: int = 3) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        logits = torch.randn(2, 1, 5, generator=generator)
        return logits, tuple(torch.randn(2, 1, width, generator=generator) for _ in range(4))

    cases = [
        (step_rows(width=4), "ignore"),  # wider: torch.cat resizes the slot, writing past it
        (step_rows(width=4), "error"),  # the same where warnings are errors
        (step_rows(width=2), "ignore"),  # narrower
        ((step_rows()[0], (*step_rows()[1][:3], torch.zeros(2, 1, 3, device="meta"))), "error"),
    ]
    # the odd step in a middle slot (free slots after it) and in the slab's last (torch.cat grows the
    # slab's storage instead)
    for (odd, warned), capacity in itertools.product(cases, (6, 3)):
        window = StepWindow(replace(options, tuning=replace(options.tuning, flush_every=8)), None, 10**6)
        kept = [step_rows(), step_rows()]
        slab = present(window.keep_rows(kept[0][0], kept[0][1], None, partial(int, capacity)))[0]
        assert slab.capacity == capacity
        assert present(window.keep_rows(kept[1][0], kept[1][1], None, lambda: 5))[0] is slab
        before = slab.buffer.clone()
        with warnings.catch_warnings():
            warnings.simplefilter(warned)  # type: ignore[arg-type]
            assert window.keep_rows(odd[0], odd[1], None, lambda: 4) is None
        assert slab.slots[0].shape == slab.slots[1].shape == (2, 1, 5 + 4 * 3)
        block_logits, block_rows = slab.block(0, 2)
        for step, (logits, rows) in enumerate(kept):
            assert torch.equal(block_logits[step], logits[:, 0])
            assert torch.equal(block_rows[step], torch.cat(rows, dim=1))
        assert torch.equal(slab.buffer[:2], before[:2])
        following = step_rows()
        other, slot = present(window.keep_rows(following[0], following[1], None, lambda: 3))
        assert other is not slab and slot == 0 and other.capacity == 3
        assert torch.equal(other.block(0, 1)[1][0], torch.cat(following[1], dim=1))


def test_a_batch_that_mixes_kinds_of_steps_names_what_a_step_lacks() -> None:
    """Steps reduced in one batch have the same parts (:meth:`RawStep.kind`); a batch where a later
    step lacks what the first has is an internal error that names the part, not a shape error later."""
    options = CaptureOptions.from_settings(tiny_settings())
    ids = torch.tensor([[3, 1, 2]])  # a prompt of 1, then 2 tokens of a 4-token vocabulary
    with_states = RawStep(torch.zeros(1, 4), torch.ones(1, 2, 3), None, None, ids=ids[:, :2])
    without = RawStep(torch.zeros(1, 4), None, None, None, ids=ids)
    assert with_states.kind() != without.kind()
    with pytest.raises(RuntimeError, match="with and without per-layer hidden states"):
        steps_module.reduce_raw_steps([with_states, without], options, sketch=None)
