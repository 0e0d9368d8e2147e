"""The HTML report of a real 30-layer × 200-step run in headless Chromium, opened from file://.

The run is a tiny random-weight Llama with 30 layers (real architecture, CPU) generating 200
tokens past EOS. The page must make no request at all beyond its own file, draw its charts, and
open no dialog although the prompt and a token carry markup and script.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from corevital.report.schema import Report
from corevital.views.html_report import render_html
from tests.support.browser import record_dialogs, record_requests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

LAYERS, STEPS = 30, 200
PROBE = "<img src=x onerror=alert(1)></script><script>alert(2)</script>\x1b[31m"
PROMPT = f"The quick brown fox {PROBE} jumps over the lazy dog. Why is the sky blue?"
SHOT = Path("/tmp/corevital-html-report.png")


@pytest.fixture(scope="module")
def long_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    import torch

    from corevital import CoreVitalMonitor
    from tests.support.tiny_models import save_tiny_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # initializer_range 0.3: peaked enough attention that the heat maps and lines vary.
        model_dir = save_tiny_model(
            "llama",
            tmp_path_factory.mktemp("llama30"),
            seed=0,
            num_hidden_layers=LAYERS,
            initializer_range=0.3,
        )
        monitor = CoreVitalMonitor(
            str(model_dir),
            device="cpu",
            max_new_tokens=STEPS,
            ignore_eos=True,
            chat_template="off",
            temperature=0.9,
            seed=3,
        )
        report = monitor.run(prompt=PROMPT)
    finally:
        torch.set_num_threads(threads)
    assert len(report.timeline) == STEPS
    assert all(len(step.layers) == LAYERS for step in report.timeline)
    # The random model cannot be made to write markup: put the probe into one token as well.
    report.timeline[5].token.token_text = PROBE
    report.generated.output_text += PROBE
    return report


@pytest.fixture(scope="module")
def report_file(long_report: Report, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(render_html(long_report), encoding="utf-8")
    return path


def test_html_report_in_headless_chromium(report_file: Path, page: Any, tmp_path: Path) -> None:
    path = report_file
    size = path.stat().st_size
    assert size < 5_000_000, f"{size} bytes"

    external = record_requests(page, allowed=("file://",))
    dialogs = record_dialogs(page)
    page.goto(path.as_uri(), wait_until="load")

    assert external == []
    assert dialogs == []
    assert page.locator("script").count() == 0 and page.locator("img").count() == 0
    assert page.title().startswith("CoreVital report")

    line_charts = page.locator("svg.line-chart")
    assert line_charts.count() == 4
    for i in range(4):
        chart = line_charts.nth(i)
        _assert_drawn(chart)
        _assert_drawn(chart.locator("path.line"))

    heat_maps = page.locator("svg.heatmap")
    assert heat_maps.count() == 3
    for i in range(3):
        cells = heat_maps.nth(i).locator("svg.cells")
        assert cells.get_attribute("data-cells") == str(LAYERS * STEPS)
        assert cells.locator("path").count() > 0
        _assert_drawn(cells)
        cells.scroll_into_view_if_needed()
        box = cells.bounding_box()  # viewport coordinates
        assert box is not None
        # The centre of the map is a drawn cell (or the row overlay that sits on it).
        hit = page.evaluate(
            "([x, y]) => { const e = document.elementFromPoint(x, y);"
            " return e ? e.closest('svg.cells') !== null : false; }",
            [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
        )
        assert hit

    tokens = page.locator(".tokens .tok")
    assert tokens.count() == STEPS
    prompt_text = page.locator("#prompt pre.text").inner_text()
    assert "<img src=x onerror=alert(1)>" in prompt_text and "\\x1b[31m" in prompt_text
    assert "</script><script>alert(2)</script>" in page.locator(".tokens").inner_text()

    page.evaluate("window.scrollTo(0, 0)")
    viewport_shot = tmp_path / "report-1280x800.png"
    full_shot = tmp_path / "report-full.png"
    page.screenshot(path=str(viewport_shot))
    page.screenshot(path=str(full_shot), full_page=True)
    assert viewport_shot.stat().st_size > 10_000 and full_shot.stat().st_size > 50_000
    shutil.copyfile(full_shot, SHOT)
    shutil.copyfile(viewport_shot, SHOT.with_name("corevital-html-report-1280x800.png"))
    assert external == [] and dialogs == []


def _assert_drawn(locator: Any) -> None:
    box = locator.bounding_box()
    assert box is not None and box["width"] > 10 and box["height"] > 10, box


def test_charts_need_no_javascript(report_file: Path, browser: Any) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        external = record_requests(page)
        page.goto(report_file.as_uri(), wait_until="load")
        assert page.locator("svg.line-chart").count() == 4 and page.locator("svg.heatmap").count() == 3
        _assert_drawn(page.locator("svg.heatmap svg.cells").first)
        assert external == []
    finally:
        context.close()
