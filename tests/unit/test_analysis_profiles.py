"""Model profiles: every family loads, validation is strict, every key is used by the analysis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from corevital.analysis.profiles import FAMILIES, family_for, load_profile, profile_field_paths
from corevital.errors import ConfigError

ANALYSIS = Path(__file__).resolve().parents[2] / "src" / "corevital" / "analysis"
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
    with pytest.raises(ConfigError):
        load_profile("llama", overrides)


def test_every_profile_key_is_used_by_the_analysis() -> None:
    sources = "\n".join(
        p.read_text(encoding="utf-8") for p in ANALYSIS.glob("*.py") if p.name != "profiles.py"
    )
    unused = []
    for path in profile_field_paths():
        name = path.rsplit(".", 1)[-1]
        # attribute access (profile.x / p.x) or a string used with getattr (risk terms)
        if not re.search(rf"\.{name}\b", sources) and not re.search(rf"\"{name}\"", sources):
            unused.append(path)
    assert not unused, f"profile keys never read by src/corevital/analysis: {unused}"


def test_default_yaml_documents_every_key() -> None:
    text = (PROFILES / "default.yaml").read_text(encoding="utf-8")
    for path in profile_field_paths():
        if path == "family":
            continue
        assert re.search(rf"\b{path.rsplit('.', 1)[-1]}\b", text), path
