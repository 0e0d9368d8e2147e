"""What the entropy bound costs the logprobs tier's scores, on the same outputs (docs/validation.md).

The proxy's reports of ``bench/proxy_validate.py`` (half of the test split through llama.cpp's
server, ``top_logprobs`` 20) carry the lower and upper bound of each step's entropy; the other
logit statistics of the tier are exact. Here each stored answer is fed back (teacher forcing) to
llama.cpp in process (``generate_one(forced=...)``: the server's kernels on the same Q4_1 GGUF,
the prompt in the same chat template), which gives the exact entropy of every step of that very
answer. The risk scores are then computed three times on the same signals, with the lower bound,
with the exact entropy and with the midpoint of the bounds (the tier's estimate; reports stored
with the lower bound as their entropy are re-estimated from their stored bounds), and compared
record by record: AUROC of each, paired difference with its 95% interval (1,000 resamples of
whole groups), ECE of the labelled score, and the estimate's error (exact − midpoint) per step.
Records run in the SHA-256 order of their groups and are cached one by one in ``--out``/exact.jsonl
(a killed run resumes); the tables use the complete groups done.

    nice -n 10 .venv/bin/python bench/proxy_validate_exact.py [--stop-at HH:MM] [--report-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from proxy_common import (  # first: sys.path (this checkout's src/, tests.support, bench/)
    MAX_NEW_TOKENS,
    REPO,
    RESAMPLES,
    commit,
    complete_groups,
    deadline_of,
    group_draws,
    hash_order,
    interval,
    loadavg,
    read_cache,
)
from proxy_validate import LABELS, chat_body, estimated_reports, subset

from corevital.analysis.diagnose import diagnose
from corevital.analysis.evaluation import auroc, bootstrap_ci, compute_ece
from corevital.analysis.profiles import load_profile
from corevital.capture.openai_api import prompt_text
from corevital.config import load_settings
from corevital.pipeline import Pipeline
from corevital.validation.answers import check_answer
from tests.support.reanalysis import signals_from_report


def force_all(records: list[Any], reports: dict[str, Any], cache: Path, stop_at: str | None) -> None:
    from corevital.capture.gguf import prepare_prompt
    from corevital.capture.llama_cpp import generate_one
    from corevital.capture.records import generation_record
    from corevital.proxy.llama_cpp import LlamaCppRunner

    done = read_cache(cache)
    pending = [r for r in records if r.id not in done]
    print(f"{len(records) - len(pending)} of {len(records)} cached, {len(pending)} to run", flush=True)
    if not pending:
        return
    settings = load_settings({"backend": "llama-cpp", "max_new_tokens": MAX_NEW_TOKENS, "sink": ["local"]})
    runner = LlamaCppRunner(settings, threads=1)
    llm = runner.model.llm
    vocabulary: dict[str, list[int]] = {}
    for i in range(runner.model.vocab_size):
        vocabulary.setdefault(llm.detokenize([i]).decode("utf-8", errors="ignore"), []).append(i)
    deadline = deadline_of(stop_at)
    t0 = time.perf_counter()
    try:
        for n, record in enumerate(pending, 1):
            if time.time() >= deadline:
                print(f"stopping at {stop_at} UTC", flush=True)
                break
            report = reports[record.id]
            texts = [s.token.token_text or "" for s in report.timeline]
            ids = [vocabulary.get(t, [None])[0] for t in texts]
            row: dict[str, Any] = {"id": record.id}
            if not ids or any(i is None for i in ids):
                row["exact_entropy"] = None
            else:
                forced = generate_one(
                    runner.model,
                    prepare_prompt(runner.model, record.prompt or "", settings),
                    generation_record(settings),
                    topk=settings.topk,
                    mass_k=settings.topk_mass_k,
                    forced=[int(i) for i in ids if i is not None],
                )
                row["exact_entropy"] = [float(x) for x in forced.logits.entropy]
                stored = [s.logits_summary.surprisal for s in report.timeline]
                row["surprisal_gap_max"] = max(
                    abs(float(a) - float(b))
                    for a, b in zip(stored, forced.chosen.surprisal, strict=True)
                    if a is not None
                )
            with cache.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            if n % 25 == 0 or n == len(pending):
                print(
                    f"  {n}/{len(pending)} ({(time.perf_counter() - t0) / n:.2f} s a record, "
                    f"load {loadavg()}, {time.strftime('%H:%M:%S', time.gmtime())} UTC)",
                    flush=True,
                )
    finally:
        runner.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--proxy-db", type=Path, default=REPO / ".bench-out" / "proxy_validate" / "proxy.db")
    parser.add_argument("--stop-at", default=None, metavar="HH:MM")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / ".bench-out" / "proxy_validate_exact")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    records = hash_order(subset(args.labels, "test", 2, args.out / "labels_subset.jsonl"))
    by_prompt = {r.prompt.text: r for r in estimated_reports(args.proxy_db)[0]}
    reports = {rec.id: by_prompt[prompt_text(chat_body(rec, MAX_NEW_TOKENS))] for rec in records}
    cache = args.out / "exact.jsonl"
    print(f"{len(records)} records (commit {commit()}, load {loadavg()})", flush=True)
    if not args.report_only:
        force_all(records, reports, cache, args.stop_at)

    rows = read_cache(cache)
    complete = [
        r
        for members in complete_groups(records, rows)
        for r in members
        if rows[r.id]["exact_entropy"] is not None
    ]
    if not complete:
        print("no complete group yet", flush=True)
        return 1
    profile = Pipeline(load_settings({"calibration": "default"})).calibration()
    thresholds = load_profile("unknown")
    variants = ("bound", "exact", "midpoint")
    scores: dict[str, list[float]] = {f"{m}_{v}": [] for m in ("labelled", "heur") for v in variants}
    gaps: list[float] = []
    mid_gaps: list[float] = []
    # the records whose forced run reproduces the stored log-probabilities (the same tokens)
    same_gaps: list[float] = []
    same_half: list[float] = []
    gap_surprisal: list[float] = []
    for rec in complete:
        signals = signals_from_report(reports[rec.id])  # the capture's estimate: the bounds' midpoint
        exact = np.asarray(rows[rec.id]["exact_entropy"], dtype=np.float64)
        lower = np.asarray(
            [
                np.nan if (v := st.logits_summary.entropy_lower) is None else v
                for st in reports[rec.id].timeline
            ]
        )
        gaps += list(exact - lower)
        mid_gaps += list(exact - signals.entropy)
        if float(rows[rec.id]["surprisal_gap_max"]) < 1e-3:
            upper = np.asarray(
                [
                    np.nan if (v := st.logits_summary.entropy_upper) is None else v
                    for st in reports[rec.id].timeline
                ]
            )
            same_gaps += list(exact - signals.entropy)
            same_half += list((upper - lower) / 2.0)
        gap_surprisal.append(float(rows[rec.id]["surprisal_gap_max"]))
        exact_signals = dataclasses.replace(signals, entropy=exact, perplexity=np.exp2(exact))
        bound_signals = dataclasses.replace(signals, entropy=lower, perplexity=np.exp2(lower))
        for name, s in (("bound", bound_signals), ("exact", exact_signals), ("midpoint", signals)):
            scores[f"labelled_{name}"].append(diagnose(s, thresholds, calibration=profile).risk.risk_score)
            scores[f"heur_{name}"].append(diagnose(s, thresholds).risk.risk_score)
    y = np.asarray([float(not check_answer(reports[r.id].generated.output_text, r)) for r in complete])
    groups = np.asarray([r.group for r in complete])
    draws = group_draws(list(groups), RESAMPLES)
    result: dict[str, Any] = {
        "commit": commit(),
        "n": len(complete),
        "groups": len(set(groups)),
        "failure_rate": float(y.mean()),
        "exact_minus_bound_bits": {
            "mean": float(np.mean(gaps)),
            "p50": float(np.percentile(gaps, 50)),
            "p95": float(np.percentile(gaps, 95)),
            "min": float(np.min(gaps)),
        },
        "exact_minus_midpoint_bits": {
            "steps": len(mid_gaps),
            "mean": float(np.mean(mid_gaps)),
            "p50": float(np.percentile(mid_gaps, 50)),
            "p05": float(np.percentile(mid_gaps, 5)),
            "p95": float(np.percentile(mid_gaps, 95)),
            "mean_abs": float(np.mean(np.abs(mid_gaps))),
            "p95_abs": float(np.percentile(np.abs(mid_gaps), 95)),
            "max_abs": float(np.max(np.abs(mid_gaps))),
        },
        "exact_minus_midpoint_bits_same_tokens": {
            "steps": len(same_gaps),
            "mean": float(np.mean(same_gaps)),
            "p50": float(np.percentile(same_gaps, 50)),
            "p95": float(np.percentile(same_gaps, 95)),
            "p95_abs": float(np.percentile(np.abs(same_gaps), 95)),
            "max_abs": float(np.max(np.abs(same_gaps))),
            "beyond_half_width_by_more_than_0.01": int(
                np.sum(np.abs(same_gaps) > np.asarray(same_half) + 0.01)
            ),
        },
        "stored_vs_forced_surprisal_gap_bits": {
            "median_of_max": float(np.median(gap_surprisal)),
            "max": float(np.max(gap_surprisal)),
        },
    }
    lines = [
        f"N = {len(complete)} records in {len(set(groups))} groups, failure rate {y.mean():.1%}",
        "",
        "| score | with the entropy bound (as stored) | with the exact entropy "
        "| difference (bound − exact) | with the bounds' midpoint | difference (midpoint − exact) |",
        "|---|---|---|---|---|---|",
    ]
    for label, key in (("labelled model", "labelled"), ("heuristic (default)", "heur")):
        b, e = np.asarray(scores[f"{key}_bound"]), np.asarray(scores[f"{key}_exact"])
        m = np.asarray(scores[f"{key}_midpoint"])
        cb = bootstrap_ci(auroc, b, y, n_resamples=RESAMPLES, groups=groups)
        ce = bootstrap_ci(auroc, e, y, n_resamples=RESAMPLES, groups=groups)
        cm = bootstrap_ci(auroc, m, y, n_resamples=RESAMPLES, groups=groups)
        diff = interval([auroc(b[i], y[i]) - auroc(e[i], y[i]) for i in draws])
        diff_m = interval([auroc(m[i], y[i]) - auroc(e[i], y[i]) for i in draws])
        result[key] = {
            "bound": [cb.estimate, cb.low, cb.high],
            "exact": [ce.estimate, ce.low, ce.high],
            "difference": [cb.estimate - ce.estimate, *diff],
            "midpoint": [cm.estimate, cm.low, cm.high],
            "midpoint_difference": [cm.estimate - ce.estimate, *diff_m],
            "ece_midpoint": compute_ece(m, y) if key == "labelled" else None,
            "ece_bound": compute_ece(b, y) if key == "labelled" else None,
            "ece_exact": compute_ece(e, y) if key == "labelled" else None,
            "max_abs_score_change": float(np.max(np.abs(b - e))),
        }
        lines.append(
            f"| {label} | {cb.estimate:.3f} [{cb.low:.3f}, {cb.high:.3f}] | {ce.estimate:.3f} "
            f"[{ce.low:.3f}, {ce.high:.3f}] | {cb.estimate - ce.estimate:+.3f} "
            f"[{diff[0]:+.3f}, {diff[1]:+.3f}] | {cm.estimate:.3f} [{cm.low:.3f}, {cm.high:.3f}] "
            f"| {cm.estimate - ce.estimate:+.3f} [{diff_m[0]:+.3f}, {diff_m[1]:+.3f}] |"
        )
    text = "\n".join(lines) + "\n\n" + json.dumps(result, indent=1) + "\n"
    (args.out / "exact.md").write_text(text, encoding="utf-8")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
