"""``corevital proxy`` in front of a real engine: llama-cpp-python's OpenAI-compatible server running
the default model (SmolLM2-135M-Instruct, Q4_1 GGUF), started here on 127.0.0.1.

Each request is sent twice, to the server directly and through the proxy (greedy, seed 0): what the
client receives is byte for byte the same apart from the two fields the server makes new for every
response (``id``, ``created``); each proxied response is stored as a report of the logprobs tier
whose tokens are the ones the server chose. Upstream errors reach the client as the server wrote
them. The 100-request acceptance run is ``bench/proxy_engine.py``.

Needs llama-cpp-python with its server (``make test-engines``); skipped, saying so, without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corevital.capture.openai_api import parse_choices
from corevital.config import load_settings
from tests.support.llama_server import LlamaServer, require_llama_cpp
from tests.support.openai_upstream import ServerThread
from tests.support.proxy_process import CHAT, COMPLETIONS, same_apart_from_fresh_fields, stored_reports

pytestmark = [pytest.mark.slow, pytest.mark.model]


def _body(path: str, *, stream: bool, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = (
        {"messages": [{"role": "user", "content": "Name three colours."}]}
        if path == CHAT
        else {"prompt": "The capital of France is"}
    )
    return {**base, "max_tokens": 10, "temperature": 0.0, "seed": 0, "stream": stream, **extra}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LlamaServer, Any, ServerThread, Path]]:
    require_llama_cpp(server=True)
    from corevital.capture.default_model import locate_default_model
    from corevital.exporters.base import open_outputs
    from corevital.proxy.reports import LogprobReporter
    from corevital.proxy.server import ProxyApp

    out = tmp_path_factory.mktemp("engine")
    settings = load_settings({"sink": ["sqlite"], "out": str(out)})
    reporter = LogprobReporter(settings, outputs=open_outputs(settings), vocab_size=49152)
    with LlamaServer(locate_default_model().path, n_ctx=512) as server:
        proxy = ProxyApp(server.url, reporter)
        with ServerThread(proxy.app()) as thread:
            yield server, proxy, thread, out / "corevital.db"


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("stream", [False, True])
def test_through_the_proxy_the_client_gets_what_the_engine_sends(
    engine: tuple[LlamaServer, Any, ServerThread, Path], path: str, stream: bool
) -> None:
    server, proxy, thread, db = engine
    before = {r.trace_id for r in stored_reports(db)} if db.exists() else set()
    body = _body(path, stream=stream)
    direct = httpx.post(server.url + path, json=body, timeout=120)
    through = httpx.post(thread.url + path, json=body, timeout=120)
    assert direct.status_code == through.status_code == 200
    assert same_apart_from_fresh_fields(through.content) == same_apart_from_fresh_fields(direct.content)
    assert direct.headers["content-type"] == through.headers["content-type"]
    assert proxy.wait_idle(60)
    (report,) = [r for r in stored_reports(db) if r.trace_id not in before]
    assert report.capture is not None and report.capture.source == "logprobs"
    # 20 asked; completions list alternatives keyed by text (equal texts collapse) plus the chosen token
    assert report.capture.top_logprobs is not None and 15 <= report.capture.top_logprobs <= 21
    # the report's tokens are the server's: asked again with logprobs, it names the same tokens
    asked = httpx.post(
        server.url + path,
        json=_body(
            path, stream=False, **({"logprobs": True, "top_logprobs": 1} if path == CHAT else {"logprobs": 1})
        ),
        timeout=120,
    ).json()
    (choice,) = parse_choices(asked)
    texts = [report.timeline[i].token.token_text for i in range(len(report.timeline))]
    assert texts == [t.token for t in choice.tokens]
    assert report.generated.output_text == choice.text
    for step in report.timeline:
        lg = step.logits_summary
        lower, upper = lg.entropy_lower, lg.entropy_upper
        assert lg.entropy is not None and lower is not None and upper is not None
        assert lower <= lg.entropy <= upper and lg.entropy == pytest.approx((lower + upper) / 2, abs=1e-4)


def test_an_upstream_error_reaches_the_client_as_the_engine_wrote_it(
    engine: tuple[LlamaServer, Any, ServerThread, Path],
) -> None:
    server, proxy, thread, _ = engine
    failures = proxy.stats.failures
    for body in ({"messages": "not a list"}, {"prompt": "x", "max_tokens": "many"}, [1, 2]):
        path = CHAT if isinstance(body, dict) and "messages" in body else COMPLETIONS
        direct = httpx.post(server.url + path, content=json.dumps(body), timeout=60)
        through = httpx.post(thread.url + path, content=json.dumps(body), timeout=60)
        assert direct.status_code >= 400
        assert (through.status_code, through.content) == (direct.status_code, direct.content)
    assert proxy.stats.failures == failures  # nothing of CoreVital's failed
