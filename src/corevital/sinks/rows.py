"""The typed index of stored reports: rows, queries, pages, cursors and per-model aggregates.

Everything here is plain Python shared by every :class:`~corevital.sinks.base.ReportStore`
implementation, so that they agree exactly: :meth:`TraceQuery.matches` states the filters,
:func:`sort_key` the order, :func:`encode_cursor`/:func:`decode_cursor` the keyset cursor and
:func:`aggregate_rows` the per-group statistics. The names are re-exported by
:mod:`corevital.sinks.base`; this module imports no pydantic model (listing runs stays fast).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from corevital.errors import StoreError
from corevital.report.timestamps import epoch_ms, parse_utc

if TYPE_CHECKING:
    from corevital.report.schema import Report

MAX_PAGE_SIZE: Final = 500
"""The most rows one :meth:`~corevital.sinks.base.ReportStore.page` or ``follow`` call returns."""

PROMPT_PREVIEW_CHARS: Final = 200
"""Length of :attr:`TraceRow.prompt_preview`."""

NO_RISK_SORT_VALUE: Final = -1.0
"""The sort value of a row without a risk score: below every score (last when riskiest first)."""

MAX_CURSOR_INT: Final = 2**63 - 1
"""The largest magnitude of a page cursor's sort value (SQLite's integers are 64-bit; no sort value,
a time in ms or a risk score, comes near it)."""


class HealthFlag(StrEnum):
    """The boolean health flags a store indexes; each value is a ``health_flags`` field and a column."""

    NAN = "nan_detected"
    INF = "inf_detected"
    ATTENTION_COLLAPSE = "attention_collapse_detected"
    REPETITION_LOOP = "repetition_loop_detected"
    MID_LAYER_ANOMALY = "mid_layer_anomaly_detected"

    @property
    def short_name(self) -> str:
        """The value without ``_detected`` (``nan``, ``repetition_loop``, ...)."""
        return self.value.removesuffix("_detected")

    @classmethod
    def from_name(cls, name: str) -> HealthFlag:
        """The flag named by its value (``nan_detected``) or short name (``nan``); else StoreError."""
        text = name.strip().lower().replace("-", "_")
        for flag in cls:
            if text in (flag.value, flag.short_name):
                return flag
        known = ", ".join(flag.short_name for flag in cls)
        raise StoreError(f"unknown health flag {name!r}; known flags: {known}")


class SortOrder(StrEnum):
    """What stored rows are ordered by: creation time or risk score (ties by trace id)."""

    TIME = "time"
    RISK = "risk"


@dataclass(frozen=True, slots=True)
class TraceRow:
    """The indexed scalars of one stored report (no report body).

    Flags are ``None`` when the report has no ``health_flags``; ``risk_score`` is ``None`` without
    a risk analysis. ``prompt_preview`` is the first :data:`PROMPT_PREVIEW_CHARS` characters of the
    prompt text; ``mean_entropy`` and ``mean_surprisal`` are means over the generated steps' finite
    values (``None`` when there is none); ``device`` and ``quantization`` are what the report
    records (``model.device``; ``model.quantization.method``, or ``"enabled"`` when quantization is
    on without a method, else ``None``). ``sampling_weight`` is how many runs the report stands
    for (``extensions.sampling.weight`` of a sampled run, else 1), so that counts over stored rows
    weighted by it estimate the counts of all runs. ``seq`` is the row's position in its store, increasing in
    insertion order (a report written again under the same trace id keeps its position); it is 0
    for a row that is not stored and does not take part in equality.
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
    prompt_preview: str = ""
    finish_reason: str | None = None
    mean_entropy: float | None = None
    mean_surprisal: float | None = None
    device: str | None = None
    quantization: str | None = None
    sampling_weight: float = 1.0
    seq: int = field(default=0, compare=False)

    def flag(self, which: HealthFlag) -> bool | None:
        """The value of one health flag."""
        value: bool | None = getattr(self, which.value)
        return value

    def flags_set(self) -> builtins.list[HealthFlag]:
        """The flags that are set, in :class:`HealthFlag` order."""
        return [flag for flag in HealthFlag if self.flag(flag) is True]


def finite_mean(values: Iterable[Any]) -> float | None:
    """Mean of the finite numbers among ``values`` (``None`` and non-numbers skipped); ``None`` if none."""
    kept = [
        float(value)
        for value in values
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ]
    return math.fsum(kept) / len(kept) if kept else None


def _quantization(enabled: Any, method: Any) -> str | None:
    if isinstance(method, str) and method:
        return method
    return "enabled" if enabled is True else None


def derived_fields_from_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """The index fields added by database version 2, from a report's JSON document.

    Equal to the same fields of :func:`trace_row_from_report` on the parsed report (the store's
    migration backfills old rows with it without building pydantic models).
    """
    model = _mapping(document.get("model"))
    quantization = _mapping(model.get("quantization"))
    steps = [
        _mapping(step)
        for step in document.get("timeline") or ()
        if not _mapping(_mapping(step).get("token")).get("is_prompt_token")
    ]
    logits = [_mapping(step.get("logits_summary")) for step in steps]
    prompt_text = _mapping(document.get("prompt")).get("text")
    finish = _mapping(document.get("generated")).get("finish_reason")
    device = model.get("device")
    return {
        "prompt_preview": prompt_text[:PROMPT_PREVIEW_CHARS] if isinstance(prompt_text, str) else "",
        "finish_reason": finish if isinstance(finish, str) else None,
        "mean_entropy": finite_mean(summary.get("entropy") for summary in logits),
        "mean_surprisal": finite_mean(summary.get("surprisal") for summary in logits),
        "device": device if isinstance(device, str) else None,
        "quantization": _quantization(quantization.get("enabled"), quantization.get("method")),
    }


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def trace_row_from_report(report: Report) -> TraceRow:
    """The index row of ``report`` (``seq`` 0).

    The prompt hash and risk score come from ``extensions.fingerprint.prompt_hash`` and
    ``extensions.risk.risk_score`` when present; otherwise the prompt hash is computed with
    :func:`corevital.analysis.hashing.prompt_hash`.
    """
    from corevital.analysis.hashing import prompt_hash

    ext = report.extensions
    fingerprint_hash = ext.fingerprint.prompt_hash if ext.fingerprint is not None else None
    flags = report.health_flags
    generated = [step.logits_summary for step in report.timeline if not step.token.is_prompt_token]
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
        prompt_preview=report.prompt.text[:PROMPT_PREVIEW_CHARS],
        finish_reason=report.generated.finish_reason,
        mean_entropy=finite_mean(summary.entropy for summary in generated),
        mean_surprisal=finite_mean(summary.surprisal for summary in generated),
        device=report.model.device,
        quantization=_quantization(report.model.quantization.enabled, report.model.quantization.method),
        sampling_weight=_weight(ext.sampling.weight if ext.sampling is not None else None),
    )


def sampling_weight_from_document(document: Mapping[str, Any]) -> float:
    """:attr:`TraceRow.sampling_weight` from a report's JSON document (a store's migration backfills
    old rows with it): ``extensions.sampling.weight`` when it is a finite positive number, else 1."""
    sampling = _mapping(_mapping(document.get("extensions")).get("sampling"))
    return _weight(sampling.get("weight"))


def _weight(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return 1.0


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """Filters and order of :meth:`~corevital.sinks.base.ReportStore.list` and ``page``.

    Every filter that is set must hold: ``min_risk <= risk_score <= max_risk`` (rows without a
    risk score never match a risk filter), every flag in ``flags`` is set, and
    ``since <= created_at < until`` (naive datetimes are taken as UTC).

    Order: ``sort`` (creation time or risk score), newest or riskiest first unless ``ascending``;
    rows without a risk score sort as :data:`NO_RISK_SORT_VALUE` (below every score). Ties are
    always broken by trace id, ascending. ``limit=None`` returns all (``page`` takes at most
    :data:`MAX_PAGE_SIZE`); ``offset`` skips rows of ``list`` and of a first ``page``.
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
    sort: SortOrder = SortOrder.TIME
    ascending: bool = False

    def __post_init__(self) -> None:
        try:  # accept flag names as strings (CLI, HTTP) and keep HealthFlag members
            flags = frozenset(HealthFlag(flag) for flag in self.flags)
        except ValueError:
            known = ", ".join(flag.value for flag in HealthFlag)
            raise StoreError(f"unknown health flag in {sorted(self.flags)}; known flags: {known}") from None
        object.__setattr__(self, "flags", flags)
        try:
            object.__setattr__(self, "sort", SortOrder(self.sort))
        except ValueError:
            raise StoreError(f"unknown sort order {self.sort!r}; use time or risk") from None
        if (self.limit is not None and self.limit < 0) or self.offset < 0:
            raise StoreError("limit and offset must not be negative")

    def matches(self, row: TraceRow) -> bool:
        """Whether ``row`` passes every filter (order, limit and offset aside)."""
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

    def page_size(self) -> int:
        """The number of rows a ``page`` returns: ``limit`` (``None`` is :data:`MAX_PAGE_SIZE`)."""
        if self.limit is None:
            return MAX_PAGE_SIZE
        if self.limit > MAX_PAGE_SIZE:
            raise StoreError(f"a page holds at most {MAX_PAGE_SIZE} rows (limit {self.limit})")
        return self.limit


@dataclass(frozen=True)
class Page:
    """One page of rows; ``next_cursor`` continues after its last row (``None``: no more rows)."""

    rows: builtins.list[TraceRow]
    next_cursor: str | None


@dataclass(frozen=True)
class ModelAggregate:
    """Statistics of the stored runs of one model (or one prompt hash).

    ``risk_mean``, ``risk_p50`` and ``risk_p90`` are over the runs with a risk score (percentiles
    by linear interpolation between closest ranks, as numpy's default); ``flag_rates`` maps every
    :class:`HealthFlag` value to the fraction of runs where it is set; ``mean_entropy`` is the mean
    of the runs' :attr:`TraceRow.mean_entropy`; ``generated_tokens`` is their sum.
    """

    key: str
    runs: int
    risk_mean: float | None
    risk_p50: float | None
    risk_p90: float | None
    flag_rates: dict[str, float]
    mean_entropy: float | None
    generated_tokens: int


AGGREGATE_KEYS: Final = ("model", "prompt")
"""What ``aggregate`` groups by: ``model`` (model id) or ``prompt`` (prompt hash)."""


def aggregate_key(by: str) -> str:
    """The :class:`TraceRow` field that ``aggregate(by=...)`` groups on; StoreError for others."""
    if by == "model":
        return "model_id"
    if by == "prompt":
        return "prompt_hash"
    raise StoreError(f"cannot aggregate by {by!r}; use model or prompt")


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` quantile of sorted values, interpolating linearly; ``None`` when empty."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def aggregate_rows(rows: Iterable[TraceRow], by: str) -> builtins.list[ModelAggregate]:
    """Per-group statistics of ``rows``, most runs first (ties by key)."""
    attribute = aggregate_key(by)
    groups: dict[str, builtins.list[TraceRow]] = {}
    for row in rows:
        groups.setdefault(getattr(row, attribute), []).append(row)
    return order_aggregates(_aggregate(key, members) for key, members in groups.items())


def _aggregate(key: str, rows: Sequence[TraceRow]) -> ModelAggregate:
    return aggregate_of(
        key,
        runs=len(rows),
        risks=[row.risk_score for row in rows if row.risk_score is not None],
        flag_counts={flag.value: sum(row.flag(flag) is True for row in rows) for flag in HealthFlag},
        entropies=[row.mean_entropy for row in rows],
        generated_tokens=sum(row.generated_tokens for row in rows),
    )


def aggregate_of(
    key: str,
    *,
    runs: int,
    risks: Iterable[float],
    flag_counts: Mapping[str, int],
    entropies: Iterable[float | None],
    generated_tokens: int,
) -> ModelAggregate:
    """The :class:`ModelAggregate` of one group from its parts (every store computes it so)."""
    ordered = sorted(risks)
    return ModelAggregate(
        key=key,
        runs=runs,
        risk_mean=math.fsum(ordered) / len(ordered) if ordered else None,
        risk_p50=percentile(ordered, 0.5),
        risk_p90=percentile(ordered, 0.9),
        flag_rates={
            flag.value: flag_counts.get(flag.value, 0) / runs if runs else 0.0 for flag in HealthFlag
        },
        mean_entropy=finite_mean(entropies),
        generated_tokens=generated_tokens,
    )


def order_aggregates(aggregates: Iterable[ModelAggregate]) -> builtins.list[ModelAggregate]:
    """Groups as ``aggregate`` returns them: most runs first, ties by key."""
    return sorted(aggregates, key=lambda aggregate: (-aggregate.runs, aggregate.key))


def sort_value(row: TraceRow, sort: SortOrder) -> float:
    """The value ``row`` is ordered by under ``sort`` (time in ms, or risk score)."""
    if sort is SortOrder.TIME:
        return row.created_at_ms
    return NO_RISK_SORT_VALUE if row.risk_score is None else row.risk_score


def sort_rows(rows: Iterable[TraceRow], sort: SortOrder, ascending: bool) -> builtins.list[TraceRow]:
    """Rows in the order of a query: by ``sort`` (descending unless ``ascending``), then trace id."""
    by_id = sorted(rows, key=lambda row: row.trace_id)
    return sorted(by_id, key=lambda row: sort_value(row, sort), reverse=not ascending)


def newest_first(rows: builtins.list[TraceRow]) -> builtins.list[TraceRow]:
    """Rows ordered as a default query returns them: newest first, ties by trace id."""
    return sort_rows(rows, SortOrder.TIME, ascending=False)


def after_cursor(row: TraceRow, query: TraceQuery, position: tuple[float, str]) -> bool:
    """Whether ``row`` comes after the keyset ``position`` (sort value, trace id) in ``query``'s order."""
    value, trace_id = sort_value(row, query.sort), row.trace_id
    if value == position[0]:
        return trace_id > position[1]
    return value > position[0] if query.ascending else value < position[0]


def encode_cursor(query: TraceQuery, row: TraceRow) -> str:
    """The opaque cursor of the position just after ``row`` in ``query``'s order."""
    payload = [query.sort.value, query.ascending, sort_value(row, query.sort), row.trace_id]
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, query: TraceQuery) -> tuple[float, str]:
    """The keyset position (sort value, trace id) of ``cursor``.

    A malformed cursor (a sort value beyond :data:`MAX_CURSOR_INT` included: no store could
    compare with it), or one of another sort order, is a StoreError.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        sort, ascending, value, trace_id = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise StoreError("malformed page cursor") from None
    valid = (
        isinstance(ascending, bool)
        and isinstance(trace_id, str)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and (math.isfinite(value) if isinstance(value, float) else True)
        and abs(value) <= MAX_CURSOR_INT
    )
    if not valid:
        raise StoreError("malformed page cursor")
    if sort != query.sort.value or ascending != query.ascending:
        raise StoreError("the page cursor belongs to another sort order")
    return value, trace_id


def make_page(query: TraceQuery, rows: builtins.list[TraceRow], size: int) -> Page:
    """A page of the first ``size`` of ``rows``, fetched one beyond to know whether more follow."""
    if len(rows) > size and size > 0:
        kept = rows[:size]
        return Page(rows=kept, next_cursor=encode_cursor(query, kept[-1]))
    return Page(rows=rows[:size], next_cursor=None)


def keyset_clause(query: TraceQuery, cursor: str, column: str, mark: str) -> tuple[str, tuple[Any, ...]]:
    """The SQL condition (and its parameters) of the rows after ``cursor`` in ``query``'s order,
    for a store whose sort column is ``column`` and whose parameter placeholder is ``mark``."""
    value, trace_id = decode_cursor(cursor, query)
    beyond = ">" if query.ascending else "<"
    same_or_beyond = ">=" if query.ascending else "<="
    clause = f"{column} {same_or_beyond} {mark} AND ({column} {beyond} {mark} OR trace_id > {mark})"
    return clause, (value, value, trace_id)


def page_where(
    query: TraceQuery,
    cursor: str | None,
    where: str,
    params: tuple[Any, ...],
    sort_sql: Mapping[SortOrder, str],
    mark: str,
) -> tuple[str, tuple[Any, ...], int]:
    """``where`` and ``params`` narrowed to the rows after ``cursor`` (:func:`keyset_clause` on the
    store's sort column ``sort_sql[query.sort]``, placeholder ``mark``), and the offset the page
    starts at (``query.offset`` for the first page, 0 after a cursor)."""
    if cursor is None:
        return where, params, query.offset
    keyset, after = keyset_clause(query, cursor, sort_sql[query.sort], mark)
    return (f"{where} AND {keyset}" if where else f" WHERE {keyset}"), (*params, *after), 0


def order_clause(query: TraceQuery, sort_sql: Mapping[SortOrder, str]) -> str:
    """The SQL ``ORDER BY`` terms of ``query``'s order: the store's sort column
    ``sort_sql[query.sort]``, then the trace id."""
    direction = "ASC" if query.ascending else "DESC"
    return f"{sort_sql[query.sort]} {direction}, trace_id"


def prefix_range(prefix: str) -> tuple[str, str]:
    """The bounds of the trace ids that start with ``prefix`` (``>= low AND < high``)."""
    return prefix, prefix + "\U0010ffff"
