"""bench/tap_cost.py: the attention function's host cost per layer, on a deferring pass."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_tap_runs_a_deferred_decoding_step_and_is_timed_beside_plain() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        tap_cost = importlib.import_module("tap_cost")
    finally:
        sys.path.remove(str(BENCH))
    found = tap_cost.per_layer_us(layers=4, rounds=12)  # asserts that every layer's row waited
    assert set(found) == {"tap", "plain", "sdpa"}
    assert all(0.0 < us < 1e5 for us in found.values())
