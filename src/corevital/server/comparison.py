"""``GET /api/v1/compare``: several stored runs side by side."""

from __future__ import annotations

from typing import Any

import corevital.analysis.hashing  # noqa: F401 - used by trace_row_from_report: imported before serving
import corevital.report.encoding  # noqa: F401 - used by store.get: imported before serving, not while
from corevital.server.common import Served, in_thread, resolve_id, row_dict
from corevital.server.errors import ApiError
from corevital.sinks.base import ReportStore, trace_row_from_report

NUMBERS = (
    "risk_score",
    "mean_entropy",
    "mean_surprisal",
    "generated_tokens",
    "prompt_tokens",
    "high_entropy_steps",
)


def _rows(store: ReportStore, ids: list[str]) -> list[dict[str, Any]]:
    rows = []
    for trace_id in ids:
        full_id = resolve_id(store, trace_id)
        report = None if full_id is None else store.get(full_id)
        if report is None:
            raise ApiError(404, f"no run with id {trace_id}")
        rows.append(row_dict(trace_row_from_report(report)))
    return rows


def _delta(value: Any, base: Any) -> float | None:
    if isinstance(value, int | float) and isinstance(base, int | float):
        return float(value) - float(base)
    return None


async def compare_runs(served: Served, ids: list[str]) -> dict[str, Any]:
    """The runs' rows in the order given, and each one's differences from the first."""
    rows = await in_thread(_rows, served.store, ids)
    base = rows[0]
    return {
        "runs": rows,
        "baseline": base["trace_id"],
        "differences": [
            {"trace_id": row["trace_id"], **{name: _delta(row[name], base[name]) for name in NUMBERS}}
            for row in rows
        ],
    }
