"""Model profiles: every family loads, validation is strict, every key is read by the analysis."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from pydantic import BaseModel

from corevital.analysis.calibration.builder import ProfileBuilder
from corevital.analysis.calibration.profile import CalibrationProfile, GenerationIdentity, ModelIdentity
from corevital.analysis.diagnose import diagnose
from corevital.analysis.online import OnlineSequenceMonitor
from corevital.analysis.profiles import FAMILIES, family_for, load_profile, profile_field_paths
from corevital.analysis.signals import SequenceSignals
from corevital.errors import ConfigError
from tests.support.signals import copy_of, looping, make_signals, summary_only
from tests.support.spies import calls_of

PROFILES = Path(__file__).resolve().parents[2] / "src" / "corevital" / "configs" / "model_profiles"


@pytest.mark.parametrize("family", (*FAMILIES, "default"))
def test_every_family_profile_loads(family: str) -> None:
    profile = load_profile(family)
    assert profile.family == family
    assert 0 < profile.collapse.trend_delta < 1


def test_every_shipped_yaml_is_a_known_family() -> None:
    assert sorted(p.stem for p in PROFILES.glob("*.yaml")) == sorted((*FAMILIES, "default"))


@pytest.mark.parametrize(
    ("model_type", "family"),
    [
        ("llama", "llama"),
        ("Mistral", "mistral"),
        ("phi", "phi3"),
        ("qwen3", "qwen2"),
        ("mt5", "t5"),
        ("gemma2", "default"),
        ("", "default"),
    ],
)
def test_family_is_chosen_from_the_model_type(model_type: str, family: str) -> None:
    assert family_for(model_type) == family


def test_overrides_nested_and_dotted() -> None:
    profile = load_profile("llama", {"repetition": {"min_span": 20}, "risk.mean_entropy.center": 3.25})
    assert profile.repetition.min_span == 20
    assert profile.risk.mean_entropy.center == 3.25
    assert profile.repetition.max_period == load_profile("llama").repetition.max_period


def test_files_are_parsed_once_and_overrides_never_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """The packaged files are parsed once per process (a monitor loads the profile for every report
    it builds); each load merges its overrides into a copy, so none reaches the next load."""
    import yaml

    from corevital.analysis import profiles

    plain = load_profile("llama")
    profiles._parsed_yaml.cache_clear()
    parsed = calls_of(monkeypatch, yaml, "safe_load")
    changed = load_profile("llama", {"repetition.min_span": 21, "risk.mean_entropy.center": 3.5})
    again = load_profile("llama")
    assert len(parsed) == 2  # default.yaml and llama.yaml, for both loads
    assert changed.repetition.min_span == 21 and changed.risk.mean_entropy.center == 3.5
    assert again == plain


@pytest.mark.parametrize(
    "overrides",
    [
        {"no_such_key": 1},
        {"repetition": {"min_spam": 12}},
        {"repetition.min_span": "twelve"},
        {"repetition.min_span": 12.5},
        {"collapse.trend_delta": 1.5},
        {"mid_layer.z_bound": 0},
        {"repetition": 3},
        {"high_entropy_threshold_bits": True},
        {"risk.mean_entropy": 2.0},
    ],
)
def test_invalid_overrides_are_config_errors(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile("llama", overrides)
    message = str(info.value)
    assert "\n" not in message
    assert f"'{next(iter(overrides))}" in message  # names the key (or the section it is under)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"repetition.min_span": "12"}, "'repetition.min_span': Input should be a valid integer, got '12'"),
        ({"collapse.trend_delta": 1.5}, "'collapse.trend_delta': Input should be less than or equal to 1"),
        ({"risk.intercept": float("inf")}, "'risk.intercept': Input should be a finite number"),
        ({"early_warning.window": 1}, "'early_warning.window': Input should be greater than or equal to 2"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_dotted_key(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_profile("llama", overrides)


def test_profiles_are_frozen_and_hashable() -> None:
    profile = load_profile("llama")
    with pytest.raises(ValueError, match="frozen"):
        profile.repetition.min_span = 3  # type: ignore[misc]
    assert hash(profile) == hash(load_profile("llama")) and profile == load_profile("llama")
    assert profile != load_profile("llama", {"repetition.min_span": 20})


def _recording(obj: BaseModel, seen: set[str], prefix: str = "") -> Any:
    """A copy of the frozen profile model ``obj`` (and of its parts) that notes each field read."""
    names = set(type(obj).model_fields)
    values = {}
    for name in names:
        value = getattr(obj, name)
        values[name] = _recording(value, seen, f"{prefix}{name}.") if isinstance(value, BaseModel) else value

    def get(self: Any, name: str) -> Any:
        if name in names:
            seen.add(prefix + name)
        return object.__getattribute__(self, name)

    recording = cast(type[BaseModel], type(type(obj).__name__, (type(obj),), {"__getattribute__": get}))
    return recording.model_construct(**values)


def _calibration(layers: int, steps: int) -> CalibrationProfile:
    builder = ProfileBuilder(
        ModelIdentity(
            model_id="test/model",
            architecture="LlamaForCausalLM",
            model_type="llama",
            num_layers=layers,
            num_heads=4,
        ),
        GenerationIdentity(do_sample=False, max_new_tokens=steps),
    )
    for seed in range(20):
        builder.add(make_signals(steps, layers, seed=seed))
    return builder.finish(created_at_utc="2026-11-27T00:00:00.000Z", corevital_version="test")


def _scenarios(steps: int = 48, layers: int = 12) -> dict[str, SequenceSignals]:
    """Runs that between them make every detector fire (each one asserted below, so none goes quiet)."""
    calm = make_signals(steps, layers)
    rise = np.linspace(0.0, 1.0, steps)
    mid_jump = copy_of(calm.hidden_l2)
    mid_jump[10:, layers // 2] *= 40
    late_jump = copy_of(calm.hidden_l2)
    late_jump[10:, layers - 3] *= 40
    silent_mlp = np.full((steps, layers), 0.2)
    silent_mlp[:, 4] = 0.0
    return {
        "calm": calm,
        "summary": summary_only(calm),
        "loop": looping(make_signals(60, layers), period=3, start=20),
        "nan": dataclasses.replace(calm, logits_nan=np.ones(steps, dtype=bool)),
        "degenerating": dataclasses.replace(
            calm,
            entropy=0.5 + 6 * rise,
            top_k_margin=0.9 - 0.85 * rise,
            surprisal=0.5 + 8 * rise,
            topk_mass=np.full(steps, 0.95),
        ),
        "mid-layer jump, collapsed attention": dataclasses.replace(
            calm, hidden_l2=mid_jump, attn_collapse_rate=np.ones((steps, layers))
        ),
        "late-layer jump": dataclasses.replace(calm, hidden_l2=late_jump),
        "silenced MLP": dataclasses.replace(calm, hidden_mlp_update_ratio=silent_mlp),
    }


def test_every_profile_key_is_read_by_the_analysis() -> None:
    """Diagnosing runs that make every detector fire, and monitoring one live, reads every profile key.

    A key that no detector consults (a dead threshold, or one read from the wrong part of the profile)
    is listed.
    """
    seen: set[str] = set()
    profile = _recording(load_profile("llama"), seen)
    scenarios = _scenarios()
    calibration = _calibration(layers=12, steps=48)
    outcomes = {}
    for name, sig in scenarios.items():
        outcomes[name] = diagnose(sig, profile, check_consistency=True)
        diagnose(sig, profile, basin_scores=np.full((12, 4), 0.1), context_share=0.5)
        diagnose(sig, profile, calibration=calibration)
    monitor = OnlineSequenceMonitor(profile)
    for t in range(40):
        monitor.update(token_id=t % 3, entropy=2.0, surprisal=1.0, margin=0.5, topk_mass=0.8)

    # The scenarios do what they are named for, so the reads above come from detectors that fired.
    assert outcomes["loop"].health_flags.repetition_loop_detected
    assert outcomes["nan"].health_flags.nan_detected
    assert "degenerating_generation" in {c.name for c in outcomes["degenerating"].compound_signals}
    broken = outcomes["mid-layer jump, collapsed attention"].health_flags
    assert broken.mid_layer_anomaly_detected and broken.attention_collapse_detected
    late = outcomes["late-layer jump"]
    assert not late.health_flags.mid_layer_anomaly_detected
    assert any("l2_norm_jump" in b.reasons for b in late.blamed_layers)
    assert "layer_update_anomaly" in outcomes["silenced MLP"].risk.risk_factors

    unread = sorted(set(profile_field_paths()) - seen)
    assert not unread, f"profile keys never read by the analysis: {unread}"


def test_default_yaml_documents_every_key() -> None:
    text = (PROFILES / "default.yaml").read_text(encoding="utf-8")
    for path in profile_field_paths():
        if path == "family":
            continue
        assert re.search(rf"\b{path.rsplit('.', 1)[-1]}\b", text), path
