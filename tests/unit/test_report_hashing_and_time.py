"""The prompt hash and the report's time format."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from corevital.analysis.hashing import prompt_hash
from corevital.report.timestamps import epoch_ms, format_utc, parse_utc, utc_now


def test_prompt_hash_is_sha256_of_model_newline_prompt() -> None:
    expected = hashlib.sha256(b"gpt2\nExplain why the sky is blue").hexdigest()
    assert prompt_hash("gpt2", "Explain why the sky is blue") == expected


def test_prompt_hash_keeps_case_and_non_ascii_text() -> None:
    assert prompt_hash("m", "Déjà") != prompt_hash("m", "déjà")
    assert prompt_hash("m", "Déjà") == hashlib.sha256("m\nDéjà".encode()).hexdigest()


def test_prompt_hash_separates_model_from_prompt() -> None:
    assert prompt_hash("gpt2", "x") != prompt_hash("gpt2-medium", "x")


def test_format_writes_milliseconds_and_z() -> None:
    moment = datetime(2026, 3, 1, 4, 58, 53, 123456, tzinfo=UTC)
    assert format_utc(moment) == "2026-03-01T04:58:53.123Z"


def test_format_converts_other_offsets_and_takes_naive_as_utc() -> None:
    plus_two = datetime(2026, 3, 1, 6, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert format_utc(plus_two) == "2026-03-01T04:00:00.000Z"
    assert format_utc(datetime(2026, 3, 1, 4, 0, 0)) == "2026-03-01T04:00:00.000Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T04:58:53Z", datetime(2026, 3, 1, 4, 58, 53, tzinfo=UTC)),
        ("2026-03-01T04:58:53.123Z", datetime(2026, 3, 1, 4, 58, 53, 123000, tzinfo=UTC)),
        ("2026-03-01T06:58:53+02:00", datetime(2026, 3, 1, 4, 58, 53, tzinfo=UTC)),
        ("2026-03-01T04:58:53", datetime(2026, 3, 1, 4, 58, 53, tzinfo=UTC)),
    ],
)
def test_parse_reads_second_and_millisecond_precision(text: str, expected: datetime) -> None:
    assert parse_utc(text) == expected and parse_utc(text).tzinfo is UTC


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z"])
def test_parse_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_utc(text)


def test_epoch_ms_and_now() -> None:
    assert epoch_ms(datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)) == 1500
    assert (
        epoch_ms(parse_utc("2026-03-01T04:58:53.123Z")) - epoch_ms(parse_utc("2026-03-01T04:58:53Z")) == 123
    )
    assert parse_utc(utc_now()) <= datetime.now(UTC)
