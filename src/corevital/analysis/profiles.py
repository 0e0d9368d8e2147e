"""Per-model-family thresholds and scales for every detector (``configs/model_profiles/*.yaml``).

``default.yaml`` holds every key; a family file (``llama.yaml``, ``t5.yaml``, ...) overrides some of
them, and caller overrides (config, CLI) override those. The result is a typed, validated, frozen
:class:`ModelProfile` (pydantic models, like the calibration profile's): unknown keys, missing keys,
wrong types and out-of-range values raise a one-line :class:`corevital.errors.ConfigError` naming
the dotted key. Entropies are in bits, from raw logits (``metrics.md`` §1).

Overrides are nested mappings (``{"repetition": {"min_span": 16}}``) or dotted keys
(``{"repetition.min_span": 16}``).
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corevital.errors import ConfigError, validation_line

PROFILE_PACKAGE_DIR = "configs/model_profiles"

# model_type values that share a family profile.
_ALIASES = {
    "phi": "phi3",
    "phimoe": "phi3",
    "qwen2_moe": "qwen2",
    "qwen3": "qwen2",
    "qwen3_moe": "qwen2",
    "mt5": "t5",
    "umt5": "t5",
    "longt5": "t5",
    "mbart": "bart",
    "gpt_neox": "gpt2",
    "gpt_neo": "gpt2",
}
FAMILIES = ("gpt2", "llama", "mistral", "mixtral", "qwen2", "phi3", "t5", "bart")


class _Section(BaseModel):
    """A frozen profile section: unknown keys are errors, numbers are numbers (no "12", no true)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class RepetitionProfile(_Section):
    max_period: int = Field(ge=1, le=256)
    min_repeats: int = Field(ge=2)
    min_span: int = Field(ge=2)
    confirm_similarity: float = Field(ge=-1.0, le=1.0)
    max_word_period: int = Field(ge=1, le=256)
    min_word_span: int = Field(ge=2)
    word_tolerance: float = Field(ge=0.0, lt=0.5)
    tolerant_min_repeats: int = Field(ge=2)


class MidLayerProfile(_Section):
    z_bound: float = Field(gt=0.0)
    early_z_bound: float = Field(gt=0.0)
    scale_floor: float = Field(gt=0.0)
    transient_min_steps: int = Field(ge=1)
    calibrated_z_bound: float = Field(gt=0.0)


class CollapseProfile(_Section):
    early_window: int = Field(ge=1)
    smooth_window: int = Field(ge=1)
    trend_delta: float = Field(ge=0.0, le=1.0)
    layer_trend_delta: float = Field(ge=0.0, le=1.0)
    catastrophic_mean: float = Field(ge=0.0, le=1.0)


class RiskTerm(_Section):
    """One continuous risk feature: ``weight · clip((x − center) / scale, ±feature_cap)`` in logit units."""

    center: float
    scale: float = Field(gt=0.0)
    weight: float = Field(ge=0.0)


class RiskProfile(_Section):
    intercept: float
    feature_cap: float = Field(gt=0.0)
    factor_epsilon: float = Field(gt=0.0, le=0.5)
    repetition_floor: float = Field(ge=0.0, le=1.0)
    mean_entropy: RiskTerm
    entropy_peak: RiskTerm
    mean_surprisal: RiskTerm
    surprisal_peak: RiskTerm
    low_margin: RiskTerm
    entropy_trend: RiskTerm
    early_warning: RiskTerm
    repeat_share: RiskTerm = RiskTerm(center=0.1, scale=0.1, weight=0.0)
    compound_weight: float = Field(ge=0.0)
    collapse_weight: float = Field(ge=0.0)
    mid_layer_weight: float = Field(ge=0.0)
    layer_jump_weight: float = Field(ge=0.0)
    layer_update_weight: float = Field(default=4.0, ge=0.0)
    repetition_weight: float = Field(ge=0.0)
    nan_inf_weight: float = Field(ge=0.0)


class CompoundProfile(_Section):
    window: int = Field(ge=1)
    context_loss_entropy_bits: float = Field(ge=0.0)
    context_loss_basin_max: float = Field(ge=0.0)
    context_loss_rag_share_min: float = Field(ge=0.0, le=1.0)
    confusion_entropy_bits: float = Field(ge=0.0)
    confusion_margin_min: float = Field(ge=0.0, le=1.0)
    confusion_min_steps: int = Field(ge=1)
    degeneration_min_steps: int = Field(ge=4)
    degeneration_entropy_rise_bits: float = Field(gt=0.0)
    degeneration_margin_drop: float = Field(gt=0.0)
    degeneration_surprisal_rise_bits: float = Field(gt=0.0)
    bottleneck_collapse_rate: float = Field(ge=0.0, le=1.0)
    bottleneck_entropy_bits: float = Field(ge=0.0)
    bottleneck_min_steps: int = Field(ge=1)
    repetition_risk_entropy_bits: float = Field(ge=0.0)
    repetition_risk_mass: float = Field(ge=0.0, le=1.0)
    repetition_risk_ngram: int = Field(ge=1, le=16)
    repetition_risk_share: float = Field(ge=0.0, le=1.0)


class EarlyWarningProfile(_Section):
    window: int = Field(ge=2, le=64)
    softness: float = Field(gt=0.0)
    accel_rise_bits: float = Field(gt=0.0)
    accel_increase_bits: float = Field(ge=0.0)
    collapsed_margin: float = Field(ge=0.0, le=1.0)
    decline_ratio: float = Field(ge=0.0, le=1.0)
    decline_min_base: float = Field(ge=0.0, le=1.0)
    volatile_std_bits: float = Field(gt=0.0)
    divergence_entropy_bits: float = Field(ge=0.0)
    divergence_margin: float = Field(ge=0.0, le=1.0)
    weight_accelerating: float = Field(ge=0.0, le=1.0)
    weight_collapsed: float = Field(ge=0.0, le=1.0)
    weight_declining: float = Field(ge=0.0, le=1.0)
    weight_volatile: float = Field(ge=0.0, le=1.0)
    weight_divergence: float = Field(ge=0.0, le=1.0)


class ModelProfile(_Section):
    family: str
    high_entropy_threshold_bits: float = Field(ge=0.0)
    repetition: RepetitionProfile
    mid_layer: MidLayerProfile
    collapse: CollapseProfile
    risk: RiskProfile
    compound: CompoundProfile
    early_warning: EarlyWarningProfile


def family_for(model_type: str) -> str:
    """The profile family of a ``config.model_type`` (``default`` when none matches)."""
    key = (model_type or "").strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    return key if key in FAMILIES else "default"


def load_profile(model_type: str, overrides: dict[str, Any] | None = None) -> ModelProfile:
    """The validated profile for a model family: default.yaml ← family file ← ``overrides``."""
    family = family_for(model_type)
    data = _read_yaml("default")
    if family != "default":
        _merge(data, _read_yaml(family), origin=f"{family}.yaml")
    if overrides:
        _merge(data, _nest(overrides), origin="profile overrides")
    data["family"] = family
    try:
        return ModelProfile.model_validate(data)
    except ValidationError as exc:
        problem = validation_line(exc, where_default="profile", show_input=True, quote_where=True)
        raise ConfigError(f"model-profile key {problem}") from exc


def profile_field_paths(cls: type[BaseModel] = ModelProfile, prefix: str = "") -> list[str]:
    """Every key of the profile as a dotted path (``risk.mean_entropy.center``)."""
    paths: list[str] = []
    for name, info in cls.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            paths.extend(profile_field_paths(sub, f"{prefix}{name}."))
        else:
            paths.append(prefix + name)
    return paths


def _read_yaml(name: str) -> dict[str, Any]:
    """A packaged profile file's mapping, a copy the caller may change (the file is parsed once:
    ``load_profile`` runs for every report a monitor builds, and parsing takes milliseconds)."""
    return copy.deepcopy(_parsed_yaml(name))


@functools.cache
def _parsed_yaml(name: str) -> dict[str, Any]:
    path = resources.files("corevital").joinpath(f"{PROFILE_PACKAGE_DIR}/{name}.yaml")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"model profile {name}.yaml could not be read: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"model profile {name}.yaml must be a mapping")
    return loaded


def _nest(overrides: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"profile override {key!r} conflicts with another override")
        last = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            _merge(node[last], copy.deepcopy(value), origin="profile overrides")
        else:
            node[last] = copy.deepcopy(value)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any], *, origin: str, path: str = "") -> None:
    for key, value in extra.items():
        where = f"{path}{key}"
        if key not in base:
            raise ConfigError(f"unknown model-profile key {where!r} in {origin}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"model-profile key {where!r} in {origin} must be a mapping")
            _merge(base[key], value, origin=origin, path=where + ".")
        elif isinstance(value, dict):
            raise ConfigError(f"model-profile key {where!r} in {origin} must be a number, not a mapping")
        else:
            base[key] = value
