"""Run the validation suite of several failure kinds (``corevital.validation.suite``) on a real model.

Every item of :func:`~corevital.validation.suite.build_suite` is generated greedily (batch 8,
the kind's token budget, the model's chat template); the injected-fault kinds run their prompts
under the fault (:mod:`corevital.testing`), one layer per prompt in turn early / middle / late.
Each run is diagnosed without a profile (the default ``risk_score``) and with the shipped
calibration profile (its labelled QA risk model), labelled by its kind's rule, and its baselines
are computed. Writes to ``--out``:

- ``runs.jsonl``: every run (kind, split, group, label, output, scores, flags, blamed layers);
- ``signals.pkl``: the captured signals (``--from-cache`` re-diagnoses them without the model);
- ``dev.md``: the AUROC table of the dev split per kind and pooled. The ``test`` split is held out:
  no table of it is made unless ``--split test`` is given.

    nice -n 10 .venv/bin/python bench/validation_suite.py --out .bench-out/validation_suite
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from corevital.analysis.calibration.profile import CalibrationProfile
from corevital.analysis.diagnose import Diagnosis, diagnose
from corevital.analysis.profiles import ModelProfile
from corevital.analysis.signals import SequenceSignals
from corevital.validation.suite import baseline_scores, kind_table, markdown_tables
from corevital.validation.suite_items import SuiteItem, build_suite, fault_layers
from corevital.validation.suite_labels import label, word_repeat_rate

Captured = dict[str, tuple[str, SequenceSignals]]  # cache_key(item) -> (output, signals)


def cache_key(item: SuiteItem) -> str:
    """What a run depends on (prompt, budget, fault and where): an item whose text or budget changes
    is run again, one that is unchanged is taken from the cache whatever its id."""
    what = [item.prompt, item.max_new_tokens, item.fault, sorted(item.fault_args.items()), item.depth]
    return hashlib.sha256(json.dumps(what, default=str).encode()).hexdigest()[:20]


def read_cache(path: Path) -> Captured:
    """Every record of the append-only ``signals.pkl`` (a stream of pickled dicts; a record cut off
    by a kill is ignored)."""
    captured: Captured = {}
    if not path.exists():
        return captured
    with path.open("rb") as fh:
        while True:
            try:
                captured.update(pickle.load(fh))
            except (EOFError, pickle.UnpicklingError, AttributeError, ValueError):
                break
    return captured


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


@contextmanager
def fault_of(loaded: Any, item: SuiteItem) -> Iterator[None]:
    from corevital.testing import inject_attention_collapse, inject_nan, inject_scale, inject_zero_norm

    layer = fault_layers(loaded.capabilities.num_layers)[item.depth or "middle"]
    args: dict[str, Any] = dict(item.fault_args)
    manager: AbstractContextManager[Any]
    if item.fault == "nan":
        manager = inject_nan(loaded, layer)
    elif item.fault == "scale":
        manager = inject_scale(loaded, layer, **args)
    elif item.fault == "zero_norm":
        manager = inject_zero_norm(loaded, layer, **args)
    elif item.fault == "attention_collapse":
        manager = inject_attention_collapse(loaded, layer)
    else:
        manager = nullcontext()
    with manager:
        yield


def capture_all(loaded: Any, items: list[SuiteItem], batch: int, cache: Path, log: Path) -> Captured:
    """Every item's output and signals. Each batch is appended to ``cache`` as soon as it is done
    (and its outputs and labels to ``log``), and items already in it are not run again: a killed
    run loses at most one batch and resumes where it stopped."""
    from corevital.capture.runner import capture_prompts
    from corevital.config import load_settings
    from corevital.pipeline import signals_from_capture

    captured = read_cache(cache)
    groups: dict[tuple[int, str, str], list[SuiteItem]] = {}
    for item in items:
        if cache_key(item) not in captured:
            key = (item.max_new_tokens, item.kind if item.fault else "", item.depth or "")
            groups.setdefault(key, []).append(item)
    todo = sum(len(g) for g in groups.values())
    done = 0
    print(f"{len(items) - todo} of {len(items)} items cached, {todo} to run", flush=True)
    for (max_new, _, _), pending in groups.items():
        settings = load_settings(
            {"device": "cpu", "max_new_tokens": max_new, "temperature": 0.0, "batch_size": batch}, environ={}
        )
        for start in range(0, len(pending), batch):
            chunk = pending[start : start + batch]
            t0 = time.perf_counter()
            with fault_of(loaded, chunk[0]) if chunk[0].fault else nullcontext():
                result = capture_prompts(loaded, [c.prompt for c in chunk], settings)
            caps = result.model.capabilities
            fresh: Captured = {}
            for item, seq in zip(chunk, result.sequences, strict=True):
                fresh[cache_key(item)] = (
                    seq.generated_text,
                    signals_from_capture(seq, model_id=result.model.hf_id, caps=caps),
                )
            with cache.open("ab") as fh:
                pickle.dump(fresh, fh)
            captured.update(fresh)
            with log.open("a", encoding="utf-8") as fh:
                for item in chunk:
                    output = captured[cache_key(item)][0]
                    row = {"id": item.id, "kind": item.kind, "split": item.split, "output": output}
                    fh.write(json.dumps({**row, "failed": label(item, output)}) + "\n")
            done += len(chunk)
            print(
                f"  {chunk[0].kind} {chunk[0].depth or ''} {len(chunk)} prompts x {max_new} tokens in "
                f"{time.perf_counter() - t0:.0f} s ({done}/{todo}, load {loadavg()}, "
                f"{time.strftime('%H:%M:%S')})",
                flush=True,
            )
    return captured


def run_row(
    item: SuiteItem,
    output: str,
    sig: SequenceSignals,
    default: Diagnosis,
    calibrated: Diagnosis,
    failed: bool,
) -> dict[str, Any]:
    features = default.run_features
    row: dict[str, Any] = {
        "id": item.id,
        "kind": item.kind,
        "split": item.split,
        "group": item.group,
        "failed": failed,
        "prompt": item.prompt,
        "output": output,
        "depth": item.depth,
        "clean_of": item.clean_of,
        "word_repeat_rate": word_repeat_rate(output),
        "risk_score": default.risk.risk_score,
        "risk_factors": list(default.risk.risk_factors),
        "labelled_risk": calibrated.risk.risk_score,
        "flags": {k: v for k, v in vars(default.health_flags).items() if v},
        "flags_with_profile": {k: v for k, v in vars(calibrated.health_flags).items() if v},
        "blamed": [b.layer for b in default.blamed_layers],
        "blamed_with_profile": [b.layer for b in calibrated.blamed_layers],
        "features": {k: v for k, v in vars(features).items()},
    }
    row.update(baseline_scores(vars(features), sig.token_ids.tolist()))
    return row


def fault_rows(rows: dict[str, dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The faulted runs of ``kind`` (label 1) and the clean runs of the same prompts (label 0)."""
    faulted = [r for r in rows.values() if r["kind"] == kind]
    clean = [dict(rows[r["clean_of"]], failed=False) for r in faulted if r["clean_of"] in rows]
    return faulted + clean


def tables(rows: dict[str, dict[str, Any]], split: str, resamples: int) -> str:
    kinds = list(dict.fromkeys(r["kind"] for r in rows.values()))
    out = []
    pooled: list[dict[str, Any]] = []
    for kind in kinds:
        runs = kind_runs(rows, kind, split)
        if kind != "requested_repetition":
            pooled += [r for r in runs if not (kind.startswith("fault_") and not r["failed"])]
        out.append(kind_table(kind, split, runs, n_resamples=resamples))
    pooled_table = kind_table("pooled (all but requested_repetition)", split, pooled, n_resamples=resamples)
    return markdown_tables([*out, pooled_table])


PLAIN_KINDS = ("factual", "arithmetic", "word_problem", "open_ended", "unanswerable")


def kind_runs(rows: dict[str, dict[str, Any]], kind: str, split: str) -> list[dict[str, Any]]:
    """The runs of one kind and split as they are tabulated (a fault kind with its clean runs)."""
    if kind.startswith("fault_"):
        return [r for r in fault_rows(rows, kind) if r["split"] == split]
    return [r for r in rows.values() if r["kind"] == kind and r["split"] == split]


def distribution_table(rows: dict[str, dict[str, Any]], split: str) -> str:
    """The default risk score's distribution per kind (is it spread or saturated?)."""
    import numpy as np

    lines = [
        "| kind | N | min | p10 | p25 | median | p75 | p90 | max | share ≥ 0.99 | share ≤ 0.01 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    kinds = list(dict.fromkeys(r["kind"] for r in rows.values()))
    for kind in kinds:
        s = np.asarray([float(r["risk_score"]) for r in kind_runs(rows, kind, split)])
        if not s.size:
            continue
        q = np.quantile(s, [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
        cells = " | ".join(f"{v:.2f}" for v in q)
        lines.append(f"| {kind} | {s.size} | {cells} | {np.mean(s >= 0.99):.0%} | {np.mean(s <= 0.01):.0%} |")
    return "\n".join(lines)


def transfer_table(rows: dict[str, dict[str, Any]], split: str, resamples: int) -> str:
    """Labelled risk models: the shipped QA profile's, and one fitted per plain kind on that kind's
    dev runs (``fit_risk_model``, its ten features, 5 grouped folds); each evaluated on ``split`` of
    every plain kind: AUROC [95% CI], and ECE [95% CI] on its own kind (the shipped one: on all), with
    its noise floor (the mean ECE of a perfectly calibrated model with these probabilities and N)."""
    import numpy as np

    from corevital.analysis.calibration.features import RunFeatures
    from corevital.analysis.calibration.fit import DatasetInfo, fit_risk_model
    from corevital.analysis.calibration.risk_model import predict
    from corevital.analysis.evaluation import auroc, bootstrap_ci, compute_ece, ece_noise_floor
    from corevital.errors import InputError

    def features(r: dict[str, Any]) -> RunFeatures:
        return RunFeatures(**r["features"])

    models: dict[str, Any] = {"shipped QA profile": None}
    notes = []
    for kind in PLAIN_KINDS:
        train = kind_runs(rows, kind, "dev")
        try:
            fitted = fit_risk_model(
                [features(r) for r in train],
                [int(r["failed"]) for r in train],
                [r["group"] for r in train],
                dataset=DatasetInfo(f"suite:{kind}", "-", "dev"),
                folds=5,
            )
        except InputError as exc:  # too few failures, successes or groups on dev
            notes.append(f"{kind}: not fitted ({exc})")
            continue
        models[f"fitted on {kind} (dev)"] = fitted.spec
    head = "| labelled model | " + " | ".join(f"{k}: AUROC" for k in PLAIN_KINDS) + " | ECE on its own kind |"
    lines = [head, "|---|" + "---|" * (len(PLAIN_KINDS) + 1)]
    for name, spec in models.items():
        cells, ece_cells = [], []
        for kind in PLAIN_KINDS:
            runs = kind_runs(rows, kind, split)
            if not runs:
                cells.append("–")
                continue
            y = np.asarray([bool(r["failed"]) for r in runs])
            p = np.asarray(
                [
                    float(r["labelled_risk"]) if spec is None else predict(spec, features(r)).probability
                    for r in runs
                ]
            )
            g = np.asarray([r["group"] for r in runs])
            if y.all() or not y.any():
                cells.append("–")
            else:
                ci = bootstrap_ci(auroc, p, y, n_resamples=resamples, groups=g)
                cells.append(f"{ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]")
            if spec is None or name == f"fitted on {kind} (dev)":
                e = bootstrap_ci(compute_ece, p, y, n_resamples=resamples, groups=g)
                floor = ece_noise_floor(p, n_sims=1000).mean
                ece_cells.append(f"{kind} {e.estimate:.3f} [{e.low:.3f}, {e.high:.3f}] (floor {floor:.3f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + "; ".join(ece_cells) + " |")
    return "\n".join(lines + [""] + notes)


FLAG_NAMES = (
    "nan_detected",
    "inf_detected",
    "attention_collapse_detected",
    "repetition_loop_detected",
    "mid_layer_anomaly_detected",
    "layer_update_anomaly_detected",
)


def healthy_profile(
    captured: Captured, items: list[SuiteItem], shipped: CalibrationProfile
) -> tuple[CalibrationProfile, set[str]]:
    """A profile of the dev split's fault-free runs (same model identity and decoding as ``shipped``,
    with the per-layer update-ratio references the shipped one predates); returns the ids used."""
    from corevital.analysis.calibration.builder import ProfileBuilder

    builder = ProfileBuilder(shipped.model, shipped.generation)
    used = set()
    for item in items:
        if item.fault is None and item.split == "dev" and cache_key(item) in captured:
            builder.add(captured[cache_key(item)][1])
            used.add(item.id)
    return builder.finish(created_at_utc="bench", corevital_version="bench"), used


def fault_report(
    captured: Captured, items: list[SuiteItem], profile: ModelProfile, calibration: CalibrationProfile
) -> str:
    """Flagged and blamed-first rates per fault kind and depth, without and with a profile, and the
    firing rate of every flag on the fault-free runs (with a profile: the test split's, judged
    against the dev split's profile)."""
    num_layers = next(iter(captured.values()))[1].num_layers
    where = fault_layers(num_layers)
    lines = [
        "| fault | depth (layer) | runs | flagged, no profile | blamed first, no profile | "
        "flagged, profile | blamed first, profile | median risk (no profile) | flags fired (no profile) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cells: dict[tuple[str, str], list[SuiteItem]] = {}
    for item in items:
        if item.fault is not None and cache_key(item) in captured:
            cells.setdefault((item.kind, item.depth or ""), []).append(item)
    for (kind, depth), chunk in cells.items():
        layer = where[depth]
        counts = [0, 0, 0, 0]
        risks: list[float] = []
        fired: dict[str, int] = {}
        for item in chunk:
            sig = captured[cache_key(item)][1]
            for i, diag in enumerate(
                (diagnose(sig, profile), diagnose(sig, profile, calibration=calibration))
            ):
                flags = vars(diag.health_flags)
                counts[2 * i] += any(bool(flags[name]) for name in FLAG_NAMES)
                counts[2 * i + 1] += bool(diag.blamed_layers) and diag.blamed_layers[0].layer == layer
                if i == 0:
                    risks.append(diag.risk.risk_score)
                    for name in FLAG_NAMES:
                        fired[name] = fired.get(name, 0) + bool(flags[name])
        n = len(chunk)
        names = ", ".join(f"{k.removesuffix('_detected')} {v}" for k, v in fired.items() if v) or "none"
        lines.append(
            f"| {kind.removeprefix('fault_')} | {depth} ({layer}) | {n} | {counts[0]}/{n} | "
            f"{counts[1]}/{n} | {counts[2]}/{n} | {counts[3]}/{n} | {sorted(risks)[n // 2]:.2f} | {names} |"
        )
    clean = [i for i in items if i.fault is None and cache_key(i) in captured]
    lines += [
        "",
        "| fault-free runs | N | " + " | ".join(n.removesuffix("_detected") for n in FLAG_NAMES) + " |",
    ]
    lines.append("|---|---|" + "---|" * len(FLAG_NAMES))
    for title, chosen, calib in (
        ("all, no profile", clean, None),
        ("test split, dev profile", [i for i in clean if i.split == "test"], calibration),
    ):
        rates = dict.fromkeys(FLAG_NAMES, 0)
        for item in chosen:
            flags = vars(diagnose(captured[cache_key(item)][1], profile, calibration=calib).health_flags)
            for name in FLAG_NAMES:
                rates[name] += bool(flags[name])
        n = max(len(chosen), 1)
        lines.append(
            f"| {title} | {len(chosen)} | "
            + " | ".join(f"{rates[k]} ({rates[k] / n:.1%})" for k in FLAG_NAMES)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(".bench-out/validation_suite"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--limit", type=int, default=0, help="only the first N items of each kind (smoke)")
    parser.add_argument("--from-cache", action="store_true", help="re-diagnose signals.pkl, no model")
    parser.add_argument("--split", default="dev", help="the split to tabulate (test is held out)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--kinds", default="", help="comma-separated kinds to run (default: all)")
    parser.add_argument("--merge", type=Path, action="append", default=[], help="another signals.pkl to add")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    items = build_suite()
    if args.limit:
        seen: dict[str, int] = {}
        limited = []
        for item in items:
            seen[item.kind] = seen.get(item.kind, 0) + 1
            if seen[item.kind] <= args.limit or item.fault is not None and seen[item.kind] <= 3:
                limited.append(item)
        items = limited
    if args.kinds:
        items = [i for i in items if i.kind in args.kinds.split(",")]
    cache = args.out / "signals.pkl"
    t0 = time.perf_counter()
    if args.from_cache:
        captured: Captured = read_cache(cache)
        for other in args.merge:
            captured.update(read_cache(other))
        model_id = "from cache"
    else:
        import torch

        from corevital.capture.loading import ModelSpec, load_model

        torch.set_num_threads(args.threads)  # on a shared, busy CPU, spinning intra-op threads cost more
        loaded = load_model(ModelSpec(device="cpu"))
        model_id = loaded.hf_id if hasattr(loaded, "hf_id") else str(loaded.capabilities.model_type)
        print(f"model {model_id}: {len(items)} items, load {loadavg()}", flush=True)
        captured = capture_all(loaded, items, args.batch, cache, args.out / "captured.jsonl")
    elapsed = time.perf_counter() - t0

    from corevital.analysis.calibration.profile import load_calibration_profile, resolve_profile_path
    from corevital.analysis.profiles import load_profile

    first = next(iter(captured.values()))[1]
    profile: ModelProfile = load_profile(first.model_type)
    calibration: CalibrationProfile = load_calibration_profile(resolve_profile_path("default"))
    rows: dict[str, dict[str, Any]] = {}
    for item in items:
        if cache_key(item) not in captured:
            continue
        output, sig = captured[cache_key(item)]
        default = diagnose(sig, profile)
        calibrated = diagnose(sig, profile, calibration=calibration)
        rows[item.id] = run_row(item, output, sig, default, calibrated, label(item, output))
    with (args.out / "runs.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows.values():
            fh.write(json.dumps(row, default=float) + "\n")
    head = (
        f"commit {commit()}, model {model_id}, {len(rows)} runs, greedy, batch {args.batch}, "
        f"capture {elapsed:.0f} s, load average {loadavg()} at the end, {platform.machine()} CPU"
    )
    table = tables(rows, args.split, args.resamples)
    extra = (
        f"Default risk_score distribution, split {args.split}:\n\n{distribution_table(rows, args.split)}\n\n"
        f"Labelled risk models on split {args.split}:\n\n{transfer_table(rows, args.split, args.resamples)}"
    )
    (args.out / f"{args.split}.md").write_text(f"{head}\n\n{table}\n\n{extra}\n", encoding="utf-8")
    print(head)
    print(table)
    print(extra)
    dev_profile, used = healthy_profile(captured, items, calibration)
    faults = fault_report(captured, items, profile, dev_profile)
    (args.out / "faults.md").write_text(
        f"{head}; profile of {len(used)} fault-free dev runs\n\n{faults}\n", encoding="utf-8"
    )
    print(faults)
    return 0


if __name__ == "__main__":
    sys.exit(main())
