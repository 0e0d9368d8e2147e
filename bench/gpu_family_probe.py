"""What the static-cache family check sees on an accelerator, one family per process (a diagnosis aid).

For one tiny family of :data:`tests.support.tiny_models.FAMILIES`, under ``cache_implementation="static"``
on ``--device`` (where generate() compiles the decoding step): whether the tokens equal plain
``generate()`` on the fast and the eager attention path, the report warnings, and for every step which
layers lack an attention or hidden-state statistic (and whether a value is NaN). Prints one JSON line.

    python bench/gpu_family_probe.py qwen2 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(1, str(REPO))

from corevital.monitor import CoreVitalMonitor  # noqa: E402
from tests.support.tiny_models import build_family_model, build_tokenizer  # noqa: E402

PROMPTS = ["The quick brown fox jumps over the lazy dog", "Hi there"]


def probe(family: str, device: str) -> dict[str, Any]:
    model = build_family_model(family, seed=0)
    torch.nn.Module.to(model, torch.device(device))
    tokenizer = build_tokenizer()
    inputs = {k: v.to(device) for k, v in tokenizer(PROMPTS, return_tensors="pt", padding=True).items()}
    kwargs: dict[str, Any] = {"max_new_tokens": 5, "do_sample": False, "cache_implementation": "static"}
    plain = model.generate(**inputs, **kwargs)
    found: dict[str, Any] = {"family": family}
    for path in ("fast", "eager"):
        monitor = CoreVitalMonitor(device=device, attention_path=path)
        with monitor.watch(model, tokenizer) as watcher:
            out = model.generate(**inputs, **kwargs)
        reports = []
        for report in watcher.reports:
            steps = []
            for step in report.timeline:
                attention = [layer.attention_summary.entropy_mean for layer in step.layers]
                hidden = [layer.hidden_summary.l2_norm_mean for layer in step.layers]
                steps.append(
                    {
                        "no_attention": [i for i, v in enumerate(attention) if v is None],
                        "nan_attention": [
                            i for i, v in enumerate(attention) if v is not None and math.isnan(v)
                        ],
                        "no_hidden": [i for i, v in enumerate(hidden) if v is None],
                        "entropy": step.logits_summary.entropy,
                    }
                )
            prompt = report.prompt_analysis
            reports.append(
                {
                    "warnings": [w.code for w in report.warnings],
                    "steps": steps,
                    "prompt_layers": None if prompt is None else len(prompt.layers),
                    "prompt_surprisals": None if prompt is None else len(prompt.prompt_surprisals),
                    "prompt_tokens": report.prompt.num_tokens,
                }
            )
        found[path] = {"tokens_equal": bool(torch.equal(out.cpu(), plain.cpu())), "reports": reports}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("family")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    try:
        print(json.dumps(probe(args.family, args.device)), flush=True)
    except Exception as exc:  # a diagnosis aid: the failure is the finding
        print(json.dumps({"family": args.family, "error": f"{type(exc).__name__}: {exc}"[:2000]}), flush=True)


if __name__ == "__main__":
    main()
