"""The library with Hugging Face habits, on tiny models: chat messages, generate() keywords passed
through, a GenerationConfig, stop strings, several returned sequences, the model's own decoding
defaults, ``watch`` with ``inputs_embeds``, and the latency of each sequence."""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from corevital import CoreVitalMonitor
from corevital.errors import ConfigError, InputError
from corevital.report.encoding import report_from_json, report_to_json
from corevital.report.schema import Report
from tests.support.tiny_models import save_tiny_model

PROMPT = "The quick brown fox jumps"


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama whose tokenizer has a chat template and whose own defaults sample (do_sample, top_k 5)."""
    directory = save_tiny_model(
        "llama", tmp_path_factory.mktemp("tiny-llama-chat"), seed=0, chat_template=True
    )
    config = GenerationConfig.from_pretrained(directory)
    config.do_sample, config.temperature, config.top_k, config.top_p = True, 0.7, 5, 1.0
    config.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def hf(chat_dir: Path) -> tuple[Any, Any]:
    model = AutoModelForCausalLM.from_pretrained(chat_dir)
    model.eval()  # type: ignore[no-untyped-call]
    return model, AutoTokenizer.from_pretrained(chat_dir)


@pytest.fixture
def monitor(chat_dir: Path) -> CoreVitalMonitor:
    return CoreVitalMonitor(str(chat_dir), device="cpu", max_new_tokens=8, temperature=0.9, seed=5)


def _hf_greedy(hf: tuple[Any, Any], report: Report, **kwargs: Any) -> list[int]:
    """The tokens plain transformers generates greedily (no CoreVital) for the report's prompt tokens."""
    model, _ = hf
    ids = torch.tensor([report.prompt.token_ids])
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, **kwargs)
    return [int(t) for t in out[0, ids.shape[1] :]]


def test_chat_messages_are_rendered_with_the_chat_template(monitor: CoreVitalMonitor) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": PROMPT},
    ]
    by_keyword = monitor.run(messages=messages, do_sample=False)
    positional = monitor.run(messages, do_sample=False)
    assert by_keyword.prompt.chat_template_applied is True
    assert by_keyword.prompt.text == f"system: Be brief.\nuser: {PROMPT}"
    assert by_keyword.prompt.token_ids == positional.prompt.token_ids
    assert by_keyword.generated.token_ids == positional.generated.token_ids
    # One user message is what a string prompt becomes under the chat template.
    as_string = monitor.run(PROMPT, do_sample=False)
    as_message = monitor.run(messages=[{"role": "user", "content": PROMPT}], do_sample=False)
    assert as_string.prompt.token_ids == as_message.prompt.token_ids
    assert monitor.load_count == 1


def test_chat_messages_are_checked_before_the_model_loads(monitor: CoreVitalMonitor) -> None:
    with pytest.raises(InputError, match="not both"):
        monitor.run(PROMPT, messages=[{"role": "user", "content": PROMPT}])
    with pytest.raises(InputError, match="chat message 1"):
        monitor.run(messages=[{"content": PROMPT}])
    with pytest.raises(InputError, match="message dict"):
        monitor.run_batch([{"role": "user", "content": PROMPT}])  # type: ignore[list-item]
    assert monitor.load_count == 0
    with pytest.raises(InputError, match="chat_template is off"):  # known once the tokenizer is
        monitor.run(messages=[{"role": "user", "content": PROMPT}], chat_template="off")


def test_generate_keywords_pass_through_and_are_recorded(
    monitor: CoreVitalMonitor, hf: tuple[Any, Any]
) -> None:
    report = monitor.run(PROMPT, do_sample=False, repetition_penalty=1.3, chat_template="off")
    assert report.run_config.generation.do_sample is False
    assert report.run_config.generate_kwargs == {"repetition_penalty": 1.3}
    assert report.generated.token_ids == _hf_greedy(hf, report, repetition_penalty=1.3)
    plain = monitor.run(PROMPT, do_sample=False, chat_template="off")
    assert plain.run_config.generate_kwargs is None
    assert plain.generated.token_ids == _hf_greedy(hf, plain)
    # Recorded in the stored JSON too.
    again = report_from_json(report_to_json(report))
    assert again.run_config.generate_kwargs == {"repetition_penalty": 1.3}


def test_a_generation_config_is_read_as_its_keywords(monitor: CoreVitalMonitor, hf: tuple[Any, Any]) -> None:
    config = GenerationConfig(do_sample=False, no_repeat_ngram_size=2)  # type: ignore[no-untyped-call]
    report = monitor.run(PROMPT, generation_config=config, chat_template="off")
    assert report.run_config.generation.do_sample is False
    assert report.run_config.generate_kwargs == {"no_repeat_ngram_size": 2}
    tokens = report.generated.token_ids
    assert tokens == _hf_greedy(hf, report, no_repeat_ngram_size=2)
    pairs = list(zip(tokens, tokens[1:], strict=False))
    assert len(pairs) == len(set(pairs))


def test_keywords_corevital_cannot_observe_are_refused_before_loading(monitor: CoreVitalMonitor) -> None:
    with pytest.raises(ConfigError, match="assisted generation"):
        monitor.run(PROMPT, prompt_lookup_num_tokens=3)
    with pytest.raises(ConfigError, match="custom decoding loop"):
        monitor.run(PROMPT, custom_generate="some/repo")
    with pytest.raises(ConfigError, match="monitor.watch"):
        monitor.run(PROMPT, input_ids=[[1, 2]])
    with pytest.raises(ConfigError, match="positive integer"):
        monitor.run_batch([PROMPT], num_return_sequences=0)
    assert monitor.load_count == 0


def test_stop_strings_end_the_sequence_with_finish_reason_stop_string(monitor: CoreVitalMonitor) -> None:
    full = monitor.run(PROMPT, do_sample=False, chat_template="off")
    assert full.generated.finish_reason == "length" and full.generated.num_tokens == 8
    loaded = monitor._loaded(monitor.settings_for(chat_template="off"))
    stop = loaded.tokenizer.decode(full.generated.token_ids[2:4])
    stopped = monitor.run(PROMPT, do_sample=False, chat_template="off", stop_strings=[stop])
    assert stopped.generated.finish_reason == "stop_string"
    assert stopped.generated.token_ids == full.generated.token_ids[: stopped.generated.num_tokens]
    assert stopped.generated.num_tokens <= 4
    assert stop in loaded.tokenizer.decode(stopped.generated.token_ids)
    assert len(stopped.timeline) == stopped.generated.num_tokens
    # In a batch, the other sequence runs on to its own end.
    both = monitor.run_batch(
        [PROMPT, "Once upon a time"], do_sample=False, chat_template="off", stop_strings=stop
    )
    assert both[0].generated.finish_reason == "stop_string"
    assert both[0].generated.token_ids == stopped.generated.token_ids


def test_num_return_sequences_gives_one_report_per_sequence(monitor: CoreVitalMonitor) -> None:
    reports = monitor.run_batch([PROMPT, "Once upon a time"], num_return_sequences=2, chat_template="off")
    assert [r.prompt.text for r in reports] == [PROMPT, PROMPT, "Once upon a time", "Once upon a time"]
    assert [r.run_config.batch_index for r in reports] == [0, 1, 2, 3]
    assert {r.run_config.batch_size for r in reports} == {4}
    assert reports[0].generated.token_ids != reports[1].generated.token_ids  # sampled apart
    assert all(r.run_config.generate_kwargs == {"num_return_sequences": 2} for r in reports)
    # The same seed gives the same sequences.
    again = monitor.run_batch([PROMPT, "Once upon a time"], num_return_sequences=2, chat_template="off")
    assert [r.generated.token_ids for r in again] == [r.generated.token_ids for r in reports]
    beams = monitor.run_batch([PROMPT], num_beams=3, num_return_sequences=2, chat_template="off")
    assert len(beams) == 2 and beams[0].generated.token_ids != beams[1].generated.token_ids
    with pytest.raises(InputError, match="greedy"):
        monitor.run_batch([PROMPT], num_return_sequences=2, do_sample=False)
    with pytest.raises(InputError, match="run_batch"):
        monitor.run(PROMPT, num_return_sequences=2)


def test_generation_config_model_takes_the_models_own_defaults(chat_dir: Path) -> None:
    monitor = CoreVitalMonitor(str(chat_dir), device="cpu", max_new_tokens=6, temperature=0.0, seed=3)
    ours = monitor.run(PROMPT, chat_template="off")
    assert ours.run_config.generation.do_sample is False and ours.run_config.generation_defaults is None
    theirs = monitor.run(PROMPT, chat_template="off", generation_config="model")
    generation = theirs.run_config.generation
    assert (generation.do_sample, generation.temperature, generation.top_k) == (True, 0.7, 5)
    assert theirs.run_config.generation_defaults == "model"
    assert theirs.generated.num_tokens == 6  # max_new_tokens still CoreVital's


def test_latency_of_each_sequence(monitor: CoreVitalMonitor) -> None:
    reports = monitor.run_batch([PROMPT, "Once upon a time"], chat_template="off", ignore_eos=True)
    for report in reports:
        summary = report.summary
        assert summary.ttft_ms is not None and summary.generation_ms is not None
        assert 0 < summary.ttft_ms <= summary.generation_ms
        itl = summary.inter_token_ms
        assert itl is not None and itl.p50 is not None and itl.p90 is not None and itl.p99 is not None
        assert 0 < itl.p50 <= itl.p90 <= itl.p99
        assert summary.tokens_per_second is not None
        # tokens / time to the last token: the last token comes after the first and before the end.
        last_token_s = report.generated.num_tokens / summary.tokens_per_second
        assert summary.ttft_ms / 1000 <= last_token_s <= summary.generation_ms / 1000 + 1e-6
    assert json.loads(report_to_json(reports[0]))["summary"]["inter_token_ms"].keys() == {
        "p50",
        "p90",
        "p99",
        "mean",
    }


def test_watch_observes_inputs_embeds(monitor: CoreVitalMonitor, hf: tuple[Any, Any]) -> None:
    model, tokenizer = hf
    ids = tokenizer(PROMPT, return_tensors="pt")
    with monitor.watch(model, tokenizer) as watcher, torch.no_grad():
        by_ids = model.generate(**ids, max_new_tokens=6, do_sample=False)
        embeds = model.get_input_embeddings()(ids["input_ids"])
        by_embeds = model.generate(
            inputs_embeds=embeds, attention_mask=ids["attention_mask"], max_new_tokens=6, do_sample=False
        )
    assert by_embeds[0].tolist() == by_ids[0, ids["input_ids"].shape[1] :].tolist()
    first, second = watcher.reports
    assert second.generated.token_ids == first.generated.token_ids
    assert second.prompt.num_tokens == 0
    assert [w.code for w in second.warnings] == ["PROMPT_AS_EMBEDDINGS"]
    entropies = [[s.logits_summary.entropy for s in r.timeline] for r in (first, second)]
    np.testing.assert_allclose(entropies[0], entropies[1], rtol=1e-4)


def test_watch_warns_about_a_call_it_cannot_observe(monitor: CoreVitalMonitor, hf: tuple[Any, Any]) -> None:
    model, tokenizer = hf
    with (
        monitor.watch(model, tokenizer) as watcher,
        torch.no_grad(),
        pytest.warns(UserWarning, match="unobserved"),
    ):
        model.generate(max_new_tokens=2, do_sample=False)
    assert watcher.reports == []


def test_reports_keep_one_shape(monitor: CoreVitalMonitor) -> None:
    """A report made with the new keywords is valid under the committed JSON Schema."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(
        (Path(__file__).resolve().parents[2] / "src/corevital/report/report.schema.json").read_text()
    )
    report: Report = monitor.run(
        PROMPT, chat_template="off", do_sample=False, stop_strings=["zz"], repetition_penalty=1.1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jsonschema.validate(json.loads(report_to_json(report)), schema)


def test_latency_is_exported_to_prometheus_and_opentelemetry(monitor: CoreVitalMonitor) -> None:
    pytest.importorskip("prometheus_client")
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from corevital.exporters.otel import OTelExporter
    from corevital.exporters.prometheus import PrometheusExporter

    reports = monitor.run_batch([PROMPT, "Once upon a time"], chat_template="off", ignore_eos=True)
    ttft_s = [r.summary.ttft_ms / 1000 for r in reports if r.summary.ttft_ms is not None]
    tpot_s = [
        r.summary.inter_token_ms.mean / 1000
        for r in reports
        if r.summary.inter_token_ms is not None and r.summary.inter_token_ms.mean is not None
    ]
    assert len(ttft_s) == len(tpot_s) == 2

    prometheus = PrometheusExporter()
    for report in reports:
        prometheus.export(report)
    lines = prometheus.exposition().decode().splitlines()

    def sample(name: str) -> float:
        (line,) = [line for line in lines if line.startswith(name + "{")]
        return float(line.rsplit(" ", 1)[1])

    assert sample("corevital_time_to_first_token_seconds_count") == 2
    assert sample("corevital_time_to_first_token_seconds_sum") == pytest.approx(sum(ttft_s))
    assert sample("corevital_time_per_output_token_seconds_sum") == pytest.approx(sum(tpot_s))

    reader = InMemoryMetricReader()
    meters, tracer = MeterProvider(metric_readers=[reader]), TracerProvider()
    otel = OTelExporter(tracer_provider=tracer, meter_provider=meters)
    for report in reports:
        otel.export(report)
    otel.close()
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {
        m.name: list(m.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    (ttft,) = points["gen_ai.server.time_to_first_token"]
    (tpot,) = points["gen_ai.server.time_per_output_token"]
    assert ttft.count == 2 and ttft.sum == pytest.approx(sum(ttft_s))
    assert tpot.count == 2 and tpot.sum == pytest.approx(sum(tpot_s))
    meters.shutdown()
    tracer.shutdown()


def test_streams_take_messages_and_generate_keywords(monitor: CoreVitalMonitor) -> None:
    chat = [{"role": "user", "content": PROMPT}]
    ran = monitor.run(chat, do_sample=False, repetition_penalty=1.3)
    events = list(monitor.iter_stream(messages=chat, do_sample=False, repetition_penalty=1.3))
    final = events[-1]
    assert final.kind == "final" and final.report.run_config.generate_kwargs == {"repetition_penalty": 1.3}
    assert [e.token_id for e in events[:-1]] == ran.generated.token_ids

    async def collect() -> list[Any]:
        return [event async for event in monitor.stream(chat, do_sample=False, repetition_penalty=1.3)]

    streamed = asyncio.run(collect())
    assert [e.token_id for e in streamed[:-1]] == ran.generated.token_ids
    with pytest.raises(InputError, match="run_batch"):
        next(monitor.iter_stream(PROMPT, num_return_sequences=2))
