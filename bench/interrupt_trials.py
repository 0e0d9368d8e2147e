"""Interrupt a batched `corevital run` at a random moment, many times: nothing finished is lost.

Each trial starts `corevital run` on ``--prompts`` prompts at ``--batch-size`` (a tiny random
Llama built once, so the figure is about the run's bookkeeping, not a model), waits a random
0.5-``--max-wait`` s after the first report lands, sends SIGINT, SIGTERM or SIGKILL (in turn),
then checks: the store passes ``PRAGMA integrity_check``, it holds whole batches only, and
``--resume`` completes the rest with every prompt stored exactly once.

    .venv/bin/python bench/interrupt_trials.py [--trials 20] [--prompts 64] [--batch-size 4]

Prints one JSON line per trial and a summary; exits 1 when a trial lost or duplicated a report.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.tiny_models import save_tiny_model  # noqa: E402

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def stored(db: Path) -> list[str]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return [row[0] for row in conn.execute("SELECT prompt_hash FROM reports")]
    except sqlite3.Error:
        return []


def trial(
    number: int, model: Path, prompts: Path, count: int, batch: int, max_wait: float, rng: random.Random
) -> dict[str, object]:
    out = Path(tempfile.mkdtemp(prefix=f"interrupt-{number}-"))
    db = out / "corevital.db"
    args = [
        sys.executable, "-m", "corevital", "run", "--model", str(model), "--device", "cpu",
        "--chat-template", "off", "--out", str(out), "--prompts-file", str(prompts),
        "--batch-size", str(batch), "--max-new-tokens", "32", "--ignore-eos",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    signum = SIGNALS[number % len(SIGNALS)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not stored(db) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.5, max_wait))
    finished_before = proc.poll() is not None
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    kept = stored(db)
    with sqlite3.connect(db) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=600, env=env)
    final = stored(db)
    ok = (
        integrity == "ok"
        and (len(kept) % batch == 0 or len(kept) == count)
        and resumed.returncode == 0
        and len(final) == len(set(final)) == count
    )
    return {
        "trial": number,
        "signal": signal.Signals(signum).name,
        "finished_before_signal": finished_before,
        "exit": proc.returncode,
        "stored_at_signal": len(kept),
        "integrity": integrity,
        "after_resume": len(final),
        "distinct_after_resume": len(set(final)),
        "one_line_message": signum == signal.SIGKILL or "--resume" in err,
        "ok": ok,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-wait", type=float, default=6.0, help="Longest wait after the first report.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="interrupt-trials-"))
    model = save_tiny_model("llama", work / "tiny-llama")
    prompts = work / "prompts.txt"
    prompts.write_text("\n".join(f"prompt number {i}" for i in range(args.prompts)) + "\n")
    results = []
    for number in range(args.trials):
        result = trial(number, model, prompts, args.prompts, args.batch_size, args.max_wait, rng)
        print(json.dumps(result), flush=True)
        results.append(result)
    good = sum(1 for r in results if r["ok"] and r["one_line_message"])
    print(json.dumps({"trials": len(results), "ok": good}))
    return 0 if good == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
