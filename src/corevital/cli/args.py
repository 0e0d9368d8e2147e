"""The ``corevital run`` flags, declared once and mapped onto :class:`corevital.config.Settings`.

Help texts come from the settings' own descriptions, so the CLI, the config file and the docs
cannot drift apart. Flags accept both spellings users type (``--max_new_tokens`` and
``--max-new-tokens``); flags that the user did not type do not override lower layers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from corevital.config import Settings


@dataclass(frozen=True)
class Flag:
    setting: str
    names: tuple[str, ...]
    kind: str = "value"  # value | true | false | const | append (repeatable) | append_const
    const: Any = None
    metavar: str | None = None  # a value flag without one shows its choices, or N / X / TEXT by type


@dataclass(frozen=True)
class FlagGroup:
    title: str  # "model" is shown as "model options" in --help
    description: str
    flags: tuple[Flag, ...]


def _both(name: str) -> tuple[str, ...]:
    under, dash = name.replace("-", "_"), name.replace("_", "-")
    return tuple(dict.fromkeys((f"--{under}", f"--{dash}")))


RUN_FLAG_GROUPS: tuple[FlagGroup, ...] = (
    FlagGroup(
        "model",
        "Which model, and how it is loaded.",
        (
            Flag("model", ("--model",), metavar="ID|PATH"),
            Flag("gguf_file", _both("gguf_file"), metavar="FILE"),
            Flag("backend", ("--backend",)),
            Flag("revision", ("--revision",), metavar="REV"),
            Flag("device", ("--device",)),
            Flag("dtype", ("--dtype",)),
            Flag("quantize", _both("quantize_4"), kind="const", const="4bit"),
            Flag("quantize", _both("quantize_8"), kind="const", const="8bit"),
            Flag("tp_plan", _both("tp_plan")),
            Flag("chat_template", _both("chat_template")),
            Flag("trust_remote_code", _both("trust_remote_code"), kind="true"),
            Flag("cache_dir", _both("cache_dir"), metavar="DIR|off"),
        ),
    ),
    FlagGroup(
        "decoding",
        "How tokens are chosen.",
        (
            Flag("max_new_tokens", _both("max_new_tokens"), metavar="N"),
            Flag("temperature", ("--temperature",), metavar="T"),
            Flag("top_k", _both("top_k"), metavar="K"),
            Flag("top_p", _both("top_p"), metavar="P"),
            Flag("num_beams", _both("num_beams"), metavar="N"),
            Flag("early_stopping", _both("early_stopping"), kind="true"),
            Flag("seed", ("--seed",), metavar="N"),
            Flag("ignore_eos", _both("ignore_eos"), kind="true"),
            Flag("generation_config", _both("generation_config")),
            Flag("cache", ("--cache",)),
        ),
    ),
    FlagGroup(
        "capture",
        "What is observed inside the model, and how.",
        (
            Flag("capture", ("--capture",)),
            Flag("entropy_mode", _both("entropy_mode")),
            Flag("topk", ("--topk",), metavar="K"),
            Flag("prompt_telemetry", _both("no_prompt_telemetry"), kind="false"),
            Flag("batch_size", _both("batch_size"), metavar="N"),
            Flag("validate_metrics", _both("validate_metrics"), kind="true"),
        ),
    ),
    FlagGroup(
        "output",
        "Where reports go and what is printed.",
        (
            Flag("sink", ("--sink",), kind="append", metavar="NAME"),
            Flag("out", ("--out",), metavar="DIR"),
            Flag("db", ("--db",), metavar="PATH|URL"),
            Flag("write_json", _both("write_json"), kind="true"),
            Flag("json_pretty", _both("json_pretty"), kind="true"),
            Flag("log_level", _both("log_level")),
        ),
    ),
    FlagGroup(
        "calibration",
        "What the analysis compares the run with.",
        (
            Flag("calibration", ("--calibration",), metavar="PROFILE"),
            Flag("rag_context", _both("rag_context"), metavar="FILE"),
        ),
    ),
    FlagGroup(
        "sampling",
        "Which runs are kept (stored and exported); every run is still captured and analysed.",
        (
            Flag("sample_every", _both("sample_every"), metavar="N"),
            Flag("sample_rate", _both("sample_rate"), metavar="P"),
            Flag("sample_seed", _both("sample_seed"), metavar="N"),
            Flag("sample_min_risk", _both("sample_min_risk"), metavar="R"),
        ),
    ),
    FlagGroup(
        "exporters",
        "Settings of the --sink exporters (docs/production.md).",
        (
            Flag("prometheus_textfile", _both("prometheus_textfile"), metavar="FILE"),
            Flag("prometheus_pushgateway", _both("prometheus_pushgateway"), metavar="URL"),
            Flag("prometheus_job", _both("prometheus_job"), metavar="NAME"),
            Flag("sink", _both("export_otel"), kind="append_const", const="otel"),
            Flag("otel_endpoint", _both("otel_endpoint"), metavar="URL"),
            Flag("otel_service_name", _both("otel_service_name"), metavar="NAME"),
            Flag("datadog_site", _both("datadog_site"), metavar="SITE"),
            Flag("datadog_api_key_file", _both("datadog_api_key_file"), metavar="FILE"),
            Flag("datadog_event_risk", _both("datadog_event_risk"), metavar="R"),
            Flag("wandb_project", _both("wandb_project"), metavar="NAME"),
            Flag("wandb_mode", _both("wandb_mode")),
            Flag("http_url", _both("http_url"), metavar="URL"),
            Flag("http_spool", _both("http_spool"), metavar="DIR"),
            Flag("http_timeout", _both("http_timeout"), metavar="SECONDS"),
        ),
    ),
)
RUN_FLAGS: tuple[Flag, ...] = tuple(flag for group in RUN_FLAG_GROUPS for flag in group.flags)
# The settings of where reports go: only `run` writes reports.
OUTPUT_SETTINGS: tuple[str, ...] = tuple(
    dict.fromkeys(
        flag.setting
        for group in RUN_FLAG_GROUPS
        if group.title in ("output", "sampling", "exporters")
        for flag in group.flags
        if flag.setting != "log_level"
    )
)
# --perf [MODE] takes an optional value, so it is declared in add_run_flags itself (capture group).
OPTIONAL_VALUE_FLAGS = {"perf": ("--perf",)}

_TYPE_METAVARS = {int: "N", float: "X", str: "TEXT"}


def _help(flag: Flag) -> str:
    description = Settings.model_fields[flag.setting].description or ""
    if flag.kind == "const":
        return f"Shortcut for {flag.setting}={flag.const}. " + description
    if flag.kind == "append_const":
        return f"Shortcut for --{flag.setting} {flag.const}."
    if flag.kind == "false":
        return f"Turn off: {description}"
    return description


def _value_type(setting: str) -> Any:
    """The setting's type without ``None``: a Literal, int, float or str."""
    annotation = Settings.model_fields[setting].annotation
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        annotation = members[0] if len(members) == 1 else str
    return annotation


def _value_options(flag: Flag) -> dict[str, Any]:
    """type, choices and metavar of a value flag, from the setting's declared type."""
    annotation = _value_type(flag.setting)
    if get_origin(annotation) is Literal:
        return {"type": str, "choices": list(get_args(annotation)), "metavar": flag.metavar}
    kind = annotation if annotation in (int, float) else str
    return {"type": kind, "metavar": flag.metavar or _TYPE_METAVARS[kind]}


def add_run_flags(parser: argparse.ArgumentParser, *, exclude: tuple[str, ...] = ()) -> None:
    """The run flags on ``parser``, one argument group each.

    ``exclude`` names the settings a command does not take.
    """
    for group in RUN_FLAG_GROUPS:
        flags = [flag for flag in group.flags if flag.setting not in exclude]
        with_perf = group.title == "capture" and "perf" not in exclude
        if not flags and not with_perf:
            continue
        section = parser.add_argument_group(f"{group.title} options", group.description)
        for flag in flags:
            _add_flag(section, flag)
        if with_perf:
            section.add_argument(
                *OPTIONAL_VALUE_FLAGS["perf"],
                dest="setting__perf",
                nargs="?",
                const="summary",
                choices=list(get_args(_value_type("perf"))),
                metavar="MODE",
                help=Settings.model_fields["perf"].description,
                default=argparse.SUPPRESS,
            )


def _add_flag(section: argparse._ArgumentGroup, flag: Flag) -> None:
    dest = f"setting__{flag.setting}"
    if flag.kind in ("append", "append_const"):
        extra = {"metavar": flag.metavar} if flag.kind == "append" else {"const": flag.const}
        section.add_argument(
            *flag.names, dest=dest, action=flag.kind, help=_help(flag), default=argparse.SUPPRESS, **extra
        )
        return
    if flag.kind == "value":
        section.add_argument(
            *flag.names, dest=dest, help=_help(flag), default=argparse.SUPPRESS, **_value_options(flag)
        )
        return
    value = {"true": True, "false": False, "const": flag.const}[flag.kind]
    section.add_argument(
        *flag.names, dest=dest, action="store_const", const=value, help=_help(flag), default=argparse.SUPPRESS
    )


def settings_overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """Only the settings the user actually typed on the command line."""
    return {
        key.removeprefix("setting__"): value
        for key, value in vars(namespace).items()
        if key.startswith("setting__")
    }
