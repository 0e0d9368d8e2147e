"""The sink protocols, the typed index row of a stored report, and the in-memory store.

A :class:`Sink` persists reports (``write`` returns where the report went, ``close`` releases the
resources). A :class:`ReportStore` is a sink that can be queried back: the SQLite store, the
PostgreSQL store and :class:`MemorySink` (for tests) implement it with the same filter semantics,
which :meth:`TraceQuery.matches` states in Python.
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from corevital.errors import StoreError
from corevital.report.hashing import prompt_hash
from corevital.report.schema import Report
from corevital.report.timestamps import epoch_ms, parse_utc


class HealthFlag(StrEnum):
    """The boolean health flags a store indexes; each value is a ``health_flags`` field and a column."""

    NAN = "nan_detected"
    INF = "inf_detected"
    ATTENTION_COLLAPSE = "attention_collapse_detected"
    REPETITION_LOOP = "repetition_loop_detected"
    MID_LAYER_ANOMALY = "mid_layer_anomaly_detected"


@dataclass(frozen=True, slots=True)
class TraceRow:
    """The indexed scalars of one stored report (no report body).

    Flags are ``None`` when the report has no ``health_flags``; ``risk_score`` is ``None`` without
    a risk analysis.
    """

    trace_id: str
    created_at_utc: str
    created_at_ms: int
    model_id: str
    prompt_hash: str
    risk_score: float | None
    nan_detected: bool | None
    inf_detected: bool | None
    attention_collapse_detected: bool | None
    repetition_loop_detected: bool | None
    mid_layer_anomaly_detected: bool | None
    high_entropy_steps: int | None
    prompt_tokens: int
    generated_tokens: int
    capture_mode: str | None
    schema_version: str
    migrated_from: str | None

    def flag(self, which: HealthFlag) -> bool | None:
        """The value of one health flag."""
        value: bool | None = getattr(self, which.value)
        return value


def trace_row_from_report(report: Report) -> TraceRow:
    """The index row of ``report``.

    The prompt hash and risk score come from ``extensions.fingerprint.prompt_hash`` and
    ``extensions.risk.risk_score`` when present; otherwise the prompt hash is computed with
    :func:`corevital.report.hashing.prompt_hash`.
    """
    ext = report.extensions
    fingerprint_hash = ext.fingerprint.prompt_hash if ext.fingerprint is not None else None
    flags = report.health_flags
    return TraceRow(
        trace_id=report.trace_id,
        created_at_utc=report.created_at_utc,
        created_at_ms=epoch_ms(parse_utc(report.created_at_utc)),
        model_id=report.model.hf_id,
        prompt_hash=fingerprint_hash or prompt_hash(report.model.hf_id, report.prompt.text),
        risk_score=ext.risk.risk_score if ext.risk is not None else None,
        nan_detected=flags.nan_detected if flags else None,
        inf_detected=flags.inf_detected if flags else None,
        attention_collapse_detected=flags.attention_collapse_detected if flags else None,
        repetition_loop_detected=flags.repetition_loop_detected if flags else None,
        mid_layer_anomaly_detected=flags.mid_layer_anomaly_detected if flags else None,
        high_entropy_steps=flags.high_entropy_steps if flags else None,
        prompt_tokens=report.summary.prompt_tokens,
        generated_tokens=report.summary.generated_tokens,
        capture_mode=report.run_config.capture_mode,
        schema_version=report.schema_version,
        migrated_from=ext.migrated_from,
    )


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """Filters of :meth:`ReportStore.list`; results are newest first.

    Every filter that is set must hold: ``min_risk <= risk_score <= max_risk`` (rows without a
    risk score never match a risk filter), every flag in ``flags`` is set, and
    ``since <= created_at < until`` (naive datetimes are taken as UTC). ``limit=None`` returns all.
    """

    model_id: str | None = None
    prompt_hash: str | None = None
    min_risk: float | None = None
    max_risk: float | None = None
    flags: frozenset[HealthFlag] = field(default_factory=frozenset)
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = 100
    offset: int = 0

    def __post_init__(self) -> None:
        try:  # accept flag names as strings (CLI, HTTP) and keep HealthFlag members
            flags = frozenset(HealthFlag(flag) for flag in self.flags)
        except ValueError:
            known = ", ".join(flag.value for flag in HealthFlag)
            raise StoreError(f"unknown health flag in {sorted(self.flags)}; known flags: {known}") from None
        object.__setattr__(self, "flags", flags)
        if (self.limit is not None and self.limit < 0) or self.offset < 0:
            raise StoreError("limit and offset must not be negative")

    def matches(self, row: TraceRow) -> bool:
        """Whether ``row`` passes every filter (limit and offset aside)."""
        checks = (
            self.model_id is None or row.model_id == self.model_id,
            self.prompt_hash is None or row.prompt_hash == self.prompt_hash,
            self.min_risk is None or (row.risk_score is not None and row.risk_score >= self.min_risk),
            self.max_risk is None or (row.risk_score is not None and row.risk_score <= self.max_risk),
            all(row.flag(flag) is True for flag in self.flags),
            self.since is None or row.created_at_ms >= epoch_ms(self.since),
            self.until is None or row.created_at_ms < epoch_ms(self.until),
        )
        return all(checks)


def ambiguous_prefix_message(prefix: str, matches: int) -> str:
    """The error message for a trace id prefix that matches more than one report."""
    return f"trace id prefix {prefix!r} matches {matches} reports; give more of the id"


def newest_first(rows: builtins.list[TraceRow]) -> builtins.list[TraceRow]:
    """Rows ordered as stores return them: newest first, ties by trace id."""
    by_id = sorted(rows, key=lambda row: row.trace_id)
    return sorted(by_id, key=lambda row: row.created_at_ms, reverse=True)


@runtime_checkable
class Sink(Protocol):
    """Somewhere reports go."""

    def write(self, report: Report) -> str:
        """Persist ``report``; return where it went (a file path, or a database path and trace id)."""
        ...

    def close(self) -> None:
        """Release the sink's resources; further writes are errors."""
        ...


@runtime_checkable
class ReportStore(Sink, Protocol):
    """A sink whose reports can be read back and listed."""

    def get(self, trace_id: str) -> Report | None:
        """The report with this trace id (or a unique prefix of it), ``None`` if there is none.

        A prefix that matches several reports is a :class:`~corevital.errors.StoreError`.
        """
        ...

    def contains(self, trace_id: str) -> bool:
        """Whether a report with exactly this trace id is stored."""
        ...

    def list(self, query: TraceQuery | None = None) -> builtins.list[TraceRow]:
        """Index rows of the stored reports that match ``query``, newest first."""
        ...

    def count(self, query: TraceQuery | None = None) -> int:
        """How many stored reports match ``query`` (limit and offset aside)."""
        ...


class MemorySink:
    """A :class:`ReportStore` in memory, for tests. Keeps the report objects themselves, not copies."""

    def __init__(self) -> None:
        self._reports: dict[str, Report] = {}
        self._rows: dict[str, TraceRow] = {}
        self._lock = threading.Lock()

    @property
    def reports(self) -> builtins.list[Report]:
        """The stored reports in the order they were first written."""
        with self._lock:
            return builtins.list(self._reports.values())

    def write(self, report: Report) -> str:
        """Store ``report`` (replacing one with the same trace id); the location is ``memory#<id>``."""
        row = trace_row_from_report(report)
        with self._lock:
            self._reports[report.trace_id] = report
            self._rows[report.trace_id] = row
        return f"memory#{report.trace_id}"

    def get(self, trace_id: str) -> Report | None:
        """The report with this trace id or unique prefix, else ``None``."""
        with self._lock:
            if trace_id in self._reports:
                return self._reports[trace_id]
            found = [key for key in self._reports if key.startswith(trace_id)] if trace_id else []
        if len(found) > 1:
            raise StoreError(ambiguous_prefix_message(trace_id, len(found)))
        return self._reports[found[0]] if found else None

    def contains(self, trace_id: str) -> bool:
        """Whether exactly this trace id is stored."""
        with self._lock:
            return trace_id in self._reports

    def list(self, query: TraceQuery | None = None) -> builtins.list[TraceRow]:
        """Matching rows, newest first."""
        query = query or TraceQuery()
        rows = newest_first(self._matching(query))
        end = None if query.limit is None else query.offset + query.limit
        return rows[query.offset : end]

    def count(self, query: TraceQuery | None = None) -> int:
        """Number of matching rows."""
        return len(self._matching(query or TraceQuery()))

    def close(self) -> None:
        """Nothing to release."""

    def _matching(self, query: TraceQuery) -> builtins.list[TraceRow]:
        with self._lock:
            return [row for row in self._rows.values() if query.matches(row)]
