"""``parsed_once``: one GGUF reader per file and one tensor-name map per architecture, then restored."""

from __future__ import annotations

from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf")

from corevital.capture.gguf_once import parsed_once  # noqa: E402


def _tiny_gguf(path: Path) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_readers_and_name_maps_are_shared_inside_and_restored_after(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    _tiny_gguf(path)
    reader_cls, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # same file, however named
        assert isinstance(first, reader_cls) and first.fields["general.architecture"] is not None
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
        assert gguf.get_tensor_name_map(arch, 2) is not gguf.get_tensor_name_map(arch, 3)
    assert gguf.GGUFReader is reader_cls and gguf.get_tensor_name_map is name_map
    assert gguf.GGUFReader(path) is not first


def test_restored_when_the_load_fails() -> None:
    reader_cls = gguf.GGUFReader
    with pytest.raises(RuntimeError), parsed_once():
        raise RuntimeError("the load failed")
    assert gguf.GGUFReader is reader_cls
