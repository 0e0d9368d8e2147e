"""Every exit code docs/cli.md lists is reached by a real command, with a one-line error."""

from __future__ import annotations

import re
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from corevital.cli import main
from tests.support.hostile import GOLDEN
from tests.support.tiny_models import build_model, build_tokenizer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def documented_codes() -> set[int]:
    table = DOCS.read_text(encoding="utf-8").split("## Errors and exit codes", 1)[1]
    return {int(code) for code in re.findall(r"(?m)^\| (\d+) \|", table)}


@pytest.fixture(scope="module")
def nan_head_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose output head is NaN: sampling fails inside generate() (a token the embedding
    has no row for would be refused before generating, as an input error)."""
    directory = tmp_path_factory.mktemp("nan-head")
    model = build_model("llama", seed=0)
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    model.save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return directory


def commands(tmp: Path, tiny: str, nan_head: Path) -> dict[int, list[str]]:
    run = ["run", "--device", "cpu", "--out", str(tmp / "out"), "--chat-template", "off", "--prompt", "hello"]
    bad_db = tmp / "bad.db"
    with sqlite3.connect(bad_db) as conn:
        conn.execute("CREATE TABLE unrelated (x)")
    not_a_dir = tmp / "a-file"
    not_a_dir.write_text("")
    bad_report = tmp / "bad.json"
    bad_report.write_text('{"schema_version": "9.9.9"}')
    return {
        0: [*run, "--model", tiny, "--max-new-tokens", "1"],
        2: [*run, "--model", tiny, "--temperature", "inf"],
        3: [*run, "--model", str(tmp / "no-such-model-dir")],
        4: [*run, "--model", str(nan_head), "--max-new-tokens", "2", "--temperature", "0.8"],
        5: ["report", "--report", str(bad_report), "--html", str(tmp / "r.html")],
        6: ["runs", "--db", str(bad_db)],
        8: [*run, "--model", tiny, "--sink", "prometheus", "--prometheus-textfile", str(tmp / "m.prom")],
        9: [
            *run,
            "--model",
            tiny,
            "--sink",
            "http",
            "--http-url",
            "http://127.0.0.1:9/",
            "--http-spool",
            str(not_a_dir),
        ],
    }


def test_every_documented_code_is_covered_here() -> None:
    assert documented_codes() == {0, 1, 2, 3, 4, 5, 6, 8, 9, 70, 130}


def test_a_migrate_with_failed_reports_is_code_1_and_imports_the_rest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    shutil.copy(GOLDEN, traces / "trace_good.json")
    (traces / "trace_bad.json").write_text("{not json")
    assert main(["migrate", "--from-dir", str(traces), "--to-db", str(tmp_path / "t.db")]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == "imported 1, skipped 0, failed 1"
    assert err.startswith(f"  failed: {traces / 'trace_bad.json'}: ") and err.count("\n") == 1


@pytest.mark.parametrize("code", [0, 2, 3, 4, 5, 6, 8, 9])
def test_the_code_is_reached_with_one_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tiny_model_dir: Callable[[str], Path],
    nan_head_model: Path,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "corevital.exporters.prometheus", raising=False)
    argv = commands(tmp_path, str(tiny_model_dir("llama")), nan_head_model)[code]
    assert main(argv) == code
    err = capsys.readouterr().err
    if code:
        lines = [line for line in err.splitlines() if line.startswith("corevital: ")]
        assert len(lines) == 1 and lines[0].startswith("corevital: error: "), err
        assert "Traceback" not in err


def test_an_internal_error_is_code_70_and_a_keyboard_interrupt_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import corevital.cli.stored as stored

    def boom(*args: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(stored, "cmd_runs", boom)
    assert main(["runs"]) == 70
    assert "internal error: ZeroDivisionError: a bug" in capsys.readouterr().err

    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(stored, "cmd_runs", interrupted)
    assert main(["runs"]) == 130
    assert capsys.readouterr().err.strip() == "corevital: interrupted"
