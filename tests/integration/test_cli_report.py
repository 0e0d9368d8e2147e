"""`corevital report TRACE --html OUT.html`: a stored tiny-model run written as one HTML file."""

from __future__ import annotations

import json
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from corevital.cli import main
from corevital.sinks.sqlite import SQLiteStore
from tests.support.cli import one_error_line, run_args, run_cli


@pytest.fixture(scope="module")
def stored_run(
    tiny_model_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """A database holding one full-capture run of the tiny Llama; returns (db path, trace id)."""
    out = tmp_path_factory.mktemp("runs")
    code = main(
        [
            *run_args(tiny_model_dir("llama"), out),
            "--max_new_tokens",
            "6",
            "--prompt",
            "Why is the <marquee>sky</marquee> blue?",
            "--json",
        ]
    )
    assert code == 0
    db = out / "corevital.db"
    with SQLiteStore(db) as store:
        (row,) = store.list()
    return db, row.trace_id


def test_report_by_prefix_writes_one_html_file(
    capsys: pytest.CaptureFixture[str], stored_run: tuple[Path, str], tmp_path: Path
) -> None:
    db, trace_id = stored_run
    out = tmp_path / "nested" / "dir" / "run.html"
    code, stdout, err = run_cli(capsys, "report", trace_id[:8], "--html", str(out), "--db", str(db), "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary == {"trace_id": trace_id, "path": str(out), "bytes": out.stat().st_size}
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and trace_id in html
    assert "Why is the &lt;marquee&gt;sky&lt;/marquee&gt; blue?" in html
    tags: list[str] = []
    parser = HTMLParser()
    parser.handle_starttag = lambda tag, attrs: tags.append(tag)  # type: ignore[method-assign]
    parser.feed(html)
    assert "marquee" not in tags and "script" not in tags
    assert tags.count("svg") >= 7  # four step charts, three heat maps (and their cell layers)
    assert not list(out.parent.glob(".*.tmp"))


def test_report_plain_output_names_the_file(
    capsys: pytest.CaptureFixture[str], stored_run: tuple[Path, str], tmp_path: Path
) -> None:
    db, trace_id = stored_run
    out = tmp_path / "run.html"
    code, stdout, _ = run_cli(capsys, "report", trace_id, "--html", str(out), "--db", str(db))
    assert code == 0 and str(out) in stdout and trace_id in stdout


def test_report_from_a_json_file(
    capsys: pytest.CaptureFixture[str], stored_run: tuple[Path, str], tmp_path: Path
) -> None:
    from corevital.report.encoding import report_to_json

    db, trace_id = stored_run
    with SQLiteStore(db) as store:
        report = store.get(trace_id)
    assert report is not None
    source = tmp_path / "trace.json"
    source.write_text(report_to_json(report), encoding="utf-8")
    out = tmp_path / "from-json.html"
    code, _, err = run_cli(capsys, "report", "--report", str(source), "--html", str(out))
    assert code == 0, err
    assert trace_id in out.read_text(encoding="utf-8")


def test_unknown_trace_is_one_error_line(
    capsys: pytest.CaptureFixture[str], stored_run: tuple[Path, str], tmp_path: Path
) -> None:
    db, _ = stored_run
    code, _, err = run_cli(capsys, "report", "zzzz", "--html", str(tmp_path / "x.html"), "--db", str(db))
    assert code == 6 and "no stored run matches 'zzzz'" in one_error_line(err)
    assert not (tmp_path / "x.html").exists()


def test_missing_database_is_one_error_line_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "none.db"
    code, _, err = run_cli(capsys, "report", "abc", "--html", str(tmp_path / "x.html"), "--db", str(db))
    assert code == 6 and "no CoreVital database" in one_error_line(err)
    assert not db.exists()


def test_output_directory_is_refused(
    capsys: pytest.CaptureFixture[str], stored_run: tuple[Path, str], tmp_path: Path
) -> None:
    db, trace_id = stored_run
    code, _, err = run_cli(capsys, "report", trace_id, "--html", str(tmp_path), "--db", str(db))
    assert code == 2 and "is a directory" in one_error_line(err)


def test_no_run_given_and_both_given(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "report", "--html", str(tmp_path / "x.html"))
    assert code == 2 and "no run given" in one_error_line(err)
    code, _, err = run_cli(capsys, "report", "abc", "--report", "r.json", "--html", str(tmp_path / "x.html"))
    assert code == 2 and "not both" in one_error_line(err)


def test_unreadable_report_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    code, _, err = run_cli(capsys, "report", "--report", str(bad), "--html", str(tmp_path / "x.html"))
    assert code == 5 and "bad.json" in one_error_line(err)
