"""The drawing page as a newcomer meets it, in a real browser against a real stack: the canvas and the
result fit a laptop window side by side; the style chips come from what the runner reports and the
inputs an app ignores are greyed out; nothing is painted before the first stroke; and axe-core (from
npm) finds no accessibility violation on the login page or the drawing page."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.pages import ARTIFACTS, logged_in, needs_chromium, next_result, stroke
from tests.conftest import ROOT
from tests.gateway.stack import GatewayStack

pytestmark = needs_chromium

AXE = ROOT / "frontend" / "node_modules" / "axe-core" / "axe.min.js"
STYLE_COUNT = 26  # local/stylize's styles (realtime_site/runner/engines/styles.py)


def box(page: Page, selector: str) -> dict[str, float]:
    found = page.locator(selector).bounding_box()
    assert found is not None, f"{selector} is not displayed"
    return found


def fully_in_view(page: Page, selector: str) -> None:
    viewport = page.viewport_size
    assert viewport is not None
    b = box(page, selector)
    assert b["x"] >= 0 and b["y"] >= 0, (selector, b)
    assert b["x"] + b["width"] <= viewport["width"] and b["y"] + b["height"] <= viewport["height"], (selector, b)


@pytest.mark.parametrize("width, height", [(1366, 768), (1440, 800), (1920, 1080)])
def test_a_laptop_window_shows_canvas_and_result_side_by_side_without_scrolling(
    browser: Browser, stack: GatewayStack, width: int, height: int
) -> None:
    page, console = logged_in(browser, stack, width=width, height=height)
    stroke(page, [(0.2, 0.2), (0.8, 0.8)])
    next_result(page, 0)
    for selector in ["[data-testid=draw-canvas]", "#result-frame", "[role=toolbar]", "#app-select", "#size", "#status"]:
        fully_in_view(page, selector)
    canvas, result = box(page, "[data-testid=draw-canvas]"), box(page, "#result-frame")
    assert result["x"] >= canvas["x"] + canvas["width"]  # beside it, not below
    assert abs(result["y"] - canvas["y"]) <= 2 and abs(result["width"] - canvas["width"]) <= 4
    assert canvas["width"] >= 480  # a canvas to draw on, not a thumbnail
    assert page.evaluate("document.documentElement.scrollHeight <= window.innerHeight")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    if (width, height) == (1366, 768):
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "drawing-1366x768.png"))
    assert console.errors == []
    page.close()


def test_a_phone_gets_one_column_with_the_canvas_first(browser: Browser, stack: GatewayStack) -> None:
    page, console = logged_in(browser, stack, width=375, height=812)
    canvas, result = box(page, "[data-testid=draw-canvas]"), box(page, "#result-frame")
    controls = box(page, ".controls")
    assert canvas["width"] >= 320 and result["y"] >= canvas["y"] + canvas["height"]
    assert controls["y"] >= result["y"] + result["height"]
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert console.errors == []
    page.close()


def test_nothing_is_painted_before_the_first_stroke(browser: Browser, stack: GatewayStack) -> None:
    page, console = logged_in(browser, stack)
    expect(page.get_by_test_id("invitation")).to_be_visible()
    expect(page.get_by_test_id("invitation")).to_contain_text("Draw on the canvas")
    page.get_by_test_id("prompt-input").fill("frost")  # a parameter alone sends nothing either
    page.wait_for_timeout(1500)
    expect(page.get_by_test_id("result-image")).to_be_hidden()
    expect(page.get_by_test_id("status")).to_have_text("ready")
    assert page.evaluate("window.realtimePage.inFlight.size") == 0
    stroke(page, [(0.3, 0.3), (0.7, 0.6)])
    first = next_result(page, 0)
    assert first >= 1 and page.get_by_test_id("result-image").is_visible()
    expect(page.get_by_test_id("invitation")).to_be_hidden()
    expect(page.get_by_test_id("status")).to_have_text("connected")
    assert console.errors == []
    page.close()


def test_style_chips_come_from_the_runner_and_edit_the_prompt(browser: Browser, stack: GatewayStack) -> None:
    page, console = logged_in(browser, stack)
    chips = page.get_by_test_id("style-chips").get_by_role("button")
    expect(chips).to_have_count(STYLE_COUNT)
    health = json.loads(page.locator("#app-info").text_content() or "[]")
    stylize = next(app for app in health if app["id"] == "local/stylize")
    assert chips.all_inner_texts() == stylize["vocabulary"]
    prompt = page.get_by_test_id("prompt-input")
    prompt.fill("a harbour")
    stroke(page, [(0.2, 0.5), (0.8, 0.5)])
    shown = next_result(page, 0)
    neon = page.get_by_test_id("style-chips").get_by_role("button", name="neon", exact=True)
    expect(neon).to_have_attribute("aria-pressed", "false")
    neon.click()
    expect(prompt).to_have_value("a harbour, neon")
    expect(neon).to_have_attribute("aria-pressed", "true")
    shown = next_result(page, shown)  # the new style is painted at once
    prompt.fill("neon glow at dusk")  # typing the word presses its chip too
    expect(neon).to_have_attribute("aria-pressed", "true")
    neon.click()
    expect(prompt).to_have_value("glow at dusk")
    expect(neon).to_have_attribute("aria-pressed", "false")
    next_result(page, shown)
    assert console.errors == []
    page.close()


def test_the_inputs_an_app_ignores_are_greyed_out_and_disabled(browser: Browser, stack: GatewayStack) -> None:
    page, console = logged_in(browser, stack)
    steps = page.locator("[data-param=num_inference_steps]")
    expect(steps).to_have_class("field ignored")
    expect(page.locator("#steps")).to_be_disabled()
    expect(page.locator("#strength")).to_be_enabled()
    expect(steps.locator(".ignored-mark")).to_be_visible()
    expect(page.locator("[data-param=strength] .ignored-mark")).to_be_hidden()
    page.get_by_test_id("app-select").select_option("local/echo")  # echo returns the drawing as it is
    for control in ["#prompt", "#strength", "#steps", "#seed", "#seed-random", "#seed-lock"]:
        expect(page.locator(control)).to_be_disabled()
    expect(page.locator("#size")).to_be_enabled()
    expect(page.locator("#styles")).to_be_hidden()
    stroke(page, [(0.2, 0.2), (0.8, 0.8)])
    next_result(page, 0)  # the app still paints; only the inputs it never reads are off
    page.get_by_test_id("app-select").select_option("local/stylize")
    expect(page.locator("#prompt")).to_be_enabled()
    expect(page.locator("#styles")).to_be_visible()
    expect(page.locator("#steps")).to_be_disabled()
    assert console.errors == []
    page.close()


def axe_violations(page: Page) -> list[str]:
    """Run axe-core on the page as it is; each violation as 'rule: where'."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document)).violations")
    return [f"{v['id']}: {[n['target'] for n in v['nodes']][:5]}" for v in found]


def test_axe_finds_no_violation_on_the_login_and_drawing_pages(browser: Browser, stack: GatewayStack) -> None:
    assert AXE.exists(), "axe-core is missing: cd frontend && npm ci"
    login = browser.new_page()
    login.goto(f"{stack.http}/accounts/login/")
    assert axe_violations(login) == []
    login.close()
    for width, height in [(1366, 768), (375, 812)]:
        page, _ = logged_in(browser, stack, width=width, height=height)
        assert axe_violations(page) == [], "before the first stroke"
        stroke(page, [(0.2, 0.2), (0.8, 0.8)])
        next_result(page, 0)
        page.get_by_test_id("app-select").select_option("local/echo")  # disabled controls too
        assert axe_violations(page) == [], f"with a result, at {width}x{height}"
        page.close()


def test_the_login_page_and_drawing_page_have_one_level_one_heading(browser: Browser, stack: GatewayStack) -> None:
    page = browser.new_page()
    page.goto(f"{stack.http}/accounts/login/")
    expect(page.locator("h1")).to_have_count(1)
    page.close()
    page, _ = logged_in(browser, stack)
    expect(page.locator("h1")).to_have_count(1)
    page.close()
