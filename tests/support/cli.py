"""The `corevital` command line called in-process, as the CLI tests call it.

:func:`run_cli` runs :func:`corevital.cli.main` with ``argv`` and returns its exit code with what it
wrote to stdout and stderr (:func:`run_ok` asserts it exits 0); :func:`run_args` is the start of a
``corevital run`` on a local tiny model (CPU, reports under ``out``, no chat template);
:func:`one_error_line` checks that stderr is the one-line error a user is shown and returns it;
:func:`newest_report` reads back what a run stored; :func:`migrated_originals` is a store of the
six original traces made by ``corevital migrate``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from corevital.cli import main
from corevital.report.schema import Report
from corevital.sinks.sqlite import SQLiteStore
from tests.support.golden import ORIGINAL_TRACES

__all__ = ["migrated_originals", "newest_report", "one_error_line", "run_args", "run_cli", "run_ok"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``corevital <argv>``: the exit code, stdout and stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_ok(*argv: str) -> None:
    """``corevital <argv>``, asserted to exit 0 (its output left to pytest's capture)."""
    code = main(list(argv))
    assert code == 0, f"corevital {' '.join(argv)} exited with {code}"


def run_args(model: str | Path, out: str | Path) -> list[str]:
    """``run --model <model> --device cpu --out <out> --chat-template off``."""
    return ["run", "--model", str(model), "--device", "cpu", "--out", str(out), "--chat-template", "off"]


def one_error_line(err: str) -> str:
    """The one non-blank line of ``err``, asserted to be ``corevital: error: …`` with no traceback."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("corevital: error: ") and "Traceback" not in err, err
    return lines[0]


def newest_report(db: str | Path) -> Report:
    """The newest report in the SQLite store at ``db`` (asserted to be there)."""
    with SQLiteStore(db) as store:
        report = store.get(store.list()[0].trace_id)
    assert report is not None
    return report


def migrated_originals(directory_factory: Callable[[str], Path]) -> str:
    """The six original traces (sample_report.json named like the others), migrated with the CLI into
    a new store; its path. ``directory_factory``: ``tmp_path_factory.mktemp``."""
    traces = directory_factory("original-traces")
    for source in sorted(ORIGINAL_TRACES.glob("*.json")):
        name = source.name if source.name.startswith("trace_") else "trace_f28f1386.json"
        shutil.copyfile(source, traces / name)
    path = directory_factory("store") / "corevital.db"
    assert main(["migrate", "--from-dir", str(traces), "--to-db", str(path)]) == 0
    return str(path)
