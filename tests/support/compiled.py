"""Counting the calls of one of capture's compiled reductions (corevital.metrics.compiled)."""

from __future__ import annotations

from typing import Any

import pytest

from corevital.metrics.compiled import CompiledReduction


def count_calls(monkeypatch: pytest.MonkeyPatch, reduction: CompiledReduction[Any]) -> list[int]:
    """A list that gains an entry each time ``reduction`` is called (the reduction itself untouched:
    its compiled form and its ``failure`` stay what they are)."""
    calls: list[int] = []
    real_call = CompiledReduction.__call__

    def counted(self: CompiledReduction[Any], *args: Any) -> Any:
        if self is reduction:
            calls.append(1)
        return real_call(self, *args)

    monkeypatch.setattr(CompiledReduction, "__call__", counted)
    return calls
