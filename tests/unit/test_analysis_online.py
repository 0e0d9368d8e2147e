"""Online analysis: the running risk is the report's risk model on the steps seen so far."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from corevital.analysis.compound import (
    confident_confusion,
    confident_repetition_risk,
    degenerating_generation,
)
from corevital.analysis.diagnose import diagnose
from corevital.analysis.online import OnlineSequenceMonitor, RunningCompound, RunningFeatures
from corevital.analysis.policies import StopOnRepetition
from corevital.analysis.profiles import load_profile
from corevital.analysis.risk import risk_features
from corevital.analysis.signals import SequenceSignals
from corevital.capture.records import StepEvent
from corevital.live import LiveSession
from tests.support.signals import make_signals, summary_only

PROFILE = load_profile("llama")


def with_nan(sig: SequenceSignals, steps: list[int]) -> SequenceSignals:
    e, s, m = sig.entropy.copy(), sig.surprisal.copy(), sig.top_k_margin.copy()
    e[steps], s[steps], m[steps] = np.nan, np.nan, np.nan
    return replace(sig, entropy=e, surprisal=s, top_k_margin=m)


def flagged_nan(sig: SequenceSignals, steps: list[int]) -> SequenceSignals:
    """NaN logits at those steps: NaN values and the NaN flag, as a capture records them."""
    flags = sig.logits_nan.copy()
    flags[steps] = True
    return replace(with_nan(sig, steps), logits_nan=flags)


def run_online(sig: SequenceSignals) -> list[float]:
    monitor = OnlineSequenceMonitor(PROFILE, prompt_text=sig.prompt_text)
    out = []
    for t in range(sig.num_steps):
        step = monitor.update(
            token_id=int(sig.token_ids[t]),
            entropy=float(sig.entropy[t]),
            surprisal=float(sig.surprisal[t]),
            margin=float(sig.top_k_margin[t]),
            topk_mass=float(sig.topk_mass[t]),
            non_finite=bool(sig.logits_nan[t] or sig.logits_inf[t]),
            token_text=sig.token_texts[t],
        )
        out.append(step.running_risk)
    return out


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 17, 60])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_running_features_equal_the_reports_on_every_prefix(steps: int, seed: int) -> None:
    sig = with_nan(make_signals(steps=steps, seed=seed), [t for t in range(steps) if t % 7 == 3])
    running = RunningFeatures()
    for t in range(steps):
        running.update(
            float(sig.entropy[t]), float(sig.surprisal[t]), float(sig.top_k_margin[t]), int(sig.token_ids[t])
        )
        prefix = replace(
            sig,
            token_ids=sig.token_ids[: t + 1],
            entropy=sig.entropy[: t + 1],
            surprisal=sig.surprisal[: t + 1],
            top_k_margin=sig.top_k_margin[: t + 1],
        )
        got, want = vars(running.features(0.3)), vars(risk_features(prefix, 0.3))
        for name, value in want.items():
            assert (math.isnan(value) and math.isnan(got[name])) or got[name] == pytest.approx(value), name


def degenerating(n: int = 48) -> SequenceSignals:
    sig = make_signals(steps=n, seed=4)
    ramp = np.linspace(0.0, 1.0, n)
    e = 1.0 + 5.0 * ramp
    return replace(sig, entropy=e, surprisal=0.5 + 4.0 * ramp, top_k_margin=0.8 - 0.6 * ramp)


def confused(n: int = 30) -> SequenceSignals:
    sig = make_signals(steps=n, seed=5)
    e = sig.entropy.copy()
    e[::4] = 7.0
    m = sig.top_k_margin.copy()
    m[::4] = 0.6
    return replace(sig, entropy=e, top_k_margin=m)


def confidently_repeating(n: int = 40) -> SequenceSignals:
    sig = make_signals(steps=n, seed=6)
    ids = sig.token_ids.copy()
    ids[10:] = np.tile([5, 6, 7, 8, 9], 6)[: n - 10]
    ids[22] = 4  # breaks the token loop's run, not the n-gram repeats
    e = sig.entropy.copy()
    e[10:] = 0.1
    mass = sig.topk_mass.copy()
    mass[10:] = 0.999
    return replace(sig, token_ids=ids, entropy=e, topk_mass=mass)


@pytest.mark.parametrize("make", [degenerating, confused, confidently_repeating])
def test_running_compound_signals_equal_the_reports(make: object) -> None:
    assert callable(make)
    sig = make()
    running = RunningCompound(PROFILE.compound)
    for t in range(sig.num_steps):
        running.update(
            int(sig.token_ids[t]),
            float(sig.entropy[t]),
            float(sig.top_k_margin[t]),
            float(sig.surprisal[t]),
            float(sig.topk_mass[t]),
        )
    want = tuple(
        (f.name, f.severity)
        for f in (
            confident_confusion(sig, PROFILE.compound),
            degenerating_generation(sig, PROFILE.compound),
            confident_repetition_risk(sig, PROFILE.compound),
        )
        if f is not None
    )
    assert want, "the scenario fires a compound signal"
    assert running.severities() == want


@pytest.mark.parametrize(
    "make",
    [
        lambda: make_signals(steps=50, seed=0),
        lambda: make_signals(steps=50, seed=7),
        degenerating,
        confused,
        confidently_repeating,
        lambda: flagged_nan(make_signals(steps=30, seed=1), [4, 9]),
    ],
    ids=["healthy-0", "healthy-7", "degenerating", "confused", "repeating", "nan-steps"],
)
def test_the_last_running_risk_is_the_reports_risk(make: object) -> None:
    assert callable(make)
    sig = summary_only(make())  # no per-layer data: what the live monitor sees
    risk = diagnose(sig, PROFILE).risk
    assert run_online(sig)[-1] == pytest.approx(risk.risk_score, abs=1e-9)


def test_a_nan_step_makes_the_running_risk_one_from_that_step() -> None:
    sig = make_signals(steps=20)
    nan = sig.logits_nan.copy()
    nan[6] = True
    risks = run_online(summary_only(replace(sig, logits_nan=nan)))
    assert max(risks[:6]) < 1.0 and all(r == 1.0 for r in risks[6:])


def test_a_word_loop_stops_the_generation_and_raises_the_running_risk() -> None:
    texts = [" Birds:"] + [f" {i}. Sparrow" for i in range(1, 40)]
    monitor = OnlineSequenceMonitor(PROFILE)
    policy, stopped, risk = StopOnRepetition(), None, 0.0
    for t, text in enumerate(texts):
        step = monitor.update(
            token_id=1000 + t, entropy=2.0, surprisal=1.0, margin=0.5, topk_mass=0.9, token_text=text
        )
        if stopped is None and policy.check(step) is not None:
            stopped, risk = t, step.running_risk
    assert stopped is not None and stopped < 20
    assert risk >= PROFILE.risk.repetition_floor
    reason = policy.check(step)
    assert reason is not None and "'<n> sparrow'" in reason


def test_a_requested_loop_does_not_raise_the_running_risk() -> None:
    asked = OnlineSequenceMonitor(PROFILE, prompt_text="Write hello 30 times")
    plain = OnlineSequenceMonitor(PROFILE)
    for _ in range(30):
        values = dict(token_id=7, entropy=0.2, surprisal=0.1, margin=0.9, topk_mass=0.99, token_text=" hello")
        a, b = asked.update(**values), plain.update(**values)  # type: ignore[arg-type]
    assert a.loop is not None and a.loop.requested and b.loop is not None and not b.loop.requested
    assert a.running_risk < 0.5 <= PROFILE.risk.repetition_floor <= b.running_risk
    assert StopOnRepetition().check(a) is None and StopOnRepetition().check(b) is not None


def test_the_cost_per_step_does_not_grow_with_the_run() -> None:
    """Incremental: the mean cost of steps 3000-4000 is within a small factor of steps 0-1000."""
    rng = np.random.default_rng(0)
    monitor = OnlineSequenceMonitor(PROFILE)
    times = []
    for _ in range(4000):
        start = time.perf_counter()
        monitor.update(
            token_id=int(rng.integers(0, 5000)),
            entropy=float(rng.uniform(0, 6)),
            surprisal=float(rng.uniform(0, 6)),
            margin=float(rng.uniform(0, 1)),
            topk_mass=0.9,
            token_text=" w" + str(int(rng.integers(0, 50))),
        )
        times.append(time.perf_counter() - start)
    early, late = float(np.median(times[:1000])), float(np.median(times[3000:]))
    assert late < 3.0 * early


def test_the_running_risk_with_its_factors_is_the_same_score() -> None:
    sig = summary_only(degenerating())
    monitor = OnlineSequenceMonitor(PROFILE)
    assert monitor.risk() is None
    for t in range(sig.num_steps):
        step = monitor.update(
            token_id=int(sig.token_ids[t]),
            entropy=float(sig.entropy[t]),
            surprisal=float(sig.surprisal[t]),
            margin=float(sig.top_k_margin[t]),
            topk_mass=float(sig.topk_mass[t]),
        )
        risk = monitor.risk()
        assert risk is not None and risk.risk_score == step.running_risk
    final = diagnose(sig, PROFILE).risk
    assert (
        risk is not None
        and risk.risk_factors == final.risk_factors
        and "compound:degenerating_generation" in risk.risk_factors
    )


def test_live_sessions_know_each_sequences_prompt() -> None:
    """LiveSession gives every sequence its prompt: the loop the first prompt asks for runs on, the
    same loop in the second sequence is stopped."""
    prompts = ["Write hello 30 times.", "Say hello."]
    session = LiveSession(
        PROFILE,
        policies=[StopOnRepetition()],
        token_text=lambda token: " hello",
        prompt_text=lambda index: prompts[index],
    )
    stops = []
    for t in range(30):
        values = SimpleNamespace(
            entropy=np.array([0.2, 0.2]),
            top_k_margin=np.array([0.9, 0.9]),
            topk_mass=np.array([0.99, 0.99]),
            has_nan=np.zeros(2, dtype=bool),
            has_inf=np.zeros(2, dtype=bool),
        )
        event = StepEvent(
            step=t,
            token_ids=np.array([7, 7]),
            finished=np.zeros(2, dtype=bool),
            batch_offset=0,
            logits=values,
            chosen=SimpleNamespace(surprisal=np.array([0.1, 0.1])),
            hidden=None,
            attention=None,
            cross_attention=None,
        )
        stops.append(session(event))
    assert not any(s[0] for s in stops)
    assert any(s[1] for s in stops) and set(session.decisions) == {1}
