"""tests/support/components.py: a missing Debian component skips locally and fails in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.components import CHROMIUM, Component, in_ci, locate, require, require_module

ABSENT = Component("nothing", "no-such-package", ("/nonexistent/*/bin/nothing",), on_path="no-such-binary-x")


def test_missing_component_skips_with_the_install_hint_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y no-such-package"):
        require(ABSENT)


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_missing_component_fails_in_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require(ABSENT)
    with pytest.raises(pytest.fail.Exception, match="no_such_module_x"):
        require_module("no_such_module_x")


def test_ci_false_is_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    assert not in_ci()


def test_newest_version_of_a_glob_wins(tmp_path: Path) -> None:
    for version in ("9", "15", "13"):
        binary = tmp_path / version / "bin" / "postgres"
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    component = Component("postgres", "postgresql", (str(tmp_path / "*" / "bin" / "postgres"),))
    assert locate(component) == tmp_path / "15" / "bin" / "postgres"


def test_chromium_is_looked_for_at_debians_path() -> None:
    assert CHROMIUM.candidates == ("/usr/bin/chromium",)
