"""The run flags (cli/args.py): help without internal names, grouped, choices from the settings' types."""

from __future__ import annotations

import argparse
from typing import Literal, get_args, get_origin

import pytest

from corevital.cli import main
from corevital.cli.args import RUN_FLAG_GROUPS, RUN_FLAGS, add_run_flags, settings_overrides
from corevital.config import Settings

GROUP_TITLES = ["model", "decoding", "capture", "output", "calibration", "sampling", "exporters"]


def help_text(capsys: pytest.CaptureFixture[str], command: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["run", "calibrate", "validate"])
def test_help_shows_no_internal_names_and_groups_the_flags(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    text = help_text(capsys, command)
    assert "SETTING__" not in text and "setting__" not in text
    # only run writes reports; calibrate writes a profile
    titles = {"run": GROUP_TITLES, "validate": GROUP_TITLES[:-2], "calibrate": GROUP_TITLES[:-3]}[command]
    positions = [text.index(f"{title.title()} Options:") for title in titles]
    assert positions == sorted(positions)
    assert "--device {auto,cpu,cuda}" in text and "--max_new_tokens, --max-new-tokens N" in text


def test_every_flag_belongs_to_one_of_the_groups() -> None:
    assert [group.title for group in RUN_FLAG_GROUPS] == GROUP_TITLES
    assert len(RUN_FLAGS) == sum(len(group.flags) for group in RUN_FLAG_GROUPS)
    assert {flag.setting for flag in RUN_FLAGS} <= set(Settings.model_fields)


def parser(exclude: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    add_run_flags(p, exclude=exclude)
    return p


def test_literal_settings_take_their_choices() -> None:
    actions = {a.dest: a for a in parser()._actions}
    for flag in RUN_FLAGS:
        annotation = Settings.model_fields[flag.setting].annotation
        action = actions[f"setting__{flag.setting}"]
        if flag.kind == "value" and get_origin(annotation) is Literal:
            assert action.choices == list(get_args(annotation))
        if flag.kind == "value":
            assert action.metavar is not None or action.choices is not None
    assert actions["setting__perf"].choices == ["summary", "detailed", "strict"]
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser().parse_args(["--device", "gpu"])


def test_only_typed_flags_become_overrides() -> None:
    args = parser().parse_args(
        ["--top-k", "3", "--temperature", "0", "--quantize_4", "--no-prompt-telemetry"]
    )
    assert settings_overrides(args) == {
        "top_k": 3,
        "temperature": 0.0,
        "quantize": "4bit",
        "prompt_telemetry": False,
    }
    assert settings_overrides(parser().parse_args(["--perf"])) == {"perf": "summary"}


def test_excluded_settings_are_not_flags_and_empty_groups_are_left_out() -> None:
    p = parser(exclude=("calibration", "rag_context", "perf"))
    assert "--calibration" not in p.format_help() and "--perf" not in p.format_help()
    assert "calibration options" not in p.format_help()


def test_the_cli_starts_without_traceback_or_dataclasses_and_lists_every_command() -> None:
    import subprocess
    import sys

    from corevital.cli import COMMANDS

    code = "import sys, corevital.cli; print(sorted({'traceback', 'dataclasses'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
    shown = subprocess.run(
        [sys.executable, "-m", "corevital", "--help"], capture_output=True, text=True, check=True
    )
    listed = {line.split()[0] for line in shown.stdout.splitlines() if line.startswith("    ")}
    assert {command.name for command in COMMANDS} <= listed
