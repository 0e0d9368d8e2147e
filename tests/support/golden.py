"""The golden report (``tests/data/golden_report_small.json``): one small, complete report that the
sink, exporter, view and reader tests start from, and its variants (:func:`report_variant`); the
original CoreVital's reports (:data:`ORIGINAL_TRACES`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from corevital.report.encoding import report_from_json
from corevital.report.schema import CompoundSignal, HealthFlags, Report, RiskExtension, SamplingInfo
from corevital.report.timestamps import format_utc, parse_utc
from corevital.sinks.rows import HealthFlag

__all__ = [
    "GOLDEN",
    "ORIGINAL_TRACES",
    "ORIGINAL_NEWEST_FIRST",
    "ORIGINAL_TRACE_NAMES",
    "golden_report",
    "numbered_report",
    "report_variant",
]

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_report_small.json"
ORIGINAL_TRACES = GOLDEN.parent / "original-corevital"
"""Reports written by the original CoreVital (schema 0.3.0 and 0.4.0), as its users have them."""
ORIGINAL_TRACE_NAMES = (
    "sample_report.json",
    "trace_01aeafe3.json",
    "trace_1af7ccd1.json",
    "trace_7c1c62d1.json",
    "trace_8d0bad87.json",
    "trace_f7de7f4d.json",
)
# the first 8 characters of their trace ids, newest first (sample_report.json is f28f1386)
ORIGINAL_NEWEST_FIRST = ["1af7ccd1", "8d0bad87", "7c1c62d1", "01aeafe3", "f7de7f4d", "f28f1386"]
"""Every report in :data:`ORIGINAL_TRACES`."""


def golden_report() -> Report:
    """A new :class:`Report` read from :data:`GOLDEN` (the caller may change it)."""
    return report_from_json(GOLDEN.read_bytes())


def numbered_report(base: Report, worker: int, index: int) -> Report:
    """``base`` with the trace id ``{worker:04d}{index:04d}-0000-4000-8000-000000000000``, created at
    second ``worker`` and millisecond ``index`` of its minute; nothing else changed."""
    created = parse_utc(base.created_at_utc).replace(second=worker, microsecond=index * 1000)
    return base.model_copy(
        update={
            "trace_id": f"{worker:04d}{index:04d}-0000-4000-8000-000000000000",
            "created_at_utc": format_utc(created),
        }
    )


def report_variant(
    base: Report,
    number: int | None = None,
    *,
    risk: float | None,
    id_group: str = "0000",
    created: datetime | None = None,
    model: str | None = None,
    prompt: str | None = None,
    chat: bool | None = None,
    flags: Iterable[HealthFlag] | None = None,
    signals: Iterable[str] | None = None,
    weight: float | None = None,
    drop_fingerprint: bool = False,
) -> Report:
    """A copy of ``base`` with its own risk score (None: no risk extension) and whatever else is given.

    ``number`` makes the trace id ``{number:08x}-{id_group}-4000-8000-000000000000``; ``created`` the
    time; ``model`` the model id; ``prompt`` and ``chat`` the prompt's text and whether a chat template
    was applied; ``flags`` the health flags that fired (all others false); ``signals`` the compound
    signals' names (none: no compound signals); ``weight`` a sampling record standing for that many
    runs; ``drop_fingerprint`` removes the fingerprint. Anything not given stays as in ``base``.
    """
    update: dict[str, Any] = {}
    if number is not None:
        update["trace_id"] = f"{number:08x}-{id_group}-4000-8000-000000000000"
    if created is not None:
        update["created_at_utc"] = format_utc(created)
    if model is not None:
        update["model"] = base.model.model_copy(update={"hf_id": model})
    prompt_update: dict[str, Any] = {}
    if prompt is not None:
        prompt_update["text"] = prompt
    if chat is not None:
        prompt_update["chat_template_applied"] = chat
    if prompt_update:
        update["prompt"] = base.prompt.model_copy(update=prompt_update)
    if flags is not None:
        update["health_flags"] = HealthFlags(**{flag.value: True for flag in flags})
    extensions: dict[str, Any] = {"risk": None if risk is None else RiskExtension(risk_score=risk)}
    if drop_fingerprint:
        extensions["fingerprint"] = None
    if signals is not None:
        extensions["compound_signals"] = [CompoundSignal(name=name) for name in signals] or None
    if weight is not None:
        extensions["sampling"] = SamplingInfo(
            policy="every 4", kept_fraction=1 / weight, weight=weight, runs_seen=1, runs_kept=1
        )
    update["extensions"] = base.extensions.model_copy(update=extensions)
    return base.model_copy(update=update)
