"""Views of stored runs over HTTP: one run's digest and several runs side by side.

Both read the stored report JSON (no pydantic models) through :mod:`corevital.views.digest` and
:mod:`corevital.views.compare`, the same code as ``corevital show`` and ``corevital compare``.
"""

from __future__ import annotations

import json
from typing import Any

from corevital.server.common import Served, in_thread, resolve_id
from corevital.server.errors import ApiError
from corevital.sinks.base import ReportStore
from corevital.views.compare import compare_runs
from corevital.views.digest import RunDigest, digest_document


def _digest(store: ReportStore, trace_id: str) -> RunDigest:
    full_id = resolve_id(store, trace_id)
    text = None if full_id is None else store.get_json(full_id)
    if text is None:
        raise ApiError(404, f"no run with id {trace_id}")
    return digest_document(json.loads(text))


def _digests(store: ReportStore, ids: list[str]) -> list[RunDigest]:
    return [_digest(store, trace_id) for trace_id in ids]


async def run_digest(served: Served, trace_id: str) -> dict[str, Any]:
    """What ``corevital show`` shows of one run, as JSON."""
    digest = await in_thread(_digest, served.store, trace_id)
    return digest.to_json()


async def run_comparison(served: Served, ids: list[str]) -> dict[str, Any]:
    """What ``corevital compare`` shows of the runs (in the order given), as JSON."""
    digests = await in_thread(_digests, served.store, ids)
    return compare_runs(digests).to_json()
