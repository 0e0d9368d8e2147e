"""Exporting stored runs: reports as JSON lines, or one row per run or per step as CSV or Parquet.

- ``jsonl``: one stored report JSON per line, exactly as stored.
- ``csv`` and ``parquet`` with ``rows="run"``: the index row of each run (:data:`RUN_COLUMNS`, the
  fields of :class:`~corevital.sinks.rows.TraceRow`); with ``rows="step"``: one row per generated
  step (:data:`STEP_COLUMNS`: the run's id and model, the step, its token and logit statistics).
  CSV (RFC 4180, CRLF line ends) writes booleans as ``true``/``false`` and missing values as empty cells.
  A text cell beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (a prompt, a
  token, a model id) gets a leading ``'``, so that a spreadsheet shows it as text instead of running
  it as a formula; numbers are written as they are.

Runs are read page by page in the query's order, so an export of any size holds one page of rows
(and, per step, one report) in memory. Parquet needs pyarrow (``pip install pyarrow``); without
it, asking for Parquet is a one-line :class:`~corevital.errors.NotAvailableError`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import IO, Any, Final

from corevital.errors import InputError, NotAvailableError
from corevital.sinks.base import MAX_PAGE_SIZE, ReportStore, TraceQuery, TraceRow
from corevital.sinks.local import replaced_atomically

FORMATS: Final = ("jsonl", "csv", "parquet")
ROW_KINDS: Final = ("run", "step")
RUN_COLUMNS: Final = tuple(field.name for field in fields(TraceRow))
STEP_COLUMNS: Final = (
    "trace_id",
    "model_id",
    "step",
    "step_index",
    "token_id",
    "token_text",
    "entropy",
    "surprisal",
    "perplexity",
    "top_k_margin",
    "topk_mass",
    "sampling_entropy",
    "sampling_prob",
)
_LOGIT_COLUMNS: Final = STEP_COLUMNS[6:]


def iter_rows(store: ReportStore, query: TraceQuery) -> Iterator[TraceRow]:
    """Every row matching ``query`` (its ``limit`` is the total; ``None``: all), page by page."""
    remaining = query.limit
    paged = replace(query, limit=MAX_PAGE_SIZE if remaining is None else min(remaining, MAX_PAGE_SIZE))
    cursor: str | None = None
    while remaining is None or remaining > 0:
        page = store.page(paged, cursor)
        rows = page.rows if remaining is None else page.rows[:remaining]
        yield from rows
        if remaining is not None:
            remaining -= len(rows)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def run_record(row: TraceRow) -> dict[str, Any]:
    """The export record of one run: every :class:`TraceRow` field."""
    return asdict(row)


def step_records(document: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """One record per generated step of a report JSON document (prompt-token steps left out)."""
    model_id = (document.get("model") or {}).get("hf_id")
    generated = [
        step
        for step in document.get("timeline") or ()
        if isinstance(step, Mapping) and not (step.get("token") or {}).get("is_prompt_token")
    ]
    for number, step in enumerate(generated):
        token = step.get("token") or {}
        logits = step.get("logits_summary") or {}
        record: dict[str, Any] = {
            "trace_id": document.get("trace_id"),
            "model_id": model_id,
            "step": number,
            "step_index": step.get("step_index"),
            "token_id": token.get("token_id"),
            "token_text": token.get("token_text"),
        }
        record.update({name: _number(logits.get(name)) for name in _LOGIT_COLUMNS})
        yield record


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _documents(store: ReportStore, rows: Iterator[TraceRow]) -> Iterator[tuple[TraceRow, str]]:
    for row in rows:
        text = store.get_json(row.trace_id)
        if text is not None:  # deleted meanwhile
            yield row, text


def export_runs(
    store: ReportStore, query: TraceQuery, *, fmt: str, rows: str = "run", out: Path | IO[str]
) -> int:
    """Write the runs matching ``query`` to ``out`` (a path, or a text stream for jsonl and csv).

    Returns the number of records written (reports for jsonl, runs or steps otherwise). A file is
    written whole or not at all (through a temporary file beside it).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if rows not in ROW_KINDS:
        raise InputError(f"unknown row kind {rows!r}; use run or step")
    if fmt == "parquet":
        if not isinstance(out, Path):
            raise InputError("parquet export needs a file (--out FILE)")
        return _write_parquet(_records(store, query, rows), _columns(rows), out)
    if isinstance(out, Path):
        return _to_file(out, lambda stream: _write_text(store, query, fmt, rows, stream))
    return _write_text(store, query, fmt, rows, out)


def _columns(rows: str) -> tuple[str, ...]:
    return RUN_COLUMNS if rows == "run" else STEP_COLUMNS


def _records(store: ReportStore, query: TraceQuery, rows: str) -> Iterator[dict[str, Any]]:
    if rows == "run":
        yield from (run_record(row) for row in iter_rows(store, query))
        return
    for _, text in _documents(store, iter_rows(store, query)):
        yield from step_records(json.loads(text))


def _write_text(store: ReportStore, query: TraceQuery, fmt: str, rows: str, stream: IO[str]) -> int:
    if fmt == "jsonl":
        count = 0
        for _, text in _documents(store, iter_rows(store, query)):
            stream.write(text.strip().replace("\n", " ") + "\n")
            count += 1
        return count
    columns = _columns(rows)
    writer = csv.DictWriter(stream, fieldnames=columns)  # RFC 4180: CRLF, so a lone CR is quoted
    writer.writeheader()
    count = 0
    for record in _records(store, query, rows):
        writer.writerow({key: _csv_cell(value) for key, value in record.items()})
        count += 1
    return count


FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")
"""How a text cell that a spreadsheet would run as a formula begins (OWASP's CSV injection list)."""


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value  # shown as text by spreadsheets, never evaluated
    return value


def _to_file(path: Path, write: Any) -> int:
    try:
        with (
            replaced_atomically(path) as temporary,
            temporary.open("w", encoding="utf-8", newline="") as stream,
        ):
            count: int = write(stream)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from None
    return count


def require_pyarrow() -> Any:
    """The ``pyarrow`` module, or a one-line NotAvailableError saying how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise NotAvailableError(
            "parquet export needs pyarrow, which is not installed: pip install pyarrow"
        ) from None
    return pyarrow


def _write_parquet(records: Iterator[dict[str, Any]], columns: tuple[str, ...], path: Path) -> int:
    pyarrow = require_pyarrow()
    table = pyarrow.Table.from_pylist(list(records), schema=None)
    if table.num_columns == 0:
        table = pyarrow.table({name: pyarrow.array([], type=pyarrow.string()) for name in columns})
    try:
        with replaced_atomically(path) as temporary:
            pyarrow.parquet.write_table(table, temporary)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from None
    return int(table.num_rows)


def text_stream(buffer: IO[bytes]) -> io.TextIOWrapper:
    """A UTF-8 text stream over a binary one (for writing to stdout regardless of the locale)."""
    return io.TextIOWrapper(buffer, encoding="utf-8", newline="", write_through=True)
