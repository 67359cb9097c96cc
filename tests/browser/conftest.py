"""Real-browser fixtures: Debian's Chromium driven by Playwright (no browser download).

CI must really run these tests: without /usr/bin/chromium they fail, unless BROWSER_TESTS=0
says explicitly that this run skips them. `.ci/run` installs Chromium before `make test`.
A screenshot of the page is saved to test-artifacts/browser/ when a browser test fails.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "browser"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    # Lets fixtures see, at teardown, whether the test itself failed.
    setattr(item, f"rep_{report.when}", report)
    return report


def _require_chromium() -> str:
    if os.environ.get("BROWSER_TESTS") == "0":
        pytest.skip("BROWSER_TESTS=0: real-browser tests skipped on request")
    path = shutil.which(CHROMIUM)
    if path is None:
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it (apt-get install chromium; "
            ".ci/run does) or set BROWSER_TESTS=0 to skip the real-browser tests explicitly.",
            pytrace=False,
        )
    return path


@pytest.fixture
def browser_page(request, monkeypatch):
    """A fresh Chromium page; on failure its screenshot goes to test-artifacts/browser/."""
    executable = _require_chromium()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop set on this thread; the test's own ORM
    # calls between browser steps are synchronous code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        page = context.new_page()
        try:
            yield page
        finally:
            report = getattr(request.node, "rep_call", None)
            if report is None or report.failed:
                name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
                try:
                    page.screenshot(path=str(ARTIFACTS / f"FAILED-{name}.png"), full_page=True)
                except Exception as exc:  # the browser may be what broke
                    print(f"could not save a failure screenshot: {exc}")
            context.close()
            browser.close()
            # The test's ORM calls ran beside Playwright's event loop, on a connection of
            # their own (Django keeps connections per context): close it here, or it would
            # still be open when the test database is dropped.
            connections.close_all()
