"""capture/hf_compat.py against the installed transformers: one test per touchpoint of its internals."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from transformers import AutoConfig, DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer, StaticLayer
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from corevital.capture import hf_compat
from corevital.capture.decode_mask import VisibleMasks, decode_step_mask
from corevital.capture.loading import loaded_from_existing
from corevital.errors import ModelLoadError
from tests.support.tiny_models import build_model, build_tokenizer

ROOT = Path(__file__).resolve().parents[2]
IDS = torch.tensor([[1, 5, 9, 14]])


def _attention_of_configs(model: torch.nn.Module) -> dict[int, str | None]:
    """The attention implementation each config of the model (sub-models' too) selects."""
    configs = [getattr(m, "config", None) for m in model.modules()]
    return {id(c): c._attn_implementation for c in configs if c is not None}


def _sdpa_counting(calls: list[str]) -> Any:
    def attention(module: Any, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        calls.append(type(module).__name__)
        return hf_compat.sdpa_attention_forward(module, *args, **kwargs)[0], None

    return attention


def _pinned_transformers(constraints: str) -> str:
    (pinned,) = [
        line.partition("==")[2]
        for line in (ROOT / constraints).read_text(encoding="utf-8").splitlines()
        if line.startswith("transformers==")
    ]
    return pinned


def test_the_pin_is_the_tested_range_and_the_installed_version_is_in_it() -> None:
    """pyproject's range is :data:`TESTED_TRANSFORMERS`; ``make test`` installs a version in it
    (constraints.txt) and ``make test-oldest`` its lower end (constraints-oldest.txt)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    capture = pyproject["project"]["optional-dependencies"]["capture"]
    assert f"transformers{hf_compat.TESTED_TRANSFORMERS}" in capture
    tested = SpecifierSet(hf_compat.TESTED_TRANSFORMERS)
    assert hf_compat.transformers_version() in tested
    assert _pinned_transformers("constraints.txt") in tested
    (lower,) = [spec.version for spec in tested if spec.operator == ">="]
    assert Version(_pinned_transformers("constraints-oldest.txt")) == Version(lower)


def test_the_torch_floor_is_the_capture_extras_and_the_installed_torch_is_above_it() -> None:
    """pyproject's ``capture`` extra asks for :data:`TESTED_TORCH` (the oldest torch tested), and the
    torch the suite runs with satisfies it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert f"torch{hf_compat.TESTED_TORCH}" in pyproject["project"]["optional-dependencies"]["capture"]
    assert Version(torch.__version__.split("+")[0]) in SpecifierSet(hf_compat.TESTED_TORCH)


def test_an_older_torch_fails_the_check_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    hf_compat.check_transformers.cache_clear()
    monkeypatch.setattr(torch, "__version__", "2.6.0+cu124")
    with pytest.raises(ModelLoadError) as caught:
        loaded_from_existing(build_model("llama"), build_tokenizer())
    message = str(caught.value)
    assert message == "torch 2.6.0+cu124 is older than CoreVital's capture supports (torch>=2.11)"
    hf_compat.check_transformers.cache_clear()


def test_check_passes_on_the_installed_transformers() -> None:
    hf_compat.check_transformers.cache_clear()
    hf_compat.check_transformers()
    assert hf_compat._missing == []


def test_check_fails_in_one_line_naming_the_version_and_the_missing_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hf_compat.check_transformers.cache_clear()
    monkeypatch.setattr(hf_compat, "_missing", ["transformers.masking_utils.eager_mask"])
    with pytest.raises(ModelLoadError) as caught:
        loaded_from_existing(build_model("llama"), build_tokenizer())
    message = str(caught.value)
    assert "\n" not in message
    assert f"transformers {hf_compat.transformers_version()} " in message
    assert "transformers.masking_utils.eager_mask" in message
    hf_compat.check_transformers.cache_clear()


def test_check_names_a_registry_of_another_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    hf_compat.check_transformers.cache_clear()
    monkeypatch.setattr(type(ALL_ATTENTION_FUNCTIONS), "_global_mapping", None)
    with pytest.raises(ModelLoadError, match=r"ALL_ATTENTION_FUNCTIONS\.register / \._global_mapping"):
        hf_compat.check_transformers()
    hf_compat.check_transformers.cache_clear()


def test_a_missing_function_raises_the_version_error_when_called() -> None:
    stand_in = hf_compat._found("transformers.masking_utils", "no_such_function")
    assert hf_compat._missing.pop() == "transformers.masking_utils.no_such_function"
    with pytest.raises(ModelLoadError, match="no_such_function"):
        stand_in()


def test_registered_attention_is_in_both_registries_inside_and_gone_after_even_on_error() -> None:
    def attention(*args: Any, **kwargs: Any) -> None:
        return None

    with hf_compat.registered_attention("corevital_test_tap", attention, hf_compat.eager_mask):
        assert ALL_ATTENTION_FUNCTIONS["corevital_test_tap"] is attention
        assert ALL_MASK_ATTENTION_FUNCTIONS["corevital_test_tap"] is hf_compat.eager_mask
    assert "corevital_test_tap" not in ALL_ATTENTION_FUNCTIONS
    assert "corevital_test_tap" not in ALL_MASK_ATTENTION_FUNCTIONS
    with pytest.raises(KeyError), hf_compat.registered_attention("corevital_test_tap", attention, attention):
        raise KeyError("generation failed")
    assert "corevital_test_tap" not in ALL_ATTENTION_FUNCTIONS


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_attention_implementation_routes_every_layer_and_restores_every_config(arch: str) -> None:
    model = build_model(arch, attn_implementation="sdpa")
    before = _attention_of_configs(model)
    calls: list[str] = []
    kwargs: dict[str, Any] = {"input_ids": IDS}
    if model.config.is_encoder_decoder:
        kwargs["decoder_input_ids"] = IDS[:, :2]
    name = "corevital_test_route"
    with (
        hf_compat.registered_attention(name, _sdpa_counting(calls), hf_compat.eager_mask),
        hf_compat.attention_implementation(model, name),
        torch.no_grad(),
    ):
        assert set(_attention_of_configs(model).values()) == {name}
        model(**kwargs)
    layers = model.config.num_layers if arch == "t5" else model.config.num_hidden_layers
    expected = 3 * layers if arch == "t5" else layers  # encoder, decoder self- and cross-attention
    assert len(calls) == expected
    assert _attention_of_configs(model) == before


def test_eager_attention_function_is_the_one_next_to_the_model_class() -> None:
    model = build_model("llama")
    attention = model.model.layers[0].self_attn
    found = hf_compat.eager_attention_function(attention)
    assert found is not None and found.__module__ == type(attention).__module__
    assert found.__name__ == "eager_attention_forward"
    assert hf_compat.eager_attention_function(torch.nn.Linear(2, 2)) is None


def test_sdpa_attention_forward_agrees_with_the_eager_function() -> None:
    model = build_model("llama")
    attention = model.model.layers[0].self_attn
    eager = hf_compat.eager_attention_function(attention)
    assert eager is not None
    generator = torch.Generator().manual_seed(0)
    heads = model.config.num_attention_heads
    query = torch.randn(2, heads, 5, attention.head_dim, generator=generator)
    key = torch.randn(2, model.config.num_key_value_heads, 5, attention.head_dim, generator=generator)
    value = torch.randn_like(key)
    mask = torch.zeros(2, 1, 5, 5).masked_fill_(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    ours = hf_compat.sdpa_attention_forward(attention, query, key, value, mask, scaling=attention.scaling)[0]
    reference, weights = eager(attention, query, key, value, mask, scaling=attention.scaling, dropout=0.0)
    assert ours.shape == reference.shape == (2, 5, heads, attention.head_dim)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert weights is not None and torch.allclose(weights.sum(-1), torch.ones(()))


def _masks_asked_for() -> list[dict[str, Any]]:
    """The keyword arguments of every mask a padded batch's generation asks the registered builder for."""
    model = build_model("llama")
    tokenizer = build_tokenizer()
    batch = tokenizer(["Hello there", "Why is the sky blue?"], return_tensors="pt", padding=True)
    asked: list[dict[str, Any]] = []

    def mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
        asked.append(kwargs)
        return hf_compat.eager_mask(*args, **kwargs)

    name = "corevital_test_mask"
    with (
        hf_compat.registered_attention(name, _sdpa_counting([]), mask),
        hf_compat.attention_implementation(model, name),
    ):
        model.generate(**batch, max_new_tokens=3, do_sample=False)
    return asked


def test_eager_mask_of_a_decoding_step_is_the_padding_mask_decode_mask_builds() -> None:
    asked = _masks_asked_for()
    steps = [kwargs for kwargs in asked if kwargs.get("q_length") == 1]
    assert len(steps) >= 2  # at least one for each of the two decoding steps
    for kwargs in steps:
        direct = decode_step_mask(VisibleMasks(), **kwargs)
        assert direct is not None
        torch.testing.assert_close(direct.expand(-1, 1, 1, -1), hf_compat.eager_mask(**kwargs))


def test_causal_mask_function_is_the_rule_a_decoding_step_asks_with() -> None:
    for kwargs in _masks_asked_for():
        assert kwargs.get("mask_function", hf_compat.causal_mask_function) is hf_compat.causal_mask_function


def test_last_logits_processor_sees_the_warped_scores_and_is_removed() -> None:
    model = build_model("llama")
    seen: list[torch.Tensor] = []

    def processor(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen.append(scores.clone())
        return scores

    with hf_compat.last_logits_processor(model, processor):
        assert "_get_logits_processor" in vars(model)
        model.generate(IDS, max_new_tokens=3, do_sample=True, top_k=1, temperature=0.7)
    assert "_get_logits_processor" not in vars(model)
    assert len(seen) == 3
    assert all(int(torch.isfinite(scores).sum()) == 1 for scores in seen)  # after the top-k warper


def test_append_only_layers_are_exactly_dynamic_layers() -> None:
    model = build_model("llama")
    with torch.no_grad():
        cache = model(IDS, use_cache=True).past_key_values
    assert isinstance(cache, DynamicCache)
    layers = hf_compat.append_only_layers(cache)
    assert layers is not None and len(layers) == model.config.num_hidden_layers
    assert all(type(layer) is DynamicLayer for layer in layers)

    class Window(DynamicLayer):  # type: ignore[no-untyped-call]  # HF's __init_subclass__
        pass

    class Cache:
        def __init__(self, layers: list[Any]) -> None:
            self.layers = layers

    assert hf_compat.append_only_layers(Cache([Window()])) is None  # type: ignore[no-untyped-call]
    assert hf_compat.append_only_layers(Cache([])) is None
    assert hf_compat.append_only_layers(object()) is None


def test_static_full_layers_are_exactly_static_layers() -> None:
    """A static cache of full-attention layers qualifies; one with a sliding-window layer does not."""
    from transformers import StaticCache

    full = StaticCache(config=build_model("llama").config, max_cache_len=16)
    layers = hf_compat.static_full_layers(full)
    assert layers is not None and all(type(layer) is StaticLayer for layer in layers)
    assert hf_compat.static_full_layers(DynamicCache()) is None
    assert hf_compat.static_full_layers(object()) is None
    windowed = AutoConfig.for_model("mistral", sliding_window=4, num_hidden_layers=2, hidden_size=32)
    windowed.num_attention_heads, windowed.num_key_value_heads, windowed.intermediate_size = 4, 2, 64
    assert hf_compat.static_full_layers(StaticCache(config=windowed, max_cache_len=16)) is None


def test_decoding_steps_compiled_follows_generates_rule() -> None:
    """generate() compiles the decoding steps over a fixed-shape cache on a GPU, not over a dynamic
    cache, not on the CPU, not with a quantizer it cannot compile or weights offloaded to the CPU or
    disk: the rule CoreVital's compiled reductions follow (Tuning.compiled_reductions None)."""
    from types import SimpleNamespace

    from transformers import EncoderDecoderCache, StaticCache

    model = build_model("llama")
    static = StaticCache(config=model.config, max_cache_len=16)
    assert static.is_compileable and not DynamicCache().is_compileable
    assert not hf_compat.decoding_steps_compiled(model, static)  # the CPU
    gpu = SimpleNamespace(device=torch.device("cuda"))
    assert hf_compat.decoding_steps_compiled(gpu, static)
    assert not hf_compat.decoding_steps_compiled(gpu, DynamicCache())
    assert not hf_compat.decoding_steps_compiled(gpu, None)
    assert hf_compat.decoding_steps_compiled(gpu, EncoderDecoderCache(static, DynamicCache()))
    for quantizer, compiles in (
        (SimpleNamespace(is_compileable=False), False),
        (SimpleNamespace(is_compileable=True), True),
    ):
        assert (
            hf_compat.decoding_steps_compiled(
                SimpleNamespace(device=gpu.device, hf_quantizer=quantizer), static
            )
            is compiles
        )
    for device_map, compiles in (
        ({"a": 0, "b": 0}, True),
        ({"a": 0, "b": "cpu"}, False),
        ({"a": 0, "b": "disk"}, False),
    ):
        split = SimpleNamespace(device=gpu.device, hf_device_map=device_map)
        assert hf_compat.decoding_steps_compiled(split, static) is compiles


def test_generate_takes_a_cache_under_the_keyword_named() -> None:
    """generate() uses the cache object passed under hf_compat's keyword (no deprecation warning from
    it), the one hf_compat.static_cache makes: its tensors hold the generation's keys afterwards."""
    import warnings

    model, tokenizer = build_model("llama"), build_tokenizer()
    inputs = tokenizer(["The quick brown fox"], return_tensors="pt")
    length = inputs["input_ids"].shape[1] + 4
    cache = hf_compat.static_cache(model, length)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        out = model.generate(
            **inputs, max_new_tokens=4, do_sample=False, **{hf_compat.generate_cache_keyword(): cache}
        )
    assert int(cache.get_seq_length()) == length - 1  # the last token's keys are never written
    assert cache.layers[0].max_cache_len == length
    plain = model.generate(**inputs, max_new_tokens=4, do_sample=False, cache_implementation="static")
    assert torch.equal(out, plain)


def test_generate_makes_caches_follows_the_model_class() -> None:
    """Decoders take generate()'s caches; a model class that declines them is told apart."""
    assert hf_compat.generate_makes_caches(build_model("llama"))

    class OwnCache:
        @classmethod
        def _supports_default_dynamic_cache(cls) -> bool:
            return False

    assert not hf_compat.generate_makes_caches(OwnCache())
    assert hf_compat.generate_makes_caches(object())


def test_release_numbers() -> None:
    assert hf_compat._release("5.24.0") == (5, 24, 0)
    assert hf_compat._release("5.24.0.dev0") == (5, 24, 0)
    assert hf_compat._release("(not installed)") == ()


def test_sdpa_mask_takes_the_eager_mask_arguments() -> None:
    """The compiled step's mask builder: transformers' boolean mask from the arguments eager_mask gets."""
    padding = torch.tensor([[0, 1, 1, 1]], dtype=torch.bool)
    kwargs: dict[str, Any] = {
        "batch_size": 1,
        "q_length": 1,
        "kv_length": 4,
        "q_offset": 3,
        "attention_mask": padding,
        "dtype": torch.float32,
        "allow_is_causal_skip": False,
    }
    boolean = hf_compat.sdpa_mask(**kwargs)
    additive = hf_compat.eager_mask(**kwargs)
    assert boolean is not None and additive is not None and boolean.dtype == torch.bool
    assert torch.equal(boolean, additive == 0)
    assert boolean[0, 0, 0].tolist() == [False, True, True, True]


def test_attention_registered_follows_the_registry() -> None:
    name = "corevital_test_registered"
    assert not hf_compat.attention_registered(name)
    with hf_compat.registered_attention(name, lambda *a, **k: None, lambda *a, **k: None):
        assert hf_compat.attention_registered(name)
    assert not hf_compat.attention_registered(name)


def test_config_revision(
    tiny_model_dir: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert hf_compat.config_revision(AutoConfig.from_pretrained(tiny_model_dir("llama"))) is None  # local
    config = PretrainedConfig()
    config._commit_hash = "abc123"
    assert hf_compat.config_revision(config) == "abc123"
    snapshot = tmp_path / "models--org--tiny" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "models--org--tiny" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    hub = PretrainedConfig()
    hub.name_or_path = "org/tiny"
    assert hf_compat.config_revision(hub) == "0123abcd"
    hub.name_or_path = "org/elsewhere"
    assert hf_compat.config_revision(hub) is None


def test_the_gguf_dequantisation_bar_follows_transformers_progress_switch() -> None:
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    bar, was_enabled = gguf_utils.tqdm, hf_logging.is_progress_bar_enabled()  # type: ignore[attr-defined]
    try:
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        with hf_compat.gguf_bar_follows_progress_switch():
            assert gguf_utils.tqdm([1, 2], desc="x").disable is True  # type: ignore[attr-defined]
        assert gguf_utils.tqdm is bar  # type: ignore[attr-defined]
        hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
        with hf_compat.gguf_bar_follows_progress_switch():
            assert gguf_utils.tqdm is bar  # type: ignore[attr-defined]  # enabled: transformers' bar as it is
    finally:
        (hf_logging.enable_progress_bar if was_enabled else hf_logging.disable_progress_bar)()  # type: ignore[no-untyped-call]
