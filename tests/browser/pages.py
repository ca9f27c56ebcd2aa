"""What the browser tests do on a page: log in, draw strokes, wait for results, read pixels."""

from __future__ import annotations

import hashlib
import os

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.conftest import ROOT
from tests.gateway.stack import GatewayStack

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
PASSWORD = "pw-frida-12345"
APPS = "local/stylize,local/echo,fal-ai/fast-lcm-diffusion,test/steps=echo?delay_ms=1200&steps=3"
TOKEN_LIFETIME = 4  # seconds: tokens expire and are refreshed many times during the tests

needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")


class ConsoleLog:
    def __init__(self, page: Page):
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


def logged_in(browser: Browser, stack: GatewayStack, width: int = 1280, height: int = 900) -> tuple[Page, ConsoleLog]:
    page = browser.new_page(viewport={"width": width, "height": height})
    console = ConsoleLog(page)
    page.goto(f"{stack.http}/")
    expect(page).to_have_url(f"{stack.http}/accounts/login/?next=/")
    page.fill("#id_username", "frida")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("status")).to_have_text("ready", timeout=20_000)  # it connects at the first stroke
    return page, console


def stroke(page: Page, points: list[tuple[float, float]]) -> None:
    """Drag the mouse through points given as fractions of the canvas."""
    box = page.get_by_test_id("draw-canvas").bounding_box()
    assert box is not None
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=6)
    page.mouse.up()


def result_id(page: Page) -> int:
    return int(page.get_by_test_id("result-image").get_attribute("data-request-id") or 0)


def next_result(page: Page, after: int, timeout: float = 20_000) -> int:
    page.wait_for_function(
        "after => Number(document.querySelector('[data-testid=result-image]').dataset.requestId || 0) > after",
        arg=after,
        timeout=timeout,
    )
    page.wait_for_timeout(400)  # let the trailing frame of the action arrive too
    return result_id(page)


def settled_result(page: Page, after: int, timeout: float = 20_000) -> int:
    """The result shown once every change has been sent and answered, newer than ``after``."""
    page.wait_for_function(
        """after => window.realtimePage.settled()
            && Number(document.querySelector('[data-testid=result-image]').dataset.requestId || 0) > after""",
        arg=after,
        timeout=timeout,
    )
    return result_id(page)


def result_digest(page: Page) -> str:
    data = page.evaluate(
        """async () => {
            const img = document.querySelector('[data-testid=result-image]');
            const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
            return Array.from(bytes.slice(0, 4000)).join(',') + ':' + bytes.length;
        }"""
    )
    return hashlib.sha256(data.encode()).hexdigest()


def canvas_digest(page: Page) -> str:
    return hashlib.sha256(page.get_by_test_id("draw-canvas").evaluate("c => c.toDataURL()").encode()).hexdigest()


def pixel(page: Page, fx: float, fy: float) -> list[int]:
    return page.get_by_test_id("draw-canvas").evaluate(
        "(c, [fx, fy]) => Array.from(c.getContext('2d').getImageData(fx * c.width, fy * c.height, 1, 1).data)",
        [fx, fy],
    )
