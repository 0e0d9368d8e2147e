"""The conversion cache of GGUF models: where it is, what keys an entry, complete entries only.

The real GGUF conversion of the default model is in tests/model/test_smollm2_startup.py; here the
entries hold a tiny model, which is all the entry mechanics need.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from corevital.capture.gguf_cache import (
    BUFFERS,
    MANIFEST,
    TOKENIZER_CONFIG,
    cache_entry,
    cache_root,
    file_fingerprint,
    load_converted,
)
from corevital.capture.hf_compat import transformers_version
from corevital.capture.loading import ModelSpec, load_model
from corevital.errors import ModelLoadError
from tests.support.tiny_models import build_model, build_tokenizer


def test_the_cache_directory(tmp_path: Path) -> None:
    assert cache_root(None, {"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "corevital"
    assert cache_root(None, {}) == Path.home() / ".cache" / "corevital"
    assert cache_root(str(tmp_path / "mine"), {"XDG_CACHE_HOME": "/elsewhere"}) == tmp_path / "mine"
    assert cache_root("off", {}) is None and cache_root("OFF", {}) is None


def test_an_entry_is_keyed_by_the_file_transformers_and_dtype(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    data = bytearray(range(256)) * 40_000  # 10 MB: the fingerprint samples it
    gguf.write_bytes(bytes(data))
    first = cache_entry(tmp_path / "c", gguf, transformers_version="5.24.0", dtype="float32")
    assert first == cache_entry(tmp_path / "c", gguf, transformers_version="5.24.0", dtype="float32")
    assert first.directory.parent == tmp_path / "c" / "gguf" and first.directory.name.startswith("model-")
    keys = {
        first.key,
        cache_entry(tmp_path / "c", gguf, transformers_version="5.25.0", dtype="float32").key,
        cache_entry(tmp_path / "c", gguf, transformers_version="5.24.0", dtype="bfloat16").key,
    }
    assert len(keys) == 3
    fingerprint = file_fingerprint(gguf)
    data[len(data) // 2] ^= 0xFF  # a byte inside a sampled block (the middle of the file)
    gguf.write_bytes(bytes(data))
    assert file_fingerprint(gguf) != fingerprint
    gguf.write_bytes(bytes(data) + b"\0")
    assert cache_entry(tmp_path / "c", gguf, transformers_version="5.24.0", dtype="float32").key != first.key


def _source(tmp_path: Path) -> Path:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(1000))
    return gguf


def test_an_entry_is_written_whole_and_reads_back_the_same_model(tmp_path: Path) -> None:
    model, tokenizer = build_model("llama", seed=0), build_tokenizer()
    entry = cache_entry(tmp_path / "c", _source(tmp_path), transformers_version="x", dtype="float32")
    assert not entry.is_complete()
    assert entry.write(model, tokenizer)
    assert entry.is_complete()
    manifest = json.loads((entry.directory / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["key"] == entry.key and "model.safetensors" in manifest["files"]
    assert [p.name for p in entry.directory.parent.iterdir()] == [entry.directory.name]  # no staging left
    again = AutoModelForCausalLM.from_pretrained(entry.directory, dtype=torch.float32)
    ours, theirs = model.state_dict(), again.state_dict()
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name]), name
    reread = AutoTokenizer.from_pretrained(entry.directory)
    assert reread("hello there").input_ids == tokenizer("hello there").input_ids
    # The added tokens are listed in the entry's tokenizer config (a load then reads
    # tokenizer.json once), and the tokenizer read back has the same ones.
    listed = json.loads((entry.directory / TOKENIZER_CONFIG).read_text(encoding="utf-8"))[
        "added_tokens_decoder"
    ]
    assert {int(i): t["content"] for i, t in listed.items()} == {
        i: t.content for i, t in tokenizer.added_tokens_decoder.items()
    }
    assert reread.added_tokens_decoder == tokenizer.added_tokens_decoder
    assert reread.all_special_ids == tokenizer.all_special_ids


def test_a_partial_or_foreign_entry_is_not_complete(tmp_path: Path) -> None:
    entry = cache_entry(tmp_path / "c", _source(tmp_path), transformers_version="x", dtype="float32")
    assert entry.write(build_model("llama", seed=0), build_tokenizer())
    weights = entry.directory / "model.safetensors"
    content = weights.read_bytes()
    weights.write_bytes(content[: len(content) // 2])  # a copy cut short
    assert not entry.is_complete()
    weights.write_bytes(content)
    assert entry.is_complete()
    other = cache_entry(tmp_path / "c", _source(tmp_path), transformers_version="y", dtype="float32")
    (entry.directory / MANIFEST).replace(tmp_path / "manifest")
    assert not entry.is_complete()  # no manifest: a write that never finished
    other.directory.mkdir(parents=True)
    (other.directory / MANIFEST).write_text((tmp_path / "manifest").read_text(), encoding="utf-8")
    assert not other.is_complete()  # another entry's manifest
    entry.discard()
    assert not entry.directory.exists()
    assert [p.name for p in entry.directory.parent.iterdir()] == [other.directory.name]


def test_concurrent_first_writes_leave_one_complete_entry(tmp_path: Path) -> None:
    entry = cache_entry(tmp_path / "c", _source(tmp_path), transformers_version="x", dtype="float32")
    models = [(build_model("llama", seed=0), build_tokenizer()) for _ in range(3)]
    results: list[bool] = []
    barrier = threading.Barrier(len(models))

    def write(model: object, tokenizer: object) -> None:
        barrier.wait()
        results.append(entry.write(model, tokenizer))

    threads = [threading.Thread(target=write, args=pair) for pair in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == [True, True, True]
    assert entry.is_complete()
    assert [p.name for p in entry.directory.parent.iterdir()] == [entry.directory.name]


def test_a_cache_that_cannot_be_written_costs_only_the_speed_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache directory would be", encoding="utf-8")
    entry = cache_entry(blocked, _source(tmp_path), transformers_version="x", dtype="float32")
    with caplog.at_level(logging.WARNING, logger="corevital.capture.gguf_cache"):
        assert entry.write(build_model("llama", seed=0), build_tokenizer()) is False
    assert "GGUF cache not written" in caplog.text
    assert not entry.is_complete()


def _prepared_entry(tmp_path: Path) -> tuple[ModelSpec, Path]:
    """A directory holding a GGUF file whose converted copy is already in the cache (a tiny model)."""
    directory = tmp_path / "models"
    directory.mkdir(parents=True)
    gguf = directory / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(4096))  # never parsed while its converted copy is there
    spec = ModelSpec(model=str(directory), gguf_file="tiny.gguf", device="cpu", cache_dir=str(tmp_path / "c"))
    entry = cache_entry(
        tmp_path / "c", gguf.resolve(), transformers_version=transformers_version(), dtype="float32"
    )
    assert entry.write(build_model("llama", seed=0), build_tokenizer())
    return spec, entry.directory


def test_load_model_reads_the_converted_copy_and_names_the_gguf_file(tmp_path: Path) -> None:
    spec, directory = _prepared_entry(tmp_path)
    loaded = load_model(spec)
    assert loaded.resolved.source == "gguf" and loaded.resolved.gguf_file == "tiny.gguf"
    assert loaded.resolved.location == str(tmp_path / "models")
    assert loaded.model.config.name_or_path == loaded.resolved.location  # not the cache directory
    assert loaded.capabilities.num_layers == build_model("llama", seed=0).config.num_hidden_layers
    reference = build_model("llama", seed=0).state_dict()
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    assert directory.is_dir()


def test_a_broken_entry_is_removed_and_the_gguf_file_read_again(tmp_path: Path) -> None:
    spec, directory = _prepared_entry(tmp_path)
    (directory / "config.json").write_text("{" + " " * 10, encoding="utf-8")  # sizes no longer match
    with pytest.raises(ModelLoadError):  # the stand-in GGUF file cannot be converted
        load_model(spec)
    assert not directory.exists()
    spec, directory = _prepared_entry(tmp_path / "again")
    config = directory / "config.json"
    config.write_bytes(b"{" + b" " * (config.stat().st_size - 1))  # same size, not a config
    with pytest.raises(ModelLoadError):
        load_model(spec)
    assert not directory.exists()


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_write(tmp_path: Path) -> None:
    import os
    import time

    entry = cache_entry(tmp_path / "c", _source(tmp_path), transformers_version="x", dtype="float32")
    parent = entry.directory.parent
    old, recent = parent / ".tmp-killed-abc", parent / ".tmp-writing-now"
    for leftover in (old, recent):
        leftover.mkdir(parents=True)
        (leftover / "model.safetensors").write_bytes(b"partial")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    assert entry.write(build_model("llama", seed=0), build_tokenizer())
    assert not old.exists() and recent.exists()  # a recent one may be another process's write


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2", "t5"])
def test_an_entry_built_directly_is_the_model_from_pretrained_gives(tmp_path: Path, arch: str) -> None:
    """load_converted (meta device, tensors put in place) against from_pretrained on the same entry:
    every parameter and buffer, the tying, both configs and the generated tokens are equal."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    model, tokenizer = build_model(arch, seed=3), build_tokenizer()
    entry = cache_entry(tmp_path / "c", _source(tmp_path), transformers_version="x", dtype="float32")
    assert entry.write(model, tokenizer)
    assert BUFFERS in json.loads((entry.directory / MANIFEST).read_text(encoding="utf-8"))["files"]
    auto = AutoModelForSeq2SeqLM if arch == "t5" else AutoModelForCausalLM
    config = AutoConfig.from_pretrained(entry.directory)
    before = config.to_dict()
    direct = load_converted(entry.directory, auto, config, torch.float32)
    assert direct is not None
    assert config.to_dict() == before  # the caller's config is left as it was
    reference = auto.from_pretrained(entry.directory, config=config, dtype=torch.float32)
    assert type(direct) is type(reference)
    for named in ("named_parameters", "named_buffers"):
        ours = dict(getattr(direct, named)(remove_duplicate=False))
        theirs = dict(getattr(reference, named)(remove_duplicate=False))
        assert ours.keys() == theirs.keys(), named
        for name, tensor in ours.items():
            assert tensor.dtype == theirs[name].dtype and tensor.device == theirs[name].device, name
            assert torch.equal(tensor, theirs[name]), name
            assert tensor.requires_grad == theirs[name].requires_grad, name
    for target, source in reference.get_expanded_tied_weights_keys(all_submodels=True).items():
        assert direct.get_parameter(target) is direct.get_parameter(source), target
    assert direct.config.to_dict() == reference.config.to_dict()
    assert direct.config._attn_implementation == reference.config._attn_implementation
    assert direct.generation_config.to_dict() == reference.generation_config.to_dict()
    direct.eval()
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        ours_tokens = direct.generate(ids, max_new_tokens=6, do_sample=False)
        theirs_tokens = reference.generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(ours_tokens, theirs_tokens)


def test_an_entry_without_recorded_buffers_is_read_with_from_pretrained(tmp_path: Path) -> None:
    spec, directory = _prepared_entry(tmp_path)
    (directory / BUFFERS).unlink()
    from transformers import AutoConfig

    assert (
        load_converted(directory, AutoModelForCausalLM, AutoConfig.from_pretrained(directory), torch.float32)
        is None
    )
    # A file list that no longer matches: the entry is converted again (here: the stand-in fails).
    with pytest.raises(ModelLoadError):
        load_model(spec)
