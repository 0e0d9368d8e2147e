"""Distributions of every per-step and per-run metric over the reports of a store (docs/metrics.md).

Run the default model on ordinary prompts, then read the store::

    nice -n 10 .venv/bin/corevital run --prompts-file bench/data/metrics_prompts.txt --out /tmp/ranges \
        --seed 0
    .venv/bin/python bench/metric_ranges.py /tmp/ranges/corevital.db

Prints, for each metric, the number of values and the 5th, 25th, 50th, 75th and 95th percentiles.
Per-step logit metrics are pooled over the generated steps of all runs; per-layer metrics are pooled
over steps and layers, and also given per depth third (first, middle, last third of the layers),
since hidden-state norms grow with depth.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from corevital.report.schema import Report
from corevital.sinks.sqlite import SQLiteStore

LOGITS = (
    "entropy",
    "perplexity",
    "surprisal",
    "top_k_margin",
    "topk_mass",
    "sampling_entropy",
    "sampling_prob",
)
HIDDEN = ("l2_norm_mean", "max_abs", "std", "clip_fraction")
ATTENTION = (
    "entropy_mean",
    "entropy_mean_normalized",
    "concentration_max",
    "collapsed_head_rate",
    "focused_head_count",
    "sink_mass_mean",
    "prev_token_mass_mean",
)


def collect(report: Report, values: dict[str, list[float]]) -> None:
    layers = report.model.num_layers
    thirds = ("first third", "middle third", "last third")
    for step in report.timeline:
        logits = step.logits_summary
        for name in LOGITS:
            value = getattr(logits, name)
            if value is not None:
                values[f"logits.{name}"].append(float(value))
        for layer in step.layers:
            third = thirds[min(2, 3 * layer.layer_index // max(1, layers))]
            for name in HIDDEN:
                value = getattr(layer.hidden_summary, name)
                if value is not None:
                    values[f"hidden.{name}"].append(float(value))
                    values[f"hidden.{name} ({third})"].append(float(value))
            attention = layer.attention_summary
            for name in ATTENTION:
                value = getattr(attention, name) if attention is not None else None
                if value is not None:
                    values[f"attention.{name}"].append(float(value))
    summary = report.summary
    values["run.generated_tokens"].append(float(summary.generated_tokens))
    for name in ("ttft_ms", "tokens_per_second"):
        value = getattr(summary, name)
        if value is not None:
            values[f"run.{name}"].append(float(value))
    if summary.inter_token_ms is not None and summary.inter_token_ms.p50 is not None:
        values["run.inter_token_ms.p50"].append(float(summary.inter_token_ms.p50))
    if report.health_flags is not None:
        values["run.high_entropy_steps"].append(float(report.health_flags.high_entropy_steps))
    extensions = report.extensions
    if extensions.risk is not None and extensions.risk.risk_score is not None:
        values["run.risk_score"].append(float(extensions.risk.risk_score))
    early = extensions.model_dump().get("early_warning") or {}
    if early.get("failure_risk") is not None:
        values["run.failure_risk"].append(float(early["failure_risk"]))
    prompt = report.prompt_analysis
    if prompt is not None:
        for name in ("prompt_surprisals", "layer_transformations"):
            values[f"prompt.{name}"].extend(float(v) for v in getattr(prompt, name) if v is not None)
        for prompt_layer in prompt.layers:
            basins = prompt_layer.basin_scores or []
            values["prompt.basin_scores"].extend(float(v) for v in basins if v is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path, help="a SQLite store (corevital.db)")
    args = parser.parse_args()
    store = SQLiteStore(args.db, read_only=True)
    values: dict[str, list[float]] = defaultdict(list)
    rows = store.list()
    for row in rows:
        report = store.get(row.trace_id)
        assert report is not None
        collect(report, values)
    print(f"{len(rows)} reports from {args.db}")
    print(f"{'metric':52} {'n':>6} {'p5':>9} {'p25':>9} {'p50':>9} {'p75':>9} {'p95':>9}")
    for name in sorted(values):
        data = np.asarray(values[name], dtype=np.float64)
        if data.size == 0:
            continue
        p = np.percentile(data, [5, 25, 50, 75, 95])
        print(f"{name:52} {data.size:6d} " + " ".join(f"{v:9.4g}" for v in p))


if __name__ == "__main__":
    main()
