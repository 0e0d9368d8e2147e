"""The Live page's "Try a prompt" in headless Chromium, against ``corevital serve --model default``.

One server for the module (loading the embedded SmolLM2 takes about 20 s on the test machine) on a
store it creates. The test types a prompt, watches the tokens stream in, presses Stop while the run
is far from its token budget, and checks the stored report: finish reason ``stopped_by_callback``,
the stop recorded as the dashboard's, and the streamed tokens equal to the stored ones. Every
request outside the server's origin is blocked and fails the test, as do console errors, CSP
violations and dialogs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import record_dialogs, record_errors, record_requests
from tests.support.served import ServerProcess, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

MAX_NEW_TOKENS = 600  # far more than the run gets before Stop
PROBE = "<img src=x onerror=alert(1)></script>"  # the prompt carries markup: it must show as text
SHOTS = Path("/tmp/dashboard-shots")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("live-store")
    started = time.monotonic()
    process = start_server(["--db", str(directory / "corevital.db"), "--model", "default"], directory)
    try:
        process.wait_ready(timeout_s=300)
        print(f"serve --model default answered after {time.monotonic() - started:.1f} s")
        yield process
    finally:
        process.stop()


@pytest.fixture
def watched_page(page: Any, live_server: ServerProcess) -> Iterator[Any]:
    outside = record_requests(page, allowed=(live_server.url + "/",))
    dialogs = record_dialogs(page)
    errors = record_errors(page)
    yield page
    assert outside == [], f"requests outside the server: {outside}"
    assert errors == [], f"console errors: {errors}"
    assert dialogs == [], f"dialogs opened: {dialogs}"


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_live_run_streams_and_stops(watched_page: Any, live_server: ServerProcess) -> None:
    page = watched_page
    info = httpx.get(f"{live_server.url}/api/live").json()
    assert info["enabled"] and info["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    page.goto(f"{live_server.url}/#/live")
    page.wait_for_function("() => document.body.dataset.ready === 'live'")
    assert "SmolLM2" in (page.locator("#live-form").locator("xpath=..").text_content() or "")
    page.fill("#live-prompt", f"Write a long story about a lighthouse keeper and the sea. {PROBE}")
    page.fill("#live-max", str(MAX_NEW_TOKENS))
    page.check("#live-ignore-eos")
    page.click("#live-start")
    page.wait_for_function(
        "() => document.querySelectorAll('#live-tokens .tok').length >= 4", timeout=120_000
    )
    # The status line follows the stream: a step, its entropy and the running risk.
    status = page.locator("#live-run-status").text_content() or ""
    assert "step" in status and "entropy" in status and "running risk" in status, status
    assert page.locator("#live-chart .uplot").count() == 1
    _shot(page, "live-streaming")

    page.click("#live-stop")
    page.wait_for_function(
        "() => document.querySelector('#live-run-status').dataset.finish !== undefined", timeout=120_000
    )
    assert page.locator("#live-run-status").get_attribute("data-finish") == "stopped_by_callback"
    assert page.locator("#live-start").is_enabled() and not page.locator("#live-stop").is_enabled()
    href = page.locator("#live-open-run").get_attribute("href") or ""
    trace_id = href.rsplit("/", 1)[-1]
    shown = page.locator("#live-tokens .tok").all_text_contents()
    _shot(page, "live-stopped")

    report = httpx.get(f"{live_server.url}/api/v1/runs/{trace_id}").json()
    assert report["generated"]["finish_reason"] == "stopped_by_callback"
    assert 4 <= report["generated"]["num_tokens"] < MAX_NEW_TOKENS
    intervention = report["extensions"]["intervention"]
    assert intervention["policy"] == "stop_button" and intervention["reason"] == "stopped from the dashboard"
    stored = [step["token"]["token_text"] for step in report["timeline"]]
    assert shown == stored  # what streamed is what was stored, token for token
    assert report["run_config"]["max_new_tokens"] == MAX_NEW_TOKENS

    # The run also landed in the "New runs" feed, and its page opens.
    page.locator(f"#live-rows a[href$='{trace_id}']").wait_for(timeout=15_000)
    assert PROBE in (page.locator("#live-rows .preview").first.text_content() or "")
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    page.click("#live-open-run")
    page.wait_for_function("() => document.body.dataset.ready === 'run'")
    facts = page.locator(".facts").text_content() or ""
    assert "stopped_by_callback" in facts
    print(json.dumps({"streamed_tokens": len(shown)}))


def test_a_page_opened_during_a_run_follows_it_and_can_stop_it(
    watched_page: Any, live_server: ServerProcess
) -> None:
    """One generation at a time: a second start answers 429; a Live page opened meanwhile shows the
    running run (its steps so far, then new ones) and its Stop button stops it."""
    page = watched_page
    base = live_server.url
    first = httpx.post(
        f"{base}/api/live/runs",
        json={"prompt": "Tell me about rivers.", "max_new_tokens": MAX_NEW_TOKENS, "ignore_eos": True},
    )
    assert first.status_code == 201, first.text
    run_id = first.json()["run_id"]
    busy = httpx.post(f"{base}/api/live/runs", json={"prompt": "And mountains?"})
    assert busy.status_code == 429 and "another live run" in busy.json()["detail"]
    info = httpx.get(f"{base}/api/live").json()
    assert info["busy"] is True and info["current"] == run_id

    page.goto(f"{base}/#/live")
    page.wait_for_function("() => document.body.dataset.ready === 'live'")
    page.wait_for_function(
        "id => document.querySelector('#live-form').dataset.runId === id"
        " && document.querySelectorAll('#live-tokens .tok').length >= 2",
        arg=run_id,
        timeout=120_000,
    )
    assert page.locator("#live-stop").is_enabled() and not page.locator("#live-start").is_enabled()
    page.click("#live-stop")
    page.wait_for_function(
        "() => document.querySelector('#live-run-status').dataset.finish !== undefined", timeout=120_000
    )
    assert page.locator("#live-run-status").get_attribute("data-finish") == "stopped_by_callback"
    info = httpx.get(f"{base}/api/live").json()
    assert info["busy"] is False and info["current"] is None
