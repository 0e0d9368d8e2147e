"""The logprobs tier's risk score on the labelled set, through ``corevital proxy`` (docs/validation.md).

Starts llama-cpp-python's OpenAI-compatible server with the default model (SmolLM2-135M-Instruct,
Q4_1 GGUF) and ``corevital proxy --calibration default`` (its own process, the CLI as users run it,
storing into a fresh SQLite store) in front of it, both on 127.0.0.1; then:

1. Every record of ``--split`` (default ``test``) of the labelled set, or a deterministic subset of
   its groups (``--every K``: the groups whose SHA-256 is 0 modulo K), is sent through the proxy as
   a chat completion (the record's messages, or its prompt as one user message; greedy,
   ``--max-tokens`` 24, ``logprobs`` with ``top_logprobs`` 20), one request at a time.
2. Each answer is judged by the validation's answer checker. The report the proxy stored for it
   gives the risk score with the labelled risk model; the same response through
   :class:`~corevital.proxy.reports.LogprobReporter` in this process, without a calibration
   profile, gives the heuristic score and the run features the baselines are read from. The
   stored score must equal the one this process computes with the profile (it is checked).
3. The validation table (AUROC, AUPRC with 95% grouped bootstrap intervals, ECE) is computed and
   written by :mod:`corevital.validation` as ``corevital validate`` writes it (``--out``:
   ``validation.json``, ``validation.md``, ``runs.jsonl``, plots).
4. With ``--transformers``, ``corevital validate`` runs the same records (the subset written as a
   labels file) on the transformers backend at this commit (``--out``/transformers), and the two
   tables are printed side by side with the share of records answered identically.

    .venv/bin/python bench/proxy_validate.py [--every 4] [--transformers] [--out .bench-out/proxy_validate]

``--from-store DB`` sends nothing: the tables from the reports an earlier run's proxy stored (the
heuristic score and the features from the analysis of their logit tier again, the labelled score
recomputed that way compared with the stored one). Reports stored with the entropy's lower bound as
the step's entropy are scored with the midpoint of their stored bounds, the estimate the capture
makes (:func:`estimated_reports`); their labelled score is the recomputed one.

Needs llama-cpp-python with its server (``make test-engines`` installs it) and the ``validate``
extra. Exit status 1 when a stored report is missing or its score differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from proxy_common import MAX_NEW_TOKENS, REPO  # sys.path: this checkout's src/, tests.support

from corevital.analysis.calibration.features import RunFeatures
from corevital.capture.default_model import locate_default_model
from corevital.capture.logprobs import capture_response
from corevital.capture.openai_api import ObservedRequest, prompt_text
from corevital.config import load_settings
from corevital.proxy.reports import LogprobReporter
from corevital.validation.answers import check_answer
from corevital.validation.labels import LabelledRecord, load_labelled
from corevital.validation.outputs import table_markdown, write_outputs
from corevital.validation.table import LabelledRun, SplitTable, split_table
from tests.support.llama_server import LlamaServer
from tests.support.proxy_process import ProxyProcess, stored_reports

LABELS = REPO / "examples" / "validation" / "qa_labelled.jsonl"
VOCAB = 49152
TOP_LOGPROBS = 20


def in_subset(group: str, every: int) -> bool:
    return int(hashlib.sha256(group.encode()).hexdigest(), 16) % every == 0


def subset(path: Path, split: str, every: int, out: Path) -> list[LabelledRecord]:
    """The split's records of the chosen groups, also written to ``out`` (a labels file for validate)."""
    records = [r for r in load_labelled(path, split=split) if in_subset(r.group, every)]
    ids = {r.id for r in records}
    lines = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line)["id"] in ids
    ]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return records


def chat_body(record: LabelledRecord, max_tokens: int) -> dict[str, Any]:
    if record.messages is not None:
        messages = [{"role": m.role, "content": m.content} for m in record.messages]
    else:
        messages = [{"role": "user", "content": record.prompt or ""}]
    return {
        "messages": messages,
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "seed": 0,
        "logprobs": True,
        "top_logprobs": TOP_LOGPROBS,
    }


def finite(value: float | None) -> float:
    return math.nan if value is None else float(value)


def run_records(
    records: list[LabelledRecord], proxy: ProxyProcess, args: argparse.Namespace
) -> list[tuple[LabelledRecord, dict[str, Any], str]]:
    """(record, response, the proxy's prompt text) for every record, sent one at a time."""
    client = httpx.Client(timeout=600)
    done = []
    t0 = time.monotonic()
    for i, record in enumerate(records):
        body = chat_body(record, args.max_tokens)
        response = client.post(proxy.url + "/v1/chat/completions", json=body)
        response.raise_for_status()
        done.append((record, response.json(), prompt_text(body)))
        if (i + 1) % 25 == 0 or i + 1 == len(records):
            rate = (time.monotonic() - t0) / (i + 1)
            print(f"  {i + 1}/{len(records)} sent, {rate:.2f} s a request", flush=True)
    client.close()
    return done


def _labelled_run(
    record: LabelledRecord, output: str, finish: str, score: float, heuristic: float, features: RunFeatures
) -> LabelledRun:
    """One validation run: the record's answer checked in the output, the stored and heuristic scores."""
    return LabelledRun(
        record_id=record.id,
        split=record.split or "all",
        task=record.task,
        group=record.group,
        failed=not check_answer(output, record),
        output=output,
        finish_reason=finish,
        risk_score=score,
        heuristic_risk_score=heuristic,
        features=features,
    )


def labelled_runs(
    answered: list[tuple[LabelledRecord, dict[str, Any], str]], stored: dict[str, float]
) -> tuple[list[LabelledRun], float]:
    """The validation's runs (stored score = labelled model) and the largest stored-vs-local difference."""
    plain = LogprobReporter(load_settings({}), vocab_size=VOCAB)
    calibrated = LogprobReporter(load_settings({"calibration": "default"}), vocab_size=VOCAB)
    runs = []
    worst = 0.0
    for record, response, prompt in answered:
        request = ObservedRequest(prompt=prompt, chat=True)
        capture = capture_response(
            response, request, topk=5, mass_k=10, vocab_size=VOCAB, elapsed_ms=0.0, started_at_utc=""
        )
        (seq,) = capture.run.sequences
        _, heuristic = plain.pipeline.diagnose_one(capture.run, seq)
        _, labelled = calibrated.pipeline.diagnose_one(capture.run, seq)
        score = stored.get(prompt)
        if score is None:
            raise SystemExit(f"no stored report for {record.id}")
        worst = max(worst, abs(score - labelled.risk.risk_score))
        output = str(response["choices"][0]["message"]["content"] or "")
        finish = str(response["choices"][0].get("finish_reason"))
        runs.append(
            _labelled_run(
                record, output, finish, float(score), heuristic.risk.risk_score, heuristic.run_features
            )
        )
    plain.close()
    calibrated.close()
    return runs, worst


def estimated_reports(db: Path) -> tuple[list[Any], set[str]]:
    """The reports of a proxy's store, each step's entropy the estimate this commit's capture makes.

    A report stored when the logprobs tier's ``entropy`` was the lower bound (``capture.entropy``
    ``lower_bound`` with every step's ``entropy_upper`` known) gets the midpoint of its stored bounds
    as ``entropy`` (the lower bound as ``entropy_lower``, ``perplexity`` 2 ** the midpoint,
    ``capture.entropy`` ``midpoint``), what ``capture/logprobs.py`` computes from the same response
    (from the bounds as written, rounded). Returns the reports and the trace ids so re-estimated:
    their stored risk score is the lower bound's, not this analysis's."""
    reports = stored_reports(db)
    changed: set[str] = set()
    out = []
    for report in reports:
        steps = [s.logits_summary for s in report.timeline]
        if (
            report.capture is None
            or report.capture.entropy != "lower_bound"
            or not steps
            or any(s.entropy is None or s.entropy_upper is None for s in steps)
        ):
            out.append(report)
            continue
        report = report.model_copy(deep=True)
        for lg in (s.logits_summary for s in report.timeline):
            assert lg.entropy is not None and lg.entropy_upper is not None
            lg.entropy_lower = lg.entropy
            lg.entropy = (lg.entropy + lg.entropy_upper) / 2.0
            lg.perplexity = 2.0**lg.entropy
        assert report.capture is not None
        report.capture.entropy = "midpoint"
        changed.add(report.trace_id)
        out.append(report)
    return out, changed


def runs_from_store(
    records: list[LabelledRecord], reports: list[Any], max_tokens: int, reestimated: set[str] | None = None
) -> tuple[list[LabelledRun], float]:
    """The validation's runs from the reports a proxy stored (``--from-store``): the stored score is the
    labelled model's; the heuristic score and the run features are the analysis of the reports'
    logit tier again (at this commit), and the labelled score recomputed that way is compared. For the
    reports in ``reestimated`` (:func:`estimated_reports`) the recomputed labelled score is the score."""
    from corevital.analysis.diagnose import diagnose
    from corevital.analysis.profiles import load_profile
    from corevital.pipeline import Pipeline
    from tests.support.reanalysis import signals_from_report

    by_prompt = {r.prompt.text: r for r in reports}
    profile = Pipeline(load_settings({"calibration": "default"})).calibration()
    thresholds = load_profile("unknown")
    runs = []
    worst = 0.0
    for record in records:
        report = by_prompt.get(prompt_text(chat_body(record, max_tokens)))
        if report is None or report.extensions.risk is None:
            raise SystemExit(f"no stored report for {record.id}")
        signals = signals_from_report(report)
        heuristic = diagnose(signals, thresholds)
        labelled = diagnose(signals, thresholds, calibration=profile)
        if reestimated is not None and report.trace_id in reestimated:
            stored = float(labelled.risk.risk_score)
        else:
            stored = float(report.extensions.risk.risk_score or 0.0)
            worst = max(worst, abs(stored - labelled.risk.risk_score))
        output = report.generated.output_text
        finish = str(report.generated.finish_reason)
        runs.append(
            _labelled_run(record, output, finish, stored, heuristic.risk.risk_score, heuristic.run_features)
        )
    return runs, worst


def transformers_validate(labels: Path, split: str, out: Path, max_tokens: int) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "corevital", "validate", "--labels", str(labels), "--split", split,
        "--calibration", "default", "--temperature", "0", "--max_new_tokens", str(max_tokens),
        "--batch-size", "8", "--out", str(out),
    ]  # fmt: skip
    print("$", " ".join(command[1:]), flush=True)
    t0 = time.monotonic()
    subprocess.run(command, check=True, cwd=REPO)
    document: dict[str, Any] = json.loads((out / "validation.json").read_text(encoding="utf-8"))
    document["wall_s"] = time.monotonic() - t0
    return document


def side_by_side(table: SplitTable, other: dict[str, Any] | None) -> str:
    rows = {s["name"]: s for s in other["splits"][0]["scores"]} if other else {}

    def ci(entry: dict[str, Any] | None) -> str:
        if not entry or entry["estimate"] is None:
            return "–"
        return f"{entry['estimate']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"

    lines = [
        "| score | logprobs tier (proxy) AUROC [95% CI] | transformers backend AUROC [95% CI] |",
        "|---|---|---|",
    ]
    for row in table.rows:
        mine = f"{row.auroc.estimate:.3f} [{row.auroc.low:.3f}, {row.auroc.high:.3f}]"
        lines.append(f"| {row.label} | {mine} | {ci(rows.get(row.name, {}).get('auroc'))} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--split", default="test")
    parser.add_argument("--every", type=int, default=1, help="keep the groups whose SHA-256 %% K == 0")
    parser.add_argument("--limit", type=int, default=None, help="the first N records of the subset")
    parser.add_argument("--max-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--threads", type=int, default=1, help="the llama.cpp server's threads")
    parser.add_argument("--transformers", action="store_true", help="also corevital validate, transformers")
    parser.add_argument("--out", type=Path, default=REPO / ".bench-out" / "proxy_validate")
    parser.add_argument(
        "--from-store",
        type=Path,
        metavar="DB",
        help="no traffic: the tables from the reports an earlier run's proxy stored in DB",
    )
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    labels = args.out / "labels_subset.jsonl"
    records = subset(args.labels, args.split, args.every, labels)
    if args.limit is not None:
        records = records[: args.limit]
        keep = {r.id for r in records}
        lines = labels.read_text(encoding="utf-8").splitlines()
        labels.write_text("\n".join(x for x in lines if json.loads(x)["id"] in keep) + "\n", encoding="utf-8")
    print(
        f"{len(records)} records of split {args.split} (groups with SHA-256 % {args.every} == 0)", flush=True
    )

    if args.from_store is not None:
        reports, reestimated = estimated_reports(args.from_store)
        runs, worst = runs_from_store(records, reports, args.max_tokens, reestimated)
        print(f"{len(reports)} stored reports ({len(reestimated)} stored with the entropy's lower bound, "
              f"scored with the midpoint of their bounds); stored vs re-analysed labelled score of the "
              f"others: largest difference {worst:.2e}", flush=True)  # fmt: skip
        tables = [split_table(args.split, runs, labelled_model=True)]
        header = {"backend": "proxy (llama.cpp server, logprobs tier), from the store", "records": len(runs)}
        write_outputs(args.out / "proxy", tables, runs, labelled_model=True, header=header)
        print(table_markdown(tables[0]), flush=True)
        return 0

    model = locate_default_model()
    db = args.out / "proxy.db"
    db.unlink(missing_ok=True)
    t0 = time.monotonic()
    with LlamaServer(model.directory / model.gguf_file, n_ctx=256, threads=args.threads) as server:
        proxy = ProxyProcess(
            server.url,
            args.out,
            vocab_size=VOCAB,
            extra=("--db", str(db), "--calibration", "default"),
        )
        try:
            answered = run_records(records, proxy, args)
        finally:
            log = proxy.stop()
    wall = time.monotonic() - t0
    print(log.strip().splitlines()[-2:] if log.strip() else "", flush=True)
    reports = stored_reports(db)
    stored = {
        r.prompt.text: float(r.extensions.risk.risk_score)
        for r in reports
        if r.extensions.risk is not None and r.extensions.risk.risk_score is not None
    }
    runs, worst = labelled_runs(answered, stored)
    print(f"{len(reports)} reports stored for {len(answered)} requests in {wall:.0f} s; "
          f"stored vs local labelled score: largest difference {worst:.2e}", flush=True)  # fmt: skip
    tables = [split_table(args.split, runs, labelled_model=True)]
    write_outputs(
        args.out / "proxy",
        tables,
        runs,
        labelled_model=True,
        header={"backend": "proxy (llama.cpp server, logprobs tier)", "records": len(runs), "wall_s": wall},
    )
    print(table_markdown(tables[0]), flush=True)

    other = None
    if args.transformers:
        other = transformers_validate(labels, args.split, args.out / "transformers", args.max_tokens)
        theirs = {
            json.loads(x)["id"]: json.loads(x)
            for x in (args.out / "transformers" / "runs.jsonl").read_text(encoding="utf-8").splitlines()
        }
        same = sum(1 for r in runs if theirs.get(r.record_id, {}).get("output") == r.output)
        agree = sum(1 for r in runs if theirs.get(r.record_id, {}).get("failed") == r.failed)
        print(
            f"transformers: {other['wall_s']:.0f} s; identical outputs {same}/{len(runs)}, "
            f"same verdict {agree}/{len(runs)}",
            flush=True,
        )
        print((args.out / "transformers" / "validation.md").read_text(encoding="utf-8"), flush=True)
    print(side_by_side(tables[0], other), flush=True)
    ok = len(reports) == len(answered) and len(stored) == len(answered) and worst < 1e-9
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
