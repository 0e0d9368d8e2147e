"""Healthy-run and loop-run acceptance figures of the diagnosis on the real SmolLM2 (issue 7).

Runs the prompts of ``bench/data/healthy_prompts.jsonl`` (questions, instructions, short stories;
greedy and sampled, as each line says) and ``bench/data/loop_prompts.jsonl`` through capture and
:func:`corevital.analysis.diagnose.diagnose`, batched 8 per ``generate()`` call, and prints:

- the firing rate of every health flag on the healthy runs, the text of every repetition
  firing so that a human can check it is a real loop, the layers and reasons of every layer-update
  firing, and the lowest MLP update ratio of any step and layer (a silenced MLP gives 0);
- the risk-score distribution (min, p10, median, p90, max, the largest share of runs sharing one
  value at 3 decimals, the share at or above 0.7);
- for each loop prompt: whether the loop was found, its period and text, and the risk;
- with ``--faults``: a ×10⁴ activation fault injected in each listed layer (default: every
  middle-third layer) from step 0, and whether ``mid_layer_anomaly_detected`` fired and the layer
  was blamed first.

    .venv/bin/python bench/healthy_runs.py [--faults] [--cache .bench-out/healthy_cache.pkl] [--calibration P]

``--cache`` stores the captured signals and, when the file exists, reuses them instead of running
the model (for iterating on thresholds). Deterministic: greedy runs are exact, sampled runs use the
settings' seed.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from corevital.analysis.depth import middle_third
from corevital.analysis.diagnose import Diagnosis, diagnose
from corevital.analysis.profiles import load_profile
from corevital.analysis.signals import SequenceSignals
from corevital.pipeline import signals_from_capture

HERE = Path(__file__).resolve().parent
Run = tuple[dict[str, Any], str, SequenceSignals]


def read_prompts(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def capture(loaded: Any, items: list[dict[str, Any]]) -> list[Run]:
    from corevital.capture.runner import capture_prompts
    from corevital.config import load_settings

    groups: dict[tuple[float, int], list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault((float(item["temperature"]), int(item["max_new_tokens"])), []).append(item)
    runs: list[Run] = []
    for (temperature, max_new), chunk in groups.items():
        settings = load_settings(
            {"device": "cpu", "max_new_tokens": max_new, "temperature": temperature, "batch_size": 8},
            environ={},
        )
        t0 = time.perf_counter()
        result = capture_prompts(loaded, [c["prompt"] for c in chunk], settings)
        print(
            f"  captured {len(chunk)} prompts (T={temperature}, {max_new} tokens) "
            f"in {time.perf_counter() - t0:.0f} s"
        )
        caps = result.model.capabilities
        for item, seq in zip(chunk, result.sequences, strict=True):
            runs.append(
                (item, seq.generated_text, signals_from_capture(seq, model_id=result.model.hf_id, caps=caps))
            )
    return runs


@contextmanager
def scaled_layer(model: Any, layer: int, factor: float) -> Iterator[None]:
    """Multiply decoder layer ``layer``'s output by ``factor`` while the context is open."""

    def hook(_module: Any, _inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0] * factor, *output[1:])
        return output * factor

    handle = model.model.layers[layer].register_forward_hook(
        hook, prepend=True
    )  # before the hidden-state recorder
    try:
        yield
    finally:
        handle.remove()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report_healthy(runs: list[Run], diags: list[Diagnosis]) -> dict[str, Any]:
    n = len(runs)
    flags = [d.health_flags for d in diags]
    rate = {
        name: sum(bool(getattr(f, name)) for f in flags) / n
        for name in (
            "mid_layer_anomaly_detected",
            "attention_collapse_detected",
            "repetition_loop_detected",
            "nan_detected",
            "inf_detected",
            "layer_update_anomaly_detected",
        )
    }
    risks = [d.risk.risk_score for d in diags]
    share = Counter(round(r, 3) for r in risks).most_common(1)[0][1] / n
    risk_stats: dict[str, float] = {
        "min": min(risks),
        "p10": pct(risks, 10),
        "median": pct(risks, 50),
        "p90": pct(risks, 90),
        "max": max(risks),
        "max_share_one_value": share,
        "share_ge_0.7": sum(r >= 0.7 for r in risks) / n,
    }
    summary: dict[str, Any] = {
        "runs": n,
        "greedy": sum(1 for item, _, _ in runs if item["temperature"] == 0),
        "rates": rate,
        "risk": risk_stats,
        "early_warning_signal_runs": dict(Counter(s for d in diags for s in d.early_warning.warning_signals)),
        "compound_signal_runs": dict(Counter(c.name for d in diags for c in d.compound_signals)),
        "blamed_runs": sum(1 for d in diags if d.blamed_layers) / n,
        "risk_factor_runs": dict(Counter(f for d in diags for f in d.risk.risk_factors)),
    }
    print(f"\n== healthy runs: {n} ({summary['greedy']} greedy)")
    for name, value in rate.items():
        print(f"  {name:32s} {value:6.1%}")
    r = risk_stats
    print(
        f"  risk: min {r['min']:.3f}  p10 {r['p10']:.3f}  median {r['median']:.3f}  p90 {r['p90']:.3f}  "
        f"max {r['max']:.3f}  largest share of one value {r['max_share_one_value']:.1%}  "
        f"share >= 0.7 {r['share_ge_0.7']:.1%}"
    )
    print(f"  early-warning signals (runs): {summary['early_warning_signal_runs']}")
    print(f"  compound signals (runs): {summary['compound_signal_runs']}")
    print(f"  risk factors listed (runs): {summary['risk_factor_runs']}")
    print(f"  runs with a blamed layer: {summary['blamed_runs']:.1%}")
    for (item, text, _), d in zip(runs, diags, strict=True):
        if d.health_flags.repetition_loop_detected:
            rep = d.repetition
            print(
                f"  repetition fired: {item['prompt']!r} period {rep.period} from step {rep.first_step} "
                f"span {rep.span} block {rep.repeated_text!r} sim {rep.hidden_similarity}\n"
                f"    output: {text!r}"
            )
        if d.health_flags.mid_layer_anomaly_detected or d.health_flags.attention_collapse_detected:
            print(
                f"  flag fired on {item['prompt']!r}: mid {d.mid_layer.layers} collapse "
                f"{d.attention_collapse.trend_layers} sev {d.health_flags.attention_collapse_severity}"
            )
        if d.health_flags.layer_update_anomaly_detected:
            reasons = [(b.layer, b.reasons) for b in d.blamed_layers[:3]]
            print(f"  layer update anomaly on {item['prompt']!r}: {reasons}")
    mlp = [
        float(np.nanmin(sig.hidden_mlp_update_ratio))
        for _, _, sig in runs
        if sig.hidden_mlp_update_ratio is not None and np.isfinite(sig.hidden_mlp_update_ratio).any()
    ]
    if mlp:
        summary["lowest_mlp_update_ratio"] = min(mlp)
        print(f"  lowest MLP update ratio of any step and layer: {min(mlp):.4f} ({len(mlp)} runs)")
    return summary


def report_loops(runs: list[Run], diags: list[Diagnosis]) -> list[dict[str, Any]]:
    print("\n== loop prompts")
    out = []
    for (item, text, _), d in zip(runs, diags, strict=True):
        rep = d.repetition
        row = {
            "prompt": item["prompt"],
            "detected": rep.detected,
            "period": rep.period,
            "first_step": rep.first_step,
            "span": rep.span,
            "block": rep.repeated_text,
            "hidden_similarity": rep.hidden_similarity,
            "risk": d.risk.risk_score,
        }
        out.append(row)
        print(
            f"  {item['prompt']!r}: loop {rep.detected} period {rep.period} from {rep.first_step} "
            f"span {rep.span} "
            f"block {rep.repeated_text!r} sim {rep.hidden_similarity} risk {d.risk.risk_score:.3f}\n"
            f"    output: {text[:160]!r}"
        )
    return out


def run_faults(
    loaded: Any, items: list[dict[str, Any]], layers: list[int], calibration: Any = None
) -> list[dict[str, Any]]:
    print("\n== x1e4 activation fault from step 0")
    profile = load_profile(loaded.capabilities.model_type)
    rows = []
    for layer in layers:
        with scaled_layer(loaded.model, layer, 1e4):
            runs = capture(loaded, items)
        diags = [diagnose(sig, profile, calibration=calibration) for _, _, sig in runs]
        fired = sum(d.health_flags.mid_layer_anomaly_detected for d in diags)
        first = sum(bool(d.blamed_layers) and d.blamed_layers[0].layer == layer for d in diags)
        zone = "middle" if layer in middle_third(loaded.capabilities.num_layers) else "outside"
        risk = float(np.median([d.risk.risk_score for d in diags]))
        rows.append(
            {
                "layer": layer,
                "zone": zone,
                "runs": len(diags),
                "mid_layer_fired": fired,
                "blamed_first": first,
                "risk_median": risk,
            }
        )
        print(
            f"  layer {layer:2d} ({zone:7s}): mid_layer_anomaly {fired}/{len(diags)}, "
            f"blamed first {first}/{len(diags)}, median risk {risk:.2f}"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=Path, default=HERE / "data" / "healthy_prompts.jsonl")
    parser.add_argument("--loops", type=Path, default=HERE / "data" / "loop_prompts.jsonl")
    parser.add_argument(
        "--cache", type=Path, default=None, help="pickle of captured signals (read if present)"
    )
    parser.add_argument(
        "--faults",
        nargs="?",
        const="middle",
        default=None,
        help="inject a x1e4 fault: 'middle' (every middle-third layer) or a comma-separated list",
    )
    parser.add_argument("--fault-prompts", type=int, default=8)
    parser.add_argument(
        "--calibration", default=None, help="judge with this calibration profile (or 'default')"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    healthy_items, loop_items = read_prompts(args.prompts), read_prompts(args.loops)
    loaded = None
    if args.cache and args.cache.exists():
        healthy, loops = pickle.loads(args.cache.read_bytes())
    else:
        from corevital.capture.loading import ModelSpec, load_model

        loaded = load_model(ModelSpec(device="cpu"))
        healthy, loops = capture(loaded, healthy_items), capture(loaded, loop_items)
        if args.cache:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            args.cache.write_bytes(pickle.dumps((healthy, loops)))
    profile = load_profile(healthy[0][2].model_type)
    calib = None
    if args.calibration:
        from corevital.analysis.calibration.profile import load_calibration_profile, resolve_profile_path

        calib = load_calibration_profile(resolve_profile_path(args.calibration))
        print(f"calibration profile {args.calibration}: {calib.num_runs} runs of {calib.model.model_id}")
    print(
        f"model {healthy[0][2].model_id} ({healthy[0][2].model_type}: profile {profile.family}, "
        f"{healthy[0][2].num_layers} layers, {healthy[0][2].num_heads} heads)"
    )
    figures: dict[str, Any] = {
        "healthy": report_healthy(
            healthy, [diagnose(sig, profile, calibration=calib) for _, _, sig in healthy]
        ),
        "loops": report_loops(loops, [diagnose(sig, profile, calibration=calib) for _, _, sig in loops]),
    }
    if args.faults:
        if loaded is None:
            from corevital.capture.loading import ModelSpec, load_model

            loaded = load_model(ModelSpec(device="cpu"))
        n_layers = loaded.capabilities.num_layers
        layers = (
            list(middle_third(n_layers))
            if args.faults == "middle"
            else [int(x) for x in args.faults.split(",")]
        )
        items = [
            dict(item, temperature=0.0, max_new_tokens=24) for item in healthy_items[: args.fault_prompts]
        ]
        figures["faults"] = run_faults(loaded, items, layers, calib)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
