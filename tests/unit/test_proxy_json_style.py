"""The proxy re-serialises a response it stripped of the added logprobs in the engine's own JSON style.

Each style is produced here by the serialiser the engine uses (compact: FastAPI, vLLM, SGLang;
indented by 2: OpenAI's API; Python's default separators: llama-cpp-python's streamed events), so a
document without logprobs round-trips to exactly the engine's bytes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from corevital.proxy.bodies import dumps_like, strip_logprobs

DOCUMENT: dict[str, Any] = {
    "id": "cmpl-1",
    "object": "text_completion",
    "choices": [{"index": 0, "text": " Paris, café", "logprobs": None, "finish_reason": None}],
}
STYLES: dict[str, dict[str, Any]] = {
    "compact, UTF-8 (FastAPI)": dict(separators=(",", ":"), ensure_ascii=False),
    "compact, escaped": dict(separators=(",", ":"), ensure_ascii=True),
    "indented by 2 (OpenAI)": dict(indent=2, ensure_ascii=True),
    "Python's default (llama-cpp-python streams)": dict(ensure_ascii=True),
    "Python's separators, UTF-8": dict(ensure_ascii=False),
}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_a_stripped_document_is_written_as_the_engine_writes_it(style: str) -> None:
    options = STYLES[style]
    without = json.dumps(DOCUMENT, **options).encode("utf-8")  # what the client would have received
    asked = json.loads(without)
    asked["choices"][0]["logprobs"] = {
        "tokens": [" Paris"],
        "token_logprobs": [-0.1],
        "top_logprobs": [{" Paris": -0.1}],
    }
    sent = json.dumps(asked, **options).encode("utf-8")  # what the engine sent the proxy
    document = json.loads(sent)
    assert strip_logprobs(document)
    assert dumps_like(document, sent) == without
