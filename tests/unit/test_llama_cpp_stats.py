"""The llama.cpp backend's per-step statistics (numpy, float64) against the torch reductions that the
transformers backend uses (:func:`corevital.metrics.logits.summarize_logits`), on the same logits.

These need no llama-cpp-python: the statistics are computed from a row of logits, whoever made it.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from corevital.capture.gguf import import_llama_cpp
from corevital.capture.host_logits import TokenChooser, row_stats
from corevital.capture.records import GenerationRecord
from corevital.errors import NotAvailableError
from corevital.metrics.logits import summarize_logits, token_surprisal


def _rows() -> list[np.ndarray]:
    rng = np.random.default_rng(20261202)
    peaked = rng.normal(0.0, 1.0, 4096).astype(np.float32)
    peaked[17] = 30.0  # almost all mass on one token
    masked = rng.normal(0.0, 3.0, 4096).astype(np.float32)
    masked[::3] = -np.inf  # masked tokens: probability 0
    return [
        rng.normal(0.0, 1.0, 4096).astype(np.float32),  # flat
        rng.normal(0.0, 6.0, 49152).astype(np.float32),  # a real vocabulary's size, spread logits
        peaked,
        masked,
    ]


@pytest.mark.parametrize("index", range(4))
def test_row_stats_match_the_transformers_backends_reductions(index: int) -> None:
    row = _rows()[index]
    ours = row_stats(row, topk=5, mass_k=10)
    logits = torch.from_numpy(row).unsqueeze(0)
    ref = summarize_logits(logits, topk=5, mass_k=10, entropy_mode="full")
    assert ours.entropy == pytest.approx(float(ref.entropy[0]), rel=1e-5, abs=1e-5)
    assert ours.margin == pytest.approx(float(ref.top_k_margin[0]), abs=1e-5)
    assert ours.mass == pytest.approx(float(ref.topk_mass[0]), abs=1e-5)  # the reference is float32
    assert ours.top_ids.tolist() == ref.topk_ids[0].tolist()
    assert np.allclose(ours.top_probs, ref.topk_probs[0].numpy(), atol=1e-5)
    assert ours.log_normalizer == pytest.approx(float(ref.log_normalizer[0]), rel=1e-6)
    for token in (int(ours.top_ids[0]), int(ours.top_ids[4]), 1):
        surprisal = -ours.log_probs[token] / math.log(2.0)
        expected = float(token_surprisal(logits, ref.log_normalizer, torch.tensor([token]))[0])
        if math.isinf(expected):
            assert math.isinf(surprisal)
        else:
            assert surprisal == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_a_nan_or_positive_infinite_row_has_nan_statistics_and_is_flagged() -> None:
    row = np.zeros(10, dtype=np.float32)
    row[3] = np.nan
    stats = row_stats(row, topk=5, mass_k=10)
    assert stats.has_nan and not stats.has_inf and math.isnan(stats.entropy) and math.isnan(stats.margin)
    row[3] = np.inf
    stats = row_stats(row, topk=5, mass_k=10)
    assert stats.has_inf and not stats.has_nan and math.isnan(stats.entropy)


def test_greedy_takes_the_argmax_and_sampling_is_reproducible_from_the_seed() -> None:
    row = _rows()[0]
    greedy = GenerationRecord(
        do_sample=False, temperature=None, top_k=None, top_p=None, num_beams=1, early_stopping=False,
        max_new_tokens=4, seed=0,
    )  # fmt: skip
    assert TokenChooser(greedy)(row) == (int(np.argmax(row)), None, None)
    sampled = GenerationRecord(
        do_sample=True, temperature=0.7, top_k=50, top_p=0.9, num_beams=1, early_stopping=False,
        max_new_tokens=4, seed=42,
    )  # fmt: skip
    first = [TokenChooser(sampled)(row) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    token, entropy, prob = first[0]
    assert int(row[token] >= np.sort(row)[-50])  # inside the top 50
    assert entropy is not None and 0.0 < entropy <= math.log2(50)
    assert prob is not None and 0.0 < prob <= 1.0


def test_without_llama_cpp_python_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as when not installed
    with pytest.raises(NotAvailableError, match=r"corevital\[llama-cpp\]"):
        import_llama_cpp()
