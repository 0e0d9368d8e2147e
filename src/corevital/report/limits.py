"""Bounds for everything CoreVital reads from a file or a database it did not just write.

A stored report is inflated incrementally (:func:`inflate`): the output is produced in chunks and
the read stops as soon as it passes ``limit`` bytes (:data:`MAX_REPORT_BYTES` unless told), so a
compression bomb costs at most the limit in memory. A JSON text is checked before it is trusted
(:func:`check_json_text`): nesting deeper than :data:`MAX_JSON_DEPTH` and numbers longer than
:data:`MAX_NUMBER_DIGITS` digits are refused. Text files given by the user (prompts, labels, RAG
context) are read as UTF-8 with :func:`read_text_file`, which names the file and the byte offset
of the first byte that is not UTF-8 text. Every refusal is a one-line error of the caller's class.
"""

from __future__ import annotations

import re
import zlib
from itertools import accumulate
from pathlib import Path
from typing import Final

from corevital.errors import CoreVitalError, ReportError

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_NUMBER_DIGITS",
    "MAX_REPORT_BYTES",
    "MAX_TEXT_FILE_BYTES",
    "check_json_text",
    "decode_utf8",
    "inflate",
    "read_bounded",
    "read_text_file",
    "stored_bytes",
]

MAX_REPORT_BYTES: Final = 256 * 1024 * 1024
"""The most bytes one report may take once inflated (and a plain stored report's size)."""
MAX_JSON_DEPTH: Final = 256
"""The deepest nesting of arrays and objects a JSON document may have."""
MAX_NUMBER_DIGITS: Final = 4300
"""The most digits one JSON number may have (Python's own bound for converting an int)."""
MAX_TEXT_FILE_BYTES: Final = 256 * 1024 * 1024
"""The largest prompts, labels or RAG context file read."""

_CHUNK: Final = 1 << 20
_GZIP_MAGIC: Final = b"\x1f\x8b"
_MB: Final = 1024 * 1024
# A JSON string: always matches at a quote (to the closing quote or the end of the text), possessive,
# so that the scan is linear even on text that is not JSON; the loop unrolled (runs of plain
# characters taken at once) is twice as fast as one alternation per character.
_STRING = re.compile(r'"[^"\\]*+(?:\\.?[^"\\]*+)*+"?', re.DOTALL)
_STRING_BYTES = re.compile(_STRING.pattern.encode(), re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_NOT_BRACKET_BYTES = re.compile(rb"[^\[\]{}]+")
# A run of digits longer than the bound, tried only where a run starts (the lookbehind): each digit
# is looked at a bounded number of times, where a bare ``[0-9]{4301,}`` rescans a run from each of
# its digits (a text of 4,300-digit numbers took seconds per 100 kB).
_LONG_NUMBER = re.compile(f"(?<![0-9])[0-9]{{{MAX_NUMBER_DIGITS + 1}}}")
_LONG_NUMBER_BYTES = re.compile(_LONG_NUMBER.pattern.encode())
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1, 91: 1, 123: 1, 93: -1, 125: -1}


def _size(limit: int) -> str:
    return f"{limit // _MB} MB" if limit >= _MB and limit % _MB == 0 else f"{limit} bytes"


def stored_bytes(value: object, what: str, *, error: type[CoreVitalError] = ReportError) -> bytes:
    """``value`` (a database cell where a blob is expected) as bytes; anything else is refused.

    An INTEGER cell is never handed to ``bytes()`` (which would allocate that many zero bytes).
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:  # text read with ``surrogateescape`` (bytes that are not UTF-8) back to its own bytes
            return value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass")
    kind = "NULL" if value is None else type(value).__name__
    raise error(f"{what} holds a {kind} value where a stored report is expected; refused")


def inflate(
    data: bytes,
    what: str,
    *,
    limit: int = MAX_REPORT_BYTES,
    error: type[CoreVitalError] = ReportError,
) -> bytes:
    """``data`` decompressed (gzip or zlib, told apart by their magic bytes; anything else is
    returned as it is), never holding more than ``limit`` output bytes.

    Raises ``error`` when the output would pass ``limit`` ("<what> inflates beyond 256 MB; refused"),
    and when the stream is corrupt or truncated.
    """
    if data.startswith(_GZIP_MAGIC):
        return _inflate_stream(data, what, limit, error, gzip=True)
    if data[:1] == b"\x78":
        return _inflate_stream(data, what, limit, error, gzip=False)
    if len(data) > limit:
        raise error(f"{what} is larger than {_size(limit)}; refused")
    return data


def _inflate_stream(data: bytes, what: str, limit: int, error: type[CoreVitalError], *, gzip: bool) -> bytes:
    chunks: list[bytes] = []  # joined once at the end: a refused bomb never holds more than the limit
    total = 0
    pending = data
    try:
        while True:  # one zlib stream, or each member of a gzip file
            stream = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
            chunk = stream.decompress(pending, _CHUNK)
            while True:
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise error(f"{what} inflates beyond {_size(limit)}; refused")
                if stream.eof:
                    break
                tail = stream.unconsumed_tail
                chunk = stream.decompress(tail, _CHUNK)
                if not chunk and not tail:  # wants more input than there is
                    raise error(f"{what} is truncated; refused")
            pending = stream.unused_data
            if not gzip or not pending.strip(b"\x00"):
                break
            if not pending.startswith(_GZIP_MAGIC):
                raise error(f"{what} has trailing garbage after its compressed data; refused")
    except zlib.error as exc:
        raise error(f"{what} is corrupt ({exc})") from None
    return b"".join(chunks)


def check_json_text(
    text: str | bytes,
    what: str,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    error: type[CoreVitalError] = ReportError,
) -> None:
    """Refuse a JSON text nested deeper than ``max_depth`` or with a number of more than
    :data:`MAX_NUMBER_DIGITS` digits, before it is parsed. Linear in the text, on any input."""
    if isinstance(text, str):
        bare = _STRING.sub("", text)
        long_number = _LONG_NUMBER.search(bare) is not None
        brackets: str | bytes = _NOT_BRACKET.sub("", bare)
    else:
        bare_bytes = _STRING_BYTES.sub(b"", text)
        long_number = _LONG_NUMBER_BYTES.search(bare_bytes) is not None
        brackets = _NOT_BRACKET_BYTES.sub(b"", bare_bytes)
    if long_number:
        raise error(f"{what}: a number has more than {MAX_NUMBER_DIGITS} digits; refused")
    if len(brackets) > max_depth:
        for depth in accumulate(map(_STEP.__getitem__, brackets)):
            if depth > max_depth:  # stops at the first level too deep
                raise error(f"{what}: JSON nested deeper than {max_depth} levels; refused")


def decode_utf8(data: bytes, what: str, *, error: type[CoreVitalError], offset: int = 0) -> str:
    """``data`` as UTF-8 text (a leading BOM dropped); a byte that is not UTF-8, or a NUL byte (a
    binary file), is ``error`` naming ``what`` and the byte offset in the file (``data`` starting
    at ``offset``)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {offset + exc.start} "
            f"({exc.reason})"
        ) from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise error(f"{what} is not text: a NUL byte at offset {offset + nul} (a binary file?)")
    return text.removeprefix("\ufeff") if offset == 0 else text


def read_bounded(path: str | Path, limit: int, what: str, *, error: type[CoreVitalError]) -> bytes:
    """The first ``limit + 1`` bytes of the file at ``path`` (more than ``limit`` tells the caller the
    file is too large); unreadable: ``error`` "cannot read <what>: <reason>" (``what`` empty: "cannot
    read: <reason>", for a caller that names the file itself)."""
    try:
        with Path(path).open("rb") as handle:
            return handle.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read{' ' + what if what else ''}: {exc.strerror or exc}") from None


def read_text_file(
    path: str | Path, what: str, *, error: type[CoreVitalError], limit: int = MAX_TEXT_FILE_BYTES
) -> str:
    """The UTF-8 text of the file at ``path`` (``what`` names it in errors: "prompts file x.txt").

    Unreadable, larger than ``limit``, not UTF-8 or binary: a one-line ``error``.
    """
    data = read_bounded(path, limit, what, error=error)
    if len(data) > limit:
        raise error(f"{what} is larger than {_size(limit)}; refused")
    return decode_utf8(data, what, error=error)
