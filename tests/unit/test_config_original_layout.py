"""``--config`` reads the original CoreVital's nested configs/default.yaml layout as today's settings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from corevital.config import Settings, load_settings
from corevital.errors import ConfigError

# The original project's configs/default.yaml, section by section (its defaults).
ORIGINAL_DEFAULT = """
model:
  hf_id: "gpt2"
  revision: null
  trust_remote_code: false
  dtype: "auto"
  load_in_4bit: false
  load_in_8bit: false
device:
  requested: "auto"
generation:
  max_new_tokens: 20
  do_sample: true
  temperature: 0.8
  top_k: 50
  top_p: 0.95
  seed: 42
summaries:
  hidden:
    enabled: true
    stats: [mean, std, l2_norm_mean, max_abs]
    sketch: {method: "randproj", dim: 32, seed: 0}
  attention:
    enabled: true
    stats: [entropy_mean, entropy_min, entropy_max, concentration_max, collapsed_head_count]
  logits:
    enabled: true
    stats: [entropy, top1_top2_margin, topk_probs, perplexity, surprisal]
    topk: 5
sink:
  type: "local_file"
  output_dir: "runs"
  remote_url: null
prompt_telemetry:
  enabled: true
  sparse_threshold: 0.01
logging:
  level: "INFO"
  format: "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
"""


def _load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(config_file=path, environ={})


def test_the_original_default_yaml_is_read_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="corevital.config"):
        settings = _load(tmp_path, ORIGINAL_DEFAULT)
    assert settings.model == "gpt2" and settings.device == "auto" and settings.dtype == "auto"
    assert (settings.max_new_tokens, settings.temperature, settings.top_k, settings.top_p) == (
        20,
        0.8,
        50,
        0.95,
    )
    assert settings.seed == 42 and settings.quantize == "none" and settings.revision is None
    assert (settings.sketch_dim, settings.topk) == (32, 5)
    assert settings.sink == ["local"] and settings.out == "runs" and settings.http_url is None
    assert settings.prompt_telemetry is True and settings.sparse_threshold == 0.01
    assert settings.log_level == "INFO"
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message and "original CoreVital layout" in message
    gone = message.split("ignored: ", 1)[1].split(", ")
    assert gone == sorted(
        [
            "logging.format",
            "summaries.attention.stats",
            "summaries.hidden.sketch.seed",
            "summaries.hidden.stats",
            "summaries.logits.stats",
        ]
    )


def test_original_keys_that_became_other_settings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = """
model: {hf_id: "meta-llama/Llama-3.1-8B", load_in_4bit: true}
device: {requested: cuda}
generation: {do_sample: false, temperature: 0.7, num_beams: 2, early_stopping: true}
summaries: {hidden: {sketch: {enabled: false}}, logits: {entropy_mode: topk_approx}}
sink: {type: prometheus, sqlite_path: "data/cv.db", sqlite_backup_json: true, wandb_entity: me}
performance: {mode: detailed}
capture: {capture_mode: on_risk, risk_threshold: 0.6}
otel: {export_otel: true, otel_endpoint: "http://collector:4318"}
model_profile: {high_entropy_threshold_bits: 5.0, l2_explosion_multiplier: 8.0}
calibration_profile: my-profile.json
"""
    with caplog.at_level(logging.WARNING, logger="corevital.config"):
        settings = _load(tmp_path, text)
    assert settings.model == "meta-llama/Llama-3.1-8B" and settings.quantize == "4bit"
    assert settings.device == "cuda"
    assert settings.temperature == 0.0 and not settings.do_sample  # do_sample false: greedy
    assert (settings.num_beams, settings.early_stopping) == (2, True)
    assert settings.sketch_dim == 0 and settings.entropy_mode == "topk_approx"
    assert settings.sink == ["prometheus", "otel"] and settings.otel_endpoint == "http://collector:4318"
    assert settings.db == "data/cv.db" and settings.write_json is True
    assert settings.perf == "detailed" and settings.capture == "on_risk" and settings.on_risk_threshold == 0.6
    assert settings.thresholds == {"high_entropy_threshold_bits": 5.0}
    assert settings.calibration == "my-profile.json"
    (record,) = caplog.records
    assert record.getMessage().endswith("ignored: model_profile.l2_explosion_multiplier, sink.wandb_entity")


def test_flags_and_environment_still_override_an_original_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("generation: {max_new_tokens: 30, seed: 7}\nmodel: {hf_id: gpt2}\n", encoding="utf-8")
    settings = load_settings({"max_new_tokens": 5}, config_file=path, environ={"COREVITAL_SEED": "9"})
    assert (settings.model, settings.max_new_tokens, settings.seed) == ("gpt2", 5, 9)


def test_a_key_the_original_never_had_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) in .*config.yaml: generation.max_tokens"):
        _load(tmp_path, "generation: {max_tokens: 5}\n")
    with pytest.raises(ConfigError, match="invalid setting"):
        _load(tmp_path, "device: {requested: tpu}\n")


def test_a_flat_file_is_read_as_before(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="corevital.config"):
        settings = _load(tmp_path, "model: gpt2\ncapture: summary\nprompt_telemetry: false\nsink: [sqlite]\n")
    assert (settings.model, settings.capture, settings.prompt_telemetry) == ("gpt2", "summary", False)
    assert caplog.records == []
