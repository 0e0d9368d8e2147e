"""Small assertions shared by the tests."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def present(value: T | None) -> T:
    """``value``, asserted not None: reads an optional report or schema field that the test expects set."""
    assert value is not None
    return value
