"""The dashboard's live runs over HTTP (``/api/live``), in process, with a real tiny model.

The application is built as ``corevital serve --model`` builds it: :class:`PipelineGenerator` (the
pipeline and the live step callback over a tiny random Llama) injected into ``create_app``, writing
to a SQLite store that the application reads read-only. Checked: the routes off without a model
(404 with a JSON error), the request checks (JSON only, this origin only, bounds), one run at a
time (429), the event stream (one ``step`` per token, then ``final``; resumable), Stop (finish
reason ``stopped_by_callback``), the stored report agreeing with the stream, and the bearer token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corevital.cli.live_runner import STOP_POLICY, PipelineGenerator
from corevital.server.app import create_app
from corevital.server.config import ServeConfig
from corevital.server.live import MAX_NEW_TOKENS, MAX_PROMPT_CHARS
from corevital.sinks.sqlite import SQLiteStore

TOKEN = "live-runs-test-token-0123456789"
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def generator(
    tiny_model_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PipelineGenerator]:
    db = tmp_path_factory.mktemp("live") / "corevital.db"
    live = PipelineGenerator(str(tiny_model_dir("llama")), str(db))
    live.settings = live.settings.model_copy(update={"device": "cpu", "chat_template": "off"})
    live.open_store()
    live.load()
    try:
        yield live
    finally:
        live.close()


def _client(generator: PipelineGenerator | None, db: Path, **config: Any) -> TestClient:
    store = SQLiteStore(db, read_only=True)
    app = create_app(store, ServeConfig(store_label="corevital.db", **config), live=generator)
    return TestClient(app, raise_server_exceptions=False)


def _db(generator: PipelineGenerator) -> Path:
    return Path(str(generator.settings.db))


def _events(
    client: TestClient, run_id: str, after: int | None = None
) -> list[tuple[int, str, dict[str, Any]]]:
    """Every event of a run's stream until it ends: (id, kind, data)."""
    params = {} if after is None else {"after": after}
    events: list[tuple[int, str, dict[str, Any]]] = []
    with client.stream("GET", f"/api/live/runs/{run_id}/events", params=params) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        kind, seq = "", 0
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("id: "):
                seq = int(line.removeprefix("id: "))
            elif line.startswith("data: "):
                events.append((seq, kind, json.loads(line.removeprefix("data: "))))
    return events


def test_live_routes_are_off_without_a_model(tmp_path: Path) -> None:
    db = tmp_path / "corevital.db"
    SQLiteStore(db).close()
    with _client(None, db) as client:
        info = client.get("/api/live").json()
        assert info["enabled"] is False and info["model"] is None
        for method, path in (
            ("POST", "/api/live/runs"),
            ("GET", "/api/live/runs/abc/events"),
            ("POST", "/api/live/runs/abc/stop"),
        ):
            response = client.request(method, path, json={"prompt": PROMPT})
            assert response.status_code == 404, (path, response.text)
            assert "--model" in response.json()["detail"]


def test_requests_are_checked(generator: PipelineGenerator) -> None:
    with _client(generator, _db(generator)) as client:
        url = "/api/live/runs"
        as_text = client.post(
            url, content=json.dumps({"prompt": PROMPT}), headers={"content-type": "text/plain"}
        )
        assert as_text.status_code == 415
        other = client.post(url, json={"prompt": PROMPT}, headers={"origin": "https://elsewhere.example"})
        assert other.status_code == 403
        assert (
            client.post(url, content=b"{not json", headers={"content-type": "application/json"}).status_code
            == 400
        )
        for body in (
            {"prompt": ""},
            {"prompt": "x" * (MAX_PROMPT_CHARS + 1)},
            {"prompt": PROMPT, "max_new_tokens": 0},
            {"prompt": PROMPT, "max_new_tokens": MAX_NEW_TOKENS + 1},
            {"prompt": PROMPT, "temperature": -0.1},
            {"prompt": PROMPT, "temperature": 2.5},
            {"prompt": PROMPT, "model": "another"},
        ):
            response = client.post(url, json=body)
            assert response.status_code == 422, (body, response.text)
            assert isinstance(response.json()["detail"], str)
        assert client.get("/api/live/runs/0123abcd/events").status_code == 404
        assert client.post("/api/live/runs/0123abcd/stop", json={}).status_code == 404
        assert client.get("/api/live").json()["busy"] is False


def test_a_run_streams_its_steps_and_is_stored(generator: PipelineGenerator) -> None:
    with _client(generator, _db(generator)) as client:
        started = client.post(
            "/api/live/runs",
            json={"prompt": PROMPT, "max_new_tokens": 6, "temperature": 0, "ignore_eos": True},
            headers={"origin": str(client.base_url)},
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        events = _events(client, run_id)
        kinds = [kind for _, kind, _ in events]
        assert kinds == ["step"] * 6 + ["final"]
        assert [seq for seq, _, _ in events] == list(range(1, 8))
        steps = [data for _, kind, data in events if kind == "step"]
        assert [step["step_index"] for step in steps] == list(range(6))
        assert all(0.0 <= step["running_risk"] <= 1.0 for step in steps)
        final = events[-1][2]
        assert final["finish_reason"] == "length" and final["generated_tokens"] == 6

        # The stored report is the streamed run: same tokens, same per-step entropies.
        report = client.get(f"/api/v1/runs/{final['trace_id']}").json()
        timeline = report["timeline"]
        assert [s["token"]["token_id"] for s in timeline] == [step["token_id"] for step in steps]
        assert [s["logits_summary"]["entropy"] for s in timeline] == [step["entropy"] for step in steps]
        assert report["prompt"]["text"] == PROMPT

        # A client that reconnects resumes after the last event it saw.
        resumed = _events(client, run_id, after=4)
        assert [seq for seq, _, _ in resumed] == [5, 6, 7]


def test_one_run_at_a_time_and_stop(generator: PipelineGenerator) -> None:
    with _client(generator, _db(generator)) as client:
        long = 400  # the tiny model's context is 512 tokens
        body = {"prompt": PROMPT, "max_new_tokens": long, "ignore_eos": True}
        run_id = client.post("/api/live/runs", json=body).json()["run_id"]
        busy = client.post("/api/live/runs", json=body)
        assert busy.status_code == 429 and busy.headers["retry-after"] == "2"
        info = client.get("/api/live").json()
        assert info["busy"] is True and info["current"] == run_id
        with client.stream("GET", f"/api/live/runs/{run_id}/events") as response:
            for line in response.iter_lines():
                if line == "event: step":
                    break  # it is generating
        stopped = client.post(f"/api/live/runs/{run_id}/stop", json={})
        assert stopped.status_code == 202 and stopped.json()["stopping"] is True
        events = _events(client, run_id)
        final = events[-1]
        assert final[1] == "final" and final[2]["finish_reason"] == "stopped_by_callback"
        assert final[2]["stop_policy"] == STOP_POLICY
        assert 1 <= final[2]["generated_tokens"] < long
        report = client.get(f"/api/v1/runs/{final[2]['trace_id']}").json()
        assert report["extensions"]["intervention"]["policy"] == STOP_POLICY
        assert client.get("/api/live").json()["busy"] is False
        assert client.post(f"/api/live/runs/{run_id}/stop", json={}).json()["stopping"] is False
        # Free again: the next run starts.
        again = client.post("/api/live/runs", json={"prompt": PROMPT, "max_new_tokens": 2})
        assert again.status_code == 201
        assert _events(client, again.json()["run_id"])[-1][1] == "final"


def test_a_failed_run_says_why_and_frees_the_generator(generator: PipelineGenerator) -> None:
    with _client(generator, _db(generator)) as client:
        body = {"prompt": PROMPT, "max_new_tokens": MAX_NEW_TOKENS}  # beyond the tiny model's context
        run_id = client.post("/api/live/runs", json=body).json()["run_id"]
        events = _events(client, run_id)
        assert [kind for _, kind, _ in events] == ["error"]
        assert "context window" in events[0][2]["detail"]
        assert client.get("/api/live").json()["busy"] is False


def test_live_routes_need_the_token_and_the_page_does_not(generator: PipelineGenerator) -> None:
    with _client(generator, _db(generator), token=TOKEN) as client:
        assert client.get("/api/live").status_code == 401
        assert client.post("/api/live/runs", json={"prompt": PROMPT}).status_code == 401
        assert client.get("/api/live/runs/abc/events").status_code == 401
        # The page and its files hold no data: they load without the token, and ask for it.
        assert client.get("/").status_code == 200
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/static/missing.js").status_code == 404
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/live", headers=auth).json()["enabled"] is True
