"""The library behaves like one: arguments checked at the boundary, the caller's RNG untouched,
seeded runs reproducible across threads, the user's exceptions unchanged, streams that stop cleanly."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from corevital import CoreVitalMonitor
from corevital.capture.loading import LoadedModel
from corevital.errors import ConfigError, InputError
from corevital.report.schema import Report

PROMPT = "The quick brown fox jumps"


@pytest.fixture
def llama(tiny_model_dir: Callable[[str], Path]) -> str:
    return str(tiny_model_dir("llama"))


def sampled(model: str, **extra: Any) -> CoreVitalMonitor:
    options: dict[str, Any] = {
        "device": "cpu",
        "max_new_tokens": 8,
        "chat_template": "off",
        "temperature": 0.9,
    }
    return CoreVitalMonitor(model, seed=5, **{**options, **extra})


def tokens(report: Report) -> list[int]:
    return list(report.generated.token_ids)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.run_batch([]), "got no prompts"),
        (lambda m: m.run(123), "not int"),
        (lambda m: m.run_batch("abc"), "takes a list of prompts"),
        (lambda m: m.run_batch(["ok", 5]), "prompt 2 is a int"),
        (lambda m: m.run_batch(["ok", "  "]), "prompt 2 is empty"),
        (lambda m: m.run_batch(5), "not int"),
    ],
)
def test_bad_prompts_are_input_errors_before_any_model_loads(
    llama: str, call: Callable[[CoreVitalMonitor], Any], message: str
) -> None:
    monitor = sampled(llama)
    with pytest.raises(InputError, match=message):
        call(monitor)
    assert monitor.load_count == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"policies": "x"}, "policies must be a list of stop policies"),
        ({"policies": [object()]}, "is not a stop policy"),
        ({"intervene_on_signals": 5}, "must be a list of signal names"),
        ({"intervene_on_risk_above": "high"}, "must be a number"),
        ({"sink": [object()]}, "neither a sink name nor an object"),
    ],
)
def test_bad_monitor_arguments_are_config_errors(llama: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sampled(llama, **options)


def test_a_sampled_run_leaves_the_callers_random_state_unchanged(llama: str) -> None:
    monitor = sampled(llama)
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    monitor.run(PROMPT)
    assert torch.equal(torch.rand(4), expected)


def test_seeded_runs_on_two_models_in_two_threads_match_sequential_runs(
    tiny_model_dir: Callable[[str], Path],
) -> None:
    models = [str(tiny_model_dir("llama")), str(tiny_model_dir("qwen2"))]
    monitor = CoreVitalMonitor(models[0], seed=11, device="cpu", max_new_tokens=12, chat_template="off")
    sequential = [tokens(monitor.run(PROMPT, model=m, temperature=1.5)) for m in models]
    results: dict[int, list[int]] = {}

    def work(index: int) -> None:
        for _ in range(3):  # interleave several generations of both models
            results[index] = tokens(monitor.run(PROMPT, model=models[index], temperature=1.5))
            assert results[index] == sequential[index]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[0], results[1]] == sequential


class Overflow:
    """A user's logits processor that fails the way a device out of memory does."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated by the test)")


def test_watch_lets_the_users_own_exception_through_unchanged(
    llama: str, tiny_loaded: Callable[[str], LoadedModel]
) -> None:
    from transformers import LogitsProcessorList

    loaded = tiny_loaded("llama")
    inputs = loaded.tokenizer(PROMPT, return_tensors="pt")
    processors = LogitsProcessorList([Overflow()])
    with (
        sampled(llama).watch(loaded.model, loaded.tokenizer),
        pytest.raises(torch.OutOfMemoryError) as caught,
    ):
        loaded.model.generate(**inputs, max_new_tokens=4, logits_processor=processors, pad_token_id=0)
    assert any("CoreVital was observing" in note for note in getattr(caught.value, "__notes__", []))
    assert "generate" not in vars(loaded.model)


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "corevital-stream"]


def test_breaking_out_of_an_async_stream_stops_the_generation(llama: str) -> None:
    monitor = sampled(llama, max_new_tokens=400, ignore_eos=True)

    async def first_three() -> int:
        seen = 0
        async for _event in monitor.stream(PROMPT):
            seen += 1
            if seen == 3:
                break
        return seen

    assert asyncio.run(first_three()) == 3
    assert stream_threads() == []
    report = monitor.get_report()
    assert report.generated.finish_reason == "stopped_by_callback"
    assert report.generated.num_tokens < 400
    assert report.extensions.intervention is not None
    assert report.extensions.intervention.policy == "consumer_stopped"


def test_closing_a_stream_iterator_early_stops_the_generation(llama: str) -> None:
    monitor = sampled(llama, max_new_tokens=400, ignore_eos=True)
    events = monitor.iter_stream(PROMPT)
    next(events)
    events.close()
    assert stream_threads() == []
    assert monitor.get_report().generated.num_tokens < 400


def test_a_postgres_sink_without_a_url_fails_before_the_model_loads(llama: str) -> None:
    monitor = sampled(llama, sink="postgres")
    with pytest.raises(ConfigError, match="postgresql://"):
        monitor.run(PROMPT)
    assert monitor.load_count == 0
