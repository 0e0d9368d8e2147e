"""The arguments of :class:`~corevital.monitor.CoreVitalMonitor`'s calls, checked before any model
is loaded: the prompts of ``run``/``run_batch``/``stream`` (strings or chat messages), a call's
keywords split into settings and ``generate()`` keywords (a ``GenerationConfig`` read as the
keywords it sets), and the monitor's intervention arguments (thresholds, signal names, stop
policies)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from corevital.analysis.policies import StopOnNonFinite, StopOnRepetition, StopOnRiskAbove, StopPolicy
from corevital.capture.messages import Prompt, check_messages
from corevital.config import Settings
from corevital.errors import ConfigError, InputError


def batch_prompts(prompts: Any) -> list[Prompt]:
    """The prompts of a batch (strings or chat message lists), checked before any model is loaded."""
    try:
        texts = list(prompts)
    except TypeError:
        raise InputError(f"run_batch() takes a list of prompts, not {type(prompts).__name__}") from None
    if not texts:
        raise InputError("run_batch() got no prompts")
    checked: list[Prompt] = []
    for number, text in enumerate(texts, start=1):
        if isinstance(text, Mapping):
            raise InputError(
                f"prompt {number} is a message dict: run_batch() takes a list of prompts, each a string "
                "or a list of messages (one conversation: run(messages=...))"
            )
        if not isinstance(text, str | list | tuple):
            raise InputError(f"prompt {number} is a {type(text).__name__}, not a string or chat messages")
        if isinstance(text, str):
            if not text.strip():
                raise InputError(f"prompt {number} is empty")
            checked.append(text)
        else:
            try:
                checked.append(check_messages(text))
            except InputError as exc:
                raise InputError(f"prompt {number}: {exc}") from None
    return checked


def one_prompt(method: str, prompt: Any, messages: Any) -> Prompt:
    """The one prompt of ``run``/``stream``: a string or chat messages (positionally or as messages=)."""
    if messages is not None:
        if prompt is not None:
            raise InputError(f"{method}() takes a prompt or messages=, not both")
        prompt = messages
    if prompt is None:
        raise InputError(f"{method}() needs a prompt (a string) or chat messages")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list | tuple):
        return check_messages(prompt)
    raise InputError(f"{method}() takes the prompt as a string or chat messages, not {type(prompt).__name__}")


def returned_sequences(kwargs: dict[str, Any]) -> int:
    value = kwargs.get("num_return_sequences")
    config = kwargs.get("generation_config")
    if value is None and config is not None and not isinstance(config, str):
        value = getattr(config, "num_return_sequences", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


# Keys of GenerationConfig.to_diff_dict() that describe the object, not the decoding.
_CONFIG_METADATA = frozenset(
    {"transformers_version", "_from_model_config", "_commit_hash", "_original_object_hash"}
)


def split_generate_kwargs(
    kwargs: dict[str, Any], base: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Settings by name and the ``generate()`` keywords to pass through, from one call's keywords.

    A transformers ``GenerationConfig`` given as ``generation_config`` is read as the keywords it
    sets (those given by name win). ``do_sample=False`` is greedy decoding (temperature 0);
    ``do_sample=True`` samples at the given temperature, else at 1.0 when the monitor's is 0.
    The setting ``generation_config`` ("corevital" or "model") is a string.
    """
    values = dict(kwargs)
    config = values.get("generation_config")
    if config is not None and not isinstance(config, str):
        if not callable(getattr(config, "to_diff_dict", None)):
            raise ConfigError(
                "generation_config is a transformers GenerationConfig, or the setting 'corevital'/'model'"
            )
        del values["generation_config"]
        from_config = {k: v for k, v in config.to_diff_dict().items() if k not in _CONFIG_METADATA}
        values = {**from_config, **values}
    settings: dict[str, Any] = {}
    generate: dict[str, Any] = {}
    do_sample = values.pop("do_sample", None)
    for name, value in values.items():
        if name in Settings.model_fields or name in ("load_in_4bit", "load_in_8bit"):
            settings[name] = value
        else:
            generate[name] = value
    if do_sample is False:
        settings["temperature"] = 0.0
    elif do_sample is True and float(settings.get("temperature", base.get("temperature", 0.8)) or 0.0) == 0.0:
        settings["temperature"] = 1.0
    for name in ("top_k", "top_p", "temperature"):
        if name in settings and settings[name] is None:
            del settings[name]  # generate()'s None: this setting's value stays as it is
    return settings, generate


def as_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


def signal_names(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a list of signal names, not {type(value).__name__}")
    names = tuple(value)
    if not all(isinstance(item, str) for item in names):
        raise ConfigError(f"{name} must be a list of signal names (strings)")
    return names


def stop_policies(value: Any) -> tuple[StopPolicy, ...]:
    """Stop policies: objects with a ``name`` and ``check(step)`` (corevital.analysis.policies)."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(f"policies must be a list of stop policies, not {type(value).__name__}")
    policies = tuple(value)
    for policy in policies:
        if not callable(getattr(policy, "check", None)) or not isinstance(getattr(policy, "name", None), str):
            raise ConfigError(f"{policy!r} is not a stop policy (it needs a name and check(step))")
    return policies


def default_policies(risk_above: float | None = None) -> tuple[StopPolicy, ...]:
    """Stop on a repetition loop, on NaN/Inf, and (optionally) on running risk above a threshold."""
    policies: list[StopPolicy] = [StopOnNonFinite(), StopOnRepetition()]
    if risk_above is not None:
        policies.append(StopOnRiskAbove(risk_above))
    return tuple(policies)
