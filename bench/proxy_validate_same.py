"""The logprobs tier against the transformers backend on the same records (docs/validation.md).

``bench/proxy_validate.py`` sends half of the labelled set's ``test`` split (615 records) through
``corevital proxy`` in front of llama.cpp's server and stores one report per response. This script
runs the transformers backend (``corevital validate``'s pipeline: the default model from the same
GGUF file, ``--calibration default``, greedy, at most 24 new tokens, the record's prompt in the
model's chat template) on the same records and compares the two tiers record by record:

1. Order: the records' groups sorted by the SHA-256 of the group name (then record id), run in
   batches of ``--batch`` in that order. Each batch's runs are appended to ``--out``/runs.jsonl as
   soon as it is done; a killed run loses at most one batch and resumes where it stopped.
2. Subset: the records of the groups that are complete in that order (a prefix of the hash order,
   so the subset is deterministic given its size; ``--groups G`` stops after G groups).
3. On that subset, for both tiers: AUROC with 95% intervals (1,000 resamples of whole groups) of the
   labelled risk, the heuristic (default) risk and the baselines, the paired difference
   (logprobs − transformers) with its interval from the same resamples, and how often the two
   backends agree (token-identical outputs, identical text, same verdict).
4. Calibration of the labelled risk (both tiers on the subset; the logprobs tier also on all its
   records): ECE with 10 equal-width and 10 equal-mass bins, 95% group-bootstrap intervals, and the
   noise floor: the ECE of a perfectly calibrated predictor (outcomes drawn from the predicted
   probabilities) at the same n, mean and 95th percentile of 1,000 draws.

The logprobs tier's runs come from the proxy's store (``--proxy-db``), analysed at this commit as
``bench/proxy_validate.py --from-store`` does (the stored score is the labelled model's).

    nice -n 10 .venv/bin/python bench/proxy_validate_same.py [--groups G] [--batch 8] \\
        [--proxy-db .bench-out/proxy_validate/proxy.db] [--out .bench-out/proxy_validate_same]

``--report-only`` runs nothing: the tables from what ``runs.jsonl`` holds. Writes
``comparison.json`` and ``comparison.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
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
    ece_intervals,
    group_draws,
    hash_order,
    interval,
    loadavg,
    read_cache,
)
from proxy_validate import LABELS, chat_body, estimated_reports, runs_from_store, subset

from corevital.analysis.calibration.features import BASELINES
from corevital.analysis.evaluation import auroc
from corevital.validation.labels import LabelledRecord
from corevital.validation.table import LabelledRun

# -- the transformers backend, cached per batch --------------------------------------------------


def run_transformers(
    records: list[LabelledRecord], cache: Path, batch: int, groups: int | None, stop_utc: str | None
) -> None:
    import torch

    from corevital.config import load_settings
    from corevital.pipeline import Pipeline
    from corevital.validation.answers import check_answer
    from corevital.validation.collect import collect_runs
    from corevital.validation.workflow import judge, record_item

    torch.set_num_threads(1)
    done = read_cache(cache)
    if groups is not None:
        keep = list(dict.fromkeys(r.group for r in records))[:groups]
        records = [r for r in records if r.group in set(keep)]
    pending = [r for r in records if r.id not in done]
    print(
        f"{len(records) - len(pending)} of {len(records)} records cached, {len(pending)} to run", flush=True
    )
    if not pending:
        return
    settings = load_settings(
        {
            "device": "cpu",
            "calibration": "default",
            "temperature": 0.0,
            "max_new_tokens": MAX_NEW_TOKENS,
            "batch_size": batch,
        },
        environ={},
    )
    pipeline = Pipeline(settings)
    tokenizer = pipeline.loaded.tokenizer
    t_all = time.perf_counter()
    deadline = deadline_of(stop_utc)
    for start in range(0, len(pending), batch):
        if time.time() >= deadline:
            print(f"stopping at {stop_utc} UTC", flush=True)
            break
        chunk = pending[start : start + batch]
        t0 = time.perf_counter()
        collected = collect_runs(pipeline, [record_item(r) for r in chunk])
        judged = judge(pipeline, chunk, collected, check_answer)
        with cache.open("a", encoding="utf-8") as fh:
            for run, c in zip(judged, collected, strict=True):
                ids = [int(i) for i in c.signals.token_ids]
                row = {
                    "id": run.record_id,
                    "group": run.group,
                    "failed": run.failed,
                    "output": run.output,
                    "finish_reason": run.finish_reason,
                    "risk_score": run.risk_score,
                    "heuristic_risk_score": run.heuristic_risk_score,
                    "features": asdict(run.features),
                    "token_texts": [tokenizer.decode([i]) for i in ids],
                }
                fh.write(json.dumps(row) + "\n")
        n = start + len(chunk)
        print(
            f"  {n}/{len(pending)}: {len(chunk)} records in {time.perf_counter() - t0:.0f} s "
            f"({(time.perf_counter() - t_all) / n:.1f} s a record, load {loadavg()}, "
            f"{time.strftime('%H:%M:%S', time.gmtime())} UTC)",
            flush=True,
        )


# -- the comparison ------------------------------------------------------------------------------


def calibration(p: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
    """ECE (10 bins, equal-width and equal-mass) with its group-bootstrap interval and noise floor."""
    out: dict[str, Any] = {"n": int(p.size), "mean_predicted": float(p.mean()), "observed": float(y.mean())}
    for name, (ci, floor) in ece_intervals(p, y, np.asarray(groups)).items():
        out[name] = {
            "ece": ci.estimate,
            "ci": (ci.low, ci.high),
            "floor_mean": floor.mean,
            "floor_p95": floor.p95,
        }
    return out


SCORES: tuple[tuple[str, str], ...] = (
    ("risk_score", "risk_score (labelled model)"),
    ("heuristic_risk_score", "risk_score (heuristic, the default)"),
    *BASELINES,
)


def score(run: LabelledRun | dict[str, Any], name: str) -> float:
    if isinstance(run, dict):
        value = run[name] if name in run else run["features"][name]
    else:
        value = getattr(run, name) if name in ("risk_score", "heuristic_risk_score") else None
        if value is None:
            value = getattr(run.features, name)
    return float(value)


def generated_tokens(row: dict[str, Any]) -> list[str]:
    """The transformers run's token texts without the end-of-sequence token it generated (the
    OpenAI API, hence the logprobs tier, does not list the token that ended a choice)."""
    texts: list[str] = row["token_texts"]
    return texts[:-1] if row["finish_reason"] == "eos" else texts


def compare(
    proxy: list[LabelledRun], theirs: dict[str, dict[str, Any]], tokens: dict[str, list[str]]
) -> dict[str, Any]:
    groups = [r.group for r in proxy]
    y_p = np.asarray([float(r.failed) for r in proxy])
    y_t = np.asarray([float(theirs[r.record_id]["failed"]) for r in proxy])
    draws = group_draws(groups, RESAMPLES)
    rows = []
    for name, label in SCORES:
        s_p = np.asarray([score(r, name) for r in proxy])
        s_t = np.asarray([score(theirs[r.record_id], name) for r in proxy])
        a_p = [auroc(s_p[i], y_p[i]) for i in draws]
        a_t = [auroc(s_t[i], y_t[i]) for i in draws]
        rows.append(
            {
                "name": name,
                "label": label,
                "logprobs": {"auroc": auroc(s_p, y_p), "ci": interval(a_p)},
                "transformers": {"auroc": auroc(s_t, y_t), "ci": interval(a_t)},
                "difference": {
                    "estimate": auroc(s_p, y_p) - auroc(s_t, y_t),
                    "ci": interval([a - b for a, b in zip(a_p, a_t, strict=True)]),
                },
            }
        )
    same_tokens = sum(1 for r in proxy if tokens[r.record_id] == generated_tokens(theirs[r.record_id]))
    same_text = sum(1 for r in proxy if r.output.strip() == theirs[r.record_id]["output"].strip())
    same_verdict = sum(1 for r in proxy if r.failed == theirs[r.record_id]["failed"])
    first_diff = []
    for r in proxy:
        a, b = tokens[r.record_id], generated_tokens(theirs[r.record_id])
        if a != b:
            first_diff.append(
                next((k for k, (x, z) in enumerate(zip(a, b, strict=False)) if x != z), min(len(a), len(b)))
            )
    return {
        "n": len(proxy),
        "groups": len(set(groups)),
        "failure_rate": {"logprobs": float(y_p.mean()), "transformers": float(y_t.mean())},
        "rows": rows,
        "agreement": {
            "token_identical": same_tokens,
            "text_identical": same_text,
            "same_verdict": same_verdict,
            "first_differing_token_median": float(np.median(first_diff)) if first_diff else None,
        },
        "calibration": {
            "logprobs": calibration(np.asarray([r.risk_score for r in proxy]), y_p, groups),
            "transformers": calibration(
                np.asarray([theirs[r.record_id]["risk_score"] for r in proxy]), y_t, groups
            ),
        },
    }


def fmt(entry: dict[str, Any]) -> str:
    low, high = entry["ci"]
    value = entry.get("auroc", entry.get("estimate", entry.get("ece")))
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def markdown(result: dict[str, Any], whole: dict[str, Any]) -> str:
    agree = result["agreement"]
    n = result["n"]
    lines = [
        f"N = {n} records in {result['groups']} groups; failure rate "
        f"{result['failure_rate']['logprobs']:.1%} (logprobs tier, llama.cpp) / "
        f"{result['failure_rate']['transformers']:.1%} (transformers backend)",
        "",
        "| score | logprobs tier (proxy) AUROC [95% CI] | transformers backend AUROC [95% CI] "
        "| difference [95% CI] |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['label']} | {fmt(row['logprobs'])} | {fmt(row['transformers'])} "
            f"| {fmt(row['difference'])} |"
        )
    lines += [
        "",
        f"Agreement: token-identical outputs {agree['token_identical']}/{n}, identical text "
        f"{agree['text_identical']}/{n}, same verdict {agree['same_verdict']}/{n}; where the tokens differ, "
        f"the median first differing token is {agree['first_differing_token_median']}.",
        "",
        "| labelled risk | n | mean predicted / observed | ECE equal-width [95% CI] "
        "| noise floor (mean, p95) | ECE equal-mass [95% CI] | noise floor (mean, p95) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, cal in (
        ("logprobs tier, this subset", result["calibration"]["logprobs"]),
        ("transformers backend, this subset", result["calibration"]["transformers"]),
        ("logprobs tier, all its records", whole),
    ):
        w, m = cal["equal-width"], cal["equal-mass"]
        lines.append(
            f"| {name} | {cal['n']} | {cal['mean_predicted']:.3f} / {cal['observed']:.3f} | {fmt(w)} | "
            f"{w['floor_mean']:.3f}, {w['floor_p95']:.3f} | {fmt(m)} | "
            f"{m['floor_mean']:.3f}, {m['floor_p95']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--every", type=int, default=2, help="the proxy run's subset (proxy_validate --every)"
    )
    parser.add_argument("--proxy-db", type=Path, default=REPO / ".bench-out" / "proxy_validate" / "proxy.db")
    parser.add_argument("--groups", type=int, default=None, help="run the first G groups of the hash order")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--stop-at", default=None, metavar="HH:MM", help="start no batch after this UTC time")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / ".bench-out" / "proxy_validate_same")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    records = hash_order(subset(args.labels, args.split, args.every, args.out / "labels_subset.jsonl"))
    cache = args.out / "runs.jsonl"
    print(f"{len(records)} records (commit {commit()}, load {loadavg()})", flush=True)
    if not args.report_only:
        run_transformers(records, cache, args.batch, args.groups, args.stop_at)

    from corevital.capture.openai_api import prompt_text

    reports, reestimated = estimated_reports(args.proxy_db)
    proxy_runs, worst = runs_from_store(records, reports, MAX_NEW_TOKENS, reestimated)
    by_prompt = {r.prompt.text: r for r in reports}
    tokens = {
        rec.id: [
            s.token.token_text or "" for s in by_prompt[prompt_text(chat_body(rec, MAX_NEW_TOKENS))].timeline
        ]
        for rec in records
    }
    print(
        f"proxy store: {len(reports)} reports ({len(reestimated)} re-estimated with the midpoint); "
        f"stored vs re-analysed labelled score of the others {worst:.1e}",
        flush=True,
    )

    theirs = read_cache(cache)
    keep = {members[0].group for members in complete_groups(records, theirs)}
    mine = [r for r in proxy_runs if r.group in keep]
    whole = calibration(
        np.asarray([r.risk_score for r in proxy_runs]),
        np.asarray([float(r.failed) for r in proxy_runs]),
        [r.group for r in proxy_runs],
    )
    if not mine:
        print("no complete group yet", flush=True)
        return 1
    result = compare(mine, theirs, tokens)
    result["logprobs_all_records_calibration"] = whole
    result["commit"] = commit()
    text = markdown(result, whole)
    (args.out / "comparison.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (args.out / "comparison.md").write_text(text, encoding="utf-8")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
