"""Hostile inputs for the readers' tests and fuzzers: compression bombs, deep JSON, huge numbers,
and running a function as an unprivileged user (for permission tests, which root would pass)."""

from __future__ import annotations

import os
import pwd
import sqlite3
import zlib
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = DATA / "golden_report_small.json"


_MIB = 1 << 20


def _raw_deflate_of_zeros(mebibytes: int) -> bytes:
    """A raw deflate stream of ``mebibytes`` MiB of zeros, built from one compressed MiB repeated
    (a full flush between blocks makes each one the same bytes), so a GiB bomb takes milliseconds."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = bytes(_MIB)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeated = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert repeated == again
    end = compressor.flush()
    return first + repeated * (mebibytes - 1) + end


def _zeros_checksums(mebibytes: int) -> tuple[int, int]:
    block = bytes(_MIB)
    adler, crc = 1, 0
    for _ in range(mebibytes):
        adler, crc = zlib.adler32(block, adler), zlib.crc32(block, crc)
    return adler, crc


def zlib_bomb(mebibytes: int) -> bytes:
    """A valid zlib stream of ``mebibytes`` MiB of zeros (about 1 KiB per MiB)."""
    adler, _ = _zeros_checksums(mebibytes)
    return b"\x78\xda" + _raw_deflate_of_zeros(mebibytes) + adler.to_bytes(4, "big")


def gzip_bomb(mebibytes: int) -> bytes:
    """A valid gzip file of ``mebibytes`` MiB of zeros."""
    _, crc = _zeros_checksums(mebibytes)
    size = (mebibytes * _MIB) % 2**32
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + _raw_deflate_of_zeros(mebibytes) + crc.to_bytes(4, "little") + size.to_bytes(4, "little")


def deep_json(depth: int) -> str:
    """A report-shaped object whose ``extensions`` holds arrays nested ``depth`` deep."""
    return '{"schema_version": "0.5.0", "extensions": {"x": ' + "[" * depth + "]" * depth + "}}"


def huge_integer_json(digits: int) -> str:
    """A report-shaped object with an integer of ``digits`` digits."""
    return '{"schema_version": "0.5.0", "trace_id": ' + "7" * digits + "}"


def store_with_body(path: Path, trace_id: str, body: object) -> None:
    """Replace the stored body of ``trace_id`` in a CoreVital database with ``body`` (any SQLite value)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("UPDATE reports SET report_zlib = ? WHERE trace_id = ?", (body, trace_id))
        conn.commit()
    finally:
        conn.close()


def unprivileged_dir(parent: Path, name: str) -> Path:
    """A directory the user ``nobody`` may traverse (under ``parent``, which must be traversable)."""
    directory = parent / name
    directory.mkdir(mode=0o755)
    return directory


def run_as_nobody(function: Callable[[], str]) -> str:
    """``function()`` run as the user ``nobody`` (a forked child when we are root; here otherwise).

    Returns its result, or ``"<ExceptionType>: message"`` when it raised.
    """
    if os.geteuid() != 0:
        try:
            return function()
        except Exception as error:  # noqa: BLE001 - reported to the caller as text
            return f"{type(error).__name__}: {error}"
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, run, report, exit without running pytest's teardown
        os.close(read_end)
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            message = function()
        except BaseException as error:  # noqa: BLE001
            message = f"{type(error).__name__}: {error}"
        os.write(write_end, message.encode("utf-8", "replace"))
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode("utf-8")
