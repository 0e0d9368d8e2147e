"""Browser helpers for the e2e tests: which requests a page makes, which dialogs it opens, and which
errors it shows (console, page and Content-Security-Policy); :class:`Watched`, a dashboard page
under watch for all three, with its screenshots."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SHOTS", "Watched", "record_dialogs", "record_errors", "record_requests"]

SHOTS = Path("/tmp/dashboard-shots")  # every screenshot, by page name, for looking at


def record_requests(page: Any, allowed: Sequence[str] = ("file://",)) -> list[str]:
    """Every request of ``page`` whose URL starts with none of ``allowed``, recorded and aborted.

    Returns the live list. The page's context routes every request, so a forbidden one never
    leaves the browser; the request listener also sees what routing cannot (``data:`` aside).
    """
    blocked: list[str] = []

    def allowed_url(url: str) -> bool:
        return url.startswith(tuple(allowed)) or url.startswith("data:")

    def on_route(route: Any) -> None:
        url = route.request.url
        if allowed_url(url):
            route.continue_()
            return
        blocked.append(url)
        route.abort()

    def on_request(request: Any) -> None:
        if not allowed_url(request.url) and request.url not in blocked:
            blocked.append(request.url)

    page.context.route("**/*", on_route)
    page.on("request", on_request)
    return blocked


def record_dialogs(page: Any) -> list[str]:
    """Messages of every dialog (alert, confirm, prompt) ``page`` opens, each dismissed at once."""
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return dialogs


def record_errors(page: Any) -> list[str]:
    """Every console error, uncaught page error and Content-Security-Policy violation (an inline
    style or script, another origin) of ``page``, as one line each; returns the live list."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.expose_function("__cspViolation", lambda text: errors.append(f"CSP violation: {text}"))
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e =>"
        " window.__cspViolation(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`))"
    )
    return errors


@dataclass
class Watched:
    """What a page did that it must not: requests elsewhere, console errors, dialogs."""

    page: Any
    base: str
    shots: Path
    outside: list[str]
    errors: list[str]
    dialogs: list[str]

    def goto(self, route: str, ready: str) -> None:
        self.page.goto(f"{self.base}/{route}")
        self.wait_ready(ready)

    def wait_ready(self, ready: str) -> None:
        self.page.wait_for_function("p => document.body.dataset.ready === p", arg=ready)

    def shot(self, name: str) -> None:
        path = self.shots / f"corevital-dashboard-{name}.png"
        self.page.screenshot(path=str(path))
        shutil.copyfile(path, Path("/tmp") / path.name)
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SHOTS / f"{name}.png")

    def assert_clean(self) -> None:
        assert self.outside == [], f"requests outside the server: {self.outside}"
        assert self.errors == [], f"console errors: {self.errors}"
        assert self.dialogs == [], f"dialogs opened: {self.dialogs}"
