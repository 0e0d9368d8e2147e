"""Reading settings files: YAML with bounded nesting, and the original CoreVital's nested layout.

:mod:`corevital.config` declares the settings and reads its files through these functions, giving
them the names of its settings (this module knows no setting by itself, apart from the original
layout's renames).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from typing import Any

import yaml

from corevital.errors import ConfigError

_YAML_MAX_FLOW_DEPTH = 64
_YAML_QUOTED = re.compile(r"'[^'\n]*'?|\"(?:[^\"\\\n]|\\.?)*+\"?|#[^\n]*")
_YAML_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _flow_depth_exceeds(text: str, limit: int = _YAML_MAX_FLOW_DEPTH) -> bool:
    """Whether YAML ``text`` nests ``[...]``/``{...}`` deeper than ``limit`` (quoted text and
    comments aside): PyYAML would take seconds to find out, then raise RecursionError."""
    brackets = _YAML_NOT_BRACKET.sub("", _YAML_QUOTED.sub("", text))
    depth = 0
    for char in brackets:
        depth += 1 if char in "[{" else -1
        if depth > limit:
            return True
    return False


def _key_text(key: object) -> str:
    """A key of a config file as an error message shows it: quoted when it holds a line break or
    another character that is not printable (the message stays one line)."""
    text = str(key)
    return text if text.isprintable() else repr(text)


def yaml_mapping(
    text: str, origin: str, names: Collection[str], *, original_layout: bool = False
) -> dict[str, Any]:
    """The settings of YAML ``text`` (from ``origin``, for messages); every key must be one of ``names``.

    With ``original_layout`` a mapping in the original CoreVital's nested layout is converted first.
    """
    if _flow_depth_exceeds(text):
        raise ConfigError(f"{origin} is not valid YAML: nested deeper than {_YAML_MAX_FLOW_DEPTH} levels")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    except RecursionError:
        raise ConfigError(f"{origin} is not valid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # a number PyYAML cannot convert (Python's digit limit)
        raise ConfigError(f"{origin} is not valid YAML: {' '.join(str(exc).split())[:160]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must be a mapping of setting names to values")
    mapping: dict[str, Any] = data
    if original_layout and is_original_layout(mapping):
        mapping = from_original_layout(mapping, origin, names)
    unknown = sorted(_key_text(key) for key in set(mapping) - set(names))
    if unknown:
        raise ConfigError(f"unknown setting(s) in {origin}: {', '.join(unknown)}")
    return mapping


# --- the original CoreVital's configs/default.yaml -------------------------------------------------
# Its sections (model: {hf_id, ...}, generation: {...}, summaries: {...}, sink: {...}, ...) are
# read as today's flat settings. A key that maps to a setting is renamed; the few whose meaning
# became another setting's value are converted; a key with no counterpart is listed in one warning
# (unless its value is what CoreVital always does); a key the original never had is an error.
_ORIGINAL_SECTIONS = ("generation", "summaries", "logging", "performance", "otel", "model_profile")
_ORIGINAL_NESTED = ("model", "device", "sink", "prompt_telemetry", "capture")
_ORIGINAL_RENAMED = {
    "model.hf_id": "model",
    "model.revision": "revision",
    "model.trust_remote_code": "trust_remote_code",
    "model.dtype": "dtype",
    "device.requested": "device",
    "generation.max_new_tokens": "max_new_tokens",
    "generation.temperature": "temperature",
    "generation.top_k": "top_k",
    "generation.top_p": "top_p",
    "generation.seed": "seed",
    "generation.num_beams": "num_beams",
    "generation.early_stopping": "early_stopping",
    "summaries.hidden.sketch.dim": "sketch_dim",
    "summaries.logits.topk": "topk",
    "summaries.logits.entropy_mode": "entropy_mode",
    "sink.output_dir": "out",
    "sink.remote_url": "http_url",
    "sink.datadog_site": "datadog_site",
    "sink.wandb_project": "wandb_project",
    "sink.sqlite_path": "db",
    "sink.sqlite_backup_json": "write_json",
    "logging.level": "log_level",
    "performance.mode": "perf",
    "prompt_telemetry.enabled": "prompt_telemetry",
    "prompt_telemetry.sparse_threshold": "sparse_threshold",
    "prompt_telemetry.sparse_max_per_head": "sparse_max_per_head",
    "capture.capture_mode": "capture",
    "capture.risk_threshold": "on_risk_threshold",
    "otel.otel_endpoint": "otel_endpoint",
    "calibration_profile": "calibration",
}
# Keys whose value, when it is this one, is what CoreVital always does: nothing is lost.
_ORIGINAL_ALWAYS = {
    "summaries.hidden.enabled": True,
    "summaries.attention.enabled": True,
    "summaries.logits.enabled": True,
    "summaries.hidden.sketch.enabled": True,
    "summaries.hidden.sketch.method": "randproj",
    "model.load_in_4bit": False,
    "model.load_in_8bit": False,
    "generation.do_sample": True,
    "otel.export_otel": False,
}
_ORIGINAL_GONE = (
    "summaries.hidden.stats",
    "summaries.hidden.sketch.seed",
    "summaries.attention.stats",
    "summaries.logits.stats",
    "sink.datadog_api_key",
    "sink.prometheus_port",
    "sink.wandb_entity",
    "logging.format",
    "model_profile.l2_explosion_multiplier",
    "model_profile.repetition_cosine_threshold",
    "model_profile.collapsed_head_entropy_threshold",
    "model_profile.focused_head_concentration_threshold",
)
_ORIGINAL_SINKS = {"local_file": "local", "sqlite": "sqlite", "http": "http"}
_ORIGINAL_KEYS = {
    *_ORIGINAL_RENAMED,
    *_ORIGINAL_ALWAYS,
    *_ORIGINAL_GONE,
    "sink.type",
    "model_profile.high_entropy_threshold_bits",
}


def is_original_layout(data: Mapping[str, Any]) -> bool:
    """Whether a YAML mapping is in the original CoreVital's nested layout."""
    return any(key in data for key in (*_ORIGINAL_SECTIONS, "calibration_profile")) or any(
        isinstance(data.get(key), dict) for key in _ORIGINAL_NESTED
    )


def _dotted(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in _ORIGINAL_KEYS:
            out.update(_dotted(value, f"{path}."))
        else:
            out[path] = value
    return out


def from_original_layout(data: Mapping[str, Any], origin: str, names: Collection[str]) -> dict[str, Any]:
    """Today's settings from the original layout; one warning lists the keys that no longer exist."""
    settings: dict[str, Any] = {}
    flat = {k: v for k, v in data.items() if k in names and not isinstance(v, dict)}
    flat.pop("calibration_profile", None)
    nested = _dotted({k: v for k, v in data.items() if k not in flat})
    unknown = sorted(_key_text(path) for path in nested if path not in _ORIGINAL_KEYS)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {origin}: {', '.join(unknown)}")
    gone: list[str] = []
    sinks: list[str] = []
    for path, value in nested.items():
        if path in _ORIGINAL_RENAMED:
            if value is not None:
                settings[_ORIGINAL_RENAMED[path]] = value
        elif path in ("model.load_in_4bit", "model.load_in_8bit") and value:
            settings["quantize"] = "4bit" if path.endswith("4bit") else "8bit"
        elif path == "generation.do_sample" and value is False:
            pass  # greedy: temperature 0 today, set below (after any generation.temperature)
        elif path == "summaries.hidden.sketch.enabled" and value is False:
            settings["sketch_dim"] = 0
        elif path == "sink.type" and value is not None:
            sinks.append(_ORIGINAL_SINKS.get(str(value), str(value)))
        elif path == "otel.export_otel" and value:
            sinks.append("otel")
        elif path == "model_profile.high_entropy_threshold_bits":
            settings.setdefault("thresholds", {})[path.split(".", 1)[1]] = value
        elif path not in _ORIGINAL_ALWAYS or _ORIGINAL_ALWAYS[path] != value:
            gone.append(path)
    if "generation.do_sample" in nested and nested["generation.do_sample"] is False:
        settings["temperature"] = 0.0
    if sinks:
        settings["sink"] = sinks if sinks != ["otel"] else ["sqlite", "otel"]
    if gone:
        logging.getLogger("corevital.config").warning(  # the settings' logger, whichever module reads them
            "%s is in the original CoreVital layout; these keys no longer exist and are ignored: %s",
            origin,
            ", ".join(sorted(gone)),
        )
    settings.update(flat)
    return settings
