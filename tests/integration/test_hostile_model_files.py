"""Hostile model files are a model error (ModelLoadError, exit 3, one line), never "internal error".

Each file is handed to :func:`corevital.capture.loading.load_model` as a user would name it: a
truncated safetensors file, GGUF files with a crafted header (a huge tensor count, string length or
array length, a tensor beyond the end of the file) and a pickle the safe loader refuses.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import pytest

from corevital.capture.loading import ModelSpec, load_model
from corevital.capture.model_files import check_gguf_file, check_safetensors_file
from corevital.errors import ModelLoadError
from tests.support.tiny_models import save_tiny_model

gguf = pytest.importorskip("gguf")


def _load_error(spec: ModelSpec) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as caught:
        load_model(spec)
    error = caught.value
    assert error.exit_code == 3
    assert "\n" not in str(error)
    return error


def _gguf_spec(path: Path) -> ModelSpec:
    return ModelSpec(model=str(path.parent), gguf_file=path.name, device="cpu", cache_dir="off")


def _string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _gguf_header(tensors: int, kvs: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, kvs)


def _tiny_gguf(path: Path, *, with_tensor: bool = True) -> None:
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    if with_tensor:
        writer.add_tensor("token_embd.weight", np.ones((64, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_truncated_safetensors_file_is_a_model_error(tmp_path: Path) -> None:
    directory = save_tiny_model("gpt2", tmp_path / "tiny")
    weights = directory / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    error = _load_error(ModelSpec(model=str(directory), device="cpu"))
    assert "model.safetensors is not a valid safetensors file" in str(error)
    assert "truncated" in str(error)


def test_a_safetensors_header_longer_than_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ModelLoadError, match="the header claims 1000000000000 bytes"):
        check_safetensors_file(path)
    path.write_bytes(struct.pack("<Q", 5) + b"[[[[[")
    with pytest.raises(ModelLoadError, match="the header is not JSON"):
        check_safetensors_file(path)


def test_a_gguf_header_with_a_huge_tensor_count_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "crafted.gguf"
    path.write_bytes(_gguf_header(tensors=2**62, kvs=0) + b"\0" * 64)
    error = _load_error(_gguf_spec(path))
    assert "tensors cannot fit" in str(error)


def test_a_gguf_header_with_a_huge_string_length_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "crafted.gguf"
    key = _string(b"general.architecture")
    path.write_bytes(_gguf_header(0, 1) + key + struct.pack("<IQ", 8, 2**60) + b"llama")
    error = _load_error(_gguf_spec(path))
    assert "beyond the end of the file" in str(error)


def test_a_gguf_header_with_a_huge_array_length_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "crafted.gguf"
    key = _string(b"tokenizer.ggml.tokens")
    path.write_bytes(_gguf_header(0, 1) + key + struct.pack("<IIQ", 9, 8, 2**40) + _string(b"a"))
    error = _load_error(_gguf_spec(path))
    assert "claims 1099511627776 items" in str(error)
    path.write_bytes(_gguf_header(0, 1) + key + struct.pack("<IIQ", 9, 6, 2**61))  # float32 items
    assert "beyond the end of the file" in str(_load_error(_gguf_spec(path)))


def test_a_gguf_file_cut_inside_its_tensor_data_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    _tiny_gguf(path)
    check_gguf_file(path)  # the whole file is fine
    os.truncate(path, path.stat().st_size - 100)
    error = _load_error(_gguf_spec(path))
    assert "'token_embd.weight' lies beyond the end of the file" in str(error)


def test_a_file_that_is_not_gguf_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert "no GGUF magic" in str(_load_error(_gguf_spec(path)))


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /dev/null",))


def test_a_pickle_the_safe_loader_refuses_is_a_model_error(tmp_path: Path) -> None:
    directory = save_tiny_model("gpt2", tmp_path / "tiny")
    (directory / "model.safetensors").unlink()
    with (directory / "pytorch_model.bin").open("wb") as handle:
        pickle.dump({"weight": _Exploit()}, handle)
    error = _load_error(ModelSpec(model=str(directory), device="cpu"))
    assert "cannot load the model weights" in str(error)
