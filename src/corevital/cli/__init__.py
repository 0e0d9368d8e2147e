"""The ``corevital`` command line: one module per group of commands, imported only when used.

Every command is declared once in :data:`COMMANDS` (name, one-line help, the module that
configures it). ``corevital --help`` lists them all without importing any; a command's module is
imported (and its arguments declared) only when that command runs, so reading stored runs never
pays for the generation stack. Every error a user can cause ends as one line on stderr and a
non-zero exit code; tracebacks are shown only with ``--log_level DEBUG``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple, NoReturn

from corevital import __version__
from corevital.errors import CoreVitalError


class Command(NamedTuple):
    """One ``corevital`` command: its module has ``configure(name, parser)`` setting ``handler``."""

    name: str
    help: str
    module: str


COMMANDS: tuple[Command, ...] = (
    Command("run", "Run instrumented generation and store the report(s).", "corevital.cli.run"),
    Command("runs", "List stored runs, newest first.", "corevital.cli.stored"),
    Command("show", "Show one stored run: narrative, risk, flags, warnings, blame.", "corevital.cli.stored"),
    Command(
        "compare", "Compare stored runs side by side, or summarise them by model.", "corevital.cli.stored"
    ),
    Command("export", "Export stored runs as JSONL, CSV or Parquet.", "corevital.cli.stored"),
    Command("report", "Write one stored run as a self-contained HTML report.", "corevital.cli.report"),
    Command("serve", "Serve the stored runs: a local HTTP API and the dashboard.", "corevital.cli.serve"),
    Command(
        "proxy",
        "Watch an OpenAI-compatible server: a reverse proxy writing a report per response.",
        "corevital.cli.proxy",
    ),
    Command("migrate", "Import trace_*.json files or an original DB into SQLite.", "corevital.cli.run"),
    Command(
        "calibrate",
        "Build a calibration profile from healthy runs (and a risk model from labelled runs).",
        "corevital.cli.validation",
    ),
    Command(
        "validate",
        "Measure how well the risk score predicts failure on labelled runs.",
        "corevital.cli.validation",
    ),
)


def build_parser(selected: str | None = None, *, configure: bool = True) -> argparse.ArgumentParser:
    """The parser; ``selected`` (every command when ``None``) gets its arguments declared.

    With ``configure=False`` no command is configured: the top-level help, listing every command.
    """
    from rich_argparse import RichHelpFormatter

    parser = argparse.ArgumentParser(
        prog="corevital",
        description="LLM inference health monitoring from inside the model.",
        formatter_class=RichHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"corevital {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(
            command.name, help=command.help, description=command.help, formatter_class=RichHelpFormatter
        )
        if configure and selected in (None, command.name):
            importlib.import_module(command.module).configure(command.name, sub)
    return parser


def _selected_command(argv: Sequence[str]) -> str | None:
    names = {command.name for command in COMMANDS}
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in names else None


def _debug_requested(argv: Sequence[str]) -> bool:
    joined = " ".join(argv)
    return ("DEBUG" in joined and "log" in joined) or os.environ.get("COREVITAL_LOG_LEVEL") == "DEBUG"


def _print_traceback() -> None:
    import traceback  # only on this path: every command would pay for it at start

    traceback.print_exc()


def console_main() -> NoReturn:
    """The ``corevital`` command (and ``python -m corevital``): :func:`main`, then the process ends.

    The interpreter's own teardown after a generation (freeing torch's and transformers' modules and
    objects one by one) takes 0.2-0.7 s on a 2-core CPU and has nothing left to do: every store and
    exporter is closed by then. So once :func:`main` returns, stdout and stderr are flushed, the
    ``atexit`` handlers run (logging's flush among them), and the process exits with the command's
    code. While a thread that is not a daemon still runs, the ordinary exit (which waits for it) is
    taken instead. :func:`main` itself returns as any function does, for callers in a process.
    """
    code = main()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        raise SystemExit(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`corevital runs | head`)
            stream.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (Ctrl-C at any moment: one line, exit 130)."""
    try:
        with interrupts_kept():
            return _main(argv)
    except KeyboardInterrupt:
        print("corevital: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def interrupts_kept() -> Iterator[None]:
    """Ctrl-C that lands in a finalizer (``__del__``, which the interpreter runs during imports and
    collections) is not lost: the interpreter would print it as an ignored exception and go on, so it
    is sent again as a SIGINT, and the main thread raises it in the code that runs next.

    The SIGINT comes from another thread once the hook is done: a KeyboardInterrupt raised anywhere
    inside the hook (by the hook, or by the handler of a SIGINT that arrives while the hook still
    runs, e.g. while it waits for the thread to start) would be ignored in turn. After the hook marks
    itself done only its return is left, where the interpreter takes no signal."""
    previous = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            hook_done = [False]

            def send_again() -> None:
                while not hook_done[0]:
                    time.sleep(0.001)
                signal.raise_signal(signal.SIGINT)

            threading.Thread(target=send_again, daemon=True).start()
            hook_done[0] = True
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = _selected_command(argv)
    parser = build_parser(selected, configure=selected is not None)
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except CoreVitalError as exc:
        if _debug_requested(argv):
            _print_traceback()
        print(f"corevital: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if _debug_requested(argv):
            _print_traceback()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"corevital: internal error: {type(exc).__name__}: {first} (rerun with --log_level DEBUG)",
            file=sys.stderr,
        )
        return 70
