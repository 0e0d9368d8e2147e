"""Settings layering (config.py): arguments > COREVITAL_* > --config YAML > packaged defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from corevital.config import Settings, load_settings, read_default_yaml
from corevital.errors import ConfigError


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text("seed: 9\nmax_new_tokens: 7\ndevice: cuda\ntop_k: 3\nthresholds: {a: 1, b: 2}\n")
    return path


def test_each_layer_wins_over_the_ones_below(config_file: Path) -> None:
    env = {"COREVITAL_DEVICE": "cpu", "COREVITAL_SEED": "123"}
    settings = load_settings({"top_k": 11}, config_file=config_file, environ=env)
    assert settings.top_k == 11  # argument > file
    assert (settings.device, settings.seed) == ("cpu", 123)  # environment > file
    assert settings.max_new_tokens == 7  # file > packaged default
    assert settings.batch_size == read_default_yaml().get("batch_size", 8)  # packaged default
    assert load_settings({"seed": 5}, config_file=config_file, environ=env).seed == 5  # argument > env
    assert load_settings({"seed": None}, environ=env).seed == 123  # None is "not given"


def test_threshold_mappings_merge_key_by_key_across_layers(config_file: Path) -> None:
    env = {"COREVITAL_THRESHOLDS": '{"b": 20, "c": 30}'}
    settings = load_settings({"thresholds": {"c": 300}}, config_file=config_file, environ=env)
    assert settings.thresholds == {"a": 1, "b": 20, "c": 300}


def test_environment_names_are_case_insensitive_and_values_are_parsed() -> None:
    settings = load_settings({}, environ={"corevital_temperature": "0", "COREVITAL_WRITE_JSON": "true"})
    assert settings.temperature == 0.0 and settings.do_sample is False and settings.write_json is True


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COREVITAL_SEED", "77")
    assert load_settings({}).seed == 77
    assert Settings().seed == 77 and Settings(seed=1).seed == 1  # the sources hook: arguments > env


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"COREVITAL_SEEDS": "1"}, "unknown setting in the environment: COREVITAL_SEEDS"),
        ({"COREVITAL_TOP_P": "7"}, "invalid setting top_p: Input should be less than or equal to 1"),
        ({"COREVITAL_SEED": "many"}, "invalid setting seed"),
    ],
)
def test_bad_environment_is_one_config_error_line(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, environ=environ)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_other_variables_are_left_alone() -> None:
    assert load_settings({}, environ={"UPDATE_GOLDEN": "1", "HOME": "/x"}).seed == 42


def test_unknown_keys_of_a_file_or_the_arguments_are_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nsede: 2\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) in .*bad.yaml: sede"):
        load_settings({}, config_file=bad, environ={})
    with pytest.raises(ConfigError, match=r"unknown setting\(s\): sede"):
        load_settings({"sede": 1}, environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings({}, config_file=tmp_path / "missing.yaml", environ={})
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings({}, config_file=tmp_path / "list.yaml", environ={})
