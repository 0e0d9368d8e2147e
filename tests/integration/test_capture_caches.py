"""Capture under every key/value cache transformers offers on the CPU, and with every form of mask.

With ``cache_implementation="static"`` generate() preallocates the cache and hands the model 4-D
masks over the whole cache (a dict of them by layer type for models mixing full and sliding-window
layers: Qwen3, Gemma 2/3); Mistral with a window gets a windowed static cache. For each: the tokens
under CoreVital equal plain generate(), the logit metrics equal the dynamic cache's, the fast
attention path equals the eager one, and per-layer statistics and prompt telemetry are present,
through ``watch()`` and through ``run``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from corevital.capture.hf_compat import static_full_layers
from corevital.monitor import CoreVitalMonitor
from corevital.report.schema import Report
from tests.support.report_fields import ATTENTION_FIELDS, LOGIT_FIELDS
from tests.support.tiny_models import (
    FAMILY_WINDOW,
    TinyModel,
    build_family_model,
    build_tokenizer,
    save_family_model,
)

# The first prompt is longer than the sliding window, the second is padded (left).
PROMPTS = ["The quick brown fox jumps over the lazy dog", "Hi there"]
NEW_TOKENS = 5
CORE_FAMILIES = ("llama", "qwen3", "gemma3_text", "mistral")


# CV_TEST_DEVICE=cuda runs these checks on a GPU (where generate() compiles the static cache's
# decoding step): the models are moved there by :func:`on_test_device`.
TEST_DEVICE = os.environ.get("CV_TEST_DEVICE", "cpu")


def on_test_device(model: TinyModel) -> TinyModel:
    if TEST_DEVICE != "cpu":
        torch.nn.Module.to(model, torch.device(TEST_DEVICE))
    return model


def _inputs(tokenizer: Any) -> dict[str, torch.Tensor]:
    return {k: v.to(TEST_DEVICE) for k, v in tokenizer(PROMPTS, return_tensors="pt", padding=True).items()}


def _generate_kwargs(cache: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": NEW_TOKENS, "do_sample": False}
    if cache != "dynamic":
        kwargs["cache_implementation"] = cache
    return kwargs


def _watched(
    model: TinyModel, tokenizer: Any, cache: str, **settings: Any
) -> tuple[torch.Tensor, list[Report]]:
    monitor = CoreVitalMonitor(device=TEST_DEVICE, **settings)
    with monitor.watch(model, tokenizer) as watcher:
        out = model.generate(**_inputs(tokenizer), **_generate_kwargs(cache))
    return out, watcher.reports


def _logits(report: Report) -> np.ndarray:
    return np.array(
        [[getattr(s.logits_summary, name) for name in LOGIT_FIELDS] for s in report.timeline], dtype=float
    )


def _attention(report: Report) -> np.ndarray:
    """[steps, layers, fields] of the report's per-layer attention statistics."""
    return np.array(
        [
            [[getattr(layer.attention_summary, name) for name in ATTENTION_FIELDS] for layer in s.layers]
            for s in report.timeline
        ],
        dtype=float,
    )


def _check_complete(report: Report, layers: int) -> None:
    assert report.timeline, "no steps"
    for step in report.timeline:
        assert len(step.layers) == layers
        for layer in step.layers:
            assert layer.attention_summary.entropy_mean is not None
            assert layer.hidden_summary.l2_norm_mean is not None
    prompt = report.prompt_analysis
    assert prompt is not None
    assert len(prompt.layer_transformations) == layers
    assert len(prompt.prompt_surprisals) == report.prompt.num_tokens - 1
    assert len(prompt.layers) == layers


def _compiled_steps_lack_attention(model: TinyModel, cache: str) -> bool:
    """Whether generate() compiles this model's decoding steps over a static cache with sliding layers.

    Compiled steps keep their attention rows only over a static cache of full-attention layers
    (:func:`corevital.capture.hf_compat.static_full_layers`); generate() compiles on an accelerator.
    """
    return cache == "static" and TEST_DEVICE != "cpu" and _sliding_static_cache(model)


def _sliding_static_cache(model: TinyModel) -> bool:
    """Whether the static cache generate() makes for ``model`` has a layer that is not full attention."""
    from transformers import StaticCache

    config = model.config.get_text_config(decoder=True)
    return static_full_layers(StaticCache(config=config, max_cache_len=16)) is None


def _check_without_attention(report: Report, layers: int, *, prefill_attention: bool = False) -> None:
    """Logits, every layer's hidden state and prompt telemetry, and the warning that attention is missing.

    ``prefill_attention``: the first step (the uncompiled prefill) has every layer's attention,
    the compiled steps after it none.
    """
    assert [w.code for w in report.warnings] == ["ATTENTION_NOT_AVAILABLE"]
    for index, step in enumerate(report.timeline):
        assert [layer.hidden_summary.l2_norm_mean is not None for layer in step.layers] == [True] * layers
        assert step.logits_summary.entropy is not None
        observed = [layer.attention_summary.entropy_mean is not None for layer in step.layers]
        assert observed == [prefill_attention and index == 0] * layers
    assert report.prompt_analysis is not None and report.prompt_analysis.prompt_surprisals


def _close(a: np.ndarray, b: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4, equal_nan=True, err_msg=what)


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_watch_under_static_cache(family: str) -> None:
    model = on_test_device(build_family_model(family, seed=0))
    tokenizer = build_tokenizer()
    layers = model.config.num_hidden_layers
    plain = model.generate(**_inputs(tokenizer), **_generate_kwargs("static"))

    fast, fast_reports = _watched(model, tokenizer, "static", attention_path="fast")
    eager, eager_reports = _watched(model, tokenizer, "static", attention_path="eager")
    dynamic, dynamic_reports = _watched(model, tokenizer, "dynamic", attention_path="fast")
    assert torch.equal(fast, plain) and torch.equal(eager, plain) and torch.equal(dynamic, plain)
    assert len(fast_reports) == len(PROMPTS)
    if _compiled_steps_lack_attention(model, "static"):  # a GPU: compiled steps over sliding layers
        for f, d in zip(fast_reports, dynamic_reports, strict=True):
            # the prefill (uncompiled) has every layer's attention; a step has all or none (whether
            # generate() compiled it), and every step its logits and hidden states
            assert [w.code for w in f.warnings] == ["ATTENTION_NOT_AVAILABLE"]
            observed = [[x.attention_summary.entropy_mean is not None for x in s.layers] for s in f.timeline]
            assert observed[0] == [True] * layers and all(len(set(o)) == 1 for o in observed)
            assert all(x.hidden_summary.l2_norm_mean is not None for s in f.timeline for x in s.layers)
            _close(_logits(f), _logits(d), "logits: static vs dynamic cache")
        return
    for f, e, d in zip(fast_reports, eager_reports, dynamic_reports, strict=True):
        _check_complete(f, layers)
        _check_complete(e, layers)
        _close(_logits(f), _logits(d), "logits: static vs dynamic cache")
        _close(_attention(f), _attention(e), "attention: fast vs eager path (static cache)")
        _close(_attention(f), _attention(d), "attention: static vs dynamic cache")
        assert f.prompt_analysis is not None and d.prompt_analysis is not None
        _close(
            np.array(f.prompt_analysis.prompt_surprisals, dtype=float),
            np.array(d.prompt_analysis.prompt_surprisals, dtype=float),
            "prompt surprisals: static vs dynamic cache",
        )


@pytest.mark.parametrize("family", ["qwen3", "gemma3_text"])
def test_summary_capture_under_static_cache(family: str) -> None:
    """Summary capture (no attention tap: the model's own SDPA masks, a dict of them) works too."""
    model = on_test_device(build_family_model(family, seed=0))
    tokenizer = build_tokenizer()
    plain = model.generate(**_inputs(tokenizer), **_generate_kwargs("static"))
    out, reports = _watched(model, tokenizer, "static", capture="summary")
    _, dynamic = _watched(model, tokenizer, "dynamic", capture="summary")
    assert torch.equal(out, plain)
    for s, d in zip(reports, dynamic, strict=True):
        _close(_logits(s), _logits(d), "logits: static vs dynamic cache (summary)")
        assert not s.timeline[0].layers  # summary capture: no per-layer work
        assert (s.prompt_analysis is None) == (d.prompt_analysis is None)


@pytest.mark.parametrize("family", ["llama", "qwen3"])  # transformers: full-attention models only
def test_quantized_cache(family: str) -> None:
    """The fp8 quantized cache (keys rewritten from their quantized form every step): fast equals eager,
    and a layer's hidden state is missing from the report exactly where the model's own is NaN (on a
    GPU the tiny model's fp8 keys overflow in some layers; on the CPU none do)."""
    model = on_test_device(build_family_model(family, seed=0))
    tokenizer = build_tokenizer()
    quantized = {"cache_implementation": "quantized", "cache_config": {"backend": "fp8"}}
    kwargs: dict[str, Any] = {"max_new_tokens": NEW_TOKENS, "do_sample": False, **quantized}
    reference = model.generate(
        **_inputs(tokenizer), **kwargs, output_hidden_states=True, return_dict_in_generate=True
    )
    plain = reference.sequences
    results = []
    for path in ("fast", "eager"):
        monitor = CoreVitalMonitor(device="cpu", attention_path=path)
        with monitor.watch(model, tokenizer) as watcher:
            out = model.generate(**_inputs(tokenizer), **kwargs)
        assert torch.equal(out, plain)
        results.append(watcher.reports)
    for b, (f, e) in enumerate(zip(*results, strict=True)):
        nan = [[bool(torch.isnan(h[b, -1]).any()) for h in states[1:]] for states in reference.hidden_states]
        missing = [[layer.hidden_summary.l2_norm_mean is None for layer in s.layers] for s in f.timeline]
        assert missing == nan[: len(f.timeline)]
        if not any(map(any, nan)):
            _check_complete(f, model.config.num_hidden_layers)
        _close(_attention(f), _attention(e), "attention: fast vs eager (quantized cache)")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the offloaded cache needs a CUDA device")
def test_offloaded_cache() -> None:
    model = build_family_model("llama", seed=0)
    torch.nn.Module.to(model, torch.device("cuda"))
    tokenizer = build_tokenizer()
    inputs = {k: v.to("cuda") for k, v in _inputs(tokenizer).items()}
    plain = model.generate(**inputs, **_generate_kwargs("offloaded"))
    monitor = CoreVitalMonitor(device="cuda")
    with monitor.watch(model, tokenizer) as watcher:
        out = model.generate(**inputs, **_generate_kwargs("offloaded"))
    assert torch.equal(out, plain)
    _check_complete(watcher.reports[0], model.config.num_hidden_layers)


def test_windowed_layers_see_only_the_window() -> None:
    """Mistral with a window: the statistics describe the window's keys, not the whole cache's.

    The same weights without a window give other statistics; with it, static and dynamic caches
    (a windowed static cache, a sliding dynamic one) give the same.
    """
    tokenizer = build_tokenizer()
    assert len(tokenizer(PROMPTS[0])["input_ids"]) > FAMILY_WINDOW
    windowed = on_test_device(build_family_model("mistral", seed=0))
    unwindowed = on_test_device(build_family_model("mistral", seed=0, sliding_window=None))
    found = {}
    for name, model in (("windowed", windowed), ("unwindowed", unwindowed)):
        for cache in ("static", "dynamic"):
            found[name, cache] = _attention(_watched(model, tokenizer, cache)[1][0])
    _close(found["windowed", "static"], found["windowed", "dynamic"], "windowed: static vs dynamic")
    _close(found["unwindowed", "static"], found["unwindowed", "dynamic"], "unwindowed: static vs dynamic")
    assert not np.allclose(found["windowed", "static"], found["unwindowed", "static"], equal_nan=True)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        family: save_family_model(family, tmp_path_factory.mktemp(f"family-{family}"))
        for family in CORE_FAMILIES
    }


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_run_with_the_cache_setting(family: str, family_dirs: dict[str, Path]) -> None:
    """``run`` with cache=static: tokens as plain static generate(), numbers as the dynamic cache's."""
    directory = family_dirs[family]
    common: dict[str, Any] = {
        "model": str(directory),
        "device": "cpu",
        "temperature": 0.0,
        "max_new_tokens": NEW_TOKENS,
        "chat_template": "off",
    }
    static = CoreVitalMonitor(**common, cache="static").run(prompt=PROMPTS[0])
    eager = CoreVitalMonitor(**common, cache="static", attention_path="eager").run(prompt=PROMPTS[0])
    dynamic = CoreVitalMonitor(**common, cache="dynamic").run(prompt=PROMPTS[0])
    model = on_test_device(build_family_model(family, seed=0))
    tokenizer = build_tokenizer()
    inputs = tokenizer([PROMPTS[0]], return_tensors="pt")
    plain = model.generate(**inputs, **_generate_kwargs("static"))
    assert static.generated.token_ids == plain[0, inputs["input_ids"].shape[1] :].tolist()
    assert static.generated.token_ids == dynamic.generated.token_ids == eager.generated.token_ids
    layers = model.config.num_hidden_layers
    _check_complete(static, layers)
    _close(_logits(static), _logits(dynamic), "logits: static vs dynamic cache (run)")
    _close(_attention(static), _attention(eager), "attention: fast vs eager (run, static cache)")


def test_prompt_padding_from_every_mask_form() -> None:
    """2-D, 4-D over a longer cache (additive and boolean), per-layer-type dicts; a block mask is refused."""
    from corevital.capture.mask_forms import UnreadableMask, prompt_padding, readable_mask

    padding = torch.tensor([[False, False, True, True], [True, True, True, True]])
    cache_length = 9  # a static cache: keys beyond the prompt are empty slots
    keys = torch.arange(cache_length)
    causal = keys[None, :] <= torch.arange(4)[:, None]  # [P, K]
    visible = causal[None, None] & torch.nn.functional.pad(padding, (0, cache_length - 4))[:, None, None, :]
    additive = torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)
    window = visible & (torch.arange(4)[:, None] - keys[None, :] < 2)[None, None]
    for form in (
        padding.long(),
        visible,
        additive,
        {"full_attention": additive, "sliding_attention": window},
        {"sliding_attention": window},
    ):
        found = prompt_padding(form, 2, 4)
        assert found is not None and torch.equal(found, padding), form
    assert prompt_padding(None, 2, 4) is None

    class BlockMask:  # stands for torch's flex attention block mask: no per-position values
        shape = (2, 1, 4, 4)

    assert not readable_mask(BlockMask())
    with pytest.raises(UnreadableMask):
        prompt_padding(BlockMask(), 2, 4)


def test_run_keeps_one_static_cache(family_dirs: dict[str, Path]) -> None:
    """CoreVital's own generations under cache=static reuse one cache per model (reset in between):
    the same tensors every time, so a compiled step's CUDA graph keeps its static inputs; a longer
    generation or another batch size makes a new one. Every run reports what the dynamic cache does.
    """
    from corevital.config import load_settings
    from corevital.pipeline import Pipeline

    common: dict[str, Any] = {
        "model": str(family_dirs["llama"]),
        "device": TEST_DEVICE,
        "temperature": 0.0,
        "max_new_tokens": NEW_TOKENS,
        "chat_template": "off",
        "sink": "local",
    }
    static = Pipeline(load_settings({**common, "cache": "static"}, environ={}))
    dynamic = Pipeline(load_settings({**common, "cache": "dynamic"}, environ={}))
    kept = static.loaded.static_cache
    seen: list[tuple[int, int]] = []

    def captured(prompts: list[str], pipeline: Pipeline = static) -> list[Report]:
        reports = pipeline.build(pipeline.capture(prompts))
        if pipeline is static:
            keys = kept.cache.layers[0].keys
            seen.append((id(kept.cache), keys.data_ptr()))
        return reports

    first = captured([PROMPTS[0]])
    again = captured([PROMPTS[0]])
    assert kept.made == 1 and seen[0] == seen[1], "the second generation made a new cache"
    reference = captured([PROMPTS[0]], dynamic)
    for report in (first[0], again[0]):
        assert report.generated.token_ids == reference[0].generated.token_ids
        _close(_logits(report), _logits(reference[0]), "logits: kept static cache vs dynamic")
        _close(_attention(report), _attention(reference[0]), "attention: kept static cache vs dynamic")
    # a shorter prompt fits the kept cache; two prompts (another batch size) need a new one
    captured([PROMPTS[1]])
    assert kept.made == 1 and seen[2] == seen[0]
    pair = captured(PROMPTS)
    assert kept.made == 2 and kept.batch_size == 2
    pair_reference = captured(PROMPTS, dynamic)
    for report, ref in zip(pair, pair_reference, strict=True):
        assert report.generated.token_ids == ref.generated.token_ids
        _close(_logits(report), _logits(ref), "logits: kept static cache vs dynamic (batch of two)")
    # plain generate() with the model's own static cache, for the tokens
    model, tokenizer = on_test_device(build_family_model("llama", seed=0)), build_tokenizer()
    inputs = tokenizer([PROMPTS[0]], return_tensors="pt").to(TEST_DEVICE)
    plain = model.generate(**inputs, **_generate_kwargs("static"))
    assert first[0].generated.token_ids == plain[0, inputs["input_ids"].shape[1] :].tolist()
