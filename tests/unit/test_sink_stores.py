"""The ReportStore contract, run against every implementation: memory, SQLite and PostgreSQL.

The PostgreSQL store runs against a real server (tests/support/postgres.py: one per session, a new
database per test); without the postgresql package its cases skip locally and fail in CI.
"""

from __future__ import annotations

import base64
import gzip
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from corevital.analysis.hashing import prompt_hash
from corevital.errors import StoreError
from corevital.report.encoding import report_from_json, report_to_json
from corevital.report.schema import Fingerprint, Report, SamplingInfo
from corevital.sinks.base import (
    MAX_PAGE_SIZE,
    HealthFlag,
    MemorySink,
    ReportStore,
    SortOrder,
    TraceQuery,
    trace_row_from_report,
)
from corevital.sinks.encoded import EncodedReport
from corevital.sinks.sqlite import SQLiteStore
from tests.support.golden import golden_report, report_variant
from tests.support.protocols import assert_implements

pytest_plugins = ("tests.support.postgres",)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def base() -> Report:
    return golden_report()


def variant(
    base: Report,
    number: int,
    *,
    minute: float = 0,
    model: str = "tiny/causal-lm",
    risk: float | None = None,
    flags: tuple[HealthFlag, ...] = (),
    prompt: str = "Explain why the sky is blue",
) -> Report:
    """A copy of the sample report with its own id, time, model, prompt, risk and flags."""
    return report_variant(
        base,
        number,
        risk=risk,
        created=T0 + timedelta(minutes=minute),
        model=model,
        prompt=prompt,
        flags=flags,
        drop_fingerprint=True,
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReportStore]:
    made: ReportStore
    if request.param == "memory":
        made = MemorySink()
    elif request.param == "sqlite":
        made = SQLiteStore.in_directory(tmp_path)
    else:
        from corevital.sinks.postgres import PostgresStore

        made = PostgresStore(request.getfixturevalue("postgres_url"))
    yield made
    made.close()


@pytest.fixture
def filled(store: ReportStore, base: Report) -> ReportStore:
    """Six reports: two models, risks from none to high, a few flags, one minute apart."""
    store.write(variant(base, 1, minute=0, model="a", risk=0.1))
    store.write(variant(base, 2, minute=1, model="a", risk=0.5, flags=(HealthFlag.NAN,)))
    store.write(
        variant(base, 3, minute=2, model="b", risk=0.9, flags=(HealthFlag.NAN, HealthFlag.REPETITION_LOOP))
    )
    store.write(variant(base, 4, minute=3, model="b", risk=None, flags=(HealthFlag.REPETITION_LOOP,)))
    store.write(variant(base, 5, minute=4, model="a", risk=0.7, prompt="other prompt"))
    store.write(variant(base, 6, minute=5, model="b", risk=0.3, flags=(HealthFlag.MID_LAYER_ANOMALY,)))
    return store


def _ids(store: ReportStore, query: TraceQuery) -> list[int]:
    return [int(row.trace_id[:8], 16) for row in store.list(query)]


def test_stores_implement_the_protocol_signatures(store: ReportStore) -> None:
    assert_implements(store, ReportStore)


def test_write_then_get_returns_an_equal_report(store: ReportStore, base: Report) -> None:
    location = store.write(base)
    assert location.endswith(f"#{base.trace_id}")
    assert store.get(base.trace_id) == base
    assert store.contains(base.trace_id)


def test_unknown_trace_is_none(store: ReportStore) -> None:
    assert store.get("ffffffff-0000-4000-8000-000000000000") is None
    assert store.get("") is None
    assert not store.contains("nope")


def test_writing_the_same_trace_again_replaces_it(store: ReportStore, base: Report) -> None:
    store.write(variant(base, 1, risk=0.2))
    store.write(variant(base, 1, risk=0.8))
    assert store.count() == 1
    again = store.get(variant(base, 1).trace_id)
    assert again is not None and again.extensions.risk is not None and again.extensions.risk.risk_score == 0.8


def test_a_unique_prefix_finds_the_report_and_an_ambiguous_one_is_an_error(filled: ReportStore) -> None:
    found = filled.get("00000003")
    assert found is not None and found.trace_id.startswith("00000003-")
    with pytest.raises(StoreError, match="matches 6 reports"):
        filled.get("0000000")
    assert not filled.contains("00000003")


def test_list_is_newest_first(filled: ReportStore) -> None:
    assert _ids(filled, TraceQuery()) == [6, 5, 4, 3, 2, 1]


def test_equal_times_are_ordered_by_trace_id(store: ReportStore, base: Report) -> None:
    for number in (3, 1, 2):
        store.write(variant(base, number, minute=0))
    assert _ids(store, TraceQuery()) == [1, 2, 3]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (TraceQuery(model_id="a"), [5, 2, 1]),
        (TraceQuery(model_id="missing"), []),
        (TraceQuery(min_risk=0.5), [5, 3, 2]),
        (TraceQuery(max_risk=0.3), [6, 1]),
        (TraceQuery(min_risk=0.2, max_risk=0.6), [6, 2]),
        (TraceQuery(min_risk=0.0), [6, 5, 3, 2, 1]),  # the report without a risk score never matches
        (TraceQuery(flags=frozenset({HealthFlag.NAN})), [3, 2]),
        (TraceQuery(flags=frozenset({HealthFlag.NAN, HealthFlag.REPETITION_LOOP})), [3]),
        (TraceQuery(flags=frozenset({HealthFlag.INF})), []),
        (TraceQuery(since=T0 + timedelta(minutes=2)), [6, 5, 4, 3]),
        (TraceQuery(until=T0 + timedelta(minutes=2)), [2, 1]),
        (TraceQuery(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)), [3, 2]),
        (TraceQuery(since=datetime(2026, 3, 1, 12, 4)), [6, 5]),  # naive: taken as UTC
        (TraceQuery(model_id="b", flags=frozenset({HealthFlag.REPETITION_LOOP}), min_risk=0.5), [3]),
        (TraceQuery(limit=2), [6, 5]),
        (TraceQuery(limit=2, offset=2), [4, 3]),
        (TraceQuery(limit=None, offset=4), [2, 1]),
        (TraceQuery(limit=0), []),
    ],
)
def test_list_filters(filled: ReportStore, query: TraceQuery, expected: list[int]) -> None:
    assert _ids(filled, query) == expected


def test_prompt_hash_filter_uses_the_computed_hash(filled: ReportStore) -> None:
    other = prompt_hash("a", "other prompt")
    assert _ids(filled, TraceQuery(prompt_hash=other)) == [5]


def test_prompt_hash_comes_from_the_fingerprint_when_present(store: ReportStore, base: Report) -> None:
    report = variant(base, 9)
    report.extensions.fingerprint = Fingerprint(vector=[], version=2, prompt_hash="from-fingerprint")
    store.write(report)
    assert [row.prompt_hash for row in store.list()] == ["from-fingerprint"]


def test_count_ignores_limit_and_offset(filled: ReportStore) -> None:
    assert filled.count() == 6
    assert filled.count(TraceQuery(model_id="b", limit=1, offset=1)) == 3


def test_rows_carry_the_indexed_scalars(filled: ReportStore, base: Report) -> None:
    row = filled.list(TraceQuery(model_id="b", min_risk=0.8))[0]
    expected = trace_row_from_report(
        variant(base, 3, minute=2, model="b", risk=0.9, flags=(HealthFlag.NAN, HealthFlag.REPETITION_LOOP))
    )
    assert row == expected
    assert row.nan_detected is True and row.inf_detected is False and row.repetition_loop_detected is True
    assert row.generated_tokens == 2 and row.prompt_tokens == 3 and row.capture_mode == "full"
    assert row.created_at_utc == "2026-03-01T12:02:00.000Z" and row.schema_version == "0.5.0"


def test_reports_without_health_flags_have_null_flags(store: ReportStore, base: Report) -> None:
    store.write(base.model_copy(update={"health_flags": None}))
    row = store.list()[0]
    assert row.nan_detected is None and row.high_entropy_steps is None
    assert store.list(TraceQuery(flags=frozenset({HealthFlag.NAN}))) == []


def test_query_accepts_flag_names_and_rejects_unknown_ones() -> None:
    query = TraceQuery(flags=frozenset({"nan_detected"}))  # type: ignore[arg-type]
    assert query.flags == frozenset({HealthFlag.NAN})
    with pytest.raises(StoreError, match="unknown health flag .* known flags: nan_detected"):
        TraceQuery(flags=frozenset({"nan"}))  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="must not be negative"):
        TraceQuery(offset=-1)


def test_rows_carry_the_read_interface_fields(store: ReportStore, base: Report) -> None:
    store.write(base)
    row = store.list()[0]
    steps = [step.logits_summary for step in base.timeline if not step.token.is_prompt_token]
    entropies = [s.entropy for s in steps if s.entropy is not None]
    assert row.prompt_preview == base.prompt.text[:200]
    assert row.finish_reason == base.generated.finish_reason
    assert row.mean_entropy == pytest.approx(sum(entropies) / len(entropies))
    assert row.device == base.model.device
    assert row.seq == 1


def test_rows_carry_the_sampling_weight_of_the_report(store: ReportStore, base: Report) -> None:
    """A sampled report's weight (the runs it stands for) is in its row, read back by every query
    path; an unsampled report weighs 1; a rewrite with another weight replaces it."""
    sampled = variant(base, 1, risk=0.4)
    sampled.extensions.sampling = SamplingInfo(
        policy="rate 0.125 (seed 7)", kept_fraction=0.125, weight=8.0, runs_seen=9, runs_kept=2
    )
    store.write(sampled)
    store.write(variant(base, 2, minute=1, risk=0.6))
    assert store.get(sampled.trace_id) == sampled
    rows = {int(row.trace_id[:8], 16): row for row in store.list()}
    assert {number: row.sampling_weight for number, row in rows.items()} == {1: 8.0, 2: 1.0}
    assert rows[1] == trace_row_from_report(sampled)
    assert [row.sampling_weight for row in store.follow(0)[0]] == [8.0, 1.0]
    assert [row.sampling_weight for row in store.page(TraceQuery(sort=SortOrder.RISK)).rows] == [1.0, 8.0]
    resampled = sampled.model_copy(deep=True)
    assert resampled.extensions.sampling is not None
    resampled.extensions.sampling.weight = 4.0
    store.write(resampled)
    assert [row.sampling_weight for row in store.follow(0)[0]] == [4.0, 1.0]


def test_write_encoded_stores_what_write_stores(store: ReportStore, base: Report) -> None:
    """The encoding shared by the run's destinations gives the same row and stored JSON as write()."""
    encoded = EncodedReport(variant(base, 1, risk=0.3))
    location = store.write_encoded(encoded)  # type: ignore[attr-defined]
    assert location.endswith(f"#{encoded.trace_id}")
    assert store.get_json(encoded.trace_id) == encoded.json_text == report_to_json(encoded.report)
    assert store.list()[0] == encoded.row == trace_row_from_report(encoded.report)
    assert gzip.decompress(encoded.gzip) == zlib.decompress(encoded.zlib) == encoded.json_bytes


def test_a_rewritten_report_keeps_its_position(store: ReportStore, base: Report) -> None:
    for number in (1, 2, 3):
        store.write(variant(base, number, risk=0.1))
    store.write(variant(base, 1, risk=0.9))
    rows = {int(row.trace_id[:8], 16): row.seq for row in store.list()}
    assert rows == {1: 1, 2: 2, 3: 3}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (TraceQuery(sort=SortOrder.RISK), [3, 5, 2, 6, 1, 4]),  # no risk score: last
        (TraceQuery(sort=SortOrder.RISK, ascending=True), [4, 1, 6, 2, 5, 3]),
        (TraceQuery(ascending=True), [1, 2, 3, 4, 5, 6]),
        (TraceQuery(sort="risk", model_id="a"), [5, 2, 1]),  # type: ignore[arg-type]
    ],
)
def test_list_orders(filled: ReportStore, query: TraceQuery, expected: list[int]) -> None:
    assert _ids(filled, query) == expected


def _all_pages(store: ReportStore, query: TraceQuery) -> list[list[int]]:
    pages: list[list[int]] = []
    cursor = None
    while True:
        page = store.page(query, cursor)
        pages.append([int(row.trace_id[:8], 16) for row in page.rows])
        cursor = page.next_cursor
        if cursor is None:
            return pages


@pytest.mark.parametrize("sort", list(SortOrder))
@pytest.mark.parametrize("ascending", [False, True])
def test_pages_return_every_row_exactly_once_in_order(
    store: ReportStore, base: Report, sort: SortOrder, ascending: bool
) -> None:
    for number in range(1, 24):  # equal times and equal risks across page boundaries
        risk = None if number % 7 == 0 else (number % 4) / 4
        store.write(variant(base, number, minute=number // 3, risk=risk))
    query = TraceQuery(sort=sort, ascending=ascending, limit=5)
    pages = _all_pages(store, query)
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    flat = [number for page in pages for number in page]
    assert flat == _ids(store, TraceQuery(sort=sort, ascending=ascending, limit=None))


def test_pages_apply_filters_and_offset(filled: ReportStore) -> None:
    assert _all_pages(filled, TraceQuery(model_id="b", limit=2)) == [[6, 4], [3]]
    assert _all_pages(filled, TraceQuery(limit=2, offset=3)) == [[3, 2], [1]]
    assert filled.page(TraceQuery(limit=10)).next_cursor is None


def test_bad_cursors_and_page_sizes_are_store_errors(filled: ReportStore) -> None:
    cursor = filled.page(TraceQuery(limit=2)).next_cursor
    assert cursor is not None
    for bad in ("", "not a cursor", "bm9wZQ", cursor[:-3]):
        with pytest.raises(StoreError, match="malformed page cursor"):
            filled.page(TraceQuery(limit=2), bad)
    with pytest.raises(StoreError, match="another sort order"):
        filled.page(TraceQuery(limit=2, sort=SortOrder.RISK), cursor)
    with pytest.raises(StoreError, match="at most 500"):
        filled.page(TraceQuery(limit=MAX_PAGE_SIZE + 1))
    assert len(filled.page(TraceQuery(limit=None)).rows) == 6


def _forged_cursor(value: str) -> str:
    text = f'["time",false,{value},"x"]'
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


@pytest.mark.parametrize(
    "value", ["9223372036854775808", "-9223372036854775809", "1" + "0" * 400, "1e308", "1e999", "true"]
)
def test_a_forged_cursor_with_a_number_no_store_can_compare_is_malformed(
    filled: ReportStore, value: str
) -> None:
    with pytest.raises(StoreError, match="malformed page cursor"):
        filled.page(TraceQuery(limit=2), _forged_cursor(value))


def test_a_cursor_at_the_64_bit_bound_is_accepted(filled: ReportStore) -> None:
    assert filled.page(TraceQuery(limit=2), _forged_cursor(str(2**63 - 1))).rows[0].trace_id


def test_aggregate_by_model(filled: ReportStore) -> None:
    by_model = {aggregate.key: aggregate for aggregate in filled.aggregate()}
    a, b = by_model["a"], by_model["b"]
    assert (a.runs, b.runs) == (3, 3)
    assert a.risk_mean == pytest.approx((0.1 + 0.5 + 0.7) / 3)
    assert a.risk_p50 == pytest.approx(0.5) and a.risk_p90 == pytest.approx(0.5 + 0.8 * 0.2)
    assert b.risk_p50 == pytest.approx(0.6)  # the run without a risk score is left out
    assert a.flag_rates[HealthFlag.NAN.value] == pytest.approx(1 / 3)
    assert b.flag_rates[HealthFlag.REPETITION_LOOP.value] == pytest.approx(2 / 3)
    assert b.generated_tokens == 6 and a.mean_entropy is not None
    only_flagged = filled.aggregate(TraceQuery(flags=frozenset({HealthFlag.NAN})))
    assert [(x.key, x.runs) for x in only_flagged] == [("a", 1), ("b", 1)]


def test_aggregate_by_prompt(filled: ReportStore) -> None:
    groups = filled.aggregate(by="prompt")
    assert [group.runs for group in groups] == [3, 2, 1]
    assert groups[2].key == prompt_hash("a", "other prompt")
    with pytest.raises(StoreError, match="cannot aggregate by"):
        filled.aggregate(by="colour")


def test_follow_returns_rows_written_after_a_position(store: ReportStore, base: Report) -> None:
    assert store.follow(None) == ([], 0)
    store.write(variant(base, 1))
    rows, last = store.follow(None)
    assert rows == [] and last == 1
    store.write(variant(base, 3, minute=-5))  # older in time, later in the store
    store.write(variant(base, 2))
    rows, last = store.follow(1)
    assert [int(row.trace_id[:8], 16) for row in rows] == [3, 2] and last == 3
    assert store.follow(last) == ([], last)


def test_get_json_is_the_stored_text_for_exact_ids_only(filled: ReportStore) -> None:
    trace_id = filled.list()[0].trace_id
    text = filled.get_json(trace_id)
    assert text is not None and report_from_json(text) == filled.get(trace_id)
    assert filled.get_json(trace_id[:8]) is None
    assert filled.resolve(trace_id[:8]) == trace_id
    assert filled.resolve("zzz") is None
    with pytest.raises(StoreError, match="matches 6 reports"):
        filled.resolve("0000")


def test_flags_are_found_by_value_or_short_name() -> None:
    assert HealthFlag.from_name("nan") is HealthFlag.NAN
    assert HealthFlag.from_name("repetition-loop") is HealthFlag.REPETITION_LOOP
    assert HealthFlag.from_name("mid_layer_anomaly_detected") is HealthFlag.MID_LAYER_ANOMALY
    with pytest.raises(StoreError, match="known flags: nan, inf"):
        HealthFlag.from_name("bogus")
