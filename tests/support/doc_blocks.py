"""The fenced code blocks of README.md and docs/*.md, and where they run (tests/integration/test_docs_blocks).

A block is run according to its fence language:

- ``python``: executed; the python blocks of one document share one namespace, in document order;
- ``bash``/``sh``/``shell``/``console``: checked with ``bash -n``, then run by ``bash -e -o pipefail`` in
  the document's own directory. ``corevital`` there is a small client that runs the real CLI
  (``corevital.cli.main``) inside the test process, so a command costs no interpreter start-up;
  ``corevital serve``/``proxy`` start as real processes on a free port and are stopped once they
  answer ``/healthz``. ``make``, ``pip`` and ``git`` are not run (their lines are only checked for
  syntax): they build or install, which the suite's own set-up does;
- ``yaml``/``json``/``toml``: parsed (a mapping that holds CoreVital settings is loaded by the real
  config loader);
- ``text``: output, not checked.

The line before an opening fence may carry a marker: ``<!-- doc-run: skip (reason) -->`` (the block
cannot run here: a GPU, an external service, minutes of the real model) or
``<!-- doc-run: real-model -->`` (the block runs on the real default model, in the slow tests).

Each document gets a :class:`DocWorld`: a temporary directory that holds the inputs the documents
name (``prompts.jsonl``, ``healthy.txt``, ``labelled.jsonl``, ``old_runs/`` ...), a store
``runs/corevital.db`` seeded with the original CoreVital's six traces (the ids the documents show),
and a Hugging Face cache in which ``HuggingFaceTB/SmolLM2-135M-Instruct``, ``gpt2`` and
``your/model`` are tiny random models; ``COREVITAL_MODEL`` names the first, so "the default model"
of a block is that tiny model (the real setting, read by the CLI and by ``CoreVitalMonitor()``), and
``COREVITAL_MAX_NEW_TOKENS=4`` keeps CLI runs short where a command does not give its own count.
"""

from __future__ import annotations

import io
import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tests.support.components import PROMTOOL, require
from tests.support.ports import free_port
from tests.support.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
ORIGINAL_TRACES = REPO / "tests" / "data" / "original-corevital"
DEFAULT_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SOCKET_VARIABLE = "DOCRUN_SOCKET"
DOC_PORT = "8321"  # the documents' `corevital serve` port, mapped to a free one
SERVER_READY_S = 300.0  # a server with --model answers once the model is loaded
REPOSITORY_PATHS = ("deploy", "examples")  # files of the repository the documents' commands read
SEED_TRACE = (
    "trace_8d0bad87.json"  # the smallest of the original CoreVital's traces (the documents' 8d0bad87)
)

Mode = Literal["run", "skip", "real-model"]
SHELL_LANGS = frozenset({"bash", "sh", "shell", "console"})
DATA_LANGS = frozenset({"yaml", "yml", "json", "toml"})
LANGS = frozenset({"python", "text"}) | SHELL_LANGS | DATA_LANGS

_FENCE = re.compile(r"^(\s*)(`{3,})([\w+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*doc-run:\s*(.*?)\s*-->\s*$")
_SKIP = re.compile(r"^skip(?:\s*\((.*)\))?$")


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    mode: Mode
    reason: str | None = None  # why a block is skipped
    problem: str | None = None  # a marker or fence the runner cannot accept

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def documents(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _marker(line: str) -> tuple[Mode, str | None, str | None] | None:
    found = _MARKER.match(line)
    if found is None:
        return None
    text = found.group(1)
    if text == "real-model":
        return "real-model", None, None
    skip = _SKIP.match(text)
    if skip is None:
        return "run", None, f"unknown doc-run marker {text!r} (skip (reason) or real-model)"
    reason = (skip.group(1) or "").strip()
    return "skip", reason or None, None if reason else "a doc-run skip needs a reason: skip (why)"


def parse(path: Path, root: Path = REPO) -> list[Block]:
    """The fenced blocks of one Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    doc = path.relative_to(root).as_posix()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, ticks, lang = opening.groups()
        end = i + 1
        while end < len(lines) and lines[end].strip() != ticks:
            end += 1
        body = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end]) + "\n"
        marker = _marker(lines[i - 1]) if i > 0 else None
        mode, reason, problem = marker if marker is not None else ("run", None, None)
        if problem is None and lang not in LANGS:
            problem = f"fence language {lang!r}: use one of {', '.join(sorted(LANGS))}"
        blocks.append(Block(doc, i + 1, lang, body, mode, reason, problem))
        i = end + 1
    return blocks


def all_blocks(root: Path = REPO) -> list[Block]:
    return [block for path in documents(root) for block in parse(path, root)]


# --- the tiny models behind the documents' model names -------------------------------------------


def build_hub(hub: Path) -> Path:
    """A Hugging Face cache holding tiny models under the names the documents use."""
    from tests.support.tiny_models import save_tiny_model

    for name, arch in ((DEFAULT_ID, "llama"), ("gpt2", "gpt2"), ("your/model", "llama")):
        folder = hub / ("models--" + name.replace("/", "--"))
        commit = "0" * 39 + "1"
        save_tiny_model(arch, folder / "snapshots" / commit, seed=0, chat_template=True)
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(commit, encoding="utf-8")
    return hub


def _labelled() -> str:
    """Prompts with known outcomes (``failed``), half of them failures, in 10 groups of two."""
    rows = [
        {
            "id": f"q{i}",
            "prompt": f"What is {i} + {i}?",
            "failed": i % 2 == 0,
            "group": f"g{i // 2}",
            "task": "sum",
        }
        for i in range(20)
    ]
    return "".join(json.dumps(row) + "\n" for row in rows)


FIXTURES: dict[str, str] = {
    "prompts.jsonl": '{"prompt": "Why is the sky blue?"}\n{"prompt": "Name a prime number."}\n',
    "prompts.txt": "Why is the sky blue?\nName a prime number.\n",
    "p.txt": "".join(f"Prompt number {i}\n" for i in range(12)),
    "healthy.txt": "Why is the sky blue?\nName a prime number.\nWhat is the capital of France?\n",
    "labelled.jsonl": _labelled(),
}


def seed_store(root: Path, hub: Path) -> Path:
    """A ``runs/`` directory whose store holds the original trace 8d0bad87 and two tiny-model runs."""
    maker = DocWorld(root, hub)
    for argv in (
        ["migrate", "--from-dir", "old_runs", "--to-db", "runs/corevital.db"],
        [
            "run",
            "--prompt",
            "Why is the sky blue?",
            "--prompt",
            "Name a prime number.",
            "--max_new_tokens",
            "6",
        ],
    ):
        made = maker.cli(argv)
        assert made.rc == 0, made.stderr
    return maker.cwd / "runs"


# --- one document's world ------------------------------------------------------------------------


@dataclass
class ShellResult:
    rc: int
    stdout: str
    stderr: str
    commands: list[list[str]] = field(default_factory=list)


_CLIENT = """\
import json, os, socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.connect(os.environ["{var}"])
sock.sendall(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode())
sock.shutdown(socket.SHUT_WR)
answer = json.loads(b"".join(iter(lambda: sock.recv(65536), b"")))
sys.stdout.write(answer["stdout"]); sys.stdout.flush()
sys.stderr.write(answer["stderr"]); sys.stderr.flush()
sys.exit(answer["rc"])
"""

_NOT_RUN = """\
#!/bin/sh
echo "doc-run: not run here: $(basename "$0") $*" >&2
"""


class DocWorld:
    """A temporary directory, environment and namespace in which one document's blocks run."""

    def __init__(self, root: Path, hub: Path, *, real_model: bool = False, store: Path | None = None) -> None:
        self.root = root
        self.cwd = root / "work"
        self.home = root / "home"
        self.bin = root / "bin"
        for folder in (self.cwd, self.home, self.bin):
            folder.mkdir(parents=True, exist_ok=True)
        self.hub = hub
        self.namespace: dict[str, Any] = {"__name__": "__doc__"}
        self.servers: list[subprocess.Popen[bytes]] = []
        self.doc_server_port: int | None = None
        self.env = {
            **os.environ,
            "HOME": str(self.home),
            "HF_HUB_CACHE": str(hub),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "NO_COLOR": "1",
            "COREVITAL_DEVICE": "cpu",
            "COREVITAL_MAX_NEW_TOKENS": "4",  # a few tokens, unless the block's own flag says otherwise
            "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            SOCKET_VARIABLE: str(root / "cli.sock"),
        }
        if real_model:  # the embedded model's own GGUF file stands for "model.gguf"
            from corevital.capture.default_model import locate_default_model

            default = locate_default_model()
            (self.cwd / "model.gguf").symlink_to(default.directory / default.gguf_file)
        else:
            self.env["COREVITAL_MODEL"] = DEFAULT_ID
        for name, text in FIXTURES.items():
            (self.cwd / name).write_text(text, encoding="utf-8")
        for name in REPOSITORY_PATHS:
            (self.cwd / name).symlink_to(REPO / name)
        old_runs = self.cwd / "old_runs"
        old_runs.mkdir()
        shutil.copy(ORIGINAL_TRACES / SEED_TRACE, old_runs / SEED_TRACE)
        client = self.bin / "corevital"
        client.write_text(f"#!{sys.executable} -IS\n" + _CLIENT.format(var=SOCKET_VARIABLE), encoding="utf-8")
        client.chmod(0o755)
        for tool in ("make", "pip", "git"):
            (self.bin / tool).write_text(_NOT_RUN, encoding="utf-8")
            (self.bin / tool).chmod(0o755)
        for name in ("python", "python3"):
            (self.bin / name).symlink_to(sys.executable)
        if store is not None:
            shutil.copytree(store, self.cwd / "runs")

    # --- the process state a block runs in ---------------------------------------------------
    @contextmanager
    def active(self) -> Iterator[None]:
        """cwd, environment and the Hugging Face cache of this world, in this process."""
        from huggingface_hub import constants

        saved_env, saved_cwd, saved_cache = dict(os.environ), os.getcwd(), constants.HF_HUB_CACHE
        os.environ.clear()
        os.environ.update(self.env)
        os.chdir(self.cwd)
        constants.HF_HUB_CACHE = str(self.hub)
        try:
            yield
        finally:
            constants.HF_HUB_CACHE = saved_cache
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)

    # --- python ------------------------------------------------------------------------------
    def run_python(self, block: Block) -> None:
        code = compile(block.body, block.id, "exec")
        with self.active():
            exec(code, self.namespace)  # noqa: S102 - the document's own code

    # --- the CLI, in process -------------------------------------------------------------------
    def cli(
        self, argv: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> ShellResult:
        if argv and argv[0] in ("serve", "proxy"):
            return self.serve(argv, cwd=cwd or self.cwd, env=env or self.env)
        from corevital.cli import main

        out, err = _text_stream(), _text_stream()
        with self.active():
            os.environ.clear()
            os.environ.update(env or self.env)
            os.chdir(cwd or self.cwd)
            with redirect_stdout(out), redirect_stderr(err):
                rc = main(argv)
        return ShellResult(rc, _text_of(out), _text_of(err), [argv])

    def serve(self, argv: list[str], *, cwd: Path, env: Mapping[str, str]) -> ShellResult:
        """Start ``corevital serve|proxy`` on a free loopback port; stop it once it answers /healthz."""
        process, port, log = self._start_server(argv, cwd=cwd, env=env)
        try:
            answered = _wait_for_health(process, port)
        finally:
            _stop(process)
        text = log.read_text(encoding="utf-8", errors="replace")
        if answered is None:
            return ShellResult(
                process.returncode or 1, "", text + "\ndoc-run: the server never answered /healthz"
            )
        return ShellResult(0, f"doc-run: {argv[0]} answered /healthz with HTTP {answered}\n", text)

    def _start_server(
        self, argv: list[str], *, cwd: Path, env: Mapping[str, str]
    ) -> tuple[subprocess.Popen[bytes], int, Path]:
        port = free_port()
        args = _without_options(argv, ("--host", "--port", "--listen"))
        if argv[0] == "serve":
            args += ["--host", "127.0.0.1", "--port", str(port)]
        else:
            args += ["--listen", f"127.0.0.1:{port}"]
        log = self.root / f"server-{port}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "corevital", *args], cwd=cwd, env=dict(env), stdout=sink, stderr=sink
            )
        self.servers.append(process)
        return process, port, log

    def document_server(self) -> int:
        """One ``corevital serve --model <the default id>`` for the curl lines (its port replaces 8321)."""
        if self.doc_server_port is None:
            process, port, log = self._start_server(
                ["serve", "--model", DEFAULT_ID], cwd=self.cwd, env=self.env
            )
            if _wait_for_health(process, port) is None:
                raise AssertionError(
                    "the document's server did not start:\n" + log.read_text(encoding="utf-8")
                )
            self.doc_server_port = port
        return self.doc_server_port

    # --- shell blocks ------------------------------------------------------------------------
    def run_shell(self, block: Block, timeout: float = 240.0) -> ShellResult:
        script = _shell_script(block)
        syntax = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True, timeout=30)
        if syntax.returncode != 0:
            return ShellResult(syntax.returncode, "", "bash -n: " + syntax.stderr)
        if re.search(r"^\s*promtool\b", script, re.MULTILINE):
            require(PROMTOOL)
        if _needs_document_server(script):
            script = script.replace(f"127.0.0.1:{DOC_PORT}", f"127.0.0.1:{self.document_server()}")
        listener = socket.socket(socket.AF_UNIX)
        path = self.env[SOCKET_VARIABLE]
        Path(path).unlink(missing_ok=True)
        listener.bind(path)
        listener.listen(4)
        commands: list[list[str]] = []
        process = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None:
                if time.monotonic() > deadline:
                    process.kill()
                    raise AssertionError(f"{block.id}: still running after {timeout:.0f} s")
                if selector.select(timeout=0.05):
                    connection, _ = listener.accept()
                    with connection:
                        commands.append(self._answer(connection))
            stdout, stderr = process.communicate()
        finally:
            selector.close()
            listener.close()
            Path(path).unlink(missing_ok=True)
        return ShellResult(
            process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"), commands
        )

    def _answer(self, connection: socket.socket) -> list[str]:
        request = json.loads(b"".join(iter(lambda: connection.recv(65536), b"")))
        argv = [str(a) for a in request["argv"]]
        try:
            result = self.cli(argv, cwd=Path(request["cwd"]), env=request["env"])
        except BaseException as exc:  # noqa: BLE001 - reported to the shell as a failed command
            result = ShellResult(99, "", f"doc-run: {type(exc).__name__}: {exc}\n")
        answer = {"stdout": result.stdout, "stderr": result.stderr, "rc": result.rc}
        connection.sendall(json.dumps(answer).encode())
        return argv

    # --- data blocks -------------------------------------------------------------------------
    def check_data(self, block: Block) -> Any:
        if block.lang in ("yaml", "yml"):
            data = yaml.safe_load(block.body)
        elif block.lang == "json":
            data = json.loads(block.body)
        else:
            data = tomllib.loads(block.body)
        if isinstance(data, dict) and _looks_like_settings(data):
            from corevital.config import load_settings

            load_settings(data, environ={})
        return data

    def close(self) -> None:
        for process in self.servers:
            _stop(process)


def _text_stream() -> io.TextIOWrapper:
    """A text stream with a binary ``buffer`` beneath, as sys.stdout has (``--out -`` writes bytes)."""
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace", write_through=True)


def _text_of(stream: io.TextIOWrapper) -> str:
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode("utf-8", errors="replace")


def _looks_like_settings(data: Mapping[str, Any]) -> bool:
    from corevital.config import Settings

    return bool(data) and set(data) <= set(Settings.model_fields)


def _shell_script(block: Block) -> str:
    if block.lang != "console":
        return block.body
    commands = [line.removeprefix("$ ") for line in block.body.splitlines() if line.startswith("$ ")]
    return "\n".join(commands) + "\n"


def _needs_document_server(script: str) -> bool:
    return any(
        f"127.0.0.1:{DOC_PORT}" in line and not line.lstrip().startswith("corevital serve")
        for line in script.splitlines()
    )


def _without_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not any(arg.startswith(name + "=") for name in names):
            kept.append(arg)
    return kept


def _wait_for_health(process: subprocess.Popen[bytes], port: int) -> int | None:
    deadline = time.monotonic() + SERVER_READY_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            time.sleep(0.1)
    return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, timeout=15, kill_timeout=15)
