"""The tracking page in a real browser (Debian's Chromium, driven by Playwright)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Edge, Origin
from tests.edge.test_pages import POSTCODE, unlockable, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the browser tests: /usr/bin/chromium is missing (.ci/run installs it)")
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium); CI runs this test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.browser
def test_a_shopper_unlocks_the_page_on_a_phone_without_javascript(
    origin: Origin, start_edge: Callable[..., Edge], browser: object, tmp_path: Path
) -> None:
    tn = unlockable(origin, tn="WPBROWSER001", order_id="o-browser")
    edge = start_edge(origin.url, returns_url="https://shop.example/returns")
    wait_for(edge, tn)
    context = browser.new_context(  # type: ignore[attr-defined]
        java_script_enabled=False, viewport={"width": 390, "height": 844}, locale="de-DE"
    )
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.goto(f"{edge.url}/track/{tn}")
    assert page.locator("html").get_attribute("lang") == "de"
    assert page.locator("h1").inner_text() == "Versandetikett erstellt"
    assert page.locator("main").is_visible() and page.locator("footer[role=contentinfo]").count() == 1
    page.get_by_label("Postleitzahl").fill(POSTCODE)
    page.get_by_role("button", name="Details anzeigen").click()
    page.wait_for_url(f"{edge.url}/track/{tn}?lang=de")
    assert page.get_by_role("heading", name="Ihre Bestellung").is_visible()
    assert origin.world.products[1].name in page.locator("main").inner_text()
    assert page.get_by_role("link", name="Rücksendung und Umtausch").get_attribute("href") == (
        "https://shop.example/returns"
    )
    # Readable on a phone: nothing is wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "track-de.png"), full_page=True)
    assert problems == [], f"the browser complained (CSP or markup): {problems}"
    context.close()
