"""Headless Debian Chromium through Playwright, for the viewer's tests and benchmark (private).

``playwright install`` cannot download browsers on these machines: the tests drive the system
Chromium (Debian's package ``chromium``) with the flags below.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("SPARSECIRCUITS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def available() -> str | None:
    """None when the browser can be driven, else why not."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (the dev extra)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@contextmanager
def browser() -> Iterator[Any]:
    """A Playwright browser on the system Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def offline_page(b: Any, *, width: int = 1500, height: int = 1000) -> tuple[Any, dict]:
    """A new page whose every network request is aborted and recorded, with its console errors,
    page errors and failed requests collected in the returned dict."""
    context = b.new_context(viewport={"width": width, "height": height})
    log: dict[str, list[str]] = {"requests": [], "errors": [], "failed": []}

    def block(route: Any) -> None:
        log["requests"].append(route.request.url)
        route.abort()

    context.route(lambda url: not url.startswith(("file:", "data:", "blob:")), block)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and log["errors"].append(m.text))
    page.on("pageerror", lambda e: log["errors"].append(str(e)))
    page.on("requestfailed", lambda r: log["failed"].append(r.url))
    return page, log
