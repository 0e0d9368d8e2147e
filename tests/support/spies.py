"""Counting the calls of a function a test replaces for its duration (the real one still runs)."""

from __future__ import annotations

from typing import Any

import pytest


def calls_of(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[tuple[Any, ...]]:
    """The positional arguments of every call of ``owner.name`` from now on, in order.

    ``owner.name`` is replaced (by ``monkeypatch``, so restored after the test) with a wrapper that
    records the call and returns what the real function returns.
    """
    calls: list[tuple[Any, ...]] = []
    real = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls
