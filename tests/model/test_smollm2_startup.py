"""The default model's GGUF file converted once into the cache, and a profile that follows the weights.

- a load from the cache is the same model as a load of the GGUF file: same names in the report,
  same capabilities, same tokens, same logits, same weight sample;
- a broken cache entry is found and rebuilt;
- a calibration profile of the default model is accepted by ``watch`` when the user loaded the very
  same GGUF file with transformers (another name, same weights) and refused for another model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from corevital import CoreVitalMonitor
from corevital.analysis.calibration.profile import (
    ModelIdentity,
    load_calibration_profile,
    resolve_profile_path,
    save_calibration_profile,
)
from corevital.capture.default_model import locate_default_model
from corevital.capture.gguf_cache import MANIFEST
from corevital.capture.loading import LoadedModel, ModelSpec, load_model
from corevital.errors import ConfigError
from tests.support.tiny_models import build_model, build_tokenizer

pytestmark = [pytest.mark.model, pytest.mark.slow]

PROMPT = "Why is the sky blue?"


@pytest.fixture(scope="module")
def users_own_load() -> Iterator[tuple[Any, Any]]:
    """The default model's GGUF file loaded by a user with transformers, without CoreVital."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    default = locate_default_model()
    tokenizer = AutoTokenizer.from_pretrained(default.directory, gguf_file=default.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        default.directory, gguf_file=default.gguf_file, dtype=torch.float32
    )
    model.eval()  # type: ignore[no-untyped-call]
    yield model, tokenizer


def _logits(loaded_model: Any, tokenizer: Any) -> torch.Tensor:
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        logits: torch.Tensor = loaded_model(ids).logits
    return logits


def _entry(cache: Path) -> Path:
    entries = [p for p in (cache / "gguf").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1, entries
    return entries[0]


def test_a_load_from_the_cache_is_the_same_model(tmp_path: Path, users_own_load: tuple[Any, Any]) -> None:
    cache = tmp_path / "cache"
    spec = ModelSpec(device="cpu", cache_dir=str(cache))
    converted = load_model(spec)  # converts the GGUF file, writes the entry
    entry = _entry(cache)
    manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    assert "model.safetensors" in manifest["files"] and "tokenizer.json" in manifest["files"]
    cached = load_model(spec)  # reads the entry
    assert cached.model is not converted.model
    users_model, users_tokenizer = users_own_load
    for loaded in (converted, cached):
        assert loaded.resolved.hf_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert loaded.resolved.source == "gguf" and loaded.resolved.is_default
        assert loaded.resolved.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert loaded.model.config.name_or_path == loaded.resolved.location
        assert loaded.dtype == torch.float32
    assert cached.capabilities == converted.capabilities
    assert cached.tokenizer.chat_template == users_tokenizer.chat_template
    chat = [{"role": "user", "content": PROMPT}]
    assert cached.tokenizer.apply_chat_template(chat, tokenize=True) == users_tokenizer.apply_chat_template(
        chat, tokenize=True
    )
    assert cached.tokenizer.eos_token_id == users_tokenizer.eos_token_id
    torch.testing.assert_close(
        _logits(cached.model, cached.tokenizer), _logits(users_model, users_tokenizer), rtol=0, atol=0
    )
    sample = cached.weights_fingerprint
    assert len(sample) == 48
    assert sample == converted.weights_fingerprint
    assert sample == tuple(json.loads(json.dumps(sample)))

    # A broken entry (a config that no longer parses, sizes unchanged) is found, removed and rebuilt.
    config = entry / "config.json"
    config.write_bytes(b"{" + b" " * (config.stat().st_size - 1))
    rebuilt = load_model(spec)
    assert json.loads(config.read_text(encoding="utf-8"))["model_type"] == "llama"
    assert rebuilt.capabilities == converted.capabilities


def test_a_profile_of_the_default_model_follows_its_weights_into_watch(
    tmp_path: Path, smollm2: LoadedModel, users_own_load: tuple[Any, Any]
) -> None:
    # What `corevital calibrate` writes for the default model (its identity), on the shipped profile.
    shipped = load_calibration_profile(resolve_profile_path("default"))
    profile = shipped.model_copy(update={"model": ModelIdentity.of(smollm2)})
    path = save_calibration_profile(profile, tmp_path / "profile.json")
    assert profile.model.weights is not None and profile.model.vocab_size == 49152
    # The shipped profile carries the same identity.
    assert shipped.model.weights is not None and shipped.model.differs_from(profile.model) is None

    model, tokenizer = users_own_load
    monitor = CoreVitalMonitor(device="cpu", calibration=str(path), max_new_tokens=4, temperature=0.0)
    inputs = tokenizer(PROMPT, return_tensors="pt")
    with monitor.watch(model, tokenizer) as watcher:
        model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert len(watcher.reports) == 1
    assert watcher.reports[0].model.hf_id != profile.model.model_id  # another name, the same weights

    other = build_model("llama", seed=0)
    other_tokenizer = build_tokenizer()
    batch = other_tokenizer(["Hello there"], return_tensors="pt")
    with (
        pytest.raises(ConfigError, match="calibration profile was made for HuggingFaceTB/SmolLM2") as info,
        monitor.watch(other, other_tokenizer),
    ):
        other.generate(**batch, max_new_tokens=4, do_sample=False)
    assert "\n" not in str(info.value)
