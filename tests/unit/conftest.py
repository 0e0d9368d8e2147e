"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from tests.support.cli import migrated_originals


@pytest.fixture(scope="session")
def originals_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The six original traces migrated with the CLI, once a session; the tests only read it."""
    return migrated_originals(tmp_path_factory.mktemp)
