"""The report's time format: ISO 8601 UTC with ``Z``.

We write millisecond precision (``2026-03-01T04:58:53.123Z``) and read any ISO 8601 time,
including the original CoreVital's second precision (``2026-03-01T04:58:53Z``). A time without
an offset is taken as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_utc(moment: datetime) -> str:
    """Format ``moment`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (a naive datetime is taken as UTC)."""
    utc = _as_utc(moment)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def utc_now() -> str:
    """The current time in the report's format."""
    return format_utc(datetime.now(UTC))


def parse_utc(text: str) -> datetime:
    """Parse an ISO 8601 time into an aware UTC datetime; raises ``ValueError`` on anything else."""
    try:
        parsed = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    return _as_utc(parsed)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch (a naive datetime is taken as UTC)."""
    return (_as_utc(moment) - _EPOCH) // timedelta(milliseconds=1)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
