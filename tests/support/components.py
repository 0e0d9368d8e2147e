"""Real components of the test suite that come from Debian packages: Chromium, PostgreSQL, Prometheus.

Tests use the real programs, never mocks. ``make test`` (and ``.ci/run``) install the packages
when they are missing and the user is root. A test that needs a component calls :func:`require`:
when the component is absent the test is skipped with a visible reason that says how to install
it, except in CI (``CI=true``), where an absent component fails the test, so that CI can never
pass by skipping what it was meant to run.

Typical use::

    from tests.support.components import CHROMIUM, require

    chromium = require(CHROMIUM)  # a Path, or a skip (locally) / failure (CI)
"""

from __future__ import annotations

import glob
import importlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

__all__ = [
    "CHROMIUM",
    "COMPONENTS",
    "POSTGRES",
    "PROMETHEUS",
    "PROMTOOL",
    "Component",
    "in_ci",
    "locate",
    "missing",
    "require",
    "require_module",
]


@dataclass(frozen=True)
class Component:
    """A program from a Debian package, looked for at ``candidates`` (paths or globs) then on PATH."""

    name: str
    package: str
    candidates: tuple[str, ...]
    on_path: str | None = None

    @property
    def install_hint(self) -> str:
        return f"install Debian's package: apt-get install -y {self.package} (or run `make setup` as root)"


CHROMIUM = Component("chromium", "chromium", ("/usr/bin/chromium",))
"""Debian's Chromium, driven by Playwright through ``executable_path`` (Playwright's own browsers are
never downloaded)."""

POSTGRES = Component("postgres", "postgresql", ("/usr/lib/postgresql/*/bin/postgres",), on_path="postgres")
"""The PostgreSQL server binary; ``initdb`` and ``pg_ctl`` are in the same directory."""

PROMETHEUS = Component("prometheus", "prometheus", ("/usr/bin/prometheus",), on_path="prometheus")
"""The Prometheus server."""

PROMTOOL = Component("promtool", "prometheus", ("/usr/bin/promtool",), on_path="promtool")
"""Prometheus's rule and configuration checker (in the same package as the server)."""

COMPONENTS: tuple[Component, ...] = (CHROMIUM, POSTGRES, PROMETHEUS, PROMTOOL)


def in_ci() -> bool:
    """Whether the tests run in CI (``CI`` set to ``true``, ``1`` or ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def locate(component: Component) -> Path | None:
    """The component's executable, or ``None``; of several versions (globs), the newest."""
    for candidate in component.candidates:
        for match in sorted(glob.glob(candidate), key=_version_key, reverse=True):
            path = Path(match)
            if path.is_file() and os.access(path, os.X_OK):
                return path
    found = shutil.which(component.on_path) if component.on_path else None
    return Path(found) if found else None


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in Path(path).parts if part.isdigit())


def missing(reason: str) -> None:
    """Skip the test with ``reason``; in CI, fail it instead (a skip there would hide a gap)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing component fails the run)", pytrace=False)
    pytest.skip(reason)


def require(component: Component) -> Path:
    """The component's executable; skips the test (fails it in CI) when it is not installed."""
    path = locate(component)
    if path is None:
        where = ", ".join(component.candidates)
        missing(f"{component.name} not found ({where}): {component.install_hint}")
        raise AssertionError("unreachable")  # pytest.skip and pytest.fail raise
    return path


def require_module(name: str, extra: str = "dev") -> ModuleType:
    """The Python module ``name``; skips the test (fails it in CI) when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        missing(f"Python module {name} not installed ({error}): pip install -e '.[{extra}]'")
        raise AssertionError("unreachable") from error
