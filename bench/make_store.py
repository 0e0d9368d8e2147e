"""Build a store of 10,000 runs from real SmolLM2 reports, for timing ``corevital runs`` and ``show``.

First, real reports: the embedded default model (SmolLM2-135M-Instruct, GGUF) generates 15 of them
with ``corevital run`` in three batches (6 prompts at 24 tokens sampled and 6 at 48 tokens greedy,
in summary capture; 3 at 32 tokens in full capture, with per-layer detail and prompt telemetry).
They are kept in ``<work>/smollm2/corevital.db`` and reused when present.

Then the store: ``--runs`` variants of those reports written through :class:`SQLiteStore`, each with
its own trace id, a creation time spread over the 30 days before ``--end``, one of four model ids,
a prompt (the real prompts, some with an added instruction), a risk score and health flags drawn at
realistic rates (flagged runs score higher). ``--full-share`` of the variants come from the
full-capture reports (about 350 KB compressed each), the rest from the summary ones. The same seed
and ``--end`` give the same store.

    .venv/bin/python bench/make_store.py [--runs 10000] [--seed 0] [--end 2026-12-01T00:00:00Z]

Prints the store's path, its size and how long each part took.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from corevital.analysis.hashing import prompt_hash
from corevital.report.schema import Report
from corevital.report.timestamps import format_utc, parse_utc
from corevital.sinks.base import HealthFlag, TraceQuery
from corevital.sinks.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bench-out" / "stored-runs"

PROMPTS = (
    "Explain why the sky is blue.",
    "Write a haiku about autumn leaves.",
    "What is the capital of Australia, and why is it not Sydney?",
    "List three uses of a paperclip.",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "How do vaccines train the immune system?",
    "Translate 'good morning, my friend' into French.",
    "Give me a short recipe for pancakes.",
    "What is the difference between weather and climate?",
    "Write a limerick about a cat who loves coffee.",
    "Why do we have leap years?",
    "Describe the water cycle to a ten-year-old.",
    "Name the planets of the solar system in order.",
    "What does a compiler do?",
    "Tell me a fun fact about octopuses.",
)
BATCHES = (  # (prompts, max_new_tokens, extra flags)
    (PROMPTS[0:6], 24, ("--capture", "summary")),
    (PROMPTS[6:12], 48, ("--capture", "summary", "--temperature", "0")),
    (PROMPTS[12:15], 32, ("--capture", "full")),
)
MODELS = (  # (model id, weight)
    ("HuggingFaceTB/SmolLM2-135M-Instruct", 0.55),
    ("HuggingFaceTB/SmolLM2-360M-Instruct", 0.25),
    ("HuggingFaceTB/SmolLM2-1.7B-Instruct", 0.15),
    ("acme/smollm2-135m-support-ft", 0.05),
)
SUFFIXES = ("", "", "", " Answer briefly.", " Use an example.", " Explain step by step.")
FLAG_RATES = {
    HealthFlag.NAN: 0.005,
    HealthFlag.INF: 0.003,
    HealthFlag.ATTENTION_COLLAPSE: 0.08,
    HealthFlag.REPETITION_LOOP: 0.05,
    HealthFlag.MID_LAYER_ANOMALY: 0.02,
}


def _count(db: Path) -> int:
    with SQLiteStore(db) as store:
        return store.count()


def generate_real_reports(work: Path) -> list[Report]:
    """The real SmolLM2 reports, generated once with ``corevital run`` (kept under ``work``)."""
    out = work / "smollm2"
    db = out / "corevital.db"
    expected = sum(len(prompts) for prompts, _, _ in BATCHES)
    if not db.exists() or _count(db) < expected:
        out.mkdir(parents=True, exist_ok=True)
        for number, (prompts, tokens, extra) in enumerate(BATCHES):
            prompts_file = out / f"prompts-{number}.txt"
            prompts_file.write_text("\n".join(prompts) + "\n", encoding="utf-8")
            command = [
                *(sys.executable, "-m", "corevital", "run", "--prompts-file", str(prompts_file)),
                *("--max_new_tokens", str(tokens), "--out", str(out), "--device", "cpu", *extra),
            ]
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            took = time.perf_counter() - started
            print(f"generated {len(prompts)} reports of {tokens} tokens in {took:.0f} s", flush=True)
    with SQLiteStore(db) as store:
        reports = [store.get(row.trace_id) for row in store.list(TraceQuery(limit=None, ascending=True))]
    return [report for report in reports if report is not None]


def variant(source: Report, rng: random.Random, end: datetime) -> Report:
    """A copy of ``source`` with its own id, time, model, prompt, risk and flags."""
    model = rng.choices([name for name, _ in MODELS], weights=[weight for _, weight in MODELS])[0]
    prompt = rng.choice(PROMPTS) + rng.choice(SUFFIXES)
    flags = {flag.value: rng.random() < rate for flag, rate in FLAG_RATES.items()}
    risk = min(1.0, rng.betavariate(1.2, 6.0) + (0.5 + 0.4 * rng.random() if any(flags.values()) else 0.0))
    created = end - timedelta(seconds=rng.uniform(0, 30 * 86400))
    ext = source.extensions
    health = source.health_flags
    return source.model_copy(
        update={
            "trace_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "created_at_utc": format_utc(created),
            "model": source.model.model_copy(update={"hf_id": model}),
            "prompt": source.prompt.model_copy(update={"text": prompt}),
            "health_flags": None if health is None else health.model_copy(update=flags),
            "extensions": ext.model_copy(
                update={
                    "risk": None if ext.risk is None else ext.risk.model_copy(update={"risk_score": risk}),
                    "fingerprint": None
                    if ext.fingerprint is None
                    else ext.fingerprint.model_copy(update={"prompt_hash": prompt_hash(model, prompt)}),
                }
            ),
        }
    )


def build_store(
    path: Path, reports: list[Report], runs: int, seed: int, end: datetime, full_share: float
) -> None:
    full = [report for report in reports if report.run_config.capture_mode == "full"]
    summary = [report for report in reports if report.run_config.capture_mode != "full"]
    rng = random.Random(seed)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with SQLiteStore(path) as store:
        for _ in range(runs):
            pool = full if full and (not summary or rng.random() < full_share) else summary
            store.write(variant(rng.choice(pool), rng, end))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--end", default="now", help="ISO time of the newest run (default: now).")
    parser.add_argument("--full-share", type=float, default=0.05, help="Share of full-capture variants.")
    parser.add_argument("--out", type=Path, default=WORK / "store-10k.db")
    args = parser.parse_args()
    end = datetime.now(UTC).replace(second=0, microsecond=0) if args.end == "now" else parse_utc(args.end)
    started = time.perf_counter()
    reports = generate_real_reports(WORK)
    print(f"{len(reports)} real reports ({time.perf_counter() - started:.0f} s)")
    started = time.perf_counter()
    build_store(args.out, reports, args.runs, args.seed, end, args.full_share)
    size = args.out.stat().st_size / 2**20
    print(f"{args.out}: {args.runs} runs, {size:.0f} MiB, written in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
