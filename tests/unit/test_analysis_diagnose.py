"""diagnose() end to end: edge cases never raise, and the original CoreVital's healthy traces stay quiet."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from corevital.analysis.diagnose import Diagnosis, diagnose
from corevital.analysis.profiles import load_profile
from corevital.analysis.signals import SequenceSignals
from corevital.report.encoding import load_report
from tests.support.golden import ORIGINAL_TRACE_NAMES, ORIGINAL_TRACES
from tests.support.reanalysis import signals_from_report
from tests.support.signals import make_signals, summary_only

PROFILE = load_profile("llama")
FIXTURES = ORIGINAL_TRACES
FIXTURE_NAMES = ORIGINAL_TRACE_NAMES


def check(d: Diagnosis) -> None:
    assert 0.0 <= d.risk.risk_score <= 1.0
    assert 0.0 <= d.early_warning.failure_risk <= 1.0
    assert len(d.fingerprint.vector) == 25 and all(np.isfinite(d.fingerprint.vector))
    assert 2 <= len(d.narrative.sentences) <= 6


@pytest.mark.parametrize(
    "sig",
    [
        make_signals(steps=0),
        make_signals(steps=1),
        make_signals(steps=2, layers=1, heads=1),
        make_signals(steps=30, heads=1),
        make_signals(steps=30, layers=1),
        summary_only(make_signals(steps=30)),
        summary_only(make_signals(steps=0)),
    ],
    ids=["empty", "one-step", "tiny", "one-head", "one-layer", "summary", "summary-empty"],
)
def test_edge_cases_diagnose_cleanly(sig: SequenceSignals) -> None:
    d = diagnose(sig, PROFILE, check_consistency=True)
    check(d)
    assert d.metric_consistency is not None and d.metric_consistency.ok
    assert not d.health_flags.mid_layer_anomaly_detected


def test_nan_everywhere() -> None:
    sig = make_signals(steps=12)
    nan_t = np.full(12, np.nan)
    sig = replace(
        sig,
        entropy=nan_t,
        surprisal=nan_t,
        top_k_margin=nan_t,
        topk_mass=nan_t,
        perplexity=nan_t,
        logits_nan=np.ones(12, dtype=bool),
        hidden_l2=np.full((12, 12), np.nan),
        hidden_nan=np.ones((12, 12), dtype=bool),
        attn_collapse_rate=np.full((12, 12), np.nan),
    )
    d = diagnose(sig, PROFILE, check_consistency=True)
    check(d)
    assert d.health_flags.nan_detected and d.numeric.first_nan_step == 0
    assert d.risk.risk_score == 1.0
    assert d.blamed_layers[0].layer == 0


def test_consistency_is_only_checked_on_request() -> None:
    assert diagnose(make_signals(), PROFILE).metric_consistency is None


@pytest.fixture(scope="module")
def fixture_diagnoses() -> dict[str, Diagnosis]:
    assert FIXTURES.is_dir(), f"fixtures not found at {FIXTURES.resolve()}"
    out: dict[str, Diagnosis] = {}
    for name in FIXTURE_NAMES:
        sig = signals_from_report(load_report(FIXTURES / name))
        out[name] = diagnose(sig, load_profile(sig.model_type), check_consistency=True)
    return out


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_healthy_fixtures_are_quiet(name: str, fixture_diagnoses: dict[str, Diagnosis]) -> None:
    """Healthy 7B (and smaller) runs of the original: no mid-layer anomaly, no loop, sane risk."""
    d = fixture_diagnoses[name]
    check(d)
    flags = d.health_flags
    assert not flags.mid_layer_anomaly_detected
    assert not flags.repetition_loop_detected
    assert not flags.nan_detected and not flags.inf_detected
    assert not flags.attention_collapse_detected
    assert d.risk.risk_score < 0.7
    assert d.metric_consistency is not None and d.metric_consistency.ok
