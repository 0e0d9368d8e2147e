"""The examples in docs/ run as documented (on a tiny model instead of the default one)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from corevital import CoreVitalMonitor

DOCS = Path(__file__).resolve().parents[2] / "docs"

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DOCS / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def client(tiny_model_dir: Callable[[str], Path]) -> TestClient:
    example = load_example("fastapi_app")
    monitor = CoreVitalMonitor(
        str(tiny_model_dir("llama")), device="cpu", chat_template="off", capture="summary"
    )
    return TestClient(example.create_app(monitor))


def test_generate_endpoint_returns_text_with_health(client: TestClient) -> None:
    response = client.post("/generate", json={"prompt": "The quick brown fox", "max_new_tokens": 6})
    assert response.status_code == 200
    body = response.json()
    assert body["text"] and 0.0 <= body["risk_score"] <= 1.0
    assert body["health_flags"]["nan_detected"] is False and body["narrative"]


def test_stream_endpoint_forwards_live_events(client: TestClient) -> None:
    with client.stream(
        "POST", "/generate/stream", json={"prompt": "The quick brown fox", "max_new_tokens": 6}
    ) as r:
        text = "".join(r.iter_text())
    blocks = [b for b in text.split("\n\n") if b.strip()]
    kinds = [b.splitlines()[0].removeprefix("event: ") for b in blocks]
    payloads = [json.loads(b.splitlines()[1].removeprefix("data: ")) for b in blocks]
    assert kinds == ["step"] * 6 + ["final"]
    assert [p["step_index"] for p in payloads[:-1]] == list(range(6))
    assert payloads[-1]["summary"]["generated_tokens"] == 6


def test_rejects_an_empty_prompt(client: TestClient) -> None:
    assert client.post("/generate", json={"prompt": ""}).status_code == 422
