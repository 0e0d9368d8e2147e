"""Prompt telemetry from the prefill pass (spec/metrics.md §5) on tiny models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from corevital.capture.loading import LoadedModel
from corevital.capture.records import PromptTelemetry
from corevital.capture.runner import capture_prompts
from corevital.metrics.prompt import PromptMask
from corevital.pipeline import Pipeline
from tests.integration.conftest import tiny_settings
from tests.support.compiled import count_calls
from tests.support.values import present

PROMPTS = ["The quick brown fox jumps over the lazy dog", "a b"]


def reference_surprisals(loaded: LoadedModel, token_ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        logits = loaded.model(torch.tensor([token_ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp[torch.arange(len(token_ids) - 1), torch.tensor(token_ids[1:])]
    surprisals: np.ndarray = (-picked / np.log(2.0)).numpy()
    return surprisals


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_prompt_surprisals_equal_a_teacher_forced_reference(
    arch: str, tiny_loaded: Callable[[str], LoadedModel]
) -> None:
    loaded = tiny_loaded(arch)
    run = capture_prompts(loaded, PROMPTS, tiny_settings(max_new_tokens=3))
    for seq in run.sequences:  # the second prompt is left-padded in the batch
        telemetry = seq.prompt_telemetry
        assert telemetry is not None and telemetry.surprisals is not None
        expected = reference_surprisals(loaded, seq.prompt.token_ids)
        np.testing.assert_allclose(telemetry.surprisals, expected, atol=1e-4, rtol=1e-4)
        assert telemetry.layer_transformations.shape == (loaded.capabilities.num_layers,)


def test_one_forward_pass_over_the_prompt(tiny_loaded: Callable[[str], LoadedModel]) -> None:
    loaded = tiny_loaded("llama")
    prompt_len = []
    handle = loaded.model.register_forward_pre_hook(
        lambda module, args, kwargs: prompt_len.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        run = capture_prompts(loaded, PROMPTS[:1], tiny_settings(max_new_tokens=4))
    finally:
        handle.remove()
    length = len(run.sequences[0].prompt.token_ids)
    assert run.sequences[0].prompt_telemetry is not None
    assert prompt_len.count(length) == 1 and prompt_len[0] == length
    assert all(n == 1 for n in prompt_len[1:])


def test_sparse_attention_is_bounded_and_reported(tiny_loaded: Callable[[str], LoadedModel]) -> None:
    loaded = tiny_loaded("llama")
    pipeline = Pipeline(tiny_settings(max_new_tokens=3, sparse_max_per_head=7, sparse_threshold=0.05))
    pipeline.use_model(loaded)
    report = pipeline.build(pipeline.capture(PROMPTS[:1]))[0]
    analysis = report.prompt_analysis
    caps = loaded.capabilities
    assert analysis is not None and len(analysis.layers) == caps.num_layers
    prompt_tokens = report.prompt.num_tokens
    for layer in analysis.layers:
        assert len(layer.heads) == caps.num_attention_heads
        assert len(present(layer.basin_scores)) == caps.num_attention_heads
        for head in layer.heads:
            assert len(head.weights) <= 7
            assert all(w is not None and w > 0.05 for w in head.weights)
            assert all(
                0 <= k <= q < prompt_tokens for q, k in zip(head.query_indices, head.key_indices, strict=True)
            )
    assert len(analysis.prompt_surprisals) == prompt_tokens - 1


def test_no_prompt_telemetry_really_skips_the_work(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    import corevital.capture.prompt_pass as prompt_pass_module
    import corevital.capture.prompt_scorer as scorer_module

    calls = []
    monkeypatch.setattr(scorer_module, "prompt_head_parts", lambda *a, **k: calls.append("attention"))
    monkeypatch.setattr(scorer_module, "recomputed_head_parts", lambda *a, **k: calls.append("attention"))
    monkeypatch.setattr(scorer_module, "logit_head_parts", lambda *a, **k: calls.append("attention"))
    monkeypatch.setattr(prompt_pass_module, "prompt_surprisals", lambda *a, **k: calls.append("surprisals"))
    run = capture_prompts(tiny_loaded("llama"), PROMPTS[:1], tiny_settings(prompt_telemetry=False))
    assert calls == [] and run.sequences[0].prompt_telemetry is None


def test_encoder_decoder_prompt_telemetry_comes_from_the_encoder(
    tiny_loaded: Callable[[str], LoadedModel],
) -> None:
    loaded = tiny_loaded("bart")
    seq = capture_prompts(loaded, PROMPTS[:1], tiny_settings(max_new_tokens=3)).sequences[0]
    telemetry = seq.prompt_telemetry
    assert telemetry is not None and telemetry.surprisals is None
    assert len(telemetry.heads) == loaded.capabilities.num_encoder_layers
    assert telemetry.layer_transformations.shape == (loaded.capabilities.num_encoder_layers,)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_prompt_pass_scored_a_few_heads_at_a_time_gives_the_same_telemetry(
    arch: str, tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long prompt's pass is scored by groups of key-value heads to bound memory: same numbers."""

    import corevital.capture.attention_tap as tap_module
    from corevital.capture.options import Tuning

    loaded = tiny_loaded(arch)
    prompts = ["The quick brown fox jumps over the lazy dog", "a b c d"]
    settings = tiny_settings(max_new_tokens=3)
    whole = capture_prompts(loaded, prompts, settings).sequences
    groups: list[int] = []
    real = tap_module.AttentionTap._prompt_pass_by_heads

    def by_heads(self: tap_module.AttentionTap, *args: Any, **kwargs: Any) -> None:
        groups.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(tap_module.AttentionTap, "_prompt_pass_by_heads", by_heads)
    made: list[int] = []
    real_of = PromptMask.of.__func__  # type: ignore[attr-defined]

    def of(cls: type[PromptMask], *args: Any) -> PromptMask:
        made.append(1)
        return real_of(cls, *args)  # type: ignore[no-any-return]

    monkeypatch.setattr(PromptMask, "of", classmethod(of))
    layers = loaded.capabilities.num_layers
    positions = max(len(seq.prompt.token_ids) for seq in whole)  # the padded prompt
    # chunk 1: one key-value head per group, the mask's helpers (5 B P^2 bytes) made per layer;
    # 8 B P^2: groups of two query heads' width at most, the helpers kept for every layer
    for chunk, helpers in ((1, layers), (8 * len(prompts) * positions**2, 1)):
        groups.clear()
        made.clear()
        split = capture_prompts(loaded, prompts, settings, tuning=Tuning(prompt_chunk_bytes=chunk)).sequences
        assert len(groups) == layers and len(made) == helpers
        for got, want in zip(split, whole, strict=True):
            assert got.generated_token_ids == want.generated_token_ids
            a, b = present(got.prompt_telemetry), present(want.prompt_telemetry)
            _assert_same_heads_and_basins(a, b)
            np.testing.assert_allclose(present(a.surprisals), present(b.surprisals), rtol=1e-6, atol=1e-6)
            for name in ("entropy_mean", "max_weight_per_head", "sink_mass_mean"):
                np.testing.assert_allclose(
                    getattr(got.attention, name), getattr(want.attention, name), rtol=1e-6
                )


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2", "t5", "bart"])
def test_layers_scored_together_give_the_telemetry_of_one_layer_at_a_time(
    arch: str, tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prompt weights of several layers are scored as one block of heads: the same numbers."""

    from corevital.capture.prompt_scorer import PromptScorer

    loaded = tiny_loaded(arch)
    prompts = ["The quick brown fox jumps over the lazy dog", "a b c d"]
    settings = tiny_settings(max_new_tokens=3)
    scored: list[int] = []
    real_score = PromptScorer._score

    def count(self: PromptScorer, layers: list[int], *args: Any, **kwargs: Any) -> None:
        scored.append(len(layers))
        return real_score(self, layers, *args, **kwargs)

    monkeypatch.setattr(PromptScorer, "_score", count)
    span = (1, 4)  # a RAG context span: its attention share is scored per head too
    together = capture_prompts(loaded, prompts, settings, context_span=span).sequences
    prompt_layers = loaded.capabilities.num_encoder_layers or loaded.capabilities.num_layers
    assert scored == [prompt_layers]  # a tiny model's layers fit one block
    scored.clear()
    real_add = PromptScorer.add

    def one_at_a_time(self: PromptScorer, *args: Any, **kwargs: Any) -> None:
        real_add(self, *args, **kwargs)
        self.finish()

    monkeypatch.setattr(PromptScorer, "add", one_at_a_time)
    alone = capture_prompts(loaded, prompts, settings, context_span=span).sequences
    assert scored == [1] * prompt_layers
    for got, want in zip(together, alone, strict=True):
        a, b = present(got.prompt_telemetry), present(want.prompt_telemetry)
        _assert_same_heads_and_basins(a, b)
        assert a.context_share is not None and b.context_share is not None
        np.testing.assert_allclose(a.context_share, b.context_share, rtol=1e-6, atol=1e-7, equal_nan=True)


def _assert_same_heads_and_basins(a: PromptTelemetry, b: PromptTelemetry) -> None:
    """Two prompt telemetries with the same sparse entries of every head and the same basin scores."""
    import dataclasses

    np.testing.assert_allclose(
        present(a.basin_scores), present(b.basin_scores), rtol=1e-6, atol=1e-7, equal_nan=True
    )
    for layer_a, layer_b in zip(a.heads, b.heads, strict=True):
        for head_a, head_b in zip(layer_a, layer_b, strict=True):
            assert dataclasses.asdict(head_a).keys() == dataclasses.asdict(head_b).keys()
            np.testing.assert_array_equal(head_a.query_indices, head_b.query_indices)
            np.testing.assert_array_equal(head_a.key_indices, head_b.key_indices)
            np.testing.assert_allclose(head_a.weights, head_b.weights, rtol=1e-6)


@pytest.mark.parametrize("chunk_bytes", [None, 1 << 20])
def test_weights_the_tap_owns_are_scored_in_place_with_the_same_numbers(chunk_bytes: int | None) -> None:
    """A layer's recomputed probabilities (``owned``) are the scoring's working buffer, not copied;
    the model's own weights (not owned) are left as they were; both give the same statistics (the
    basin scores within float32 rounding)."""
    import dataclasses

    from corevital.capture.prompt_scorer import PromptScorer

    torch.manual_seed(0)
    batch, heads, n = 2, 3, 9
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    mask = torch.where(causal, 0.0, torch.finfo(torch.float32).min).expand(batch, 1, n, n).clone()
    mask[1, :, :, :2] = torch.finfo(torch.float32).min  # the second sequence left-padded by two
    probs = torch.softmax(torch.randn(batch, heads, n, n) + mask, dim=-1)
    found = {}
    for owned in (False, True):
        scorer = PromptScorer(1, threshold=0.01, cap=50, chunk_bytes=chunk_bytes)
        weights = probs.clone()
        scorer.add(0, weights, mask, owned=owned)
        scorer.end_pass()
        assert torch.equal(weights, probs) is not owned  # owned: its buffer held the scoring's work
        stats = scorer.stats[0]
        assert stats is not None
        found[owned] = stats
    for field in dataclasses.fields(found[True]):
        got, want = getattr(found[True], field.name), getattr(found[False], field.name)
        # owned: a query's middle mass is not divided by its row's sum (1 within float32 rounding)
        tolerance = 1e-6 if field.name == "basin_scores" else 0.0
        torch.testing.assert_close(got, want, rtol=tolerance, atol=0, equal_nan=True)


@pytest.mark.parametrize("chunk_bytes", [None, 1 << 20])
def test_logits_and_their_probabilities_give_the_same_statistics(chunk_bytes: int | None) -> None:
    """A layer's logits (the tap's where the reductions run compiled, ``logits=True``) and their softmax
    (the model's eager weights) give the same statistics (the basin scores within float32 rounding);
    neither is written to."""
    import dataclasses

    from corevital.capture.prompt_scorer import PromptScorer

    torch.manual_seed(0)
    batch, heads, n = 2, 3, 24
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    mask = torch.where(causal, 0.0, torch.finfo(torch.float32).min).expand(batch, 1, n, n).clone()
    mask[1, :, :, :2] = torch.finfo(torch.float32).min  # the second sequence left-padded by two
    logits = torch.randn(batch, heads, n, n) + mask
    probs = torch.softmax(logits, dim=-1)
    found = {}
    for given, as_logits in ((logits, True), (probs, False)):
        scorer = PromptScorer(1, threshold=0.01, cap=5, chunk_bytes=chunk_bytes)
        scorer.compiled = True  # a prompt of 4 * cap tokens or more: the tap gives it as logits
        assert scorer.takes_logits(n)
        weights = given.clone()
        scorer.add(0, weights, mask, logits=as_logits)
        scorer.end_pass()
        assert torch.equal(weights, given)
        stats = scorer.stats[0]
        assert stats is not None
        found[as_logits] = stats
    for field in dataclasses.fields(found[True]):
        got, want = getattr(found[True], field.name), getattr(found[False], field.name)
        # logits: a query's middle mass is not divided by its row's sum (1 within float32 rounding)
        tolerance = 1e-5 if field.name == "basin_scores" else 0.0
        torch.testing.assert_close(got, want, rtol=tolerance, atol=0, equal_nan=True)
    assert int(found[True].count.sum()) > 0


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_compiled_prompt_reductions_give_the_telemetry_of_the_written_ones(
    arch: str, tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompt attention reduced by the compiled row reductions (``Tuning.compiled_reductions``, on by
    default where generate() compiles the decoding steps) gives the telemetry of the reductions as
    written: the same sparse entries and basin scores within float32 rounding; everything else the
    same. Prompts of at least four times the cap (where the compiled form applies), one left-padded;
    each layer scored whole and a few heads at a time."""
    import corevital.metrics.prompt as prompt_module
    from corevital.capture.options import Tuning

    fused = prompt_module.fused_prompt_row_parts

    loaded = tiny_loaded(arch)
    prompts = ["The quick brown fox jumps over the lazy dog and runs far away", "a b c d e f g h"]
    settings = tiny_settings(max_new_tokens=3, sparse_max_per_head=3)
    assert max(len(loaded.tokenizer(p)["input_ids"]) for p in prompts) >= 4 * 3  # the compiled form applies
    calls = count_calls(monkeypatch, fused)
    for chunk in (None, 1):  # each layer whole, and a few heads at a time
        calls.clear()
        runs = {
            compiled: capture_prompts(
                loaded,
                prompts,
                settings,
                tuning=Tuning(compiled_reductions=compiled, prompt_chunk_bytes=chunk),
            ).sequences
            for compiled in (True, False)
        }
        assert calls and fused.failure is None
        for got, want in zip(runs[True], runs[False], strict=True):
            assert got.generated_token_ids == want.generated_token_ids
            a, b = present(got.prompt_telemetry), present(want.prompt_telemetry)
            _assert_same_heads_and_basins(a, b)
            assert sum(len(head.weights) for layer in a.heads for head in layer) > 0
            np.testing.assert_array_equal(present(a.surprisals), present(b.surprisals))
            np.testing.assert_allclose(  # the window's reductions run compiled too
                present(got.attention).entropy_mean, present(want.attention).entropy_mean, rtol=1e-6
            )


def test_reductions_compile_by_default_where_generate_compiles_the_decoding_steps(
    tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Tuning.compiled_reductions`` None follows ``hf_compat.decoding_steps_compiled`` for the
    generation's cache (asked once, at its prompt pass); True or False overrides it."""
    import corevital.capture.observer as observer_module
    import corevital.metrics.prompt as prompt_module
    from corevital.capture.options import Tuning

    fused = prompt_module.fused_prompt_row_parts
    calls = count_calls(monkeypatch, fused)
    asked: list[object] = []
    loaded = tiny_loaded("llama")
    prompts = ["The quick brown fox jumps over the lazy dog and runs far away"]
    settings = tiny_settings(max_new_tokens=3, sparse_max_per_head=3)
    for rule in (False, True):

        def decoding_steps_compiled(model: Any, cache: Any, rule: bool = rule) -> bool:
            asked.append(cache)
            return rule

        monkeypatch.setattr(observer_module, "decoding_steps_compiled", decoding_steps_compiled)
        for tuning, compiled in ((Tuning(), rule), (Tuning(compiled_reductions=not rule), not rule)):
            calls.clear()
            asked.clear()
            capture_prompts(loaded, prompts, settings, tuning=tuning)
            assert bool(calls) is compiled
            assert len(asked) == (1 if tuning.compiled_reductions is None else 0)
