"""The ``corevital run`` flags, declared once and mapped onto :class:`corevital.config.Settings`.

Help texts come from the settings' own descriptions, so the CLI, the config file and the docs
cannot drift apart. Flags accept both spellings users type (``--max_new_tokens`` and
``--max-new-tokens``); flags that the user did not type do not override lower layers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from corevital.config import Settings


@dataclass(frozen=True)
class Flag:
    setting: str
    names: tuple[str, ...]
    kind: str = "value"  # value | true | false | const
    const: Any = None
    metavar: str | None = None


def _both(name: str) -> tuple[str, ...]:
    under, dash = name.replace("-", "_"), name.replace("_", "-")
    return tuple(dict.fromkeys((f"--{under}", f"--{dash}")))


RUN_FLAGS: tuple[Flag, ...] = (
    Flag("model", ("--model",), metavar="ID|PATH"),
    Flag("gguf_file", _both("gguf_file"), metavar="FILE"),
    Flag("revision", ("--revision",)),
    Flag("device", ("--device",), metavar="auto|cpu|cuda"),
    Flag("dtype", ("--dtype",)),
    Flag("quantize", _both("quantize_4"), kind="const", const="4bit"),
    Flag("quantize", _both("quantize_8"), kind="const", const="8bit"),
    Flag("chat_template", _both("chat_template"), metavar="auto|on|off"),
    Flag("trust_remote_code", _both("trust_remote_code"), kind="true"),
    Flag("max_new_tokens", _both("max_new_tokens"), metavar="N"),
    Flag("temperature", ("--temperature",), metavar="T"),
    Flag("top_k", _both("top_k"), metavar="K"),
    Flag("top_p", _both("top_p"), metavar="P"),
    Flag("num_beams", _both("num_beams"), metavar="N"),
    Flag("early_stopping", _both("early_stopping"), kind="true"),
    Flag("seed", ("--seed",), metavar="N"),
    Flag("ignore_eos", _both("ignore_eos"), kind="true"),
    Flag("capture", ("--capture",), metavar="full|summary|on_risk"),
    Flag("entropy_mode", _both("entropy_mode"), metavar="full|topk_approx"),
    Flag("topk", ("--topk",), metavar="K"),
    Flag("prompt_telemetry", _both("no_prompt_telemetry"), kind="false"),
    Flag("batch_size", _both("batch_size"), metavar="N"),
    Flag("sink", ("--sink",)),
    Flag("out", ("--out",), metavar="DIR"),
    Flag("write_json", _both("write_json"), kind="true"),
    Flag("json_pretty", _both("json_pretty"), kind="true"),
    Flag("log_level", _both("log_level")),
    Flag("validate_metrics", _both("validate_metrics"), kind="true"),
    Flag("calibration", ("--calibration",), metavar="PROFILE"),
    Flag("rag_context", _both("rag_context"), metavar="FILE"),
)
# --perf [MODE] takes an optional value, so it is declared in add_run_flags itself.
OPTIONAL_VALUE_FLAGS = {"perf": ("--perf",)}

_CHOICE_TYPES = {int: int, float: float}


def _help(flag: Flag) -> str:
    description = Settings.model_fields[flag.setting].description or ""
    if flag.kind == "const":
        return f"Shortcut for quantize={flag.const}. " + description
    if flag.kind == "false":
        return f"Turn off: {description}"
    return description


def _converter(setting: str) -> Any:
    annotation = Settings.model_fields[setting].annotation
    if annotation in _CHOICE_TYPES:
        return _CHOICE_TYPES[annotation]
    return str


def add_run_flags(parser: argparse.ArgumentParser, *, exclude: tuple[str, ...] = ()) -> None:
    """The run flags on ``parser``; ``exclude`` names settings a command does not take."""
    for flag in RUN_FLAGS:
        if flag.setting in exclude:
            continue
        dest = f"setting__{flag.setting}"
        if flag.kind == "value":
            parser.add_argument(
                *flag.names,
                dest=dest,
                type=_converter(flag.setting),
                metavar=flag.metavar,
                help=_help(flag),
                default=argparse.SUPPRESS,
            )
        else:
            value = {"true": True, "false": False, "const": flag.const}[flag.kind]
            parser.add_argument(
                *flag.names,
                dest=dest,
                action="store_const",
                const=value,
                help=_help(flag),
                default=argparse.SUPPRESS,
            )
    if "perf" in exclude:
        return
    parser.add_argument(
        "--perf",
        dest="setting__perf",
        nargs="?",
        const="summary",
        choices=["summary", "detailed", "strict"],
        metavar="MODE",
        help=Settings.model_fields["perf"].description,
        default=argparse.SUPPRESS,
    )


def settings_overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """Only the settings the user actually typed on the command line."""
    return {
        key.removeprefix("setting__"): value
        for key, value in vars(namespace).items()
        if key.startswith("setting__")
    }
