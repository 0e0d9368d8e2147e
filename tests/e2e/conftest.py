"""Headless Chromium for the e2e tests: Debian's /usr/bin/chromium driven by Playwright.

Playwright's own browsers are never downloaded: the browser is launched with ``executable_path``.
Without Chromium or Playwright a test is skipped with the reason (failed in CI, ``CI=true``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.components import CHROMIUM, require, require_module

VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    return require(CHROMIUM)


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Any]:
    """One headless Chromium per test module (``--no-sandbox``: the tests may run as root).

    Module scope: Playwright's sync API keeps an asyncio loop running on the main thread while its
    browser lives, which would make later tests that call ``asyncio.run`` fail.
    """
    sync_api = require_module("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (own context, 1280×800, service workers blocked), closed after the test."""
    context = browser.new_context(viewport=VIEWPORT, service_workers="block")
    try:
        yield context.new_page()
    finally:
        context.close()
