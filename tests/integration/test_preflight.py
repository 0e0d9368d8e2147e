"""Pre-flight: what would fail after the generation fails before the model is loaded, in one line."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corevital.cli import main
from corevital.config import load_settings
from corevital.errors import ConfigError, CoreVitalError
from corevital.exporters.base import open_outputs
from corevital.sinks.sqlite import SQLiteStore

NOBODY = 65534
MISSING_MODEL = "no-such-org/no-such-model"  # loading it would fail with exit 3: we must fail first


def as_nobody(out: Path, sink: str) -> str:
    """Open the outputs as an unprivileged user (root writes everywhere) in a forked child; its error."""
    settings = load_settings({"out": str(out), "sink": [sink]})  # reads packaged files: before the switch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: everything it needs is imported already
        os.close(read)
        message = "opened"
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            open_outputs(settings).close()
        except CoreVitalError as exc:
            message = f"{type(exc).__name__}: {exc}"
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            message = f"unexpected {type(exc).__name__}: {exc}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    return message


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's own temporary directories are root's only)."""
    path = Path(tempfile.mkdtemp(prefix="corevital-preflight-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_root
def test_a_read_only_database_file_is_refused_before_the_model_loads(open_dir: Path) -> None:
    SQLiteStore.in_directory(open_dir).close()
    (open_dir / "corevital.db").chmod(0o444)
    message = as_nobody(open_dir, "sqlite")
    assert message.startswith("StoreError: cannot write to the SQLite store") and "readonly" in message


@needs_root
def test_a_read_only_directory_is_refused_for_report_files(open_dir: Path) -> None:
    target = open_dir / "ro"
    target.mkdir()
    target.chmod(0o555)
    message = as_nobody(target, "local")
    assert message.startswith("StoreError: cannot write report files to") and "ermission denied" in message


def test_a_writable_store_passes_and_is_left_unchanged(tmp_path: Path) -> None:
    SQLiteStore.in_directory(tmp_path).close()
    before = (tmp_path / "corevital.db").read_bytes()
    open_outputs(load_settings({"out": str(tmp_path)})).close()
    with sqlite3.connect(tmp_path / "corevital.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert len((tmp_path / "corevital.db").read_bytes()) == len(before)


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--temperature", "inf", "temperature: Input should be a finite number"),
        ("--seed", "99999999999999999999999", "seed: Input should be less than or equal to"),
        ("--top-p", "nan", "top_p: Input should be a finite number"),
    ],
)
def test_bad_values_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str, value: str, expected: str
) -> None:
    code = main(["run", "--model", MISSING_MODEL, "--out", str(tmp_path), "--prompt", "hi", flag, value])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err


def test_an_unknown_threshold_key_fails_before_the_model_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("thresholds:\n  no_such_threshold: 3\n")
    code = main(
        ["run", "--model", MISSING_MODEL, "--out", str(tmp_path), "--prompt", "hi", "--config", str(config)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no_such_threshold" in err and "not found" not in err


def test_a_boolean_is_not_a_number_in_yaml(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("max_new_tokens: true\n")
    with pytest.raises(ConfigError, match="max_new_tokens: expected a number, got true"):
        load_settings({}, config_file=config)


def test_an_environment_mapping_that_is_not_json_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="COREVITAL_THRESHOLDS is not valid JSON"):
        load_settings({}, environ={"COREVITAL_THRESHOLDS": "{not json"})
    with pytest.raises(ConfigError, match="unknown setting in the environment: COREVITAL_FOO"):
        load_settings({}, environ={"COREVITAL_FOO": "1"})


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--folds", "0"], "--folds must be at least 2 (got 0)"),
        (["--out", "."], "is a directory"),
    ],
)
def test_calibrate_arguments_fail_before_the_model_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: list[str], expected: str
) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"prompt": "2+2?", "answer": "4"}\n')
    out = ["--out", str(tmp_path / "profile.json")]
    argv = ["calibrate", "--model", MISSING_MODEL, "--labels", str(labels), *out, *extra]
    code = main([str(tmp_path) if arg == "." else arg for arg in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err and "not found" not in err


@pytest.mark.slow  # a real process interrupted while it starts (imports, model load)
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "corevital", "run", "--model", MISSING_MODEL, "--prompt", "hi"]
    process = subprocess.Popen(
        [*command, "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(1.5)  # inside the imports of torch and transformers, long before any model is looked for
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip() == "corevital: interrupted" and out == ""


class _InterruptedFinalizer:
    def __del__(self) -> None:
        raise KeyboardInterrupt  # as SIGINT does when it lands while a finalizer runs


def test_ctrl_c_inside_a_finalizer_is_not_lost() -> None:
    """The interpreter ignores an exception raised by ``__del__`` (it only prints it); a Ctrl-C that
    lands there during start-up must still end the command."""
    from corevital.cli import interrupts_kept

    before = sys.unraisablehook
    for _ in range(200):  # the interrupt sent again must never land inside the hook, where it is lost too
        with interrupts_kept(), pytest.raises(KeyboardInterrupt):
            _InterruptedFinalizer()  # dropped at once: its finalizer runs here
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:  # the interrupt, sent again, arrives in this loop
                time.sleep(0.001)
        assert sys.unraisablehook is before


def test_torch_info_lines_stay_quiet_before_torch_sets_its_levels() -> None:
    """A Ctrl-C inside torch's import runs torch's exit handlers before torch has set its loggers'
    levels; at the default INFO level their lines (FakeTensor cache stats) must not reach stderr."""
    code = (
        "import logging\n"
        "from corevital.cli.common import configure_logging\n"
        "configure_logging('INFO')\n"
        "logging.getLogger('torch._subclasses.fake_tensor').info('FakeTensor cache stats:')\n"
        "logging.getLogger('corevital').info('kept')\n"
        "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"  # torch itself was never imported: its levels are ours alone
    assert done.stderr.strip() == "INFO corevital: kept"
