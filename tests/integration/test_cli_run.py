"""`corevital run`: errors a user can cause, output, sinks and settings precedence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corevital.cli import main
from corevital.config import load_settings
from corevital.report.encoding import load_report
from corevital.sinks.sqlite import SQLiteStore
from tests.support.cli import newest_report, one_error_line, run_args, run_cli
from tests.support.sinks import count_json_encodings


def test_unknown_model_id(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, *run_args("no-such-org/no-such-model", tmp_path), "--prompt", "hi")
    assert code == 3
    assert "not found" in one_error_line(err)


def test_missing_local_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, *run_args(str(tmp_path / "nowhere"), tmp_path), "--prompt", "hi")
    assert code == 3 and "model directory not found" in one_error_line(err)


def test_unreadable_gguf(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a gguf file at all")
    code, _, err = run_cli(capsys, "run", "--gguf-file", str(bad), "--prompt", "hi", "--out", str(tmp_path))
    line = one_error_line(err)
    assert code == 3 and "broken.gguf" in line and "GGUF" in line


def test_empty_prompt(capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str) -> None:
    code, _, err = run_cli(capsys, *run_args(tiny_llama, tmp_path), "--prompt", "   ")
    assert code == 2 and "prompt is empty" in one_error_line(err)


def test_no_prompt(capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str) -> None:
    code, _, err = run_cli(capsys, *run_args(tiny_llama, tmp_path))
    assert code == 2 and "no prompt given" in one_error_line(err)


@pytest.mark.parametrize("value", ["0", "-3"])
def test_max_new_tokens_below_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str, value: str
) -> None:
    code, _, err = run_cli(
        capsys, *run_args(tiny_llama, tmp_path), "--prompt", "hi", "--max_new_tokens", value
    )
    assert code == 2 and "max_new_tokens" in one_error_line(err)


def test_max_new_tokens_beyond_context(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    code, _, err = run_cli(
        capsys, *run_args(tiny_llama, tmp_path), "--prompt", "hi", "--max_new_tokens", "5000"
    )
    assert code == 2 and "context window of 512" in one_error_line(err)


def test_cuda_requested_without_cuda(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    args = run_args(tiny_llama, tmp_path)
    args[args.index("--device") + 1] = "cuda"
    code, _, err = run_cli(capsys, *args, "--prompt", "hi")
    assert code == 3 and "no CUDA device" in one_error_line(err)


@pytest.mark.parametrize("flag,label", [("--quantize-4", "4-bit"), ("--quantize-8", "8-bit")])
def test_quantization_without_cuda(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str, flag: str, label: str
) -> None:
    code, _, err = run_cli(capsys, *run_args(tiny_llama, tmp_path), "--prompt", "hi", flag)
    line = one_error_line(err)
    assert code == 3 and label in line and "CUDA" in line


def test_output_directory_not_writable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(capsys, *run_args(tiny_llama, blocker / "runs"), "--prompt", "hi")
    assert code == 6 and "a-file" in one_error_line(err)


def test_corrupt_database_is_refused_and_left_intact(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    db = tmp_path / "corevital.db"
    garbage = b"definitely not sqlite " * 100
    db.write_bytes(garbage)
    code, _, err = run_cli(capsys, *run_args(tiny_llama, tmp_path), "--prompt", "hi")
    assert code == 6 and "corevital.db" in one_error_line(err)
    assert db.read_bytes() == garbage


def test_a_damaged_page_inside_a_valid_database_is_refused_before_the_model_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    """A store whose header is fine but one of whose report pages is overwritten: the pre-flight
    finds it (``PRAGMA quick_check``) instead of the write after the generation."""
    import random
    import sqlite3
    import uuid
    from contextlib import closing

    from corevital.report.encoding import report_from_json
    from tests.support.hostile import GOLDEN

    db = tmp_path / "corevital.db"
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    rng = random.Random(5)
    with SQLiteStore(db) as store:
        for _ in range(30):
            golden["trace_id"] = str(uuid.UUID(int=rng.getrandbits(128)))
            golden["prompt"]["text"] = rng.randbytes(600).hex()  # incompressible: several pages
            store.write(report_from_json(json.dumps(golden)))
    with closing(sqlite3.connect(db)) as conn:  # everything in the main file, no -wal beside it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        leaves = [
            n
            for (n,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'reports' AND pagetype = 'leaf'")
        ]
    assert len(leaves) > 2
    with db.open("r+b") as handle:  # a middle leaf page: the header page stays intact
        handle.seek((leaves[len(leaves) // 2] - 1) * size)
        handle.write(b"\x77" + rng.randbytes(size - 1))
    code, out, err = run_cli(capsys, *run_args(tiny_llama, tmp_path), "--prompt", "hi")
    line = one_error_line(err)
    assert code == 6 and "is damaged" in line and "migrate --from-db" in line, err
    assert "Reports:" not in out  # nothing generated


@pytest.mark.slow  # a real `corevital` process: seconds of interpreter and torch start-up
@pytest.mark.parametrize("case", ["empty prompt", "unreadable gguf"])
def test_error_exit_code_and_single_line_in_a_real_process(tmp_path: Path, case: str) -> None:
    """The one error line is all of stderr (no log line before it: pytest's log capture is not there)."""
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a gguf file at all")
    args, code, line = {
        "empty prompt": (["--prompt", ""], 2, "corevital: error: the prompt is empty"),
        "unreadable gguf": (
            ["--gguf-file", str(bad), "--prompt", "hi"],
            3,
            f"corevital: error: {bad} is not a valid GGUF file: no GGUF magic at its start; refused",
        ),
    }[case]
    proc = subprocess.run(
        [sys.executable, "-m", "corevital", "run", *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert proc.returncode == code
    assert proc.stderr.strip() == line


def test_run_writes_sqlite_and_prints_summary(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    code, out, err = run_cli(
        capsys,
        *run_args(tiny_llama, tmp_path),
        "--prompt",
        "hello there",
        "--prompt",
        "a b c",
        "--temperature",
        "0",
    )
    assert code == 0, err
    # A batch is one table row per sequence (docs/cli.md), then where the reports went.
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["#"])
    assert lines[header].split()[:4] == ["#", "risk", "flags", "finish"]
    assert len(lines[header + 1 : header + 3]) == 2 and all(
        line.split()[0] in ("1", "2") for line in lines[header + 1 : header + 3]
    )
    assert "Reports: 2 of 2 stored" in out
    store = SQLiteStore(tmp_path / "corevital.db")
    try:
        rows = store.list()
        assert len(rows) == 2
        report = store.get(rows[0].trace_id)
        assert report is not None and report.run_config.batch_size == 2
    finally:
        store.close()


def test_run_local_sink_and_json_summary(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str
) -> None:
    code, out, _ = run_cli(
        capsys,
        *run_args(tiny_llama, tmp_path),
        "--prompt",
        "hello",
        "--sink",
        "local",
        "--json",
        "--json-pretty",
    )
    assert code == 0
    summaries = json.loads(out)
    trace_id = summaries[0]["trace_id"]
    path = tmp_path / f"trace_{trace_id}.json"
    assert path.is_file() and path.read_text().startswith("{\n")
    assert load_report(path).trace_id == trace_id
    assert summaries[0]["generated_tokens"] == load_report(path).generated.num_tokens
    # The peak is a generated-token index, as in the narrative (not the prompt-inclusive step_index).
    assert 0 <= summaries[0]["peak_entropy_step"] < summaries[0]["generated_tokens"]


def test_write_json_beside_sqlite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_llama: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON file holds the bytes the store keeps, from the one encoding the store made."""
    calls = count_json_encodings(monkeypatch)
    code, out, _ = run_cli(capsys, *run_args(tiny_llama, tmp_path), "--prompt", "hello", "--write-json")
    assert code == 0
    assert (tmp_path / "corevital.db").is_file()
    files = list(tmp_path.glob("trace_*.json"))
    assert len(files) == 1
    trace_id = files[0].name.removeprefix("trace_").removesuffix(".json")
    assert calls == [trace_id]
    with SQLiteStore(tmp_path / "corevital.db") as store:
        assert files[0].read_text(encoding="utf-8") == store.get_json(trace_id)


def test_environment_overrides_and_cli_wins(tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("seed: 9\nmax_new_tokens: 7\ndevice: cuda\n")
    env = {"COREVITAL_DEVICE": "cpu", "COREVITAL_SEED": "123"}
    settings = load_settings({}, config_file=config, environ=env)
    assert (settings.device, settings.seed, settings.max_new_tokens) == ("cpu", 123, 7)
    assert load_settings({"seed": 5}, config_file=config, environ=env).seed == 5
    assert load_settings({}, environ={}).seed == 42


@pytest.mark.slow  # a real `corevital` process: seconds of interpreter and torch start-up
def test_environment_reaches_a_real_run(tmp_path: Path, tiny_llama: str) -> None:
    env = {**__import__("os").environ, "COREVITAL_SEED": "123", "COREVITAL_DEVICE": "cpu"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "corevital",
            "run",
            "--model",
            tiny_llama,
            "--prompt",
            "hi",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    report = newest_report(tmp_path / "corevital.db")
    assert (report.run_config.seed, report.run_config.device_requested, report.model.device) == (
        123,
        "cpu",
        "cpu",
    )


def test_unknown_config_key_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("sed: 9\n")
    code, _, err = run_cli(capsys, "run", "--prompt", "hi", "--config", str(config))
    assert code == 2 and "sed" in one_error_line(err)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("corevital 0.5.0")
