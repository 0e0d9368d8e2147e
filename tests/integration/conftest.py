"""Tiny random-weight models of real architectures, saved once per session like a user's local model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corevital.capture.loading import LoadedModel, ModelSpec, load_model
from corevital.config import Settings, load_settings
from tests.support.tiny_models import save_tiny_model
from tests.support.wheel import build_wheel


@pytest.fixture(autouse=True, scope="module")
def _one_thread_for_tiny_models() -> Iterator[None]:
    """Tiny models run faster on one thread: intra-op spinning dominates on a loaded 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    saved: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in saved:
            saved[arch] = save_tiny_model(arch, tmp_path_factory.mktemp(f"tiny-{arch}"), seed=0)
        return saved[arch]

    return get


@pytest.fixture
def tiny_llama(tiny_model_dir: Callable[[str], Path]) -> str:
    """The tiny Llama's directory, as a ``--model`` argument."""
    return str(tiny_model_dir("llama"))


@pytest.fixture(scope="session")
def corevital_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corevital wheel, built once per session from a copy of the source tree."""
    return build_wheel(tmp_path_factory.mktemp("corevital-wheel"))


_LOADED: dict[str, LoadedModel] = {}


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir: Callable[[str], Path]) -> Callable[[str], LoadedModel]:
    def get(arch: str) -> LoadedModel:
        if arch not in _LOADED:
            _LOADED[arch] = load_model(ModelSpec(model=str(tiny_model_dir(arch)), device="cpu"))
        return _LOADED[arch]

    return get


def tiny_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"device": "cpu", "temperature": 0.0, "max_new_tokens": 8, "chat_template": "off"}
    base.update(overrides)
    return load_settings(base, environ={})
