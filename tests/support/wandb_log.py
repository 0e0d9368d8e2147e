"""Reading back what an offline W&B run wrote: its ``run-<id>.wandb`` transaction log.

The file is a LevelDB-style log (a 7-byte header ``:W&B``, magic 0xBEE1, version; then 32 KiB
blocks of records, each with a CRC-32 of its type byte and data, a length and a type: full,
first, middle or last piece) of ``wandb.proto.wandb_internal_pb2.Record`` messages, the format
``wandb sync`` uploads. wandb ships no Python reader of it in the versions we use, so this is one,
checking every record's checksum.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

_pb: Any = wandb_internal_pb2  # generated per protobuf version, without type stubs
Record: Any = _pb.Record

__all__ = ["OfflineRun", "read_records", "wait_for_exit"]

FILE_HEADER = struct.Struct("<4sHB")
RECORD_HEADER = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _crc(kind: int, data: bytes) -> int:
    return zlib.crc32(data, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF


def read_records(path: Path) -> list[Any]:
    """Every record of a ``.wandb`` file, in order; ``ValueError`` on a bad header or checksum."""
    raw = path.read_bytes()
    ident, magic, version = FILE_HEADER.unpack_from(raw, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B transaction log (header {raw[:7]!r}, version {version})")
    records: list[Any] = []
    pos, pieces = FILE_HEADER.size, b""
    while pos + RECORD_HEADER.size <= len(raw):
        room = BLOCK - pos % BLOCK
        if room < RECORD_HEADER.size:
            pos += room  # the block's zero padding
            continue
        checksum, length, kind = RECORD_HEADER.unpack_from(raw, pos)
        if kind == 0 and length == 0:  # padding or the unwritten end of the file
            pos += room
            continue
        data = raw[pos + RECORD_HEADER.size : pos + RECORD_HEADER.size + length]
        if _crc(kind, data) != checksum:
            raise ValueError(f"{path}: bad checksum at byte {pos}")
        pos += RECORD_HEADER.size + length
        if kind == FULL:
            records.append(Record.FromString(data))
        elif kind == FIRST:
            pieces = data
        elif kind == MIDDLE:
            pieces += data
        elif kind == LAST:
            records.append(Record.FromString(pieces + data))
            pieces = b""
        else:
            raise ValueError(f"{path}: unknown record type {kind} at byte {pos}")
    return records


def _item_value(item: Any) -> Any:
    if item.value_json:
        return json.loads(item.value_json)
    return None


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    """What an offline run's transaction log holds, decoded."""

    directory: Path
    records: list[Any] = field(default_factory=list)

    @classmethod
    def read(cls, directory: Path) -> OfflineRun:
        [log] = list(directory.glob("run-*.wandb"))
        return cls(directory, read_records(log))

    def of(self, kind: str) -> list[Any]:
        return [getattr(r, kind) for r in self.records if r.WhichOneof("record_type") == kind]

    def history(self) -> list[dict[str, Any]]:
        """Each logged row as a dict (wandb's own ``_step``, ``_runtime``, ``_timestamp`` included)."""
        return [{_key(item): _item_value(item) for item in h.item} for h in self.of("history")]

    def summary(self) -> dict[str, Any]:
        """The run summary as of the last summary record (updates merged in order)."""
        merged: dict[str, Any] = {}
        for summary in self.of("summary"):
            for item in summary.update:
                merged[_key(item)] = _item_value(item)
            for item in summary.remove:
                merged.pop(_key(item), None)
        return merged

    def config(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for config in self.of("config"):
            for item in config.update:
                merged[_key(item)] = _item_value(item)
        return merged

    def metrics(self) -> dict[str, Any]:
        """define_metric records by name (or glob name)."""
        return {m.name or m.glob_name: m for m in self.of("metric")}

    def artifacts(self) -> list[Any]:
        return self.of("artifact")

    def run(self) -> Any:
        [run] = self.of("run")
        return run


def wait_for_exit(directory: Path, timeout: float = 30.0) -> OfflineRun:
    """The run's log once its ``exit`` record is on disk (wandb's service writes it after finish())."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            run = OfflineRun.read(directory)
        except (ValueError, struct.error):  # caught mid-write: a partial record
            run = None
        if run is not None and run.of("exit"):
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"no exit record in {directory} after {timeout} s")
        time.sleep(0.05)
