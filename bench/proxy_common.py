"""What the proxy validation scripts share (``bench/proxy_validate.py`` and its ``_same``, ``_tier``
and ``_exact`` scripts).

Each of them imports this module before ``corevital`` and ``tests.support`` (third-party imports sort
before first-party ones): it puts this checkout's ``src/`` (its corevital), the repository root
(``tests.support``) and ``bench/`` (the scripts import each other) on ``sys.path``. Also here: the
proxy runs' request length (a stored report is found by its request's prompt text, so every script
builds the same request), the resample count of every interval, the ECE columns with their noise
floor, and what the resumable scripts need (their JSONL caches, the records' hash order and its
complete groups, a stop time, the commit and load printed with a table).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(1, str(REPO))  # tests.support
sys.path.insert(2, str(REPO / "bench"))

from corevital.analysis.evaluation import (  # noqa: E402
    ConfidenceInterval,
    NoiseFloor,
    bootstrap_ci,
    compute_ece,
    compute_ece_equal_mass,
    ece_noise_floor,
)
from corevital.validation.labels import LabelledRecord  # noqa: E402

MAX_NEW_TOKENS = 24  # the proxy runs' max_tokens
RESAMPLES = 1000  # group-bootstrap resamples of every interval, and noise-floor draws

ECES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "equal-width": compute_ece,
    "equal-mass": compute_ece_equal_mass,
}


def ece_intervals(
    p: np.ndarray, y: np.ndarray, groups: np.ndarray
) -> dict[str, tuple[ConfidenceInterval, NoiseFloor]]:
    """Per ECE (10 bins, equal-width and equal-mass): the ECE of ``p`` against ``y`` with its
    group-bootstrap interval, and the noise floor at these probabilities."""
    out = {}
    for name, ece in ECES.items():
        ci = bootstrap_ci(ece, p, y, n_resamples=RESAMPLES, groups=groups)
        out[name] = (ci, ece_noise_floor(p, ece, n_sims=RESAMPLES, seed=1))
    return out


def hash_order(records: Sequence[LabelledRecord]) -> list[LabelledRecord]:
    return sorted(records, key=lambda r: (hashlib.sha256(r.group.encode()).hexdigest(), r.id))


def complete_groups(records: Sequence[LabelledRecord], done: Container[str]) -> list[list[LabelledRecord]]:
    """The records of each group, in order, up to the first group with a record not ``done``."""
    complete = []
    for group in dict.fromkeys(r.group for r in records):
        members = [r for r in records if r.group == group]
        if not all(r.id in done for r in members):
            break
        complete.append(members)
    return complete


def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """A JSONL cache's rows by their ``id`` (none when it does not exist; a line cut by a kill skipped)."""
    rows: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row["id"]] = row
    return rows


def deadline_of(stop_at: str | None) -> float:
    """The next time the UTC clock shows ``stop_at`` (HH:MM), as ``time.time()`` counts; never without."""
    if stop_at is None:
        return math.inf
    hours, minutes = (int(x) for x in stop_at.split(":"))
    now = time.time()
    deadline = now - now % 86400 + hours * 3600 + minutes * 60
    return deadline + (86400 if deadline <= now else 0)


def group_draws(groups: Sequence[str], n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` cluster-bootstrap index sets (whole groups drawn with replacement), one fixed seed."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(members), size=(n, len(members)))
    return [np.concatenate([members[k] for k in row]) for row in picks]


def interval(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    low, high = np.quantile(v, [0.025, 0.975])
    return float(low), float(high)


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip()


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())
