"""``--backend llama-cpp``: the default model's GGUF run in process by llama.cpp, against the
transformers backend on the same GGUF and prompt.

The two do not compute the same numbers: llama.cpp multiplies with the GGUF's own Q4_1 blocks
(activations quantised to 8 bits for the dot products), transformers with the weights dequantised
to float32. So the comparison states its tolerances: the prompt's tokens are identical (same chat
template, same tokenizer), greedy tokens are identical for the steps compared here, and each step's
entropy, surprisal, margin and top-k mass agree within the bounds below (measured: docs/proxy.md).

Needs llama-cpp-python (the ``llama-cpp`` extra, ``make test-engines``); skipped, saying so, without it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from corevital.config import load_settings
from corevital.report.schema import Report
from corevital.sinks.open import open_location
from corevital.sinks.rows import TraceQuery
from tests.support.llama_server import require_llama_cpp

PROMPT = "Explain why the sky is blue in two sentences."
STEPS = 12
# Tolerances between llama.cpp on Q4_1 weights and transformers on the dequantised float32 weights,
# per step (bits for entropy and surprisal, probability for margin and top-k mass).
ENTROPY_TOL = 0.25
SURPRISAL_TOL = 0.25
PROB_TOL = 0.05

pytestmark = [pytest.mark.slow, pytest.mark.model]


def _series(report: Report, name: str) -> np.ndarray:
    return np.array([getattr(step.logits_summary, name) for step in report.timeline], dtype=np.float64)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Report]:
    require_llama_cpp()
    from corevital.pipeline import Pipeline
    from corevital.proxy.llama_cpp import LlamaCppRunner

    out = tmp_path_factory.mktemp("llama")
    common = {"max_new_tokens": STEPS, "out": str(out), "sink": ["sqlite"], "seed": 0}
    with LlamaCppRunner(load_settings({**common, "backend": "llama-cpp"}), threads=2) as runner:
        (ours,) = runner.run([PROMPT])
    with Pipeline(load_settings({**common, "capture": "summary"})) as pipeline:
        (theirs,) = pipeline.run([PROMPT]).reports
    return ours, theirs


def test_the_report_says_llama_cpp_observed_the_logit_tier_only(both: tuple[Report, Report]) -> None:
    ours, _ = both
    assert ours.capture is not None
    assert ours.capture.source == "llama-cpp"
    assert ours.capture.observed == ["logits"]
    assert ours.capture.not_observed == ["attention", "hidden_states"]
    assert ours.capture.entropy == "exact"
    assert ours.capture.vocab_size == 49152
    codes = {w.code for w in ours.warnings or []}
    assert {"ATTENTION_NOT_AVAILABLE", "HIDDEN_STATES_NOT_AVAILABLE"} <= codes
    assert ours.model.quantization.method == "Q4_1"
    assert ours.model.num_layers == 30
    assert ours.extensions.risk is not None and ours.extensions.risk.risk_score is not None


def test_same_prompt_tokens_and_greedy_tokens_as_the_transformers_backend(
    both: tuple[Report, Report],
) -> None:
    ours, theirs = both
    assert ours.prompt.token_ids == theirs.prompt.token_ids
    assert ours.generated.token_ids == theirs.generated.token_ids
    assert ours.generated.output_text == theirs.generated.output_text


def test_per_step_metrics_agree_with_the_transformers_backend_within_the_tolerances(
    both: tuple[Report, Report],
) -> None:
    ours, theirs = both
    assert len(ours.timeline) == len(theirs.timeline) == STEPS
    for name, tol in (
        ("entropy", ENTROPY_TOL),
        ("surprisal", SURPRISAL_TOL),
        ("top_k_margin", PROB_TOL),
        ("topk_mass", PROB_TOL),
    ):
        a, b = _series(ours, name), _series(theirs, name)
        assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), name
        worst = float(np.max(np.abs(a - b)))
        assert worst <= tol, f"{name}: largest difference {worst:.4f} > {tol}"
    # exact entropy: never below the chosen token's share -p log2 p, never above log2 V
    for step in ours.timeline:
        lg = step.logits_summary
        assert lg.entropy is not None and 0.0 <= lg.entropy <= math.log2(49152)
        assert lg.entropy_upper is None  # exact: no bounds


def test_corevital_run_backend_llama_cpp_stores_the_report(tmp_path: Path) -> None:
    require_llama_cpp()
    args = [
        sys.executable, "-m", "corevital", "run", "--backend", "llama-cpp", "--prompt", PROMPT,
        "--max_new_tokens", "6", "--out", str(tmp_path), "--json", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (summary,) = json.loads(done.stdout)
    store = open_location(str(tmp_path / "corevital.db"), read_only=True)
    try:
        (row,) = store.list(TraceQuery(limit=None))
        report = store.get(row.trace_id)
    finally:
        store.close()
    assert report is not None and report.capture is not None
    assert report.capture.source == "llama-cpp"
    assert len(report.generated.token_ids) == 6
    assert summary["trace_id"] == report.trace_id
