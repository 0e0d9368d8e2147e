"""The logprobs capture backend: entropy bounds, response shapes, streams, observe_openai."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corevital import CoreVitalMonitor
from corevital.capture.logprobs import capture_response, step_bounds
from corevital.capture.openai_api import LogprobsError, ObservedRequest, StreamAccumulator, parse_choices
from corevital.errors import InputError
from corevital.proxy.bodies import prepare_body, strip_logprobs
from corevital.proxy.events import SSEParser, rewrite_event
from corevital.sinks.base import MemorySink


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("k", [1, 5, 20])
def test_the_exact_entropy_lies_within_the_bounds(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    vocab = 200
    probs = rng.dirichlet(np.full(vocab, 0.05 if seed % 2 else 1.0))
    known = np.sort(probs)[::-1][:k]
    lower, upper, remaining = step_bounds(known, vocab)
    assert remaining == pytest.approx(1 - known.sum())
    assert lower - 1e-9 <= _entropy(probs) <= upper + 1e-9
    # the bounds are attained: the tail as one token, the tail spread uniformly
    assert lower == pytest.approx(_entropy(np.append(known, remaining)))
    uniform = np.append(known, np.full(vocab - k, remaining / (vocab - k)))
    assert upper == pytest.approx(_entropy(uniform))


def test_without_a_vocabulary_size_only_the_lower_bound_is_known() -> None:
    lower, upper, remaining = step_bounds(np.array([0.5, 0.25]), None)
    assert lower == pytest.approx(_entropy(np.array([0.5, 0.25, 0.25])))
    assert math.isnan(upper) and remaining == pytest.approx(0.25)


def test_a_complete_distribution_has_its_exact_entropy_as_both_bounds() -> None:
    assert step_bounds(np.array([0.5, 0.5]), 2) == (1.0, 1.0, 0.0)


@pytest.mark.parametrize("seed", range(10))
def test_the_estimate_is_the_midpoint_of_bounds_holding_the_exact_entropy(seed: int) -> None:
    """Differential: a response listing the top 5 of distributions with known full probabilities;
    the exact entropy (numpy, from all of them) lies within the reported bounds, and the reported
    entropy is their midpoint, so within half their width of the exact value."""
    rng = np.random.default_rng(seed)
    vocab, steps = 64, 6
    entries, exact = [], []
    for _ in range(steps):
        probs = rng.dirichlet(np.full(vocab, 0.1 if seed % 2 else 1.0))
        order = np.argsort(-probs)
        top = [(f"t{i}", float(probs[i])) for i in order[:5]]
        entries.append(_chat_entry(top[0][0], top[0][1], top))
        exact.append(_entropy(probs))
    response = {"choices": [{"index": 0, "message": {"content": ""}, "logprobs": {"content": entries}}]}
    monitor = CoreVitalMonitor(sink=MemorySink())
    (report,) = monitor.observe_openai(response, prompt="p", vocab_size=vocab)
    monitor.close()
    assert report.capture is not None and report.capture.entropy == "midpoint"
    for step, truth in zip(report.timeline, exact, strict=True):
        lg = step.logits_summary
        assert lg.entropy is not None and lg.entropy_lower is not None and lg.entropy_upper is not None
        assert lg.entropy_lower - 1e-4 <= truth <= lg.entropy_upper + 1e-4  # written rounded
        assert lg.entropy == pytest.approx((lg.entropy_lower + lg.entropy_upper) / 2, abs=1e-4)
        assert abs(lg.entropy - truth) <= (lg.entropy_upper - lg.entropy_lower) / 2 + 1e-4
    # without the vocabulary size the report says lower_bound and its entropy is that bound
    monitor = CoreVitalMonitor(sink=MemorySink())
    (plain,) = monitor.observe_openai(response, prompt="p")
    monitor.close()
    assert plain.capture is not None and plain.capture.entropy == "lower_bound"
    for step, bounded in zip(plain.timeline, report.timeline, strict=True):
        assert step.logits_summary.entropy == step.logits_summary.entropy_lower
        assert step.logits_summary.entropy == bounded.logits_summary.entropy_lower
        assert step.logits_summary.entropy_upper is None


def _chat_entry(token: str, p: float, alternatives: list[tuple[str, float]]) -> dict[str, Any]:
    return {
        "token": token,
        "logprob": math.log(p),
        "top_logprobs": [{"token": t, "logprob": math.log(q)} for t, q in alternatives],
    }


CHAT_RESPONSE = {
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "ab"},
            "logprobs": {
                "content": [
                    _chat_entry("a", 0.5, [("a", 0.5), ("b", 0.3), ("c", 0.1)]),
                    # sampled outside the listed alternatives: it counts as known mass too
                    _chat_entry("b", 0.05, [("x", 0.6), ("y", 0.2)]),
                ]
            },
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
}


def test_a_chat_response_gives_the_logit_tier() -> None:
    capture = capture_response(
        CHAT_RESPONSE, ObservedRequest("hi", chat=True), topk=5, mass_k=2, vocab_size=10
    )
    (stats,) = capture.stats
    chosen = capture.run.sequences[0].chosen
    assert np.allclose(chosen.surprisal, [1.0, -math.log2(0.05)])
    assert np.allclose(stats.top_k_margin, [0.2, 0.4])
    assert np.allclose(stats.topk_mass, [0.8, 0.8])
    assert np.allclose(stats.remaining_mass, [0.1, 0.15])
    lower = _entropy(np.array([0.6, 0.2, 0.05, 0.15]))
    upper = _entropy(np.array([0.6, 0.2, 0.05, *[0.15 / 7] * 7]))  # 10 - 3 other tokens
    assert np.allclose(stats.entropy_lower[1], lower) and np.allclose(stats.entropy_upper[1], upper)
    assert np.allclose(stats.entropy[1], (lower + upper) / 2)  # the estimate: the bounds' midpoint
    assert capture.run.sequences[0].finish_reason == "length"
    assert capture.prompt_tokens == 7 and capture.endpoint == "chat.completions"
    assert capture.run.sequences[0].token_texts[capture.run.sequences[0].generated_token_ids[0]] == "a"


def test_a_completion_response_and_vocabulary_ids() -> None:
    response = {
        "object": "text_completion",
        "choices": [
            {
                "index": 0,
                "text": "xy",
                "logprobs": {
                    "tokens": ["token_id:17", "token_id:4"],
                    "token_logprobs": [math.log(0.9), math.log(0.4)],
                    "top_logprobs": [
                        {"token_id:17": math.log(0.9), "token_id:3": math.log(0.05)},
                        {"token_id:4": math.log(0.4), "token_id:5": math.log(0.3)},
                    ],
                },
                "finish_reason": "stop",
            }
        ],
    }
    capture = capture_response(response, ObservedRequest("p", chat=False), topk=5, mass_k=10)
    seq = capture.run.sequences[0]
    assert seq.generated_token_ids == [17, 4] and capture.vocabulary_ids
    assert seq.finish_reason == "eos" and capture.upstream_finish_reasons == ["stop"]
    assert math.isnan(capture.stats[0].entropy_upper[0])  # no vocabulary size: no upper bound
    # and the estimate is the lower bound
    assert np.array_equal(capture.stats[0].entropy, capture.stats[0].entropy_lower)
    assert capture.stats[0].entropy[0] == pytest.approx(_entropy(np.array([0.9, 0.05, 0.05])))


def test_a_response_without_logprobs_is_refused() -> None:
    response = {"choices": [{"index": 0, "message": {"content": "x"}, "logprobs": None}]}
    with pytest.raises(LogprobsError, match="no logprobs"):
        parse_choices(response)


def _chunks() -> list[dict[str, Any]]:
    content = CHAT_RESPONSE["choices"][0]["logprobs"]["content"]  # type: ignore[index]
    head = {"object": "chat.completion.chunk", "model": "m"}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}]}
    ]
    for entry, text in zip(content, "ab", strict=True):
        chunks.append(
            {**head, "choices": [{"index": 0, "delta": {"content": text}, "logprobs": {"content": [entry]}}]}
        )
    chunks.append(
        {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]}
    )
    return chunks


def test_a_stream_rebuilds_the_response_it_streamed() -> None:
    accumulator = StreamAccumulator()
    for chunk in _chunks():
        accumulator.add(chunk)
    rebuilt = parse_choices(accumulator.response())
    assert rebuilt == parse_choices(CHAT_RESPONSE)


def test_sse_events_are_split_wherever_the_bytes_break_and_stripped_of_added_logprobs() -> None:
    stream = b"".join(b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\n\n" for c in _chunks())
    stream += b"data: [DONE]\n\n"
    for size in (1, 7, 64, len(stream)):
        parser, accumulator, out = SSEParser(), StreamAccumulator(), b""
        _, injection = prepare_body({"messages": []}, chat=True, top_logprobs=20)
        for start in range(0, len(stream), size):
            for event in parser.feed(stream[start : start + size]):
                out += rewrite_event(event, accumulator, injection)
        assert parser.rest() == b""
        events = [e for e in out.split(b"\n\n") if e]
        assert events[-1] == b"data: [DONE]"
        assert all(json.loads(e[6:])["choices"][0]["logprobs"] is None for e in events[:-1])
        assert parse_choices(accumulator.response()) == parse_choices(CHAT_RESPONSE)


def test_the_proxy_adds_logprobs_only_when_the_client_did_not_ask() -> None:
    body, injection = prepare_body(
        {"messages": [], "logprobs": True, "top_logprobs": 2}, chat=True, top_logprobs=20
    )
    assert not injection.logprobs and body["top_logprobs"] == 2
    body, injection = prepare_body({"prompt": "x"}, chat=False, top_logprobs=5)
    assert injection.logprobs and body["logprobs"] == 5
    document = {"choices": [{"logprobs": {"content": []}}, {"logprobs": None}]}
    assert strip_logprobs(document) and document == {"choices": [{"logprobs": None}, {"logprobs": None}]}


def test_observe_openai_writes_one_report_per_choice_to_the_monitors_sinks() -> None:
    sink = MemorySink()
    response = json.loads(json.dumps(CHAT_RESPONSE))
    response["choices"].append({**response["choices"][0], "index": 1})
    monitor = CoreVitalMonitor(sink=sink)
    reports = monitor.observe_openai(response, prompt="hi", vocab_size=10)
    assert [r.run_config.batch_index for r in reports] == [0, 1]
    assert sink.reports == reports
    assert monitor.get_report() is reports[-1]
    assert reports[0].capture is not None and reports[0].capture.source == "logprobs"
    assert reports[0].prompt.text == "hi" and reports[0].model.hf_id == "m"
    assert reports[0].timeline[1].logits_summary.entropy_upper is not None
    with pytest.raises(InputError, match="no logprobs"):
        monitor.observe_openai({"choices": [{"message": {"content": "x"}, "logprobs": None}]})
    monitor.close()


@pytest.mark.parametrize(
    "calibration",
    [
        "default",
        str(Path(__file__).parents[2] / "examples" / "validation" / "smollm2_logprobs_tier_profile.json"),
    ],
    ids=["shipped", "refitted-on-the-tier"],
)
def test_the_labelled_risk_model_scores_the_logprobs_tier(calibration: str) -> None:
    """``--calibration`` on the proxy: the profile's labelled model gives the risk score, from the
    run features of the logprobs tier (the heuristic score without it); the shipped profile, and the
    one refitted on dev proxy runs (docs/validation.md, the logprobs tier)."""
    from corevital.analysis.calibration.risk_model import predict
    from corevital.config import load_settings
    from corevital.proxy.reports import LogprobReporter

    request = ObservedRequest("hi", chat=True)
    heuristic = LogprobReporter(load_settings({}), vocab_size=10)
    labelled = LogprobReporter(load_settings({"calibration": calibration}), vocab_size=10)
    (plain,) = heuristic.reports(CHAT_RESPONSE, request)
    (scored,) = labelled.reports(CHAT_RESPONSE, request)
    profile = labelled.pipeline.calibration()
    assert profile is not None and profile.risk_model is not None
    capture = capture_response(CHAT_RESPONSE, request, topk=5, mass_k=10, vocab_size=10)
    _, diagnosis = heuristic.pipeline.diagnose_one(capture.run, capture.run.sequences[0])
    expected = predict(profile.risk_model, diagnosis.run_features).probability
    assert scored.extensions.risk is not None and plain.extensions.risk is not None
    assert scored.extensions.risk.risk_score == pytest.approx(expected, abs=1e-9)
    assert scored.extensions.risk.risk_score != pytest.approx(plain.extensions.risk.risk_score, abs=1e-3)
    assert scored.extensions.calibration is not None and plain.extensions.calibration is None
    heuristic.close()
    labelled.close()


class _Recorder:
    """A stop policy that never stops and keeps the entropy of every step it is shown."""

    name = "recorder"

    def __init__(self) -> None:
        self.entropies: list[float | None] = []

    def check(self, step: Any) -> str | None:
        self.entropies.append(step.entropy)
        return None


@pytest.mark.parametrize("vocab_size", [10, None])
def test_a_streams_stop_policies_see_the_reports_entropy_estimate(vocab_size: int | None) -> None:
    """The proxy's live policies read the same per-step entropy as the report built at the end: the
    midpoint of the bounds with the vocabulary size, the lower bound without."""
    from corevital.proxy.watch import StreamWatch

    recorder = _Recorder()
    watch = StreamWatch([recorder], vocab_size=vocab_size)
    for entry in CHAT_RESPONSE["choices"][0]["logprobs"]["content"]:  # type: ignore[index]
        watch(
            {
                "choices": [
                    {"index": 0, "delta": {"content": entry["token"]}, "logprobs": {"content": [entry]}}
                ]
            }
        )
    capture = capture_response(
        CHAT_RESPONSE, ObservedRequest("hi", chat=True), topk=5, mass_k=10, vocab_size=vocab_size
    )
    assert recorder.entropies == pytest.approx(list(capture.stats[0].entropy), abs=1e-12)
    stats = capture.stats[0]
    if vocab_size is None:
        assert np.array_equal(stats.entropy, stats.entropy_lower)
    else:  # mass remains at both steps: the midpoint lies strictly inside the bounds
        assert np.all(stats.entropy_lower < stats.entropy) and np.all(stats.entropy < stats.entropy_upper)
