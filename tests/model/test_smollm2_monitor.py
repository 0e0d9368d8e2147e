"""The library API on the real SmolLM2: live stream timing, live intervention, watch == run == stream."""

from __future__ import annotations

import time

import numpy as np
import pytest

from corevital import CoreVitalMonitor, StopOnRepetition
from corevital.capture.loading import LoadedModel, ModelSpec
from corevital.report.schema import Report
from tests.support.values import present

pytestmark = [pytest.mark.model, pytest.mark.slow]

LOOP_PROMPT = "Repeat the word hello 100 times."


@pytest.fixture(scope="module")
def monitor(smollm2: LoadedModel) -> CoreVitalMonitor:
    monitor = CoreVitalMonitor(device="cpu", max_new_tokens=64)
    # Share the session's already loaded model instead of loading it a second time.
    monitor._models[ModelSpec(device="cpu")] = smollm2
    return monitor


def test_first_stream_event_arrives_long_before_the_end(monitor: CoreVitalMonitor) -> None:
    start = time.perf_counter()
    first = None
    count = 0
    for _event in monitor.iter_stream(
        prompt="Tell me a short story about a robot who learns to paint.", temperature=0.0, max_new_tokens=64
    ):
        if first is None:
            first = time.perf_counter() - start
        count += 1
    total = time.perf_counter() - start
    print(f"first event after {first:.2f} s of {total:.2f} s ({count - 1} tokens)")
    assert count - 1 == 64
    assert first is not None and first < total / 4


def test_repetition_policy_halts_a_loop_soon_after_it_forms(monitor: CoreVitalMonitor) -> None:
    free = monitor.run(prompt=LOOP_PROMPT, temperature=0.0, max_new_tokens=120)
    stopped = monitor.run(
        prompt=LOOP_PROMPT,
        temperature=0.0,
        max_new_tokens=120,
        policies=[StopOnRepetition(stop_requested=True)],  # the prompt asks for the loop
    )
    loop = present(free.extensions.repetition)
    print(
        f"without policy: {free.generated.num_tokens} tokens; with: {stopped.generated.num_tokens} "
        f"(loop of period {loop.period} from step {loop.first_step})"
    )
    assert present(free.health_flags).repetition_loop_detected and loop.requested
    assert stopped.generated.finish_reason == "stopped_by_callback"
    formed = present(loop.first_step) + max(12, 3 * present(loop.period))
    assert formed - 1 <= stopped.generated.num_tokens <= formed + 3
    assert stopped.generated.num_tokens < free.generated.num_tokens


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_watch_run_and_stream_agree_on_smollm2(
    monitor: CoreVitalMonitor, smollm2: LoadedModel, temperature: float
) -> None:
    import torch

    prompt = "Name three fruits."
    run = monitor.run(prompt=prompt, temperature=temperature, max_new_tokens=16, seed=11)
    streamed = list(monitor.iter_stream(prompt=prompt, temperature=temperature, max_new_tokens=16, seed=11))[
        -1
    ]
    text = smollm2.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    inputs = smollm2.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    kwargs = (
        {"do_sample": True, "temperature": 0.8, "top_k": 50, "top_p": 0.95}
        if temperature
        else {"do_sample": False}
    )
    with monitor.watch(smollm2.model, smollm2.tokenizer, seed=11) as watcher:
        torch.manual_seed(11)
        smollm2.model.generate(**inputs, max_new_tokens=16, **kwargs)

    def tokens(report: Report) -> list[int]:
        return [s.token.token_id for s in report.timeline]

    def values(report: Report) -> list[tuple[float, float]]:
        return [
            (present(s.logits_summary.entropy), present(s.logits_summary.surprisal)) for s in report.timeline
        ]

    assert tokens(run) == tokens(streamed.report) == tokens(watcher.reports[0])
    # Streaming reduces each step as it comes; run() and watch() reduce steps in windows. Float32
    # sums over the vocabulary may then be split differently across threads: equal to rounding.
    np.testing.assert_allclose(values(streamed.report), values(run), rtol=1e-6)
    np.testing.assert_allclose(values(watcher.reports[0]), values(run), rtol=1e-6)
