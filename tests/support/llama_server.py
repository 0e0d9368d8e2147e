"""llama-cpp-python for the engine tests and benches: a visible skip without it, and its
OpenAI-compatible server (``python -m llama_cpp.server``) on 127.0.0.1, started and stopped here.

The ``llama-cpp`` extra compiles llama.cpp (about 10 minutes or more on 2 cores), so ``make test``
does not install it: ``make test-engines`` does, then runs the tests that need it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx
import pytest

from tests.support.processes import stop_process

SKIP_REASON = (
    "llama-cpp-python is not installed (the `llama-cpp` extra compiles llama.cpp for ~10+ minutes; "
    "`make test-engines` installs it and runs these tests)"
)


def require_llama_cpp(*, server: bool = False) -> None:
    """Skip the calling test, saying why, when llama-cpp-python (and its server's packages) are absent."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(SKIP_REASON)
    if server:
        missing = [m for m in ("sse_starlette", "starlette_context", "pydantic_settings", "fastapi")
                   if importlib.util.find_spec(m) is None]  # fmt: skip
        if missing:
            pytest.skip(
                f"the llama.cpp server needs {', '.join(missing)}: pip install 'llama-cpp-python[server]'"
            )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` serving one GGUF on a free port of 127.0.0.1 (a subprocess)."""

    def __init__(
        self, model: Path, *, n_ctx: int = 1024, threads: int = 1, seed: int = 0, port: int | None = None
    ) -> None:
        self.model = model
        self.port = port or free_port()
        self.args = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
            "--port", str(self.port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
            "--n_threads_batch", str(threads), "--seed", str(seed), "--verbose", "false",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        # the server's output (a pipe nobody reads could fill up); closed with this object
        self._log = tempfile.TemporaryFile()  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> LlamaServer:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the llama.cpp server exited: {self.output()[-2000:]}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the llama.cpp server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)

    def output(self) -> str:
        """What the server printed so far."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", errors="replace")

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
