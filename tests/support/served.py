"""A store of real reports for the ``corevital serve`` tests, and a server in a subprocess.

The store holds the six traces written by the original CoreVital (imported with
``corevital migrate``) and runs of tiny random-weight models made with ``corevital run``; it is
built once per test process (``served_store``) and served read-only, so tests that write to a
store take a copy (``copy_store``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.support.ports import free_port as free_port
from tests.support.processes import stop_process

if TYPE_CHECKING:
    from corevital.server.config import ServeConfig

REPO = Path(__file__).resolve().parents[2]
ORIGINALS = REPO / "tests" / "data" / "original-corevital"
TINY_PROMPTS = ("The capital of France is", "Count: one, two, three,")

_BUILT: dict[str, Path] = {}


def original_files() -> list[Path]:
    """The six original CoreVital traces."""
    files = sorted(ORIGINALS.glob("*.json"))
    assert len(files) == 6, files
    return files


def original_documents() -> dict[str, dict[str, Any]]:
    """The original traces' JSON documents by trace id."""
    documents = [json.loads(path.read_text(encoding="utf-8")) for path in original_files()]
    return {document["trace_id"]: document for document in documents}


def served_store(directory_factory: Callable[[str], Path], tiny_model: Callable[[str], Path]) -> Path:
    """The path of the shared store (built on first use): originals migrated, then tiny-model runs."""
    if "store" in _BUILT:
        return _BUILT["store"]
    from tests.support.cli import run_args, run_ok

    directory = directory_factory("served-store")
    staging = directory / "originals"
    staging.mkdir()
    for path in original_files():  # migrate reads trace_*.json: the sample report gets such a name
        name = path.name if path.name.startswith("trace_") else f"trace_{path.stem}.json"
        shutil.copyfile(path, staging / name)
    db = directory / "corevital.db"
    run_ok("migrate", "--from-dir", str(staging), "--to-db", str(db))
    for arch in ("llama", "gpt2"):
        argv = [*run_args(tiny_model(arch), directory), "--max_new_tokens", "6", "--temperature", "0"]
        for prompt in TINY_PROMPTS:
            argv += ["--prompt", prompt]
        run_ok(*argv)
    _BUILT["store"] = db
    return db


def serve_config(db: Path, **overrides: Any) -> ServeConfig:
    """The settings ``corevital serve`` makes for the SQLite store at ``db``: its file name as the
    label and every spelling of its path (what error messages must not show), plus ``overrides``."""
    from corevital.server.config import ServeConfig, path_spellings

    return ServeConfig(store_label=db.name, store_paths=path_spellings(str(db), db.resolve()), **overrides)


def copy_store(source: Path, directory: Path) -> Path:
    """A copy of the store at ``source`` (the database and its WAL files) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{source}{suffix}")
        if path.exists():
            shutil.copyfile(path, directory / f"{source.name}{suffix}")
    return directory / source.name


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class ServerProcess:
    """``corevital serve`` in a subprocess (stdout and stderr kept in files)."""

    proc: subprocess.Popen[bytes]
    port: int
    out_path: Path
    err_path: Path
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, headers: dict[str, str] | None = None, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}: {self.stderr()}")
            try:
                if httpx.get(f"{self.url}/healthz", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server did not answer within {timeout_s} s: {self.stderr()}")

    def stop(self) -> int:
        """Ctrl-C, and the exit code."""
        if not self.stopped:
            self.stopped = True
            stop_process(self.proc, signal.SIGINT, kill_timeout=None)
        return int(self.proc.returncode)


def start_server(
    args: list[str],
    workdir: Path,
    *,
    prelude: str = "",
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """``corevital serve ARGS --port PORT`` in a subprocess; ``prelude`` is Python run before the CLI."""
    port = port or free_port()
    code = f"{prelude}\nimport sys\nfrom corevital.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    out_path, err_path = workdir / f"serve-{port}.out", workdir / f"serve-{port}.err"
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", *args, "--port", str(port)],
            stdout=out,
            stderr=err,
            cwd=workdir,
            env=environ,
        )
    return ServerProcess(proc, port, out_path, err_path)
