"""The library API on tiny models: CoreVitalMonitor, live stream, intervention, watch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import corevital
import corevital.monitor as monitor_module
from corevital import CoreVitalMonitor, StopOnRepetition, StopWhen
from corevital.capture.loading import LoadedModel
from corevital.errors import CoreVitalError
from corevital.live import StreamEvent
from corevital.report.schema import Report
from tests.support.spies import calls_of
from tests.support.values import present

PROMPT = "The quick brown fox jumps"


def timeline(report: Report) -> list[tuple[Any, ...]]:
    return [
        (
            s.token.token_id,
            s.logits_summary.entropy,
            s.logits_summary.surprisal,
            s.logits_summary.top_k_margin,
        )
        for s in report.timeline
    ]


@pytest.fixture
def monitor(tiny_model_dir: Callable[[str], Path]) -> CoreVitalMonitor:
    return CoreVitalMonitor(
        str(tiny_model_dir("llama")),
        device="cpu",
        max_new_tokens=8,
        chat_template="off",
        temperature=0.9,
        seed=5,
    )


def test_run_and_post_run_checks(monitor: CoreVitalMonitor) -> None:
    report = monitor.run(prompt=PROMPT)
    assert report.generated.num_tokens == 8
    assert monitor.get_report() is report
    assert 0.0 <= monitor.get_risk_score() <= 1.0
    assert set(monitor.get_health_flags()) >= {"nan_detected", "repetition_loop_detected"}
    summary = monitor.get_summary()
    assert summary["trace_id"] == report.trace_id and summary["fingerprint"]["version"] == 2
    monitor.intervene_on_risk_above = -1.0
    assert monitor.should_intervene()
    monitor.intervene_on_risk_above = 1.0
    assert not monitor.should_intervene()
    with monitor.wrap_generation("Hello world", max_new_tokens=3) as inside:
        assert inside is monitor and inside.get_report().prompt.text == "Hello world"
        assert inside.get_summary()["generated_tokens"] == 3


def test_prompt_first_model_by_keyword_and_capture_by_its_setting_name(
    monitor: CoreVitalMonitor, tiny_model_dir: Callable[[str], Path]
) -> None:
    path = str(tiny_model_dir("llama"))
    report = monitor.run(PROMPT, model=path, capture="summary", max_new_tokens=2)
    assert report.prompt.text == PROMPT and report.run_config.capture_mode == "summary"
    assert [r.prompt.text for r in monitor.run_batch(["a b", PROMPT], model=path, max_new_tokens=2)] == [
        "a b",
        PROMPT,
    ]
    with pytest.raises(TypeError):
        monitor.run(path, PROMPT)  # type: ignore[call-arg, arg-type]
    with pytest.raises(CoreVitalError, match="list of prompts"):
        monitor.run_batch(PROMPT)
    with pytest.raises(CoreVitalError, match=r"capture=\.\.\."):
        CoreVitalMonitor(path, capture_mode="summary")
    assert CoreVitalMonitor(path, capture="on_risk").settings_for().capture == "on_risk"


def test_no_run_yet_is_a_clear_error(monitor: CoreVitalMonitor) -> None:
    with pytest.raises(CoreVitalError, match="no run yet"):
        monitor.get_risk_score()


def test_model_is_loaded_once(monitor: CoreVitalMonitor, monkeypatch: pytest.MonkeyPatch) -> None:
    import corevital.capture.loading as loading

    loads = calls_of(monkeypatch, loading, "load_model")
    for _ in range(3):
        monitor.run(prompt=PROMPT)
    monitor.run_batch([PROMPT, "hello"])
    assert len(loads) == 1 and monitor.load_count == 1


def test_run_batch_gives_one_report_per_prompt(monitor: CoreVitalMonitor) -> None:
    reports = monitor.run_batch([PROMPT, "hello there", "x"])
    assert [r.prompt.text for r in reports] == [PROMPT, "hello there", "x"]
    assert {r.run_config.batch_size for r in reports} == {3}


def test_concurrent_runs_equal_sequential_runs(monitor: CoreVitalMonitor) -> None:
    prompts = [PROMPT, "Once upon a time"]
    sequential = [timeline(monitor.run(prompt=p)) for p in prompts]
    results: dict[int, list[tuple[Any, ...]]] = {}

    def work(index: int) -> None:
        results[index] = timeline(monitor.run(prompt=prompts[index]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[0], results[1]] == sequential


def test_stream_events_come_per_token_then_final(monitor: CoreVitalMonitor) -> None:
    events = list(monitor.iter_stream(prompt=PROMPT))
    steps, final = events[:-1], events[-1]
    assert final.kind == "final" and final.report is not None
    assert [e.step_index for e in steps] == list(range(len(steps)))
    assert timeline(final.report) == [(e.token_id, e.entropy, e.surprisal, e.margin) for e in steps]
    assert steps[0]["entropy"] == steps[0].get("entropy") == steps[0].entropy
    assert all(e.running_risk is not None and 0.0 <= e.running_risk <= 1.0 for e in steps)


def test_async_stream(monitor: CoreVitalMonitor) -> None:
    async def collect() -> list[StreamEvent]:
        return [event async for event in monitor.stream(prompt=PROMPT)]

    events = asyncio.run(collect())
    assert events[-1].kind == "final" and len(events) == events[-1].report.generated.num_tokens + 1


def test_run_stream_and_watch_give_identical_timelines(
    monitor: CoreVitalMonitor, tiny_loaded: Callable[[str], LoadedModel]
) -> None:
    run_report = monitor.run(prompt=PROMPT)
    streamed = [e for e in monitor.iter_stream(prompt=PROMPT)][-1].report
    loaded = tiny_loaded("llama")
    model, tokenizer = loaded.model, loaded.tokenizer
    inputs = tokenizer(PROMPT, return_tensors="pt")
    with monitor.watch(model, tokenizer) as watcher:
        torch.manual_seed(5)
        model.generate(
            **inputs, max_new_tokens=8, do_sample=True, temperature=0.9, top_k=50, top_p=0.95, pad_token_id=0
        )
    assert len(watcher.reports) == 1
    assert timeline(run_report) == timeline(streamed) == timeline(watcher.reports[0])
    assert "generate" not in vars(model)


def test_policy_stops_generation_and_the_report_says_why(monitor: CoreVitalMonitor) -> None:
    stop_at_three = StopWhen(lambda step: step.step == 3, name="stop_at_three", reason="test says so")
    report = monitor.run(prompt=PROMPT, policies=[stop_at_three], max_new_tokens=12)
    assert report.generated.num_tokens == 4
    assert report.generated.finish_reason == "stopped_by_callback"
    intervention = report.extensions.model_dump()["intervention"]
    assert intervention == {"policy": "stop_at_three", "step": 3, "reason": "test says so"}


@pytest.mark.parametrize("arch,prompt", [("t5", "a a a a"), ("llama", "hello hello hello")])
def test_repetition_policy_stops_where_the_loop_forms(
    arch: str, prompt: str, tiny_model_dir: Callable[[str], Path]
) -> None:
    monitor = CoreVitalMonitor(str(tiny_model_dir(arch)), device="cpu", temperature=0.0, chat_template="off")
    free = monitor.run(prompt=prompt, max_new_tokens=40)
    stopped = monitor.run(prompt=prompt, max_new_tokens=40, policies=[StopOnRepetition()])
    loop = present(free.extensions.repetition)
    assert present(free.health_flags).repetition_loop_detected and free.generated.num_tokens == 40
    # The loop qualifies once it spans max(12 tokens, 3 periods); the policy stops at that very token.
    assert stopped.generated.num_tokens == present(loop.first_step) + max(12, 3 * present(loop.period))
    assert stopped.generated.token_ids == free.generated.token_ids[: stopped.generated.num_tokens]
    intervention = stopped.extensions.model_dump()["intervention"]
    assert (
        intervention["policy"] == "repetition_loop"
        and intervention["step"] == stopped.generated.num_tokens - 1
    )


def test_public_names_have_docstrings() -> None:
    for name in corevital.__all__:
        if name == "__version__":
            continue
        assert getattr(corevital, name).__doc__, name
    assert monitor_module.CoreVitalMonitor.run.__doc__


def test_watched_generations_from_two_threads_equal_sequential_ones(
    monitor: CoreVitalMonitor, tiny_loaded: Callable[[str], LoadedModel]
) -> None:
    """Observed generations of one model run one at a time: each thread's report is the one it gets
    alone, and the model keeps no wrapped forward afterwards."""
    loaded = tiny_loaded("llama")
    model, tokenizer = loaded.model, loaded.tokenizer
    prompts = [PROMPT, "Once upon a time"]

    def generate(prompt: str) -> None:
        model.generate(
            **tokenizer(prompt, return_tensors="pt"), max_new_tokens=8, do_sample=False, pad_token_id=0
        )

    with monitor.watch(model, tokenizer) as watcher:
        for prompt in prompts:
            generate(prompt)
    alone = {r.prompt.text: timeline(r) for r in watcher.reports}
    with monitor.watch(model, tokenizer) as watcher:
        threads = [threading.Thread(target=generate, args=(p,)) for p in prompts for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(watcher.reports) == 4
    assert all(timeline(r) == alone[r.prompt.text] for r in watcher.reports)
    assert not [name for name, m in model.named_modules() if "forward" in vars(m)]
