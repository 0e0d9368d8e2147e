"""Several processes writing into one SQLite store at once lose and duplicate nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.sqlite_writers import concurrent_sqlite_writes


@pytest.mark.slow  # real processes (spawned: each imports corevital)
def test_four_processes_writing_at_once_store_every_report_once(tmp_path: Path) -> None:
    result = concurrent_sqlite_writes(tmp_path / "corevital.db", processes=4, runs_each=25)
    assert result.ok, result.as_dict()
    assert result.rows == 100
