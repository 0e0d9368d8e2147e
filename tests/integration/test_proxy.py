"""``corevital proxy`` in front of a real OpenAI-compatible server (a tiny random llama, greedy).

What a client receives through the proxy is byte for byte what it receives from the server directly;
each response's reports hold the logit tier the model really had (surprisal, margin, top-k mass
exactly; the exact entropy within the stated bounds), computed here from the model's full logits.
Upstream failures reach the client as they are, CoreVital's own failures never do, and API keys
appear in no report and no log line.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from corevital.analysis.policies import StopWhen
from corevital.config import load_settings
from corevital.exporters.base import Outputs
from corevital.proxy.reports import LogprobReporter
from corevital.proxy.server import ProxyApp
from corevital.report.schema import Report
from corevital.sinks.base import MemorySink
from tests.support.openai_upstream import ServerThread, TinyOpenAIServer, closed_port
from tests.support.proxy_process import CHAT, COMPLETIONS, ProxyProcess, stored_reports

SECRET = "sk-test-0123456789abcdefSECRET"


def _body(path: str, *, stream: bool, **extra: Any) -> dict[str, Any]:
    if path == CHAT:
        base: dict[str, Any] = {
            "model": "tiny-llama",
            "messages": [{"role": "user", "content": "Hello there"}],
        }
    else:
        base = {"model": "tiny-llama", "prompt": "Once upon a time"}
    return {**base, "max_tokens": 12, "stream": stream, **extra}


class RaisingStore(MemorySink):
    """A store whose every write fails (CoreVital's failure, not the request's)."""

    def write(self, report: Report) -> str:
        raise OSError("disk on fire")


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[TinyOpenAIServer, ServerThread]]:
    server = TinyOpenAIServer(seed=0)
    with ServerThread(server.app()) as thread:
        yield server, thread


@pytest.fixture(scope="module")
def proxied(
    upstream: tuple[TinyOpenAIServer, ServerThread], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProxyApp, ServerThread, Path]]:
    server, thread = upstream
    out = tmp_path_factory.mktemp("proxy")
    settings = load_settings({"sink": ["sqlite"], "out": str(out)})
    from corevital.exporters.base import open_outputs

    reporter = LogprobReporter(settings, outputs=open_outputs(settings), vocab_size=server.vocab_size)
    proxy = ProxyApp(thread.url, reporter)
    with ServerThread(proxy.app()) as proxy_thread:
        yield proxy, proxy_thread, out / "corevital.db"


def _ids(proxy: ProxyApp, db: Path) -> set[str]:
    """The trace ids stored once every earlier response's reports are written."""
    assert proxy.wait_idle(60)
    return {r.trace_id for r in stored_reports(db)}


def _new(proxy: ProxyApp, db: Path, before: set[str]) -> list[Report]:
    """The reports stored since ``before``, once the proxy wrote them."""
    assert proxy.wait_idle(60)
    return [r for r in stored_reports(db) if r.trace_id not in before]


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("stream", [False, True])
def test_the_client_receives_exactly_what_the_server_sends(
    upstream: tuple[TinyOpenAIServer, ServerThread],
    proxied: tuple[ProxyApp, ServerThread, Path],
    path: str,
    stream: bool,
) -> None:
    _, direct_thread = upstream
    _, proxy_thread, _ = proxied
    body = _body(path, stream=stream)
    direct = httpx.post(direct_thread.url + path, json=body, timeout=60)
    through = httpx.post(proxy_thread.url + path, json=body, timeout=60)
    assert direct.status_code == through.status_code == 200
    assert through.content == direct.content
    assert through.headers["content-type"] == direct.headers["content-type"]
    if not stream:
        assert all(choice["logprobs"] is None for choice in through.json()["choices"])


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("stream", [False, True])
def test_reports_hold_the_models_logit_tier(
    upstream: tuple[TinyOpenAIServer, ServerThread],
    proxied: tuple[ProxyApp, ServerThread, Path],
    path: str,
    stream: bool,
) -> None:
    server, _ = upstream
    proxy, proxy_thread, db = proxied
    before = _ids(proxy, db)
    response = httpx.post(proxy_thread.url + path, json=_body(path, stream=stream), timeout=60)
    assert response.status_code == 200
    (report,) = _new(proxy, db, before)
    generation = server.generations[-1]

    # The model's exact distributions, from a forward pass over the prompt and the generated tokens.
    ids = torch.tensor([generation.prompt_ids + generation.token_ids])
    with torch.no_grad():
        logits = server.model(input_ids=ids).logits[0].to(torch.float64)
    start = len(generation.prompt_ids) - 1
    exact = torch.log_softmax(logits[start : start + len(generation.token_ids)], dim=-1)
    assert torch.allclose(exact, generation.logprobs, atol=1e-4)

    assert report.capture is not None and report.capture.source == "logprobs"
    assert report.capture.not_observed == ["attention", "hidden_states"]
    assert report.capture.vocab_size == server.vocab_size and report.capture.entropy == "midpoint"
    assert report.generated.num_tokens == len(generation.token_ids) == len(report.timeline)
    checked = 0
    for step, (summary, token) in enumerate(
        zip((s.logits_summary for s in report.timeline), generation.token_ids, strict=True)
    ):
        row = exact[step]
        probs = row.exp()
        entropy = float(-(probs * row).sum() / math.log(2))
        top, order = torch.sort(probs, descending=True)
        assert summary.surprisal == pytest.approx(float(-row[token] / math.log(2)), rel=1e-5, abs=1e-5)
        lower, upper = summary.entropy_lower, summary.entropy_upper
        assert summary.entropy is not None and lower is not None and upper is not None
        assert lower - 1e-4 <= entropy <= upper + 1e-4, f"step {step}"
        # the estimate is the bounds' midpoint: within half their width of the exact entropy
        assert summary.entropy == pytest.approx((lower + upper) / 2, abs=1e-4)
        assert abs(summary.entropy - entropy) <= (upper - lower) / 2 + 1e-4, f"step {step}"
        # completions name alternatives by text (a JSON object), so tokens of one text merge there
        texts = {server.token_text(int(i)) for i in order[:20]}
        if path == CHAT or len(texts) == 20:
            assert summary.top_k_margin == pytest.approx(float(top[0] - top[1]), rel=1e-4, abs=1e-7)
            assert summary.topk_mass == pytest.approx(float(top[:10].sum()), rel=1e-4)
            assert summary.remaining_mass == pytest.approx(float(1 - top[:20].sum()), rel=1e-4, abs=1e-6)
            checked += 1
    assert checked == len(generation.token_ids) or path == COMPLETIONS
    assert report.generated.output_text == "".join(server.token_text(t) for t in generation.token_ids)


def test_a_report_claims_no_attention_or_hidden_state_finding(
    proxied: tuple[ProxyApp, ServerThread, Path],
) -> None:
    proxy, proxy_thread, db = proxied
    before = _ids(proxy, db)
    httpx.post(proxy_thread.url + CHAT, json=_body(CHAT, stream=False), timeout=60)
    (report,) = _new(proxy, db, before)
    codes = {w.code for w in report.warnings}
    assert {"ATTENTION_NOT_AVAILABLE", "HIDDEN_STATES_NOT_AVAILABLE"} <= codes
    assert report.model.source is None and report.run_config.entropy_mode is None
    assert (
        not report.run_config.summaries.attention.enabled and not report.run_config.summaries.hidden.enabled
    )
    flags = report.health_flags
    assert flags is not None
    assert flags.attention_collapse_severity is None and not flags.attention_collapse_detected
    assert not flags.mid_layer_anomaly_detected
    ext = report.extensions
    assert ext.risk is not None and ext.risk.attention_collapse_detail is None
    assert ext.risk.blamed_layers in (None, [])
    assert ext.narrative is not None
    text = ext.narrative.summary.lower()
    for word in ("attention", "hidden", "layer"):
        assert word not in text, text
    assert all(step.layers == [] for step in report.timeline)


def test_a_client_that_asks_for_logprobs_gets_them_unchanged(
    upstream: tuple[TinyOpenAIServer, ServerThread], proxied: tuple[ProxyApp, ServerThread, Path]
) -> None:
    _, direct_thread = upstream
    proxy, proxy_thread, db = proxied
    body = _body(CHAT, stream=False, logprobs=True, top_logprobs=3)
    before = _ids(proxy, db)
    direct = httpx.post(direct_thread.url + CHAT, json=body, timeout=60)
    through = httpx.post(proxy_thread.url + CHAT, json=body, timeout=60)
    assert through.content == direct.content
    assert len(through.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 3
    (report,) = _new(proxy, db, before)
    assert report.capture is not None and report.capture.top_logprobs == 3


def test_every_choice_gets_its_report(proxied: tuple[ProxyApp, ServerThread, Path]) -> None:
    proxy, proxy_thread, db = proxied
    before = _ids(proxy, db)
    response = httpx.post(proxy_thread.url + CHAT, json=_body(CHAT, stream=True, n=2), timeout=60)
    assert response.status_code == 200
    reports = _new(proxy, db, before)
    assert sorted(r.run_config.batch_index or 0 for r in reports) == [0, 1]
    assert reports[0].generated.token_ids == reports[1].generated.token_ids  # greedy: the same text


def test_an_upstream_error_reaches_the_client_as_it_is(
    upstream: tuple[TinyOpenAIServer, ServerThread], proxied: tuple[ProxyApp, ServerThread, Path]
) -> None:
    _, direct_thread = upstream
    proxy, proxy_thread, db = proxied
    before = _ids(proxy, db)
    for path in (CHAT, COMPLETIONS):
        body = {**_body(path, stream=False), "model": "fail-500"}
        direct = httpx.post(direct_thread.url + path, json=body, timeout=60)
        through = httpx.post(proxy_thread.url + path, json=body, timeout=60)
        assert direct.status_code == through.status_code == 500
        assert through.content == direct.content
    other = httpx.get(proxy_thread.url + "/v1/models", timeout=60)
    assert other.content == httpx.get(direct_thread.url + "/v1/models", timeout=60).content
    not_json = httpx.post(proxy_thread.url + CHAT, content=b"not json", timeout=60)
    assert (
        not_json.status_code
        == httpx.post(direct_thread.url + CHAT, content=b"not json", timeout=60).status_code
    )
    assert _new(proxy, db, before) == []


def test_an_unreachable_upstream_is_a_502_and_the_proxy_stays_up() -> None:
    proxy = ProxyApp(f"http://127.0.0.1:{closed_port()}", None)
    with ServerThread(proxy.app()) as thread:
        for _ in range(2):
            response = httpx.post(thread.url + CHAT, json=_body(CHAT, stream=False), timeout=60)
            assert response.status_code == 502
            assert response.json()["error"]["type"] == "upstream_unavailable"
    assert proxy.stats.upstream_errors == 2


def test_a_slow_upstream_is_waited_for_and_a_stalled_one_cut_without_harm(
    upstream: tuple[TinyOpenAIServer, ServerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slower than usual but within the proxy's read timeout: the client gets exactly the upstream's
    stream and the report is stored. Silent for longer than the timeout: the client's stream breaks
    off (no ``[DONE]``, as a dead upstream's would), no report is made of the half, the proxy counts
    it and serves the next request."""
    import corevital.proxy.server as proxy_server

    server, direct_thread = upstream
    monkeypatch.setattr(proxy_server, "READ_TIMEOUT_S", 1.0)  # read by the proxy's client at start-up
    sink = MemorySink()
    proxy = ProxyApp(direct_thread.url, LogprobReporter(load_settings({}), outputs=Outputs(stores=[sink])))
    body = _body(CHAT, stream=True, max_tokens=4)
    with ServerThread(proxy.app()) as thread:
        try:
            server.chunk_delay_s = 0.4  # slow: 1.6 s in all, each pause within the timeout
            t0 = time.monotonic()
            through = httpx.post(thread.url + CHAT, json=body, timeout=60)
            assert time.monotonic() - t0 > 1.5
            assert through.status_code == 200
            assert through.content == httpx.post(direct_thread.url + CHAT, json=body, timeout=60).content
            assert proxy.wait_idle(60) and len(sink.reports) == 1

            server.chunk_delay_s = 2.0  # stalled: silent for longer than the timeout
            received = b""
            with (
                pytest.raises(httpx.HTTPError),  # the connection ends without the stream's end
                httpx.stream("POST", thread.url + CHAT, json=body, timeout=60) as response,
            ):
                assert response.status_code == 200
                for part in response.iter_bytes():
                    received += part
            assert received.startswith(b"data: {") and b"[DONE]" not in received
        finally:
            server.chunk_delay_s = 0.0
        after = httpx.post(thread.url + CHAT, json=body, timeout=60)
        assert after.status_code == 200
        assert after.content == httpx.post(direct_thread.url + CHAT, json=body, timeout=60).content
        assert proxy.wait_idle(60)
    assert len(sink.reports) == 2  # the slow stream's and the last one's; none of the broken stream
    assert proxy.stats.failures == 0


def test_a_failing_sink_never_fails_the_request(
    upstream: tuple[TinyOpenAIServer, ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    server, direct_thread = upstream
    reporter = LogprobReporter(load_settings({}), outputs=Outputs(stores=[RaisingStore()]))
    proxy = ProxyApp(direct_thread.url, reporter)
    with caplog.at_level(logging.ERROR, logger="corevital"), ServerThread(proxy.app()) as thread:
        for stream in (False, True):
            body = _body(CHAT, stream=stream)
            through = httpx.post(thread.url + CHAT, json=body, timeout=60)
            direct = httpx.post(direct_thread.url + CHAT, json=body, timeout=60)
            assert through.status_code == 200 and through.content == direct.content
        assert proxy.wait_idle(60)
    assert proxy.stats.failures == 2 and proxy.stats.reports == 0
    assert any("disk on fire" in record.getMessage() for record in caplog.records)


def test_api_keys_reach_the_upstream_and_nothing_else(
    upstream: tuple[TinyOpenAIServer, ServerThread],
    proxied: tuple[ProxyApp, ServerThread, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, _ = upstream
    proxy, proxy_thread, db = proxied
    headers = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}
    with caplog.at_level(logging.DEBUG):
        for path in (CHAT, COMPLETIONS):
            for stream in (False, True):
                response = httpx.post(
                    proxy_thread.url + path, json=_body(path, stream=stream), headers=headers, timeout=60
                )
                assert response.status_code == 200
                assert server.headers[-1]["authorization"] == f"Bearer {SECRET}"
        assert proxy.wait_idle(60)
    assert SECRET not in caplog.text
    stored = [report.model_dump_json() for report in stored_reports(db)]
    assert stored and not any(SECRET in text for text in stored)
    for file in db.parent.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file


def test_added_latency_per_streamed_chunk_is_small(proxied: tuple[ProxyApp, ServerThread, Path]) -> None:
    proxy, proxy_thread, _ = proxied
    for path in (CHAT, COMPLETIONS):
        for _ in range(5):
            httpx.post(proxy_thread.url + path, json=_body(path, stream=True, max_tokens=32), timeout=60)
    figures = proxy.stats.percentiles()
    print(f"added latency per chunk (ms): {figures}")
    assert figures["n"] and figures["p95"] is not None and figures["p95"] < 20.0


def test_a_stream_reaches_the_client_as_the_engine_produces_it(
    upstream: tuple[TinyOpenAIServer, ServerThread], proxied: tuple[ProxyApp, ServerThread, Path]
) -> None:
    server, _ = upstream
    _, proxy_thread, _ = proxied
    server.chunk_delay_s = 0.25
    try:
        arrivals: list[float] = []
        with httpx.stream(
            "POST", proxy_thread.url + CHAT, json=_body(CHAT, stream=True, max_tokens=6), timeout=60
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append(time.monotonic())
    finally:
        server.chunk_delay_s = 0.0
    # role chunk, 6 token chunks, the final chunk: the tokens arrive one pause apart, not all at the end
    assert len(arrivals) == 8
    gaps = [b - a for a, b in zip(arrivals[1:7], arrivals[2:8], strict=True)]
    assert min(gaps) > 0.15, gaps


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_a_policy_ends_the_stream_with_a_finish_reason_saying_why(
    upstream: tuple[TinyOpenAIServer, ServerThread], path: str
) -> None:
    _, direct_thread = upstream
    sink = MemorySink()
    policy = StopWhen(lambda step: step.step >= 2, name="third_token", reason="three tokens are enough")
    proxy = ProxyApp(
        direct_thread.url,
        LogprobReporter(load_settings({}), outputs=Outputs(stores=[sink])),
        policies=[policy],
    )
    with ServerThread(proxy.app()) as thread:
        body = _body(path, stream=True, max_tokens=10)
        through = httpx.post(thread.url + path, json=body, timeout=60)
        direct = httpx.post(direct_thread.url + path, json=body, timeout=60)
        assert proxy.wait_idle(60)
    events = [e.removeprefix("data: ") for e in through.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "corevital:third_token"
    texts = [
        c["choices"][0].get("text", c["choices"][0].get("delta", {}).get("content")) for c in chunks[:-1]
    ]
    tokens = [t for t in texts if t]  # the chat stream's first chunk carries the role only
    full = [e.removeprefix("data: ") for e in direct.text.split("\n\n") if e]
    assert len(full) > len(events)  # the engine had more to say
    assert len(tokens) == 3
    (report,) = sink.reports
    assert report.generated.finish_reason == "stopped_by_callback" and report.generated.num_tokens == 3
    intervention = report.extensions.intervention
    assert intervention is not None
    assert (intervention.policy, intervention.step, intervention.reason) == (
        "third_token",
        2,
        "three tokens are enough",
    )


@pytest.mark.slow
def test_the_cli_serves_stores_and_stops_cleanly(
    upstream: tuple[TinyOpenAIServer, ServerThread], tmp_path: Path
) -> None:
    server, direct_thread = upstream
    proxy = ProxyProcess(direct_thread.url, tmp_path, vocab_size=server.vocab_size, timeout=60)
    try:
        response = httpx.post(
            proxy.url + CHAT,
            json=_body(CHAT, stream=True),
            headers={"Authorization": f"Bearer {SECRET}"},
            timeout=60,
        )
        assert response.status_code == 200
        direct = httpx.post(direct_thread.url + CHAT, json=_body(CHAT, stream=True), timeout=60)
        assert response.content == direct.content
    finally:
        output = proxy.stop()
    assert proxy.process.returncode == 0, output
    assert "1 report(s) written" in output
    assert SECRET not in output
    reports = stored_reports(tmp_path / "corevital.db")
    assert len(reports) == 1 and reports[0].capture is not None
    assert json.loads(reports[0].model_dump_json())["capture"]["source"] == "logprobs"
