"""Checking model files before a library parses them: GGUF headers and safetensors headers.

A GGUF or safetensors file is read by libraries that trust its header: a crafted tensor count,
string length or array length makes them loop, allocate or fail with whatever exception happens
to come first. :func:`check_model_files` reads each local file's header with every length checked
against the bytes the file holds, and refuses a file that does not add up (a header that claims
more than the file has, a truncated data section, an unknown tensor type) with a one-line
:class:`~corevital.errors.ModelLoadError` (exit 3) before transformers sees it.
:data:`MODEL_FILE_ERRORS` are the exceptions a model library raises for a bad file (a pickle the
safe loader refused among them), which the loader turns into the same error.
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
import struct
from pathlib import Path
from typing import Final

from corevital.errors import ModelLoadError

__all__ = [
    "MODEL_FILE_ERRORS",
    "TOKENIZER_FILE_ERRORS",
    "check_gguf_file",
    "check_model_files",
    "check_safetensors_file",
]


def _library_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [
        OSError,
        ValueError,
        KeyError,
        RuntimeError,
        EOFError,
        IndexError,
        struct.error,
        pickle.UnpicklingError,  # torch.load(weights_only=True) refusing a pickle
    ]
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors comes with transformers
        pass
    else:
        errors.append(SafetensorError)
    return tuple(errors)


MODEL_FILE_ERRORS: Final = _library_errors()
"""What a model library raises for a file that is not a loadable model (never CoreVital's bugs)."""
TOKENIZER_FILE_ERRORS: Final[tuple[type[BaseException], ...]] = (*MODEL_FILE_ERRORS, TypeError)
"""The same for a tokenizer (whose loader raises TypeError for a malformed tokenizer file)."""

GGUF_MAGIC: Final = b"GGUF"
_GGUF_VERSIONS: Final = (2, 3)
_MAX_DIMS: Final = 4  # GGML_MAX_DIMS
_MAX_ARRAY_NESTING: Final = 8
_SCALAR_SIZES: Final = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING: Final = 8
_ARRAY: Final = 9
_UINT32: Final = 4
_DEFAULT_ALIGNMENT: Final = 32
_SAFETENSORS_MAX_HEADER: Final = 100 * 1024 * 1024  # the safetensors library's own bound
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")


def check_model_files(
    location: str | Path, gguf_file: str | None = None, gguf_path: Path | None = None
) -> None:
    """Check a model's files before they are parsed: the GGUF file at ``gguf_path`` when the model
    is a GGUF file (``gguf_file`` set; by default ``location/gguf_file``; a file not on this machine
    yet is left to the loader), else
    every ``*.safetensors`` file of ``location`` when it is a local directory (a Hub id is left to
    the loader)."""
    if gguf_file is not None:
        path = gguf_path if gguf_path is not None else Path(location) / gguf_file
        if path.is_file():
            check_gguf_file(path)
        return
    directory = Path(location)
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.safetensors")):
        if path.is_file():
            check_safetensors_file(path)


class _Header:
    """Sequential reads of a file's header (memory-mapped), each length checked against the file."""

    def __init__(self, data: mmap.mmap, path: Path) -> None:
        self.data = data
        self.size = len(data)
        self.pos = 0
        self.path = path

    def refuse(self, problem: str) -> ModelLoadError:
        return ModelLoadError(f"{self.path} is not a valid GGUF file: {problem}; refused")

    def skip(self, count: int, what: str) -> int:
        """Move past ``count`` bytes; return where they start."""
        if count < 0 or count > self.size - self.pos:
            raise self.refuse(f"{what} claims {count} bytes, beyond the end of the file")
        start = self.pos
        self.pos += count
        return start

    def take(self, count: int, what: str) -> bytes:
        start = self.skip(count, what)
        return self.data[start : start + count]

    def u32(self, what: str) -> int:
        value: int = _U32.unpack_from(self.data, self.skip(4, what))[0]
        return value

    def u64(self, what: str) -> int:
        value: int = _U64.unpack_from(self.data, self.skip(8, what))[0]
        return value

    def string(self, what: str) -> None:
        self.skip(self.u64(f"the length of {what}"), what)

    def value(self, kind: int, what: str, depth: int = 0) -> int | None:
        """Read (or skip) one value of type ``kind``; a UINT32 value is returned (the alignment)."""
        if kind == _STRING:
            self.string(what)
            return None
        if kind == _ARRAY:
            if depth >= _MAX_ARRAY_NESTING:
                raise self.refuse(f"{what} nests arrays deeper than {_MAX_ARRAY_NESTING}")
            item = self.u32(f"the item type of {what}")
            count = self.u64(f"the length of {what}")
            if item in _SCALAR_SIZES:
                if count > (self.size - self.pos) // _SCALAR_SIZES[item]:
                    raise self.refuse(f"{what} claims {count} items, beyond the end of the file")
                self.skip(count * _SCALAR_SIZES[item], what)
                return None
            if item == _STRING:
                self.pos = _skip_strings(self, count, what)
                return None
            if item != _ARRAY:
                raise self.refuse(f"{what} has an unknown item type {item}")
            if count > (self.size - self.pos) // 8:  # every item is at least a length
                raise self.refuse(f"{what} claims {count} items, beyond the end of the file")
            for _ in range(count):
                self.value(item, what, depth + 1)
            return None
        if kind not in _SCALAR_SIZES:
            raise self.refuse(f"{what} has an unknown value type {kind}")
        data = self.take(_SCALAR_SIZES[kind], what)
        return int(_U32.unpack(data)[0]) if kind == _UINT32 else None


def _skip_strings(header: _Header, count: int, what: str) -> int:
    """Past ``count`` strings from the current position (a tight loop: vocabularies hold 10^5)."""
    data, size, pos, unpack = header.data, header.size, header.pos, _U64.unpack_from
    if count > (size - pos) // 8:  # every string is at least its length
        raise header.refuse(f"{what} claims {count} items, beyond the end of the file")
    for _ in range(count):
        if pos + 8 > size:
            raise header.refuse(f"the file ends inside {what}")
        pos += 8 + unpack(data, pos)[0]
    if pos > size:
        raise header.refuse(f"{what} claims bytes beyond the end of the file")
    return pos


def check_gguf_file(path: str | Path) -> None:
    """Refuse a GGUF file whose header does not fit in the file (see the module docstring)."""
    location = Path(path)
    try:
        with location.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size < 24:
                raise ModelLoadError(
                    f"{location} is not a valid GGUF file: shorter than a GGUF header; refused"
                )
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                _check_gguf(_Header(data, location))
    except OSError as exc:
        raise ModelLoadError(f"cannot read GGUF file {location}: {exc.strerror or exc}") from None


def _check_gguf(header: _Header) -> None:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    if header.take(4, "the magic") != GGUF_MAGIC:
        raise header.refuse("no GGUF magic at its start")
    version = header.u32("the version")
    if version not in _GGUF_VERSIONS:
        raise header.refuse(f"version {version} (readable: 2, 3)")
    tensor_count = header.u64("the tensor count")
    kv_count = header.u64("the metadata count")
    if kv_count > header.size // 13:  # a key length, a key byte, a type and a 1-byte value
        raise header.refuse(f"{kv_count} metadata entries cannot fit in {header.size} bytes")
    if tensor_count > header.size // 32:  # a name length, a name byte, dims, a type and an offset
        raise header.refuse(f"{tensor_count} tensors cannot fit in {header.size} bytes")
    alignment = _DEFAULT_ALIGNMENT
    for index in range(kv_count):
        key = header.take(header.u64(f"the length of metadata key {index}"), f"metadata key {index}")
        kind = header.u32(f"the type of metadata {index}")
        value = header.value(kind, f"metadata {key[:80].decode('utf-8', 'replace')!r}")
        if key == b"general.alignment" and value is not None:
            alignment = value
    if alignment == 0 or alignment & (alignment - 1):
        raise header.refuse(f"alignment {alignment} is not a power of two")
    tensors: list[tuple[str, int, int, int]] = []
    for index in range(tensor_count):
        length = header.u64(f"the length of the name of tensor {index}")
        name = header.take(min(length, 80), "a tensor name").decode("utf-8", "replace")
        header.skip(length - min(length, 80), f"the name of tensor {name!r}")
        dims = header.u32(f"the dimension count of tensor {name!r}")
        if dims > _MAX_DIMS:
            raise header.refuse(f"tensor {name!r} has {dims} dimensions (at most {_MAX_DIMS})")
        elements = 1
        for _ in range(dims):
            elements *= header.u64(f"a dimension of tensor {name!r}")
        kind = header.u32(f"the type of tensor {name!r}")
        offset = header.u64(f"the offset of tensor {name!r}")
        tensors.append((name, elements, kind, offset))
    start = -(-header.pos // alignment) * alignment
    for name, elements, kind, offset in tensors:
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise header.refuse(f"tensor {name!r} has an unknown type {kind}") from None
        end = start + offset + elements // block * type_size
        if elements % block or end > header.size:
            raise header.refuse(
                f"tensor {name!r} lies beyond the end of the file (needs {end} bytes, has {header.size}): "
                f"truncated?"
            )


def check_safetensors_file(path: str | Path) -> None:
    """Refuse a safetensors file whose header is not JSON or claims bytes the file does not hold."""
    location = Path(path)

    def refuse(problem: str) -> ModelLoadError:
        return ModelLoadError(f"{location} is not a valid safetensors file: {problem}; refused")

    try:
        with location.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 8:
                raise refuse(f"{size} bytes, shorter than its header length")
            length: int = struct.unpack("<Q", handle.read(8))[0]
            if length > min(size - 8, _SAFETENSORS_MAX_HEADER):
                raise refuse(f"the header claims {length} bytes, the file holds {size - 8} after it")
            text = handle.read(length)
    except OSError as exc:
        raise ModelLoadError(f"cannot read safetensors file {location}: {exc.strerror or exc}") from None
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deeply, a huge number
        raise refuse("the header is not JSON") from None
    if not isinstance(header, dict):
        raise refuse("the header is not a JSON object")
    data = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(value, int) and value >= 0 for value in offsets)
            or offsets[0] > offsets[1]
        ):
            raise refuse(f"tensor {name[:80]!r} has no valid data_offsets")
        if offsets[1] > data:
            raise refuse(
                f"tensor {name[:80]!r} ends at byte {offsets[1]} of a data section of {data} bytes "
                "(truncated?)"
            )
