"""Fingerprint v2: 25 slots exactly as metrics.md §6 lists them, and the prompt hash."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from corevital.analysis.fingerprint import FINGERPRINT_LENGTH, fingerprint
from corevital.analysis.hashing import prompt_hash
from corevital.analysis.health import HealthFindings
from tests.support.signals import make_signals


def test_slots() -> None:
    sig = make_signals(steps=8)
    e = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    m = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    s = np.array([0.5, 1.0, 0.5, 1.0, 0.5, 1.0, 0.5, 1.0])
    k = np.full(8, 0.95)
    sig = replace(sig, entropy=e, top_k_margin=m, surprisal=s, topk_mass=k)
    flags = HealthFindings(high_entropy_steps=2, inf_detected=True, repetition_loop_detected=True)
    v = fingerprint(sig, flags, 0.42).vector
    assert len(v) == FINGERPRINT_LENGTH == 25
    assert v[0:4] == pytest.approx([4.5, np.std(e), 1.0, 8.0])
    assert v[4] == pytest.approx(1.0)  # slope, bits/step
    assert v[5:8] == pytest.approx([0.55, np.std(m), -0.1])
    assert v[8:11] == pytest.approx([0.75, 0.25, np.polyfit(np.arange(8), s, 1)[0]])
    assert v[11:13] == pytest.approx([0.95, 0.0])
    assert v[13] == 0.42
    assert v[14] == 0.25
    assert v[15:20] == (0.0, 1.0, 0.0, 1.0, 0.0)
    assert v[20] == pytest.approx(-1.0)
    assert v[21] == pytest.approx(np.std(e) / 4.5)
    assert v[22:24] == (1.5, 7.5)  # quarters of 2 steps
    assert v[24] == 8.0


def test_empty_and_nan_runs_give_finite_vectors() -> None:
    for sig in (
        make_signals(steps=0),
        make_signals(steps=1),
        replace(make_signals(steps=5), entropy=np.full(5, np.nan)),
    ):
        fp = fingerprint(sig, HealthFindings(), 0.1)
        assert len(fp.vector) == 25 and all(np.isfinite(fp.vector))
        assert fp.version == 2


def test_prompt_hash_is_exact_text() -> None:
    sig = make_signals()
    expected = hashlib.sha256(f"{sig.model_id}\n{sig.prompt_text}".encode()).hexdigest()
    assert fingerprint(sig, HealthFindings(), 0.0).prompt_hash == expected
    assert prompt_hash("m", "Hello") != prompt_hash("m", "hello")
