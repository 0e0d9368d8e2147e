"""LocalFileSink: one ``trace_<id>.json`` per report, compact unless pretty, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corevital.errors import StoreError
from corevital.report.encoding import load_report, report_to_json
from corevital.report.schema import Report
from corevital.sinks.base import Sink
from corevital.sinks.local import LocalFileSink, trace_file_name
from tests.support.golden import golden_report
from tests.support.protocols import assert_implements


@pytest.fixture(scope="module")
def base() -> Report:
    return golden_report()


def test_writes_one_compact_file_named_by_the_full_trace_id(tmp_path: Path, base: Report) -> None:
    sink = LocalFileSink(tmp_path / "runs")
    location = sink.write(base)
    assert_implements(sink, Sink)
    path = tmp_path / "runs" / f"trace_{base.trace_id}.json"
    assert location == str(path)
    assert path.read_text(encoding="utf-8") == report_to_json(base)
    assert load_report(path) == base
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "no temporary file is left"


def test_pretty_files_are_indented(tmp_path: Path, base: Report) -> None:
    path = Path(LocalFileSink(tmp_path, pretty=True).write(base))
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n  "schema_version": "0.5.0"')
    assert json.loads(text) == json.loads(report_to_json(base))


def test_writing_again_replaces_the_file(tmp_path: Path, base: Report) -> None:
    sink = LocalFileSink(tmp_path)
    sink.write(base)
    changed = base.model_copy(update={"summary": base.summary.model_copy(update={"elapsed_ms": 99})})
    sink.write(changed)
    assert load_report(sink.path_for(base.trace_id)).summary.elapsed_ms == 99
    sink.close()


@pytest.mark.parametrize("trace_id", ["", "../escape", "a/b", "..", "a\\b"])
def test_trace_ids_that_cannot_name_a_file_are_refused(trace_id: str) -> None:
    with pytest.raises(StoreError, match="cannot name a file"):
        trace_file_name(trace_id)


def test_an_uncreatable_directory_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x", encoding="utf-8")
    with pytest.raises(StoreError, match=r"^cannot create directory .*blocker") as caught:
        LocalFileSink(tmp_path / "blocker" / "runs")
    assert "\n" not in str(caught.value)


def test_a_failed_write_is_a_store_error_and_leaves_no_temporary_file(tmp_path: Path, base: Report) -> None:
    sink = LocalFileSink(tmp_path)
    sink.path_for(base.trace_id).mkdir()  # a directory where the file should go: the rename fails
    with pytest.raises(StoreError, match=r"^cannot write .*trace_"):
        sink.write(base)
    assert [p.name for p in tmp_path.iterdir()] == [f"trace_{base.trace_id}.json"]
