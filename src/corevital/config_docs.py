"""docs/configuration.md, generated from the settings declaration (a test keeps it in sync).

Regenerate with ``python -m corevital.config_docs > docs/configuration.md``.
"""

from __future__ import annotations

import json
from typing import Any

from corevital.cli.args import OPTIONAL_VALUE_FLAGS, RUN_FLAGS
from corevital.config import ENV_PREFIX, Settings, read_default_yaml

HEADER = """# Configuration

Every setting can be given four ways; the first that is present wins:

1. a `corevital run` flag (both `--max_new_tokens` and `--max-new-tokens` spellings work);
2. an environment variable `COREVITAL_<NAME>` (e.g. `COREVITAL_DEVICE=cpu`, `COREVITAL_SEED=123`;
   mappings as JSON; a `COREVITAL_` variable that names no setting is an error);
3. a YAML file given with `--config FILE` (keys are the setting names below; unknown keys are errors);
4. the defaults shipped inside the package (`corevital/configs/default.yaml`).

`thresholds` is merged key by key across these layers: a flag or variable that sets one threshold
keeps the others of the config file.

A `--config` file in the original CoreVital's nested layout (`model: {hf_id: gpt2, load_in_4bit: ...}`,
`device: {requested: ...}`, `generation: {...}`, `summaries: {...}`, `sink: {type: local_file, ...}`,
`prompt_telemetry`, `capture`, `performance`, `otel`, `logging`) is read as well: each key is mapped to
the setting below that replaced it (`model.hf_id` is `model`, `sink.output_dir` is `out`,
`generation.do_sample: false` is `temperature: 0`, ...), and one warning lists the keys that no
longer exist (the `stats` lists: every statistic is always computed). A key the original never had
is an error there too.

This page is generated from the settings declaration: `python -m corevital.config_docs`.

| setting | flag | environment | default | description |
|---|---|---|---|---|
"""


def _default(name: str, defaults: dict[str, Any]) -> str:
    value = defaults.get(name, Settings.model_fields[name].get_default(call_default_factory=True))
    return "—" if value is None else f"`{json.dumps(value)}`"


def render() -> str:
    defaults = read_default_yaml()
    flags: dict[str, list[str]] = {}
    for flag in RUN_FLAGS:
        flags.setdefault(flag.setting, []).extend(flag.names)
    for setting, names in OPTIONAL_VALUE_FLAGS.items():
        flags.setdefault(setting, []).extend(names)
    rows = []
    for name, field in Settings.model_fields.items():
        flag_text = " ".join(f"`{f}`" for f in flags.get(name, [])) or "—"
        description = (field.description or "").replace("|", "\\|")
        env = f"`{ENV_PREFIX}{name.upper()}`"
        rows.append(f"| `{name}` | {flag_text} | {env} | {_default(name, defaults)} | {description} |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(), end="")
