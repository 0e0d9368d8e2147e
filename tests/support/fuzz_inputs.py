"""Inputs for the fuzzers of tests/fuzz, made from one ``random.Random``.

Each maker takes a seeded ``random.Random`` and returns one input: raw bytes, generated JSON and
YAML documents, mutations of the golden report (values replaced or dropped anywhere, bytes cut,
flipped or inserted, nesting up to 20,000 deep, numbers up to 6,000 digits), plain or zlib-, gzip-
or truncated-gzip-compressed, SQLite cell values, config files and prompts/labels files.

The fuzzers draw the seed of a batch of inputs from hypothesis and make the inputs here: drawing
every value through hypothesis costs 5-50 ms per input (its bookkeeping of each choice), ten to a
hundred times what most readers take, so 10^5 inputs per reader would take hours; from a seed they
cost microseconds. The same seed always gives the same inputs.
"""

from __future__ import annotations

import gzip
import json
import random
import zlib
from collections.abc import Callable
from typing import Any

import yaml

from tests.support.hostile import GOLDEN

GOLDEN_TEXT = GOLDEN.read_text(encoding="utf-8")
GOLDEN_DOCUMENT: dict[str, Any] = json.loads(GOLDEN_TEXT)
COMPRESSIONS = ("plain", "zlib", "gzip", "truncated-gzip")

# Characters a generated string is made of: mostly ASCII, then line breaks and control characters,
# other Unicode (accents, CJK, bidirectional overrides, astral), and lone surrogates.
_ASCII = [chr(code) for code in range(32, 127)]
_SPECIAL = ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u202e", "\ufeff", "\\", '"']
_UNICODE = ["é", "ß", "Ω", "中", "文", "🙂", "\U0001f600", "\u0301", "\uffff", "\U0010ffff"]
_SURROGATES = ["\ud800", "\udc00", "\udfff"]
_EDGE_TEXTS = ["", "null", "NaN", "Infinity", "0", "-1", "1e999", "true", "trace_id", "schema_version"]
_EDGE_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64, 2**70, -(2**70)]
_EDGE_FLOATS = [0.0, -0.0, 0.5, 1e-300, 5e-324, 1e308, 1.7976931348623157e308, float("nan")]
_EDGE_FLOATS += [float("inf"), float("-inf")]


def text(rng: random.Random, max_size: int = 20, *, surrogates: bool = True) -> str:
    """A string of up to ``max_size`` characters."""
    if rng.random() < 0.1:
        return rng.choice(_EDGE_TEXTS)
    pools = [_ASCII, _ASCII, _ASCII, _SPECIAL, _UNICODE] + ([_SURROGATES] if surrogates else [])
    return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, max_size)))


def binary(rng: random.Random, max_size: int) -> bytes:
    """Up to ``max_size`` random bytes (sometimes only zeros or only 0xff)."""
    size = rng.randint(0, max_size)
    shape = rng.random()
    if shape < 0.05:
        return bytes(size)
    if shape < 0.1:
        return b"\xff" * size
    return rng.randbytes(size)


def integer(rng: random.Random, bound: int = 2**70) -> int:
    if rng.random() < 0.3:
        return max(-bound, min(bound, rng.choice(_EDGE_INTS)))
    if rng.random() < 0.6:
        return rng.randint(-1000, 1000)
    return rng.randint(-bound, bound)


def floating(rng: random.Random, *, nan: bool = True) -> float:
    if rng.random() < 0.4:
        value = rng.choice(_EDGE_FLOATS)
        return 0.0 if value != value and not nan else value
    return rng.uniform(-1e6, 1e6) * 10.0 ** rng.randint(-30, 30)


def json_scalar(rng: random.Random) -> Any:
    kind = rng.randrange(5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return integer(rng)
    if kind == 3:
        return floating(rng)
    return text(rng)


def json_value(rng: random.Random, leaves: int = 12) -> Any:
    """A scalar, or lists and objects of them (at most ``leaves`` scalars in all)."""
    budget = [rng.randint(1, leaves)]

    def make(depth: int) -> Any:
        if budget[0] <= 1 or depth > 6 or rng.random() < 0.5:
            budget[0] -= 1
            return json_scalar(rng)
        if rng.random() < 0.5:
            return [make(depth + 1) for _ in range(rng.randint(0, 4)) if budget[0] > 0]
        return {text(rng, 12): make(depth + 1) for _ in range(rng.randint(0, 4)) if budget[0] > 0}

    return make(0)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document[:3]):
            found += _paths(value, (*prefix, index))
    return found


GOLDEN_PATHS = _paths(GOLDEN_DOCUMENT)[1:]
_DROP = object()


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    """``document`` with the value at ``path`` replaced (dropped for ``_DROP``); unchanged when a
    previous change removed the path."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict) and head in document:
        copy: Any = dict(document)
    elif isinstance(document, list) and isinstance(head, int) and head < len(document):
        copy = list(document)
    else:
        return document
    if not rest and value is _DROP:
        del copy[head]
    else:
        copy[head] = _replaced(copy[head], rest, value)
    return copy


def mutate_bytes(rng: random.Random, data: bytes, changes: int = 4) -> bytes:
    """``data`` with 1 to ``changes`` cuts, flipped bytes or inserted bytes."""
    mutable = bytearray(data)
    for _ in range(rng.randint(1, changes)):
        at = rng.randint(0, len(mutable))
        operation = rng.randrange(3)
        if operation == 0:
            del mutable[at : at + rng.randint(1, 200)]
        elif operation == 1 and at < len(mutable):
            mutable[at] = rng.randrange(256)
        else:
            mutable[at:at] = rng.randbytes(rng.randint(1, 8))
    return bytes(mutable)


def mutated_report(rng: random.Random) -> bytes:
    """The golden report with values replaced or dropped, nested deeply, given a huge number, or
    its bytes cut, flipped or extended."""
    kind = rng.choice(("replace", "drop", "bytes", "deep", "number"))
    if kind in ("replace", "drop"):
        document: Any = GOLDEN_DOCUMENT
        for _ in range(rng.randint(1, 3)):
            value = _DROP if kind == "drop" else json_value(rng)
            document = _replaced(document, rng.choice(GOLDEN_PATHS), value)
        return json.dumps(document, allow_nan=True).encode()
    if kind == "deep":
        depth = rng.randint(200, 20_000)
        opener, closer = rng.choice((("[", "]"), ('{"a":', "}")))
        return (GOLDEN_TEXT.rstrip()[:-1] + ', "x": ' + opener * depth + "1" + closer * depth + "}").encode()
    if kind == "number":
        digits = rng.randint(300, 6_000)
        return GOLDEN_TEXT.replace('"trace_id"', f'"n": {"9" * digits}, "trace_id"', 1).encode()
    return mutate_bytes(rng, GOLDEN_TEXT.encode())


def report_bytes(rng: random.Random) -> bytes:
    """Random bytes, a generated JSON document, or a mutated golden report."""
    kind = rng.randrange(3)
    if kind == 0:
        return binary(rng, 512)
    if kind == 1:
        return json.dumps(json_value(rng), allow_nan=True).encode()
    return mutated_report(rng)


def compressed(data: bytes, how: str) -> bytes:
    if how == "zlib":  # level 1: the fastest, the same stream format
        return zlib.compress(data, 1)
    if how == "gzip":
        return gzip.compress(data, 1, mtime=0)
    if how == "truncated-gzip":
        return gzip.compress(data, 1, mtime=0)[: max(1, len(data) // 3)]
    return data


def report_file(rng: random.Random) -> bytes:
    """A report's bytes, plain or compressed (truncated gzip included)."""
    return compressed(report_bytes(rng), rng.choice(COMPRESSIONS))


def cell_value(rng: random.Random) -> Any:
    """Any value an SQLite cell can hold: NULL, INTEGER, REAL, TEXT or BLOB (a report's among them)."""
    kind = rng.randrange(8)
    if kind == 0:
        return None
    if kind == 1:
        return integer(rng, 2**63 - 1)
    if kind == 2:
        return floating(rng, nan=False)
    if kind == 3:
        return text(rng, 40, surrogates=False)
    if kind == 4:
        return binary(rng, 64)
    if kind == 5:
        return report_bytes(rng)
    if kind == 6:
        return report_bytes(rng).decode("utf-8", "replace")
    return report_file(rng)


# --- config files ---------------------------------------------------------------------------------

_YAML_WORDS = ["auto", "cpu", "sqlite", "full", "summary", "inf", "-1", "1e999", "0x10", "~", "yes"]
_SECTIONS = ["model", "generation", "summaries", "sink", "device", "logging", "capture", "prompt_telemetry"]
_ORIGINAL_KEYS = ["hf_id", "max_new_tokens", "temperature", "seed", "requested", "type"]


def yaml_scalar(rng: random.Random) -> Any:
    if rng.random() < 0.15:
        return rng.choice(_YAML_WORDS)
    value = json_scalar(rng)
    return text(rng, surrogates=False) if isinstance(value, str) else value


def yaml_value(rng: random.Random) -> Any:
    value = json_value(rng, leaves=8)
    return _without_surrogates(value)


def _without_surrogates(value: Any) -> Any:
    """YAML cannot hold a lone surrogate: such text is replaced."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_without_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_without_surrogates(key): _without_surrogates(item) for key, item in value.items()}
    return value


def _dump(mapping: Any, rng: random.Random) -> bytes:
    """YAML text of ``mapping``, Unicode escaped or raw (the C emitter where there is one: faster)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(mapping, Dumper=dumper, allow_unicode=rng.random() < 0.5).encode()


def config_file(rng: random.Random, setting_names: list[str]) -> bytes:
    """A config file: settings (known or made-up names) with any values, the original CoreVital's
    nested layout, random text or bytes, or ``[`` nested up to 20,000 deep."""
    kind = rng.choice(("settings", "settings", "original", "text", "bytes", "deep"))
    if kind == "settings":
        mapping: dict[Any, Any] = {}
        for _ in range(rng.randint(0, 5)):
            key = rng.choice(setting_names) if rng.random() < 0.8 else text(rng, 10, surrogates=False)
            mapping[key] = yaml_scalar(rng) if rng.random() < 0.6 else yaml_value(rng)
        return _dump(mapping, rng)
    if kind == "original":
        original: dict[str, Any] = {}
        for _ in range(rng.randint(0, 4)):
            section = {rng.choice(_ORIGINAL_KEYS): yaml_value(rng) for _ in range(rng.randint(0, 3))}
            original[rng.choice(_SECTIONS)] = section
        return _dump(original, rng)
    if kind == "deep":
        depth = rng.randint(50, 20_000)
        return ("thresholds: " + "[" * depth + "]" * depth).encode()
    if kind == "text":
        return text(rng, 200).encode("utf-8", "surrogatepass")
    return binary(rng, 200)


# --- prompts and labels files ---------------------------------------------------------------------


def prompt_record(rng: random.Random) -> dict[str, Any]:
    return {key: yaml_scalar(rng) for key in ("prompt", "id") if rng.random() < 0.6}


def label_record(rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key in ("id", "prompt", "answer"):
        if rng.random() < 0.6:
            record[key] = yaml_scalar(rng)
    if rng.random() < 0.5:
        record["split"] = rng.choice(["train", "test", None, 3])
    if rng.random() < 0.5:
        record["match"] = rng.choice(["exact", "contains", "numeric", "x"])
    if rng.random() < 0.3:
        record["messages"] = json_value(rng, leaves=8)
    return record


def line_file(rng: random.Random, record: Callable[[random.Random], Any]) -> bytes:
    """A text file of up to 5 lines: JSON records, plain text, deep JSON, or raw bytes."""
    lines = []
    for _ in range(rng.randint(0, 5)):
        kind = rng.randrange(4)
        if kind == 0:
            lines.append(json.dumps(record(rng), allow_nan=True).encode())
        elif kind == 1:
            lines.append(text(rng, 60).encode("utf-8", "surrogatepass"))
        elif kind == 2:
            lines.append(b'{"prompt": ' + b"[" * rng.randint(100, 5000) + b"}")
        else:
            lines.append(binary(rng, 60))
    if lines and rng.random() < 0.2:
        lines[rng.randrange(len(lines))] = mutate_bytes(rng, lines[-1])
    return b"\n".join(lines)


def damaged_pages(rng: random.Random, database: bytes, page_size: int) -> bytes:
    """``database`` with 1 to 3 of its pages overwritten with random bytes or zeros, or bytes of a
    page flipped, or the file cut at a random page."""
    data = bytearray(database)
    pages = len(data) // page_size
    for _ in range(rng.randint(1, 3)):
        page = rng.randrange(pages)
        start = page * page_size + (100 if page == 0 and rng.random() < 0.8 else 0)  # mostly past the header
        kind = rng.randrange(4)
        if kind == 0:
            data[start : (page + 1) * page_size] = rng.randbytes((page + 1) * page_size - start)
        elif kind == 1:
            data[start : (page + 1) * page_size] = bytes((page + 1) * page_size - start)
        elif kind == 2:
            for _ in range(rng.randint(1, 16)):
                data[rng.randrange(start, (page + 1) * page_size)] = rng.randrange(256)
        else:
            del data[page * page_size :]
            break
    return bytes(data)
