"""corevital.testing: faults injected into tiny models are seen by capture, and leave no trace after."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from corevital.capture.loading import LoadedModel, ModelSpec, load_model
from corevital.capture.records import SequenceCapture
from corevital.capture.runner import capture_prompts
from corevital.config import load_settings
from corevital.testing import Fault, find_layer, inject_attention_collapse, inject_nan, inject_scale
from corevital.testing.collapse import _collapse_hooks
from tests.support.tiny_models import ARCHITECTURES, build_model, save_tiny_model

PROMPT = "The quick brown fox"
DEEP_ARCHS = ("llama", "gpt2", "t5")
DEPTH = 5
WHERE = {"early": 0, "middle": DEPTH // 2, "late": DEPTH - 1}
SETTINGS = load_settings(
    {"device": "cpu", "max_new_tokens": 6, "temperature": 0.0, "chat_template": "off"}, environ={}
)

_DEEP: dict[str, LoadedModel] = {}
_CLEAN: dict[int, SequenceCapture] = {}


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], LoadedModel]:
    """5-layer tiny models (the shared ones have 2 or 3 layers), so early/middle/late are distinct."""

    def get(arch: str) -> LoadedModel:
        if arch not in _DEEP:
            depth: dict[str, Any] = {"num_hidden_layers": DEPTH}
            if arch == "t5":  # T5 needs num_decoder_layers <= num_layers (the encoder's)
                depth = {"num_layers": DEPTH, "num_decoder_layers": DEPTH}
            directory = save_tiny_model(arch, Path(tmp_path_factory.mktemp(f"fault-{arch}")), **depth)
            _DEEP[arch] = load_model(ModelSpec(model=str(directory), device="cpu"))
            assert _DEEP[arch].capabilities.num_layers == DEPTH
        return _DEEP[arch]

    return get


def capture(loaded: LoadedModel) -> SequenceCapture:
    return capture_prompts(loaded, [PROMPT], SETTINGS).sequences[0]


def clean(loaded: LoadedModel) -> SequenceCapture:
    """The fault-free run of ``loaded`` (cached: the model is restored after every fault)."""
    if id(loaded) not in _CLEAN:
        _CLEAN[id(loaded)] = capture(loaded)
    return _CLEAN[id(loaded)]


def arr(value: Any) -> np.ndarray:
    return np.asarray(value)


def hidden(seq: SequenceCapture) -> Any:
    assert seq.hidden is not None
    return seq.hidden


def attention(seq: SequenceCapture) -> Any:
    assert seq.attention is not None
    return seq.attention


# --- NaN -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("arch", DEEP_ARCHS)
def test_nan_shows_at_the_faulted_layer_and_not_before(
    deep: Callable[[str], LoadedModel], arch: str, where: str
) -> None:
    loaded, k = deep(arch), WHERE[where]
    with inject_nan(loaded, k) as fault:
        seq = capture(loaded)
    has_nan = arr(hidden(seq).has_nan)
    assert has_nan[0, k]
    assert not has_nan[0, :k].any()
    np.testing.assert_array_equal(arr(hidden(seq).l2_norm)[0, :k], arr(hidden(clean(loaded)).l2_norm)[0, :k])
    assert arr(seq.logits.has_nan)[0]
    assert fault.fired == fault.steps >= 1 and fault.mechanism == "output"


def test_nan_at_the_last_position_only(deep: Callable[[str], LoadedModel]) -> None:
    loaded, k = deep("llama"), 2
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    with inject_nan(loaded.model, k, positions="last"), torch.no_grad():
        states = loaded.model(ids, output_hidden_states=True).hidden_states[k + 1]
    assert torch.isnan(states[:, -1]).all()
    assert torch.isfinite(states[:, :-1]).all()
    with inject_nan(loaded, k, positions="last"):
        seq = capture(loaded)
    assert arr(hidden(seq).has_nan)[0, k] and not arr(hidden(seq).has_nan)[0, :k].any()


# --- scale -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["early", "middle"])
@pytest.mark.parametrize("arch", DEEP_ARCHS)
def test_scale_multiplies_the_layer_norm(deep: Callable[[str], LoadedModel], arch: str, where: str) -> None:
    loaded, k = deep(arch), WHERE[where]
    with inject_scale(loaded, k, 1e4):
        seq = capture(loaded)
    l2, base = arr(hidden(seq).l2_norm), arr(hidden(clean(loaded)).l2_norm)
    np.testing.assert_allclose(l2[0, k], 1e4 * base[0, k], rtol=1e-3)
    np.testing.assert_array_equal(l2[0, :k], base[0, :k])
    assert not arr(hidden(seq).has_nan)[0].any()


@pytest.mark.parametrize("arch", DEEP_ARCHS)
def test_scale_in_the_last_layer_is_divided_out_by_the_final_norm(
    deep: Callable[[str], LoadedModel], arch: str
) -> None:
    """Documented caveat: the last layer's reported state is taken after the model's final norm."""
    loaded, k = deep(arch), DEPTH - 1
    with inject_scale(loaded, k, 1e4) as fault:
        seq = capture(loaded)
    assert fault.fired >= 1
    l2, base = arr(hidden(seq).l2_norm), arr(hidden(clean(loaded)).l2_norm)
    np.testing.assert_allclose(l2[0, k], base[0, k], rtol=1e-2)
    np.testing.assert_array_equal(l2[0, :k], base[0, :k])


# --- attention collapse ----------------------------------------------------------------------------


def _assert_collapsed(seq: SequenceCapture, base: SequenceCapture, k: int) -> None:
    rate = arr(attention(seq).collapsed_head_rate)
    defined = ~np.isnan(rate[:, k])
    assert defined.sum() >= 3  # T5/BART start from one key: their first steps are undefined
    np.testing.assert_array_equal(rate[defined, k], 1.0)
    assert (arr(attention(seq).concentration_min)[:, k] > 0.999).all()
    # Earlier layers are untouched; later ones (at the first step with enough keys) are not collapsed.
    first = int(np.argmax(defined))
    for name in ("concentration_max", "entropy_mean", "collapsed_head_rate"):
        np.testing.assert_array_equal(
            arr(getattr(attention(seq), name))[0, :k], arr(getattr(attention(base), name))[0, :k]
        )
    assert (rate[first, k + 1 :] < 1.0).all()
    assert (arr(attention(base).collapsed_head_rate)[first] == 0.0).all()  # the clean run is not collapsed


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("arch", DEEP_ARCHS)
def test_collapse_is_seen_at_the_faulted_layer(
    deep: Callable[[str], LoadedModel], arch: str, where: str
) -> None:
    loaded, k = deep(arch), WHERE[where]
    with inject_attention_collapse(loaded, k) as fault:
        seq = capture(loaded)
    _assert_collapsed(seq, clean(loaded), k)
    assert fault.mechanism == "mask" and fault.fired == fault.steps >= 1


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_collapse_works_for_every_supported_architecture(
    tiny_loaded: Callable[[str], LoadedModel], arch: str
) -> None:
    loaded = tiny_loaded(arch)
    k = loaded.capabilities.num_layers - 1
    with inject_attention_collapse(loaded, k) as fault:
        seq = capture(loaded)
    assert fault.mechanism == "mask"
    _assert_collapsed(seq, clean(loaded), k)


@pytest.mark.parametrize("arch", ["t5", "bart"])
def test_collapse_in_the_encoder(tiny_loaded: Callable[[str], LoadedModel], arch: str) -> None:
    loaded = tiny_loaded(arch)
    with inject_attention_collapse(loaded, 0, stack="encoder") as fault:
        seq = capture(loaded)
    assert fault.steps == fault.fired == 1 and fault.mechanism == "mask"
    assert seq.encoder_attention is not None
    np.testing.assert_array_equal(arr(seq.encoder_attention.collapsed_head_rate)[0], 1.0)
    assert (arr(seq.encoder_attention.collapsed_head_rate)[1:] == 0.0).all()
    assert not arr(hidden(seq).has_nan).any()  # the decoder ran on (one-hot mixed) encoder states


# --- from_step -------------------------------------------------------------------------------------

FAULTS: dict[str, Callable[..., AbstractContextManager[Fault]]] = {
    "nan": inject_nan,
    "scale": inject_scale,
    "collapse": inject_attention_collapse,
}


@pytest.mark.parametrize("kind", FAULTS)
def test_from_step_leaves_the_earlier_steps_clean(deep: Callable[[str], LoadedModel], kind: str) -> None:
    loaded, k = deep("llama"), WHERE["middle"]
    base = clean(loaded)
    with FAULTS[kind](loaded, k, from_step=3) as fault:
        seq = capture(loaded)
    assert fault.steps == 6 and fault.fired == 3
    assert seq.generated_token_ids[:3] == base.generated_token_ids[:3]
    for stats, ref in (
        (hidden(seq), hidden(base)),
        (attention(seq), attention(base)),
        (seq.logits, base.logits),
    ):
        for name in ("l2_norm", "has_nan", "entropy_mean", "collapsed_head_rate", "entropy", "topk_ids"):
            if hasattr(stats, name):
                np.testing.assert_array_equal(arr(getattr(stats, name))[:3], arr(getattr(ref, name))[:3])
    if kind == "nan":
        assert arr(hidden(seq).has_nan)[3, k] and not arr(hidden(seq).has_nan)[3, :k].any()
    elif kind == "scale":
        np.testing.assert_allclose(
            arr(hidden(seq).l2_norm)[3, k], 1e4 * arr(hidden(base).l2_norm)[3, k], rtol=1e-3
        )
    else:
        np.testing.assert_array_equal(arr(attention(seq).collapsed_head_rate)[3:, k], 1.0)


# --- restoring the model ---------------------------------------------------------------------------


def _hook_state(model: nn.Module) -> list[tuple[Any, ...]]:
    return [
        (
            name,
            tuple(m._forward_pre_hooks),
            tuple(m._forward_hooks),
            tuple(m._forward_hooks_with_kwargs),
            tuple(m._forward_hooks_always_called),
            tuple(m._forward_pre_hooks_with_kwargs),
            m.__dict__.get("scaling"),
            sorted(m.__dict__),
        )
        for name, m in model.named_modules()
    ]


def _forward(loaded: LoadedModel) -> torch.Tensor:
    ids = torch.tensor([[1, 50, 60, 70, 80, 90]])
    kwargs: dict[str, Any] = {"input_ids": ids}
    if loaded.capabilities.is_encoder_decoder:
        kwargs["decoder_input_ids"] = ids[:, :5]
    with torch.no_grad():
        logits: torch.Tensor = loaded.model(**kwargs).logits
    return logits


ENTER: dict[str, Callable[[LoadedModel], AbstractContextManager[Fault]]] = {
    "nan": lambda loaded: inject_nan(loaded, 1, positions="last"),
    "scale": lambda loaded: inject_scale(loaded.model, 1, 3.0),
    "collapse": lambda loaded: inject_attention_collapse(loaded, 1),
}


@pytest.mark.parametrize("kind", ENTER)
@pytest.mark.parametrize("arch", DEEP_ARCHS)
def test_the_model_is_exactly_restored(deep: Callable[[str], LoadedModel], arch: str, kind: str) -> None:
    loaded = deep(arch)
    hooks, before = _hook_state(loaded.model), _forward(loaded)
    with ENTER[kind](loaded):
        during = _forward(loaded)
    assert not torch.equal(during, before)
    assert _hook_state(loaded.model) == hooks
    assert torch.equal(_forward(loaded), before)

    with pytest.raises(KeyError), ENTER[kind](loaded):
        _forward(loaded)
        raise KeyError("the body fails")
    assert _hook_state(loaded.model) == hooks
    assert torch.equal(_forward(loaded), before)


def test_restored_when_the_forward_pass_itself_fails() -> None:
    """SDPA without a mask: the temperature fallback changes ``scaling`` during the call, and undoes it."""
    model = build_model("llama", attn_implementation="sdpa")
    ids = torch.tensor([[1, 50, 60, 70, 80, 90]])
    attn_module: Any = find_layer(model, 1).self_attn
    scaling = attn_module.scaling
    with torch.no_grad():
        before = model(ids).logits
        with inject_attention_collapse(model, 1) as fault:
            during = model(ids).logits
        assert fault.mechanism == "scaling" and not torch.equal(during, before)

        def boom(module: nn.Module, args: Any, output: Any) -> None:
            assert module.scaling == scaling * 1e4  # the fault is active inside the call
            raise OSError("the layer fails")

        with inject_attention_collapse(model, 1):
            handle = attn_module.o_proj.register_forward_hook(lambda m, a, o: boom(attn_module, a, o))
            try:
                with pytest.raises(OSError):
                    model(ids)
                assert attn_module.scaling == scaling  # restored right after the failed call
            finally:
                handle.remove()
        assert attn_module.scaling == scaling and "scaling" in attn_module.__dict__
        assert torch.equal(model(ids).logits, before)


def test_query_projection_fallback() -> None:
    """A module with neither a mask argument nor a ``scaling`` attribute: its queries are sharpened."""

    class ToyAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj = nn.Linear(8, 8)
            self.k_proj = nn.Linear(8, 8)

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            scores = self.q_proj(hidden_states) @ self.k_proj(hidden_states).transpose(-1, -2)
            return torch.softmax(scores / math.sqrt(8), dim=-1)

    torch.manual_seed(0)
    toy, x = ToyAttention(), torch.randn(1, 6, 8)
    before = toy(x)
    fault = Fault(kind="attention_collapse", layer=0, stack="decoder", from_step=1)
    undo = _collapse_hooks(toy, fault, counts_steps=True, bidirectional=False)
    try:
        assert torch.equal(toy(x), before)  # step 0 < from_step
        weights = toy(x)
    finally:
        for fn in undo:
            fn()
    assert fault.mechanism == "query" and fault.steps == 2 and fault.fired == 1
    assert (weights.amax(dim=-1) > 0.999).all()
    assert not toy._forward_pre_hooks and not toy.q_proj._forward_hooks
    assert torch.equal(toy(x), before)


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FAULTS)
def test_bad_arguments_raise_before_anything_is_installed(
    tiny_loaded: Callable[[str], LoadedModel], kind: str
) -> None:
    loaded = tiny_loaded("llama")
    layers = loaded.capabilities.num_layers
    hooks = _hook_state(loaded.model)
    for layer in (layers, -1, 99):
        with pytest.raises(ValueError, match="out of range"), FAULTS[kind](loaded, layer):
            pass
    with pytest.raises(ValueError, match="no encoder"), FAULTS[kind](loaded, 0, stack="encoder"):
        pass
    with pytest.raises(ValueError, match="from_step"), FAULTS[kind](loaded, 0, from_step=-1):
        pass
    with pytest.raises(TypeError), FAULTS[kind](object(), 0):
        pass
    assert _hook_state(loaded.model) == hooks


def test_encoder_layer_range_is_the_encoders(tiny_loaded: Callable[[str], LoadedModel]) -> None:
    loaded = tiny_loaded("bart")  # 3 encoder layers, 2 decoder layers
    assert find_layer(loaded, 2, stack="encoder") is loaded.model.get_encoder().layers[2]
    with pytest.raises(ValueError, match="decoder has 2 layers"):
        find_layer(loaded, 2)
    with pytest.raises(ValueError, match="positions"), inject_nan(loaded, 0, positions="first"):  # type: ignore[arg-type]
        pass
    with pytest.raises(ValueError, match="finite"), inject_scale(loaded, 0, math.inf):
        pass


# --- silenced sub-layers and sharpened queries: differential checks against edited weights --------


def _edited_copy(loaded: LoadedModel, edit: Callable[[nn.Module], None]) -> nn.Module:
    import copy

    model: nn.Module = copy.deepcopy(loaded.model)
    with torch.no_grad():
        edit(model)
    return model


def _states(model: nn.Module) -> tuple[torch.Tensor, ...]:
    ids = torch.tensor([[1, 50, 60, 70, 80, 90]])
    with torch.no_grad():
        out: tuple[torch.Tensor, ...] = model(ids, output_hidden_states=True).hidden_states
    return out


@pytest.mark.parametrize("which", ["attention", "mlp"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_zero_norm_equals_a_zeroed_norm_weight(
    deep: Callable[[str], LoadedModel], arch: str, which: str
) -> None:
    from corevital.testing import inject_zero_norm
    from corevital.testing.sites import find_norm

    loaded, k = deep(arch), WHERE["middle"]

    site: Any = which

    def zero_weight(model: nn.Module) -> None:
        norm: Any = find_norm(find_layer(model, k), site)[1]
        norm.weight.zero_()

    expected = _states(_edited_copy(loaded, zero_weight))
    with inject_zero_norm(loaded.model, k, site) as fault:
        got = _states(loaded.model)
    assert fault.kind == f"zero_norm_{which}" and fault.fired == 1
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    clean_states = _states(loaded.model)
    torch.testing.assert_close(got[k], clean_states[k])  # layers before k untouched
    assert not torch.allclose(got[k + 1], clean_states[k + 1])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_zero_norm_before_the_attention_makes_it_uniform(
    deep: Callable[[str], LoadedModel], arch: str
) -> None:
    """q = k = 0 (plus bias): every query attends uniformly; CoreVital's attention entropy shows it."""
    from corevital.testing import inject_zero_norm

    loaded, k = deep(arch), WHERE["middle"]
    with inject_zero_norm(loaded, k, "attention"):
        seq = capture(loaded)
    normalized = arr(attention(seq).entropy_mean_normalized)[:, k]
    if arch == "llama":  # no biases: q = k = 0, exactly uniform over the visible keys
        np.testing.assert_allclose(normalized[np.isfinite(normalized)], 1.0, atol=1e-4)
    base = arr(attention(clean(loaded)).entropy_mean_normalized)[:, k]
    assert np.nanmean(normalized) > np.nanmean(base)


def test_scale_of_the_query_projection_equals_scaled_weights(deep: Callable[[str], LoadedModel]) -> None:
    loaded, k = deep("llama"), WHERE["middle"]

    def scale_weight(model: nn.Module) -> None:
        block: Any = find_layer(model, k)
        proj = block.self_attn.q_proj
        proj.weight.mul_(100.0)
        if proj.bias is not None:
            proj.bias.mul_(100.0)

    expected = _states(_edited_copy(loaded, scale_weight))
    with inject_scale(loaded.model, k, 100.0, module="q_proj") as fault:
        got = _states(loaded.model)
    assert fault.mechanism == "q_proj" and fault.fired == 1
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_new_faults_restore_the_model_and_refuse_unknown_names(deep: Callable[[str], LoadedModel]) -> None:
    from corevital.testing import inject_zero_norm

    loaded = deep("llama")
    hooks, before = _hook_state(loaded.model), _forward(loaded)
    entries: tuple[Callable[[], AbstractContextManager[Fault]], ...] = (
        lambda: inject_zero_norm(loaded, 1, "mlp"),
        lambda: inject_zero_norm(loaded, 1, "attention", from_step=0, positions="last"),
        lambda: inject_scale(loaded, 1, 100.0, module="q_proj"),
    )
    for enter in entries:
        with pytest.raises(KeyError), enter():
            assert not torch.equal(_forward(loaded), before)
            raise KeyError("the body fails")
        assert _hook_state(loaded.model) == hooks
        assert torch.equal(_forward(loaded), before)
    with pytest.raises(ValueError, match="no sub-module"), inject_scale(loaded, 1, 2.0, module="no_such"):
        pass
    with pytest.raises(ValueError, match="which must be"), inject_zero_norm(loaded, 1, "ffn"):  # type: ignore[arg-type]
        pass
