"""Comparing captured statistics dataclasses field by field, for tests of equivalent code paths."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def assert_stats_close(got: Any, want: Any, name: str, *, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Both None, or every field of the two statistics dataclasses of one shape and equal within tolerance."""
    assert (got is None) == (want is None), name
    if got is None:
        return
    for field in dataclasses.fields(got):
        x, y = getattr(got, field.name), getattr(want, field.name)
        assert (x is None) == (y is None), f"{name}.{field.name}"
        if x is not None:
            assert np.asarray(x).shape == np.asarray(y).shape, f"{name}.{field.name}"
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"{name}.{field.name}")
