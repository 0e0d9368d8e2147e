"""Per-model-family thresholds and scales for every detector (``configs/model_profiles/*.yaml``).

``default.yaml`` holds every key; a family file (``llama.yaml``, ``t5.yaml``, ...) overrides some of
them, and caller overrides (config, CLI) override those. The result is a typed, validated, frozen
:class:`ModelProfile`: unknown keys, missing keys, wrong types and out-of-range values raise
:class:`corevital.errors.ConfigError`. Entropies are in bits, from raw logits (``metrics.md`` §1).

Overrides are nested mappings (``{"repetition": {"min_span": 16}}``) or dotted keys
(``{"repetition.min_span": 16}``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from corevital.errors import ConfigError

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


def _rng(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False) -> dict[str, Any]:
    return {"lo": lo, "hi": hi, "open_lo": open_lo}


_POS = _rng(0.0, None, open_lo=True)
_UNIT = _rng(0.0, 1.0)
_NONNEG = _rng(0.0)


@dataclass(frozen=True)
class RepetitionProfile:
    max_period: int = field(metadata=_rng(1, 256))
    min_repeats: int = field(metadata=_rng(2))
    min_span: int = field(metadata=_rng(2))
    confirm_similarity: float = field(metadata=_rng(-1.0, 1.0))


@dataclass(frozen=True)
class MidLayerProfile:
    z_bound: float = field(metadata=_POS)
    early_z_bound: float = field(metadata=_POS)
    scale_floor: float = field(metadata=_POS)
    transient_min_steps: int = field(metadata=_rng(1))
    calibrated_z_bound: float = field(metadata=_POS)


@dataclass(frozen=True)
class CollapseProfile:
    early_window: int = field(metadata=_rng(1))
    smooth_window: int = field(metadata=_rng(1))
    trend_delta: float = field(metadata=_UNIT)
    layer_trend_delta: float = field(metadata=_UNIT)
    catastrophic_mean: float = field(metadata=_UNIT)


@dataclass(frozen=True)
class RiskTerm:
    """One continuous risk feature: ``weight · clip((x − center) / scale, ±feature_cap)`` in logit units."""

    center: float
    scale: float = field(metadata=_POS)
    weight: float = field(metadata=_NONNEG)


@dataclass(frozen=True)
class RiskProfile:
    intercept: float
    feature_cap: float = field(metadata=_POS)
    factor_epsilon: float = field(metadata=_rng(0.0, 0.5, open_lo=True))
    repetition_floor: float = field(metadata=_UNIT)
    mean_entropy: RiskTerm
    entropy_peak: RiskTerm
    mean_surprisal: RiskTerm
    surprisal_peak: RiskTerm
    low_margin: RiskTerm
    entropy_trend: RiskTerm
    early_warning: RiskTerm
    compound_weight: float = field(metadata=_NONNEG)
    collapse_weight: float = field(metadata=_NONNEG)
    mid_layer_weight: float = field(metadata=_NONNEG)
    layer_jump_weight: float = field(metadata=_NONNEG)
    repetition_weight: float = field(metadata=_NONNEG)
    nan_inf_weight: float = field(metadata=_NONNEG)


@dataclass(frozen=True)
class CompoundProfile:
    window: int = field(metadata=_rng(1))
    context_loss_entropy_bits: float = field(metadata=_NONNEG)
    context_loss_basin_max: float = field(metadata=_NONNEG)
    context_loss_rag_share_min: float = field(metadata=_UNIT)
    confusion_entropy_bits: float = field(metadata=_NONNEG)
    confusion_margin_min: float = field(metadata=_UNIT)
    confusion_min_steps: int = field(metadata=_rng(1))
    degeneration_min_steps: int = field(metadata=_rng(4))
    degeneration_entropy_rise_bits: float = field(metadata=_POS)
    degeneration_margin_drop: float = field(metadata=_POS)
    degeneration_surprisal_rise_bits: float = field(metadata=_POS)
    bottleneck_collapse_rate: float = field(metadata=_UNIT)
    bottleneck_entropy_bits: float = field(metadata=_NONNEG)
    bottleneck_min_steps: int = field(metadata=_rng(1))
    repetition_risk_entropy_bits: float = field(metadata=_NONNEG)
    repetition_risk_mass: float = field(metadata=_UNIT)
    repetition_risk_ngram: int = field(metadata=_rng(1, 16))
    repetition_risk_share: float = field(metadata=_UNIT)


@dataclass(frozen=True)
class EarlyWarningProfile:
    window: int = field(metadata=_rng(2, 64))
    softness: float = field(metadata=_POS)
    accel_rise_bits: float = field(metadata=_POS)
    accel_increase_bits: float = field(metadata=_NONNEG)
    collapsed_margin: float = field(metadata=_UNIT)
    decline_ratio: float = field(metadata=_UNIT)
    decline_min_base: float = field(metadata=_UNIT)
    volatile_std_bits: float = field(metadata=_POS)
    divergence_entropy_bits: float = field(metadata=_NONNEG)
    divergence_margin: float = field(metadata=_UNIT)
    weight_accelerating: float = field(metadata=_UNIT)
    weight_collapsed: float = field(metadata=_UNIT)
    weight_declining: float = field(metadata=_UNIT)
    weight_volatile: float = field(metadata=_UNIT)
    weight_divergence: float = field(metadata=_UNIT)


@dataclass(frozen=True)
class ModelProfile:
    family: str
    high_entropy_threshold_bits: float = field(metadata=_NONNEG)
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
    return typing.cast(ModelProfile, _build(ModelProfile, data, "profile"))


def profile_field_paths(cls: type = ModelProfile, prefix: str = "") -> list[str]:
    """Every key of the profile as a dotted path (``risk.mean_entropy.center``)."""
    paths: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        sub = hints[f.name]
        if dataclasses.is_dataclass(sub):
            paths.extend(profile_field_paths(typing.cast(type, sub), f"{prefix}{f.name}."))
        else:
            paths.append(prefix + f.name)
    return paths


def _read_yaml(name: str) -> dict[str, Any]:
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


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"model-profile section {path!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown model-profile key(s) {', '.join(unknown)} in {path!r}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        where = f"{path}.{f.name}"
        if f.name not in data:
            raise ConfigError(f"model-profile key {where!r} is missing")
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            values[f.name] = _build(typing.cast(type, kind), data[f.name], where)
        else:
            values[f.name] = _scalar(kind, data[f.name], where, f.metadata)
    return cls(**values)


def _scalar(kind: Any, value: Any, where: str, limits: Any) -> Any:
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"model-profile key {where!r} must be a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"model-profile key {where!r} must be a number, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"model-profile key {where!r} must be an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"model-profile key {where!r} must be finite")
    lo, hi = limits.get("lo"), limits.get("hi")
    if lo is not None and (value < lo or (limits.get("open_lo") and value == lo)):
        raise ConfigError(
            f"model-profile key {where!r} must be {'>' if limits.get('open_lo') else '>='} {lo}"
        )
    if hi is not None and value > hi:
        raise ConfigError(f"model-profile key {where!r} must be <= {hi}")
    return value
