"""The real SmolLM2-135M-Instruct model (the embedded default), loaded once per test session."""

from __future__ import annotations

from typing import Any

import pytest

from corevital.capture.loading import LoadedModel, ModelSpec, load_model
from corevital.config import Settings, load_settings

_LOADED: list[LoadedModel] = []


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    if not _LOADED:
        _LOADED.append(load_model(ModelSpec(device="cpu")))
    return _LOADED[0]


def smol_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"device": "cpu", "max_new_tokens": 16}
    base.update(overrides)
    return load_settings(base, environ={})
